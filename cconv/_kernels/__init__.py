"""Compiled kernels. Private: call them through cconv.ops, which validates every argument.

Each kernel module is built once per CPU level (see _levels.py) into a subpackage named
after the level. `from cconv._kernels import _gemm` gives the module of the level
picked at import: the best one the CPU runs, or $CCONV_CPU_CAPABILITY's.
"""
import glob
import importlib
import importlib.machinery
import importlib.util
import os

from cconv._kernels import _levels

_HERE = os.path.dirname(__file__)


def _built_levels():
    """The levels whose modules are here: a source checkout has the folders but,
    until it is built, no compiled module in them."""
    return [name for name in _levels.level_names()
            if any(glob.glob(os.path.join(_HERE, name, "*" + suffix))
                   for suffix in importlib.machinery.EXTENSION_SUFFIXES)]


BUILT = _built_levels()
LEVEL = _levels.choose(BUILT, _levels.requested())


def __getattr__(name):
    # Only the per-level modules are resolved here; anything else (_config, _levels) is
    # an ordinary submodule, which the import system finds after this AttributeError.
    if name.startswith("_") and not name.startswith("__") \
            and importlib.util.find_spec(f"{__name__}.{LEVEL}.{name}") is not None:
        module = importlib.import_module(f"{__name__}.{LEVEL}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
