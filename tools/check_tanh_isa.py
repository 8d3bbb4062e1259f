"""Same bits from cconv's tanh on every instruction set with FMA, aarch64 NEON included.

Compiles the C of _simd.pxd's layer and tanh blocks into a small program per target
(x86-64 AVX2+FMA, AVX-512 with 512-bit vectors, aarch64 NEON run under qemu-aarch64,
and the x86-64 default level, SSE4.2 without FMA, for its error alone), with the flags
setup.py gives the kernels, runs it on the same float32 and float64 inputs (vector
bodies and scalar tails) and compares the outputs bit for bit.

    python tools/check_tanh_isa.py      # needs gcc, aarch64-linux-gnu-gcc, qemu-aarch64
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SIMD = os.path.join(HERE, "..", "cconv", "_kernels", "_simd.pxd")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-fno-fast-math"]
TARGETS = {  # name: (compiler, flags, runner, has FMA)
    "avx2": ("gcc", ["-march=x86-64-v2", "-mavx2", "-mfma"], [], True),
    "avx512": ("gcc", ["-march=x86-64-v2", "-mavx2", "-mfma", "-mavx512f", "-mavx512bw",
                       "-mavx512dq", "-mavx512vl"], [], True),
    "neon": ("aarch64-linux-gnu-gcc", ["-static"], ["qemu-aarch64"], True),
    "default": ("gcc", ["-march=x86-64-v2"], [], False),
}
MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
static void *slurp(const char *path, long *bytes) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END); *bytes = ftell(f); fseek(f, 0, SEEK_SET);
    void *p = malloc(*bytes);
    if (fread(p, 1, *bytes, f) != (size_t)*bytes) exit(1);
    fclose(f);
    return p;
}
int main(int argc, char **argv) {
    long b32, b64;
    float *x32 = slurp(argv[1], &b32);
    double *x64 = slurp(argv[2], &b64);
    long n32 = b32 / 4, n64 = b64 / 8, i;
    /* vectors up to the last whole one, then the scalar form */
    for (i = 0; i + CCONV_VF_LANES <= n32; i += CCONV_VF_LANES)
        cconv_vf_store(x32 + i, cconv_vf_tanh(cconv_vf_load(x32 + i)));
    for (; i < n32; i++) x32[i] = cconv_tanhf(x32[i]);
    for (i = 0; i + CCONV_VD_LANES <= n64; i += CCONV_VD_LANES)
        cconv_vd_store(x64 + i, cconv_vd_tanh(cconv_vd_load(x64 + i)));
    for (; i < n64; i++) x64[i] = cconv_tanh(x64[i]);
    FILE *f = fopen(argv[3], "wb");
    fwrite(x32, 4, n32, f); fwrite(x64, 8, n64, f); fclose(f);
    return 0;
}
"""


def c_source():
    text = open(SIMD).read()
    blocks = re.findall(r'cdef extern from \* nogil:\n    """\n(.*?)\n    """', text, re.S)
    return "\n".join(re.sub(r"^    ", "", b, flags=re.M) for b in blocks) + MAIN


def inputs(rng):
    x32 = np.concatenate([rng.uniform(-12, 12, 1_000_001), 2.0 ** rng.uniform(-149, 4, 500_000),
                          np.array([0.0, -0.0, np.inf, -np.inf])]).astype(np.float32)
    x64 = np.concatenate([rng.uniform(-21, 21, 1_000_000), rng.uniform(-1, 1, 1_000_000),
                          2.0 ** rng.uniform(-1074, 6, 500_001) * rng.choice([-1, 1], 500_001),
                          np.array([0.0, -0.0, np.inf, -np.inf, np.nan])])
    return x32, x64


def main():
    rng = np.random.default_rng(7)
    x32, x64 = inputs(rng)
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "tanh.c")
        open(src, "w").write(c_source())
        x32.tofile(os.path.join(tmp, "x32")), x64.tofile(os.path.join(tmp, "x64"))
        for name, (cc, flags, runner, _) in TARGETS.items():
            if shutil.which(cc) is None or (runner and shutil.which(runner[0]) is None):
                print(f"{name}: skipped ({cc} or {runner} not found)")
                continue
            exe, out = os.path.join(tmp, name), os.path.join(tmp, name + ".out")
            subprocess.run([cc, *FLAGS, *flags, src, "-o", exe, "-lm"], check=True)
            subprocess.run([*runner, exe, os.path.join(tmp, "x32"), os.path.join(tmp, "x64"), out],
                           check=True)
            raw = np.fromfile(out, np.uint8)
            outputs[name] = (raw[:x32.nbytes].view(np.float32), raw[x32.nbytes:].view(np.float64))
    fma = [name for name in outputs if TARGETS[name][3]]
    ok = True
    for name in fma[1:]:
        for k, what in enumerate(("float32", "float64")):
            a, b = outputs[fma[0]][k], outputs[name][k]
            same = a.view(a.dtype.str.replace("f", "u")) == b.view(b.dtype.str.replace("f", "u"))
            print(f"{what}: {name} vs {fma[0]}: {np.count_nonzero(~same)} of {a.size} differ")
            ok &= bool(same.all())
    ref32, ref64 = np.tanh(x32.astype(np.float64)), np.tanh(x64.astype(np.longdouble))
    for name, (y32, y64) in outputs.items():
        ulp = np.spacing(np.nextafter(np.abs(ref64.astype(np.float64)), 0)).astype(np.longdouble)
        finite = np.isfinite(x64)
        err64 = np.abs(y64.astype(np.longdouble) - ref64)[finite] / ulp[finite]
        print(f"{name}: float32 max error {np.max(np.abs(y32 - ref32)):.3g}, "
              f"float64 max error {float(np.max(err64)):.3f} ulp (long double reference)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
