"""No import circles among cconv's modules, function-level (lazy) imports included; and
one version.

The graph: a node per module under cconv/ (a package's __init__.py is the node of the
package's name). Every import statement anywhere in a module's source, at the top, in a
function or under an `if`, gives edges, to the modules it names:
- `import cconv.a.b` -> cconv.a.b;
- `from cconv.a import x` -> cconv.a.x when that is a module, else cconv.a (a name
  defined in cconv/a.py or cconv/a/__init__.py); `from . import x` and `from .m import y`
  resolve against the importing module's package first;
- `import cconv` and `from cconv import __version__` -> cconv (the package's __init__).
Python also runs the __init__ of every package on the way to a module; those implicit
imports are not edges: cconv/__init__.py imports the whole API, so counting them would
put every module in a circle with it, while they run harmlessly (a package's __init__ is
run first, and a module only reaches into its parents' names at call time, if ever).
For a subpackage (cconv.ops, cconv._kernels, cconv.datasets) imported from outside it,
the implicit edge to its __init__ does count: `from cconv.ops._scratch import reused` in
cconv.layers depends on cconv/ops/__init__.py, which must never import cconv.layers.
"""
import ast
import re
import sys
from pathlib import Path

from conftest import same_cconv_env

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cconv"


def module_name(path, root=ROOT):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package=PACKAGE):
    """{module name: path} of every .py file under package."""
    return {module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}


def imports_of(name, path, known):
    """The cconv modules that the source of module `name` imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    top = next(iter(known)).split(".")[0]
    found = set()

    def add(target):
        if target in known:
            found.add(target)
            # a subpackage's __init__, entered from outside the subpackage
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in known and not (name + ".").startswith(parent + "."):
                    found.add(parent)
            return True
        return False

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    assert add(alias.name), f"{name}: import of unknown {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            if source is None or source.split(".")[0] != top:
                continue
            for alias in node.names:
                if not add(f"{source}.{alias.name}"):  # a name, not a submodule
                    assert add(source), f"{name}: import from unknown {source}"
    found.discard(name)
    return found


def graph(package=PACKAGE):
    known = modules(package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycle(edges):
    """One cycle as [a, b, ..., a], or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_circles_among_cconv_modules():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_graph_sees_every_kind_of_import():
    edges = graph()
    assert "cconv.layers" in edges["cconv.fusion"]            # from cconv.layers import X
    assert "cconv.saving" in edges["cconv.model"]              # from cconv import saving
    assert "cconv.ops._scratch" in edges["cconv.layers"]       # from cconv.ops._scratch ...
    assert "cconv.ops" in edges["cconv.layers"]                # ... enters cconv/ops/__init__
    assert "cconv.datasets.mnist" in edges["cconv.datasets"]   # from . import mnist
    assert "cconv.datasets.mnist" in edges["cconv.cli"]        # lazy, inside a function
    assert "cconv._kernels._levels" in edges["cconv._kernels"]
    assert "cconv" not in edges["cconv.ops._scratch"]          # no implicit edge to the top


def test_the_check_finds_a_lazy_circle(tmp_path):
    """A planted function-level import that closes a circle, in a copy of the package's
    sources, is found and named."""
    pkg = tmp_path / "cconv"
    for name, path in modules().items():
        dest = tmp_path / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(path.read_text())
    assert find_cycle(graph(pkg)) is None
    utils = pkg / "utils.py"
    utils.write_text(utils.read_text() + "\n\ndef _planted():\n    from cconv import layers\n"
                     "    return layers\n")
    cycle = find_cycle(graph(pkg))
    assert cycle is not None and "cconv.utils" in cycle and "cconv.layers" in cycle
    utils.write_text(utils.read_text().replace("from cconv import layers",
                                               "from . import model"))
    assert "cconv.model" in find_cycle(graph(pkg))


def test_ops_never_import_the_layers_above_them():
    edges = graph()
    below = {n for n in edges if n.startswith(("cconv.ops", "cconv._kernels"))}
    above = {"cconv.activations", "cconv.layers", "cconv.model", "cconv.fusion",
             "cconv.saving", "cconv.initializers", "cconv"}
    for name in below:
        assert not edges[name] & above, (name, edges[name] & above)


def test_saving_and_export_never_import_the_model():
    def reach(start, edges):
        seen, todo = set(), [start]
        while todo:
            for nxt in edges[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen
    edges = graph()
    for below in ("cconv.saving", "cconv.export"):
        assert not reach(below, edges) & {"cconv.model", "cconv.models", "cconv"}, below


def test_one_version():
    import cconv
    from cconv import _version
    text = (ROOT / "pyproject.toml").read_text()
    if sys.version_info >= (3, 11):
        import tomllib
        declared = tomllib.loads(text)["project"]["version"]
    else:
        declared = re.search(r'(?m)^version\s*=\s*"([^"]+)"', text).group(1)
    assert cconv.__version__ == _version.__version__ == declared


def test_modules_import_first_on_their_own(tmp_path):
    """Importing one of these modules first, in a fresh interpreter, works: no order
    dependence hidden by the package having been imported already. From an empty
    folder, with the cconv under test (in CI the installed one: the checkout has no
    compiled kernels)."""
    import subprocess
    for module in ("cconv.saving", "cconv.initializers", "cconv.presets", "cconv.metrics",
                   "cconv.fusion", "cconv.models", "cconv.activations", "cconv.oracle",
                   "cconv.export"):
        subprocess.run([sys.executable, "-c", f"import {module}"], cwd=tmp_path,
                       env=same_cconv_env(), check=True)


def test_the_wrappers_are_the_top_floor_and_import_cconv_leaves_sklearn_out(tmp_path):
    """cconv.wrappers (scikit-learn's estimators) sits above the model: no module of cconv
    imports it, so `import cconv` and a full training run never load scikit-learn."""
    import subprocess
    edges = graph()
    assert "cconv.model" in edges["cconv.wrappers"]
    assert not [name for name, targets in edges.items() if "cconv.wrappers" in targets]
    code = ("import sys, numpy as np, cconv; from cconv import models, presets, cli\n"
            "m = cconv.Sequential([cconv.Input((3,)), cconv.layers.Dense(2)])\n"
            "m.compile(loss='mse'); m.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)\n"
            "assert not [n for n in sys.modules if n.startswith('sklearn')], 'sklearn'")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=same_cconv_env(),
                   check=True)
