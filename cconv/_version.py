"""cconv's version, in one place: the package, saving's metadata and show_config read it
here (pyproject.toml's version must agree: tests/test_imports.py checks)."""
__version__ = "0.1.0"
