"""Exhaustive and cross-level checks of cconv's tanh (cconv/_kernels/_simd.pxd), too
slow for the test suite (tests/test_tanh_accuracy.py samples them).

float32: every float32 in [0, 12] (tanh_f32 is odd by construction) at every built
level: error < 3.7e-7 against float64 tanh (3.9e-7 at the x86-64 default level, without
FMA), |tanh| <= 1, and the same bits at every
level that has FMA (avx2: 8 lanes, avx512: 16 when _elementwise is a 512-bit module).
float64: random points over the whole range at every level: the same bits at the FMA
levels and, with mpmath installed, the error against the correctly rounded tanh.

    python tools/check_tanh.py [--mpmath N]
"""
import argparse
import importlib

import numpy as np

from cconv._kernels import BUILT

FMA_LEVELS = [level for level in BUILT if level != "default"]
CHUNK = 1 << 24


def kernels():
    return {level: importlib.import_module(f"cconv._kernels.{level}._elementwise")
            for level in BUILT}


def tanh_at(module, x):
    out = np.empty_like(x)
    module.tanh_forward(x, out, 2)
    return out


def check_float32(mods):
    last = int(np.float32(12).view(np.uint32))
    worst = {level: 0.0 for level in mods}
    for start in range(0, last + 1, CHUNK):
        x = np.arange(start, min(last + 1, start + CHUNK), dtype=np.uint32).view(np.float32)
        ref = np.tanh(x.astype(np.float64))
        got = {level: tanh_at(m, x) for level, m in mods.items()}
        for level, y in got.items():
            assert np.all(np.abs(y) <= 1), level
            worst[level] = max(worst[level], float(np.max(np.abs(y - ref))))
        for level in FMA_LEVELS[1:]:
            assert np.array_equal(got[level].view(np.uint32), got[FMA_LEVELS[0]].view(np.uint32)), \
                f"float32 tanh: {level} and {FMA_LEVELS[0]} differ in [{x[0]}, {x[-1]}]"
    for level, err in worst.items():
        bound = 3.9e-7 if level == "default" else 3.7e-7
        print(f"float32 [0, 12], {level}: max error {err:.3g}"
              f" ({'ok' if err < bound else 'FAILS'} < {bound})")
    print(f"float32: same bits at {', '.join(FMA_LEVELS)} over all {last + 1} values")


def float64_points(n, rng):
    return np.concatenate([2.0 ** rng.uniform(-1074, 6, n) * rng.choice([-1.0, 1.0], n),
                           rng.uniform(-20, 20, n), rng.uniform(-1, 1, n)])


def check_float64(mods, n_mpmath):
    rng = np.random.default_rng(2026)
    x = float64_points(10_000_000, rng)
    got = {level: tanh_at(m, x) for level, m in mods.items()}
    for level in FMA_LEVELS[1:]:
        same = got[level].view(np.uint64) == got[FMA_LEVELS[0]].view(np.uint64)
        assert same.all(), f"float64 tanh: {level} and {FMA_LEVELS[0]} differ at {x[~same][:5]}"
    print(f"float64: same bits at {', '.join(FMA_LEVELS)} on {x.size} points")
    if not n_mpmath:
        return
    import mpmath

    mpmath.mp.prec = 200
    x = np.concatenate([float64_points(n_mpmath // 3, rng),
                        0.625 + rng.uniform(-0.01, 0.01, 2000)])
    exact = [mpmath.tanh(mpmath.mpf(v)) for v in x]
    rounded = np.array([float(t) for t in exact])  # correctly rounded
    ulp = np.spacing(np.nextafter(np.abs(rounded), 0))
    for level, m in mods.items():
        y = tanh_at(m, x)
        err = np.array([abs(float((mpmath.mpf(a) - t) / mpmath.mpf(u)))
                        for a, t, u in zip(y, exact, ulp)])
        k = int(np.argmax(err))
        print(f"float64, {level}: max error {err[k]:.3f} ulp against mpmath on {x.size} "
              f"points, at x = {x[k]!r}; {np.mean(y != rounded):.4f} not correctly rounded")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpmath", type=int, default=0, metavar="N",
                        help="also measure float64 error on N points with mpmath")
    args = parser.parse_args()
    mods = kernels()
    check_float32(mods)
    check_float64(mods, args.mpmath)


if __name__ == "__main__":
    main()
