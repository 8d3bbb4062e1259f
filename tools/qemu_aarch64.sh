#!/usr/bin/env bash
# Run the op tests on aarch64 (NEON) under qemu-aarch64: the kernels cross-compiled by
# tools/cross_aarch64.sh, Debian 12's arm64 python3.11 and an aarch64 numpy wheel from
# PyPI, each unpacked into a separate root; nothing is installed system-wide but the
# packages below.
#
#   tools/qemu_aarch64.sh [pytest args...]   (default: the op tests, see tests/test_levels.py)
#
# Needs (as root, Debian 12): dpkg --add-architecture arm64 && apt-get update &&
#   apt-get install qemu-user gcc-aarch64-linux-gnu libpython3.11-dev:arm64
# and network access to Debian and PyPI. Emulation is slow: the op tests take tens of
# minutes on two cores. KEEP=1 keeps the folder.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cconv-qemu-aarch64-XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
root=$work/root   # the arm64 interpreter, its standard library and libgomp
site=$work/site   # numpy and pytest for aarch64

"$repo/tools/cross_aarch64.sh" "$work/cconv"

mkdir -p "$work/deb" "$root" "$site"
# apt-get download writes into the current folder, as the _apt user when it can.
(cd "$work/deb" && chmod 777 . && apt-get download -q python3.11-minimal:arm64 \
    libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 libgomp1:arm64)
for deb in "$work"/deb/*.deb; do dpkg -x "$deb" "$root"; done
python -m pip download -q --only-binary=:all: --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp -d "$work/wheels" numpy pytest hypothesis
for wheel in "$work"/wheels/*.whl; do python -m zipfile -e "$wheel" "$site"; done

# qemu looks up the guest's absolute paths (ld.so, libraries) under -L first.
py=(qemu-aarch64 -L "$root" "$root/usr/bin/python3.11")
export PYTHONPATH=$work/cconv:$site
export CCONV_OFFLINE=1
mkdir -p "$work/run" && cd "$work/run"   # no cconv sources on sys.path
"${py[@]}" -c "import platform, cconv; print(platform.machine()); cconv.show_config(); \
assert cconv.cpu_capability() == 'default'"
if [ $# -eq 0 ]; then
    set -- $("${py[@]}" -c "import sys; sys.path.insert(0, '$repo/tests'); \
import test_levels; print(' '.join(test_levels._op_tests()))")
fi
time "${py[@]}" -m pytest -q -p no:cacheprovider --rootdir "$repo" "$@"
