"""Fit the coefficients of gelu's normal tail (cconv/_kernels/_activations.pxd.tp) and
print them.

Development tool, needs mpmath (the test suite does not). gelu(x) = x Phi(x) is computed
from Q(a) = P(Z > a) = exp(-a^2/2) R(a), a = |x|, where R(a) = erfcx(a / sqrt 2) / 2 is
smooth and slowly varying. With t = 2 / (2 + a) in (0, 1], R(a) = t P(t): one polynomial
in t below t = 0.4 (a > 3), another in v = (t - 0.7) / 0.3 above it (a monomial basis on
[0.4, 1] is too ill-conditioned to fit). Each is a least-squares fit of relative error at
Chebyshev nodes, solved with 60 digits; the printed error is that of the polynomial in
exact arithmetic with its coefficients rounded to float64.

    python tools/fit_gelu.py
"""
import mpmath as mp

mp.mp.dps = 60

# (piece, t range, shifted variable, degree per dtype)
PIECES = [("A", (mp.mpf(0), mp.mpf("0.4")), False, {"float32": 8, "float64": 20}),
          ("B", (mp.mpf("0.4"), mp.mpf(1)), True, {"float32": 8, "float64": 18})]


def tail_ratio(a):
    z = a / mp.sqrt(2)
    return mp.erfc(z) * mp.exp(z * z) / 2


def point(v, lo, hi):
    """t at v in [-1, 1], and the polynomial's variable there."""
    return (lo + hi) / 2 + (hi - lo) / 2 * v


def fit(lo, hi, shifted, degree, nodes=300):
    a_rows = mp.matrix(nodes, degree + 1)
    b = mp.matrix(nodes, 1)
    for i in range(nodes):
        v = mp.cos(mp.pi * (i + mp.mpf(1) / 2) / nodes)
        t = point(v, lo, hi)
        var = v if shifted else t
        target = tail_ratio(2 * (1 - t) / t) / t
        for j in range(degree + 1):
            a_rows[i, j] = var ** j / target
        b[i] = 1
    c = mp.qr_solve(a_rows, b)[0]
    return [float(c[j]) for j in range(degree + 1)]


def max_rel_error(lo, hi, shifted, coeffs, points=2000):
    worst = mp.mpf(0)
    for k in range(points + 1):
        v = -1 + 2 * mp.mpf(k) / points
        t = point(v, lo, hi)
        if t == 0:
            continue
        var = v if shifted else t
        p = mp.mpf(0)
        for c in reversed(coeffs):
            p = p * var + mp.mpf(c)
        worst = max(worst, abs(p * t / tail_ratio(2 * (1 - t) / t) - 1))
    return worst


if __name__ == "__main__":
    for name, (lo, hi), shifted, degrees in PIECES:
        for dtype, degree in degrees.items():
            coeffs = fit(lo, hi, shifted, degree)
            err = max_rel_error(lo, hi, shifted, coeffs)
            print(f"GELU_{name} {dtype} (degree {degree}, max relative error "
                  f"{float(err):.2g}), highest degree first:")
            print("    [" + ", ".join(repr(c) for c in reversed(coeffs)) + "]")
