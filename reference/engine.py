"""Certified evaluation of  V = D + sum_g c_g * f_g(a_g).

D and every c_g are exact dyadic numbers; each f_g is one of four positive (or
negative, for the logs) transcendental kernels. Every loss, gradient and reduction in
reference/ is brought into this form, so this module is the only place where
precision, error bounds and rounding decisions live.

The promise of `evaluate`: it returns an mpf tuple R with |R - V| <= 2**-110 |V| and
such that rounding R to nearest-even gives the correctly rounded V in EVERY supported
format (float16, bfloat16, float32, float64). That is what makes
`round_to(bce_with_logits(...), dtype)` correct, never double-rounded.

How the rounding decision is certain:
- Ziv's strategy: evaluate at working precision wp with a rigorous error bound and
  accept only when the whole interval [lo, hi] lies inside one open "cell" between
  consecutive rounding boundaries of float64 (representable values and midpoints,
  spacing 2**(E-53) in binade E, 2**-1075 below the normal range). Every boundary of
  the narrower formats is also such a float64 boundary, so one test serves all four.
- Sticky tail: when the transcendental tail lies far below the last bit of D and below
  the boundary grid around D, no finite precision can add it, and none is needed:
  V rounds exactly like D + sign(tail) * 2**(m-1), where 2**m divides both D and every
  boundary near D. That point is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from mpmath import libmp

from . import exact
from .exact import ONE, ZERO, Tuple

# Kernels. Each takes an exact argument and a working precision and returns a value
# with relative error below 2**-wp.
SOFTPLUS_NEG = "softplus_neg"  # log(1 + exp(-a)), a >= 0
SIGMOID_NEG = "sigmoid_neg"    # 1 / (1 + exp(a)),  a >= 0
LOG = "log"                    # log(q),     0 < q < 1
LOG1M = "log1m"                # log(1 - q), 0 < q < 1

MAX_PRECISION = 1 << 16
LOG2E_LOWER = libmp.from_man_exp(369, -8)  # 1.44140625 < log2(e): safe tail bound

CERTIFIED_BITS = 110


class ReferenceUncertainError(ArithmeticError):
    """The value could not be certified within MAX_PRECISION bits."""


Number = Tuple | Fraction  # exact: a dyadic libmp tuple, or a rational (means, bce_grad)


@dataclass(frozen=True)
class Linear:
    """V = constant + sum(coef * kernel(arg)); every number exact.

    Kernel arguments are dyadic tuples; constant and coefficients may be Fractions.
    A constant that is NaN or +-inf (a limit) comes with no terms.
    """

    constant: Number
    terms: tuple[tuple[Number, str, Tuple], ...] = ()


def as_dyadic(v: Number) -> Number:
    """A Fraction with a power-of-two denominator becomes an exact tuple."""
    if isinstance(v, Fraction) and not v.denominator & (v.denominator - 1):
        return exact.from_fraction(v)
    return v


def is_zero(v: Number) -> bool:
    return v == ZERO if isinstance(v, tuple) else v == 0


def _fraction(v: Number) -> Fraction:
    return v if isinstance(v, Fraction) else exact.to_fraction(v)


def _approx(v: Number, w: int) -> Tuple:
    if isinstance(v, Fraction):
        return libmp.from_rational(v.numerator, v.denominator, w, libmp.round_nearest)
    return v


def rational_representative(v: Fraction) -> Tuple:
    """A dyadic point rounding like the rational v in every format, with 200+ bits.

    v is not dyadic, so it lies strictly between two multiples of 2**e; with e far
    below every rounding boundary's grid, the odd midpoint of that pair rounds the same.
    """
    num, den = abs(v.numerator), v.denominator
    top = num.bit_length() - den.bit_length()
    e = min(top - 210, -1100)
    q = (num << -e) // den
    return libmp.from_man_exp(-(2 * q + 1) if v < 0 else 2 * q + 1, e - 1)


def _exp_neg(a: Tuple, wp: int) -> Tuple:
    return libmp.mpf_exp(exact.neg(a), wp)


def _log_of(t: Tuple, one_minus_t: Tuple, wp: int) -> Tuple:
    """log(t) for 0 < t < 1 with relative error < 2**-wp; one_minus_t = 1 - t exactly.

    mpmath's log is accurate in the absolute, not the relative, sense near 1, so
    cancellation is paid for with extra precision.
    """
    m = exact.msb(one_minus_t)
    if m < -wp - 4:  # log(1-u) = -u (1 + u/2 + ...) with u < 2**-wp
        return exact.neg(one_minus_t)
    extra = max(0, -m) + 12
    return libmp.mpf_log(t, wp + extra)


def kernel(name: str, arg: Tuple, wp: int) -> Tuple:
    """Evaluate a kernel with relative error below 2**-wp."""
    w = wp + 12
    if name == SOFTPLUS_NEG:
        u = _exp_neg(arg, w)
        if exact.msb(u) < -w:
            return u  # log1p(u) = u (1 - u/2 + ...)
        return libmp.mpf_log(libmp.mpf_add(ONE, u, 2 * w + 8), w)
    if name == SIGMOID_NEG:
        u = _exp_neg(arg, w)
        return libmp.mpf_div(u, libmp.mpf_add(ONE, u, w), w)
    if name == LOG:
        return _log_of(arg, exact.sub(ONE, arg), w)
    if name == LOG1M:
        return _log_of(exact.sub(ONE, arg), arg, w)
    raise ValueError(name)


def magnitude_bound(name: str, arg: Tuple) -> int | None:
    """An integer B with |kernel(arg)| < 2**B, cheaply; None when not useful."""
    if name in (SOFTPLUS_NEG, SIGMOID_NEG):
        # both are below exp(-a) < 2**(-a*1.4414)
        if arg == ZERO:
            return 0
        scaled = libmp.mpf_mul(arg, LOG2E_LOWER, 64, libmp.round_floor)
        return -libmp.to_int(scaled, libmp.round_floor)
    return None


def _cell(t: Tuple) -> tuple[int, int, int]:
    """Which open cell between float64 rounding boundaries t lies in (t != 0)."""
    s, man, e, bc = t
    g = max(e + bc - 1 - 53, -1075)
    k = man >> (g - e) if g >= e else man << (e - g)
    return s, g, k


def _decided(lo: Tuple, hi: Tuple) -> bool:
    if lo == ZERO or hi == ZERO or lo[0] != hi[0]:
        return False
    # the open interval (lo, hi) holds V; both ends in the same cell, or lo exactly
    # on the cell's lower boundary, means no boundary lies strictly inside.
    if _cell(lo) != _cell(hi):
        return False
    width = exact.sub(hi, lo)
    return exact.msb(width) <= min(exact.msb(lo), exact.msb(hi)) - CERTIFIED_BITS


def _sticky_exponent(d: Tuple) -> int:
    """m such that 2**m divides d and every rounding boundary near d, 130 bits below d."""
    return min(d[2], exact.msb(d) - 130)


def _tail_sign(terms: tuple[tuple[Number, str, Tuple], ...]) -> int:
    """Sign of sum(c * f(a)) (nonzero: distinct arguments give independent values)."""
    signs = {exact.sign(_approx(c, 8)) * (1 if k in (SOFTPLUS_NEG, SIGMOID_NEG) else -1)
             for c, k, _ in terms}
    if len(signs) == 1:
        return signs.pop()
    wp = 64
    while wp <= MAX_PRECISION:
        value, err = _approximate(ZERO, terms, wp)
        if value != ZERO and exact.msb(value) > err:
            return exact.sign(value)
        wp *= 2
    raise ReferenceUncertainError("sign of the transcendental tail is not decidable")


def _approximate(d: Number, terms: tuple[tuple[Number, str, Tuple], ...], wp: int
                 ) -> tuple[Tuple, int]:
    """(value, E) with |value - V| < 2**E, at working precision wp."""
    w = wp + 8
    d = _approx(d, w)
    acc = d
    abs_sum = ZERO
    for c, name, arg in terms:
        product = libmp.mpf_mul(_approx(c, w), kernel(name, arg, wp), w)
        abs_sum = libmp.mpf_add(abs_sum, libmp.mpf_abs(product), 16, libmp.round_ceiling)
        acc = libmp.mpf_add(acc, product, w)
    # kernel error + product rounding: |c f| 2**-wp (1 + 2**-8); n additions of at most
    # |d| + sum|c f| each, 2**-w relative.
    n = len(terms)
    big = libmp.mpf_add(libmp.mpf_abs(d), abs_sum, 16, libmp.round_ceiling)
    e1 = exact.msb(abs_sum) + 1 - wp + 1 if abs_sum != ZERO else -(1 << 62)
    e2 = exact.msb(big) + 1 + (n + 1).bit_length() - w
    return acc, max(e1, e2) + 1


def evaluate(form: Linear) -> Tuple:
    """A representative of V: 110 correct bits, correctly rounded in every format."""
    d = as_dyadic(form.constant)
    terms = tuple((as_dyadic(c), k, a) for c, k, a in form.terms if not is_zero(c))
    if any(k == SIGMOID_NEG and a == ZERO for _, k, a in terms):
        # sigmoid(0) = 1/2 is dyadic: fold it into the constant, or Ziv would never end
        half = sum((_fraction(c) / 2 for c, k, a in terms if k == SIGMOID_NEG and a == ZERO),
                   Fraction(0))
        d = as_dyadic(_fraction(d) + half) if not exact.is_special(d) else d
        terms = tuple(t for t in terms if not (t[1] == SIGMOID_NEG and t[2] == ZERO))
    if not terms:
        return rational_representative(d) if isinstance(d, Fraction) else d
    if not isinstance(d, Fraction) and d != ZERO:
        bounds = [magnitude_bound(k, a) for _, k, a in terms]
        if all(b is not None for b in bounds):
            top = max(exact.msb(_approx(c, 8)) + 2 + b
                      for (c, _, _), b in zip(terms, bounds, strict=True))
            top += len(terms).bit_length()
            m = _sticky_exponent(d)
            if top <= m - 1:
                return exact.add(d, (0 if _tail_sign(terms) > 0 else 1, 1, m - 1, 1))
    wp = 128
    while wp <= MAX_PRECISION:
        value, err = _approximate(d, terms, wp)
        if value != ZERO:
            delta = exact.pow2(err)
            if _decided(exact.sub(value, delta), exact.add(value, delta)):
                return value
        wp *= 2
    raise ReferenceUncertainError(f"not certified at {MAX_PRECISION} bits: {form!r}")
