#!/usr/bin/env bash
# Cross-compile every kernel module for aarch64 (Linux, NEON) from this checkout: Cython
# generates the C of the default level, aarch64-linux-gnu-gcc compiles and links it
# against Debian's arm64 Python 3.11 headers with setup.py's flags. Fails on any error.
#
#   tools/cross_aarch64.sh [OUT]      OUT (default: a temporary folder, removed) receives
#                                     an aarch64 copy of the cconv package
#
# Needs (as root, Debian 12):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install gcc-aarch64-linux-gnu libpython3.11-dev:arm64
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cconv-aarch64-XXXXXX")
trap 'rm -rf "$work"' EXIT
out=${1:-$work/out}
cc=${CROSS_CC:-aarch64-linux-gnu-gcc}
py_inc=/usr/include/python3.11
arch_inc=/usr/include/aarch64-linux-gnu/python3.11
[ -f "$arch_inc/pyconfig.h" ] || { echo "no $arch_inc/pyconfig.h: install libpython3.11-dev:arm64" >&2; exit 1; }
np_inc=$(python -c "import numpy; print(numpy.get_include())")

# setup.py's flags for every kernel module (aarch64's default level adds none). Checked
# against setup.py so that the two cannot drift apart silently.
flags=(-O3 -fno-math-errno -fno-trapping-math -ffp-contract=off -fno-fast-math)
for flag in "${flags[@]}"; do
    grep -q -- "\"$flag\"" "$repo/setup.py" || { echo "setup.py no longer uses $flag" >&2; exit 1; }
done
flags+=(-fopenmp -fPIC -DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION -Wall -Wno-unused-function
        -Wno-unused-variable -Wno-unreachable-code)

# Cython's C, from a clean copy: setup.py renders the templates and cythonizes when it
# is merely asked for the name (nothing is compiled).
git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 cp --parents -t "$work")
(cd "$work" && CCONV_LEVELS=default python setup.py -q --name >cythonize.log 2>&1) \
    || { cat "$work/cythonize.log"; exit 1; }

mkdir -p "$out/cconv/_kernels/default"
(cd "$work" && git -C "$repo" ls-files cconv | grep -v '\.pyx$\|\.tp$' \
    | xargs -I{} cp --parents {} "$out")
suffix=.cpython-311-aarch64-linux-gnu.so
warnings=0
for c in "$work"/build/cconv-gen/levels/default/*.c "$work"/build/cconv-gen/cconv/_kernels/_config.c; do
    module=$(basename "$c" .c)
    case "$c" in */levels/default/*) dest=$out/cconv/_kernels/default ;; *) dest=$out/cconv/_kernels ;; esac
    "$cc" "${flags[@]}" -I"$arch_inc" -I"$py_inc" -I"$np_inc" -c "$c" -o "$work/$module.o" \
        2>"$work/$module.log" || { cat "$work/$module.log"; echo "FAILED: $module" >&2; exit 1; }
    "$cc" -shared -fopenmp "$work/$module.o" -lm -o "$dest/$module$suffix"
    n=$(grep -c "warning:" "$work/$module.log" || true)
    warnings=$((warnings + n))
    [ "$n" = 0 ] || sed -n '1,20p' "$work/$module.log"
    echo "aarch64: $module ($n warnings)"
done
file "$out"/cconv/_kernels/default/_gemm$suffix
echo "aarch64 cross-compile: OK, $warnings warnings"
