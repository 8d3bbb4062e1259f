"""Fit the coefficients of cconv's float64 tanh (_tanh.pxd) and print them.

Development tool, needs mpmath (the test suite does not): each polynomial is a least
squares fit of relative error at Chebyshev nodes, solved with 80 digits, which lands
within a small factor of the minimax polynomial. The printed error is that of the
polynomial in exact arithmetic with its coefficients rounded to float64.

    python tools/fit_tanh64.py
"""
import mpmath as mp

mp.mp.dps = 80

SMALL = mp.mpf("0.625")    # |x| below: x + x*u*P(u), u = x*x
SMALL_DEGREE = 11
EXP_HALF = mp.log(2) / 2   # exp's reduced argument r lies in [-ln2/2, ln2/2] (slightly past)
EXP_DEGREE = 9             # exp(r) = 1 + r + r*r*E(r)


def fit(f, lo, hi, degree, nodes=400):
    """Coefficients c[0..degree] (lowest first) minimising sum(((p - f) / f)**2) at
    Chebyshev nodes of [lo, hi]."""
    xs = [(lo + hi) / 2 + (hi - lo) / 2 * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / nodes)
          for k in range(nodes)]
    a = mp.matrix(nodes, degree + 1)
    b = mp.matrix(nodes, 1)
    for i, x in enumerate(xs):
        fx = f(x)
        for j in range(degree + 1):
            a[i, j] = x ** j / fx
        b[i] = 1
    c = mp.qr_solve(a, b)[0]
    return [float(c[j]) for j in range(degree + 1)]


def max_rel_error(f, lo, hi, coeffs, points=2000):
    worst = mp.mpf(0)
    for k in range(points + 1):
        x = lo + (hi - lo) * k / points
        if x == 0:
            continue
        p = mp.polyval([mp.mpf(c) for c in reversed(coeffs)], x)
        worst = max(worst, abs(p / f(x) - 1))
    return worst


def small_f(u):  # (tanh(x)/x - 1)/u, u = x*x; -1/3 at 0
    if u == 0:
        return mp.mpf(-1) / 3
    x = mp.sqrt(u)
    return (mp.tanh(x) / x - 1) / u


def exp_f(r):  # (exp(r) - 1 - r)/r**2; 1/2 at 0
    if r == 0:
        return mp.mpf(1) / 2
    return (mp.exp(r) - 1 - r) / r ** 2


def ln2_split():
    """ln2 = HI + LO, HI with its low 8 bits zero: j * HI is exact for j < 256."""
    import struct
    bits = struct.unpack("<Q", struct.pack("<d", float(mp.log(2))))[0] & ~0xFF
    hi = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return hi, float(mp.log(2) - mp.mpf(hi))


def main():
    hi, lo = ln2_split()
    print(f"    #define CCONV_TANH64_LN2_HI {hi!r}")  # _simd.pxd's float64 tanh block
    print(f"    #define CCONV_TANH64_LN2_LO {lo!r}")
    reach = EXP_HALF * mp.mpf("1.0001")
    for name, f, lo, hi, degree in (("P", small_f, mp.mpf(0), SMALL ** 2, SMALL_DEGREE),
                                    ("E", exp_f, -reach, reach, EXP_DEGREE)):
        coeffs = fit(f, lo, hi, degree)
        print(f"{name}: degree {degree}, max relative error "
              f"{mp.nstr(max_rel_error(f, lo, hi, coeffs), 3)}")
        print(f"    static const double cconv_tanh64_{name.lower()}[] = "
              f"{{{', '.join(repr(c) for c in reversed(coeffs))}}};")


if __name__ == "__main__":
    main()
