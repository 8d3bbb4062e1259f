#!/usr/bin/env bash
# Build the kernels with AddressSanitizer + UndefinedBehaviorSanitizer, or with Cython's
# bounds checks, in a throw-away clone of this checkout (the in-place build is left alone),
# and run the tests against that build.
#
#   tools/sanitize.sh                 ASan + UBSan build; kernel, gradient and fuzz tests
#   tools/sanitize.sh boundscheck     CCONV_BOUNDSCHECK=1 build; the whole suite
#
# Any sanitizer report aborts the process (halt_on_error), so a clean run is one that
# ends in pytest's "N passed". Needs gcc (or clang) with its libasan; Linux only.
# Extra arguments go to pytest. The clone is removed afterwards unless KEEP=1.
# One CPU level is built and tested (the best this CPU runs), unless CCONV_LEVELS names
# others: the import picks the best of those built.
set -euo pipefail

mode=${1:-asan}
[ $# -gt 0 ] && shift
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cconv-$mode-XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

# The working tree as it is, committed or not, minus build products.
git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 cp --parents -t "$work")
cd "$work"

export PYTHONPATH=$work
export CCONV_DATA_DIR=${CCONV_DATA_DIR:-$(cd "$repo/.." && pwd)/shared/data/mnist}
export CCONV_OFFLINE=1
export CCONV_FAIL_NO_OPENMP=1
export CCONV_LEVELS=${CCONV_LEVELS:-$(python -c "import runpy; \
print(runpy.run_path('cconv/_kernels/_levels.py')['supported']()[-1])")}
echo "levels built: $CCONV_LEVELS"

case "$mode" in
asan)
    CCONV_SANITIZE=address,undefined \
        nice -n 10 python setup.py build_ext --inplace -q >build.log 2>&1 \
        || { cat build.log; exit 1; }
    for so in cconv/_kernels/*.so cconv/_kernels/*/*.so; do  # the instrumented build is tested
        grep -q __asan_report "$so" && grep -q __ubsan_handle "$so" \
            || { echo "$so is not instrumented" >&2; exit 1; }
    done
    echo "built with -fsanitize=address,undefined: $(cd cconv/_kernels && ls *.so */*.so | tr '\n' ' ')"
    # python itself is not instrumented, so the ASan runtime must be loaded first.
    # Leak checking is off: the interpreter keeps allocations alive until exit by design.
    cc=${CC:-gcc}
    export LD_PRELOAD=$($cc -print-file-name=libasan.so)
    export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    nice -n 10 python -m pytest -q -p no:cacheprovider tests/ops tests/test_gradcheck.py tests/test_fuzz.py "$@"
    ;;
boundscheck)
    CCONV_BOUNDSCHECK=1 nice -n 10 python setup.py build_ext --inplace -q >build.log 2>&1 \
        || { cat build.log; exit 1; }
    echo "built with Cython boundscheck, wraparound and initializedcheck on"
    nice -n 10 python -m pytest -q -p no:cacheprovider tests "$@"
    ;;
*)
    echo "usage: $0 [asan|boundscheck] [pytest args...]" >&2
    exit 2
    ;;
esac
