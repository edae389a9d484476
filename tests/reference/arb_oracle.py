"""A second oracle for ``reference/``: python-flint's arb ball arithmetic.

Independent of the mpmath reference by construction: it imports flint, numpy and
ml_dtypes only, never ``reference`` (nor ``reference_oracle``). Every family of
DESIGN.md sections 3 and 10 is written here again from the formulas, evaluated with
arb balls (rigorous enclosures: the exact value is always inside), and rounded to
the target format by our own integer code (``round_dyadic``), not by any library.

How a value is decided (Ziv's strategy, ``_certify``):

- Inputs are exact dyadics ``(man, exp)`` (``dy``), so every coefficient (1-y, w k,
  K = w alpha_t, the smoothed target ...) is formed exactly with Python integers.
- A family returns V = D + T: D an exact dyadic (0 when there is none), T an arb ball
  at the working precision. When both ends of the ball D + T round to the same value
  (same bits, sign of zero included), that value is certain: rounding is monotone.
  Otherwise the precision doubles, from the format's precision + 40 bits up to CAP.
- Exact values (T exact, e.g. x = 0 in the logit gradient, a dyadic rational
  gradient) are rounded exactly, ties to even included: no ball can decide a value
  that sits on a midpoint.
- Sticky tail: T can lie billions of bits below D (softplus(-1e10) beside (1-y) x).
  When T's sign is certain and |T| < 2**G, where 2**G divides D and every rounding
  boundary near D (``_grid``), no boundary lies strictly between D and D + T, so V
  rounds like D + sign(T) 2**(G-1). This is what decides D exactly on a midpoint.
- Signs known from the mathematics (``t_sign`` / ``v_sign``: softplus > 0, a loss
  with K > 0 ...) clip a ball that arb could only give as [0 +/- tiny] (exp(-1e300)
  at a low precision), so underflowing values still certify their signed zero.
- A point still undecided at CAP is returned as ``Rounded(None, "uncertain", ...)``:
  the caller counts and reports it, never silently drops it.

Softmax rows (section "softmax rows" below): cross_entropy (class index or probability
targets, class weights, label smoothing), its gradient, logsumexp and log_softmax of
one row, from log-sum-exp forms split as D + T the same way (the exact part from the
shifts l_k - max l, tails log1p(delta / z) and exp(d_j) / (z + delta) that never
cancel), with -inf logits as masks.

Finite inputs only (``ValueError`` otherwise; rows also take -inf logits); the limits at
infinities are checked by hand cases in the tests. Domains as in DESIGN.md: bce on
0 < q < 1 (the ends are limits), the focal families with 0 <= y <= 1 and w >= 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
from flint import arb, ctx

CAP = 1 << 14  # bits: a value undecided here is reported as uncertain

Dy = tuple[int, int]  # man * 2**exp, exactly
ZERO: Dy = (0, 0)
ONE: Dy = (1, 0)
HALF: Dy = (1, -1)


# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Fmt:
    """A binary format: ``precision`` significand bits (hidden bit included)."""

    name: str
    precision: int
    emin: int
    emax: int

    @property
    def qmin(self) -> int:
        """Exponent of the smallest subnormal."""
        return self.emin - self.precision + 1


FORMATS: dict[str, Fmt] = {
    "float16": Fmt("float16", 11, -14, 15),
    "bfloat16": Fmt("bfloat16", 8, -126, 127),
    "float32": Fmt("float32", 24, -126, 127),
    "float64": Fmt("float64", 53, -1022, 1023),
}
NUMPY_DTYPES: dict[str, Any] = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
                                "float32": np.float32, "float64": np.float64}
UINTS: dict[str, Any] = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32,
                         "float64": np.uint64}


def from_bits(bits: np.ndarray, dtype: str) -> np.ndarray:
    """The values of raw bit patterns of `dtype`, widened (exactly) to float64."""
    with np.errstate(invalid="ignore"):  # NaN patterns widen to NaN, quietly
        return bits.astype(UINTS[dtype]).view(NUMPY_DTYPES[dtype]).astype(np.float64)


def cast(values: Any, dtype: str) -> np.ndarray:
    """Values rounded to `dtype` (numpy's cast: only used to make inputs), as float64."""
    return np.asarray(values, dtype=np.float64).astype(NUMPY_DTYPES[dtype]).astype(np.float64)


# --------------------------------------------------------------------------- dyadics


def dy(v: Any) -> Dy:
    """A finite float, int or dyadic Fraction as (man, exp), exactly."""
    if isinstance(v, tuple):
        return v
    if isinstance(v, Fraction):
        num, den = v.numerator, v.denominator
    else:
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"the arb oracle takes finite inputs only, got {v!r}")
        num, den = f.as_integer_ratio()
    if den & (den - 1):
        raise ValueError(f"not a dyadic rational: {v!r}")
    return (num, 1 - den.bit_length()) if num else ZERO


def d_mul(a: Dy, b: Dy) -> Dy:
    return (a[0] * b[0], a[1] + b[1]) if a[0] and b[0] else ZERO


def d_add(a: Dy, b: Dy) -> Dy:
    if not a[0]:
        return b
    if not b[0]:
        return a
    e = min(a[1], b[1])
    m = (a[0] << (a[1] - e)) + (b[0] << (b[1] - e))
    return (m, e) if m else ZERO


def d_neg(a: Dy) -> Dy:
    return (-a[0], a[1])


def d_sub(a: Dy, b: Dy) -> Dy:
    return d_add(a, d_neg(b))


def d_sign(a: Dy) -> int:
    return (a[0] > 0) - (a[0] < 0)


def d_eq(a: Dy, b: Dy) -> bool:
    return d_sub(a, b)[0] == 0


def d_top(a: Dy) -> int:
    """floor(log2 |a|) for a != 0."""
    return a[1] + abs(a[0]).bit_length() - 1


def d_fraction(a: Dy) -> Fraction:
    return Fraction(a[0]) * Fraction(2) ** a[1]


def d_arb(a: Dy) -> arb:
    """The exact ball of a dyadic, whatever the working precision."""
    return arb(a) if a[0] else arb(0)


def _odd(a: Dy) -> Dy:
    """The same dyadic with an odd mantissa (exact power checks need it)."""
    m, e = a
    if not m:
        return ZERO
    tz = (m & -m).bit_length() - 1
    return m >> tz, e + tz


def d_int(a: Dy, limit: int = 1 << 20) -> int | None:
    """a as an int when it is a non-negative integer <= limit, else None."""
    m, e = _odd(a)
    if m < 0 or e < 0:
        return None if m else 0
    n = m << e
    return n if n <= limit else None


def exact_power(c: Dy, g: Dy, max_bits: int = 8192) -> Dy | None:
    """c**g for c > 0 and g >= 0 when it is a dyadic of at most max_bits bits, else None.

    g = n / 2**j (n odd when j > 0): c**g is dyadic iff c's odd mantissa is a perfect
    2**j-th power and its exponent a multiple of 2**j."""
    m, e = _odd(c)
    gm, ge = _odd(g)
    if gm == 0:
        return ONE
    n, j = (gm << ge, 0) if ge >= 0 else (gm, -ge)
    for _ in range(j):
        r = math.isqrt(m)
        if r * r != m or e % 2:
            return None
        m, e = r, e // 2
    if m.bit_length() * n > max_bits or abs(e) * n > 1 << 40:
        return None
    return m ** n, e * n


# --------------------------------------------------------------------------- rounding


def round_dyadic(man: int, exp: int, fmt: Fmt, negative_zero: bool = False) -> float:
    """man * 2**exp rounded to nearest-even in fmt: gradual underflow, overflow to inf
    at max + ulp/2 and beyond, -0.0 for a negative underflow. A zero mantissa gives +0.0
    (or -0.0 with negative_zero: the limit of negative values)."""
    if man == 0:
        return -0.0 if negative_zero else 0.0
    neg = man < 0
    m = -man if neg else man
    top = exp + m.bit_length() - 1
    if top > fmt.emax + 1:
        r = math.inf
    elif top < fmt.qmin - 1:  # below half the smallest subnormal: no tie possible
        r = 0.0
    else:
        lsb = max(top - fmt.precision + 1, fmt.qmin)
        if exp >= lsb:
            q = m << (exp - lsb)
        else:
            sh = lsb - exp
            q = m >> sh
            rem = m - (q << sh)
            half = 1 << (sh - 1)
            if rem > half or (rem == half and q & 1):
                q += 1
        if q and lsb + q.bit_length() - 1 > fmt.emax:
            r = math.inf  # the carry (or the value) left the largest binade
        else:
            r = math.ldexp(q, lsb) if q else 0.0
    return -r if neg else r


def same(a: float, b: float) -> bool:
    """Bit-for-bit equality of two floats (sign of zero counts; NaN equals NaN)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _man_exp(v: arb) -> Dy:
    m, e = v.man_exp()
    return int(m), int(e)


def round_ball(v: arb, fmt: Fmt, sign: int = 0) -> float | None:
    """The format value every point of the ball rounds to, or None when its ends round
    apart. sign: the exact value's sign when known from the mathematics (+1 / -1):
    the ball is clipped at 0 on the other side."""
    if not v.is_finite():
        return None
    if v.is_exact():
        return round_dyadic(*_man_exp(v.mid()), fmt)
    lm, le = _man_exp(v.lower())
    hm, he = _man_exp(v.upper())
    if sign > 0 and lm <= 0:
        lm = 0
    if sign < 0 and hm >= 0:
        hm = 0
    a = round_dyadic(lm, le, fmt, sign < 0)
    b = round_dyadic(hm, he, fmt, sign < 0)
    return a if same(a, b) else None


def _grid(d: Dy, fmt: Fmt) -> int:
    """G with 2**G dividing d and every rounding boundary of fmt within 2**G of d
    (midpoints of d's binade, of the one below when d is a power of two, the overflow
    threshold, the subnormal midpoints), so (d, d + 2**G) holds no boundary."""
    m = abs(d[0])
    lsb = d[1] + (m & -m).bit_length() - 1
    ulp = max(d_top(d) - fmt.precision + 1, fmt.qmin)
    return min(lsb, ulp - 2)


def _ball_sign(t: arb) -> int:
    if t.is_finite():
        if t > 0:
            return 1
        if t < 0:
            return -1
    return 0


@dataclass(frozen=True)
class Rounded:
    """value: the correctly rounded result (None: undecided at CAP); route: how it was
    decided ("ball", "exact", "sticky", or "uncertain"); prec: the bits that did it."""

    value: float | None
    route: str
    prec: int


# parts() -> (D exact, T ball at ctx.prec, sign of T or 0, sign of V or 0)
Parts = Callable[[], tuple[Dy, arb, int, int]]


def _decide(d: Dy, t: arb, t_sign: int, v_sign: int, fmt: Fmt, sticky: bool = True
            ) -> tuple[float | None, str]:
    if t.is_exact():
        return round_dyadic(*d_add(d, _man_exp(t.mid())), fmt), "exact"
    if d[0]:
        ts = t_sign or _ball_sign(t)
        if ts and sticky:
            bound = t.abs_upper()
            if bound.is_finite():
                bm, be = _man_exp(bound)
                g = _grid(d, fmt)
                if be + bm.bit_length() <= g:  # |T| < 2**G
                    return round_dyadic(*d_add(d, (ts, g - 1)), fmt), "sticky"
        t = t + d_arb(d)
    return round_ball(t, fmt, v_sign), "ball"


# what a family returns: the exact value (a dyadic, or a rational Fraction), or Parts
Value = Dy | Fraction | Parts


def _rational_parts(v: Fraction) -> Parts:
    """A rational with a non-dyadic denominator: never a boundary, so its ball decides."""
    num, den = (v.numerator, 0), (v.denominator, 0)
    return lambda: (ZERO, d_arb(num) / arb(den), 0, 0)


def _parts(v: Value) -> Parts | Dy:
    if isinstance(v, Fraction):
        return dy(v) if not v.denominator & (v.denominator - 1) else _rational_parts(v)
    return v


def _finish(v: Value, fmt: Fmt, sticky: bool = True) -> Rounded:
    """Ziv's loop: from the format's precision + 40 bits, doubling up to CAP. sticky=False
    (tests only) takes the ball route even where the tail is far below D, to check the
    sticky argument by brute force where the precision can still reach the tail."""
    parts = _parts(v)
    if isinstance(parts, tuple):  # exact dyadic: rounded exactly, ties to even included
        return Rounded(round_dyadic(*parts, fmt), "exact", 0)
    prec = fmt.precision + 40
    while prec <= CAP:
        with ctx.workprec(prec):
            r, route = _decide(*parts(), fmt, sticky)
        if r is not None:
            return Rounded(r, route, prec)
        prec *= 2
    return Rounded(None, "uncertain", CAP)


def _ball(v: Value, prec: int) -> arb:
    """The ball of V = D + T at prec bits (exact values: their exact ball)."""
    parts = _parts(v)
    if isinstance(parts, tuple):
        return d_arb(parts)
    with ctx.workprec(prec):
        d, t, _, _ = parts()
        return t + d_arb(d) if d[0] else t


def _v_sign(d: Dy, t_sign: int) -> int:
    """Sign of D + T when D and T cannot cancel."""
    ds = d_sign(d)
    return t_sign if ds == 0 or ds == t_sign else 0


# --------------------------------------------------------------------------- elementary


def _logistic(a: Dy) -> tuple[arb, arb, arb, arb]:
    """(e, s, sp, l) for a >= 0 at ctx.prec: e = exp(-a), s = sigmoid(-a) = e/(1+e),
    sp = sigmoid(a) = 1/(1+e), l = softplus(-a) = log1p(e)."""
    e = (-d_arb(a)).exp()
    one_e = 1 + e
    return e, e / one_e, 1 / one_e, e.log1p()


def _logs(q: Dy) -> tuple[arb, arb]:
    """(log q, log(1-q)) for 0 < q < 1, each from the argument that is exact."""
    r = d_sub(ONE, q)
    if d_top(q) < -1:  # q < 1/2
        return d_arb(q).log(), (-d_arb(q)).log1p()
    return d_arb(d_sub(q, ONE)).log1p(), d_arb(r).log()


def _pow(m: arb, g: Dy) -> arb:
    """m**g, m > 0 (a ball), g >= 0 or g - 1 (may be negative) exact."""
    n = d_int(g, 1 << 12)
    return m ** n if n is not None else m ** d_arb(g)


def _smoothed(y: Dy, e: Dy | None) -> Dy:
    """The exact smoothed target y (1 - E) + E/2 (y itself without smoothing)."""
    if e is None or not e[0]:
        return y
    return d_add(d_mul(y, d_sub(ONE, e)), d_mul(e, HALF))


# --------------------------------------------------------------------------- families


def _bce_with_logits(x: Dy, y: Dy, w: Dy, p: Dy, grad: bool) -> Value:
    """w (p y softplus(-x) + (1-y) softplus(x)) or its d/dx, as D + T.

    softplus(x) = max(x, 0) + softplus(-|x|), sigmoid(x) = [x > 0] - sign(x) sigmoid(-|x|)
    (sigmoid(0) = 1/2), so with k = 1 - y + p y (the coefficient of softplus(-|x|)):
    loss D = w (p y max(-x, 0) + (1-y) max(x, 0)), T = w k log1p(exp(-|x|));
    grad D = w (1-y) [x > 0] - w p y [x < 0],    T = -sign(x) w k sigmoid(-|x|)."""
    if not w[0]:
        return ZERO
    c = d_sub(ONE, y)
    py = d_mul(p, y)
    wk = d_mul(w, d_add(c, py))
    sx = d_sign(x)
    a = x if sx >= 0 else d_neg(x)
    if grad:
        d = d_mul(w, c) if sx > 0 else (d_neg(d_mul(w, py)) if sx < 0 else ZERO)
        if sx == 0:
            return d_add(d_mul(w, c), d_neg(d_mul(wk, HALF)))
        ts = -sx * d_sign(wk)
    else:
        d = d_mul(w, d_mul(c, x)) if sx >= 0 else d_mul(w, d_mul(py, a))
        ts = d_sign(wk)
    if not wk[0]:
        return d
    vs = _v_sign(d, ts)
    wk_arb = d_arb(wk)

    def parts() -> tuple[Dy, arb, int, int]:
        _, s, _, sp_neg = _logistic(a)
        t = wk_arb * sp_neg if not grad else (-sx) * wk_arb * s
        return d, t, ts, vs

    return parts


def _bce(q: Dy, y: Dy, w: Dy, grad: bool) -> Value:
    """-w (y log q + (1-y) log(1-q)) or its d/dq = w (q - y) / (q (1-q)), 0 < q < 1."""
    if not (0 < d_fraction(q) < 1):
        raise ValueError("the arb oracle takes 0 < q < 1 (the ends are limits)")
    if not w[0]:
        return ZERO
    if grad:
        fq = d_fraction(q)
        return d_fraction(w) * (fq - d_fraction(y)) / (fq * (1 - fq))
    a1 = d_neg(d_mul(w, y))                  # coefficient of log q (< 0)
    a2 = d_neg(d_mul(w, d_sub(ONE, y)))      # coefficient of log(1 - q) (< 0)
    s1, s2 = -d_sign(a1), -d_sign(a2)        # the terms' signs
    vs = s1 if s2 in (0, s1) else (s2 if s1 == 0 else 0)
    b1, b2 = d_arb(a1), d_arb(a2)

    def parts() -> tuple[Dy, arb, int, int]:
        lq, lr = _logs(q)
        return ZERO, b1 * lq + b2 * lr, vs, vs

    return parts


def _alpha_t(y: Dy, alpha: Dy | None) -> Dy:
    if alpha is None:
        return ONE
    return d_add(d_mul(alpha, y), d_mul(d_sub(ONE, alpha), d_sub(ONE, y)))


def _focal_domain(y: Dy, w: Dy) -> None:
    if not (0 <= d_fraction(y) <= 1) or d_sign(w) < 0:
        raise ValueError("focal families: 0 <= y <= 1 and w >= 0")


def _focal_with_logits(x: Dy, y: Dy, g: Dy, alpha: Dy | None, w: Dy, grad: bool
                       ) -> Value:
    """K (1 - p_t)**g bce(x, y), K = w alpha_t, p_t = sigmoid(x) y + sigmoid(-x) (1-y).

    Written for x = a >= 0 after the mirror x -> -x, y -> 1-y (p_t, bce and alpha_t are
    unchanged; d/dx changes sign). With e = exp(-a), s = e/(1+e), sp = 1/(1+e),
    l = log1p(e), c = 1 - y:  m = 1 - p_t = y s + c sp,  bce = c a + l,
        loss = K m**g bce,
        grad = K (g m**(g-1) (1-2y) sp s bce + m**g (c - s))
    (dm/dx = (1-2y) sp s, d bce/dx = sp - y = c - s). For a large (s << c) and c**g an exact
    dyadic C, m = c (1+u) with u = (2y-1) s / c and P = (1+u)**g = exp(g log1p u):
        loss = K C c a + K C ((P-1) c a + P l)
        grad = K C c + K C (g P/(1+u) (1-2y) sp s bce / c + (P-1) c - P s)
    so the exact limit D = K C c a (K C c) is split off and the tail T stays relative."""
    _focal_domain(y, w)
    k = d_mul(w, _alpha_t(y, alpha))
    if not k[0]:
        return ZERO
    if not g[0]:  # (1 - p_t)**0 = 1: bce_with_logits with weight K
        return _bce_with_logits(x, y, k, ONE, grad)
    flip = d_sign(x) < 0
    a, yy = (d_neg(x), d_sub(ONE, y)) if flip else (x, y)
    sg = -1 if grad and flip else 1
    if grad and not a[0] and d_eq(yy, HALF):
        return ZERO  # m = 1/2 and sp - y = 0: both terms vanish
    c = d_sub(ONE, yy)
    one_2y = d_sub(ONE, d_add(yy, yy))
    gm1 = d_sub(g, ONE)
    ks = d_sign(k)
    if not grad:
        vs = ks
    elif not yy[0]:
        vs = ks * sg           # y = 0: both terms > 0
    elif not c[0]:
        vs = -ks * sg          # y = 1: both terms < 0
    else:
        vs = 0
    big = c[0] and a[0] and d_top(a) >= 5 and \
        math.ldexp(a[0], a[1]) > 60 + 0.7 * max(0, -d_top(c))
    power = exact_power(c, g) if big else None
    k_arb, g_arb, c_arb = d_arb(k), d_arb(g), d_arb(c)
    yy_arb, one_2y_arb, a_arb = d_arb(yy), d_arb(one_2y), d_arb(a)

    if power is not None:  # s < exp(-60) c: |u| < 2**-86
        kc = d_arb(d_mul(k, power))
        d = d_mul(d_mul(k, power), d_mul(c, a) if not grad else c)
        d = d_neg(d) if sg < 0 else d

        def split() -> tuple[Dy, arb, int, int]:
            _, s, sp, lp = _logistic(a)
            u = d_arb(d_neg(one_2y)) * s / c_arb
            lg = g_arb * u.log1p()
            big_p, pm1 = lg.exp(), lg.expm1()
            ca = c_arb * a_arb
            if not grad:
                t = kc * (pm1 * ca + big_p * lp)
            else:
                t = pm1 * c_arb - big_p * s
                if one_2y[0]:
                    t += g_arb * big_p / (1 + u) * one_2y_arb * sp * s * (ca + lp) / c_arb
                t = sg * kc * t
            return d, t, 0, vs

        return split

    def direct() -> tuple[Dy, arb, int, int]:
        _, s, sp, lp = _logistic(a)
        m = arb(0.5) if d_eq(yy, HALF) else yy_arb * s + c_arb * sp
        bce = c_arb * a_arb + lp
        if not grad:
            return ZERO, k_arb * _pow(m, g) * bce, vs, vs
        mg1 = _pow(m, gm1)
        t = mg1 * m * (c_arb - s)  # sp - y = c - s: exact-relative for y = 1
        if one_2y[0]:
            t += g_arb * mg1 * one_2y_arb * sp * s * bce
        return ZERO, sg * k_arb * t, vs, vs

    return direct


def _focal_probability(q: Dy, y: Dy, g: Dy, alpha: Dy | None, w: Dy, grad: bool
                       ) -> Value:
    """K m**g bce(q, y), m = 1 - p_t = y (1-q) + (1-y) q (exact), p_t = q y + (1-q)(1-y);
    grad = K (g m**(g-1) (1-2y) bce + m**g (q - y) / (q (1-q)))  (dm/dq = 1 - 2y,
    d bce/dq = (q - y) / (q (1-q))). Exact cases: K = 0; g = 0 (bce with weight K);
    y = 1/2 gradients, K 2**-g (q - 1/2) / (q (1-q)): rational for an integer g."""
    _focal_domain(y, w)
    if not (0 < d_fraction(q) < 1):
        raise ValueError("the arb oracle takes 0 < q < 1 (the ends are limits)")
    k = d_mul(w, _alpha_t(y, alpha))
    if not k[0]:
        return ZERO
    if not g[0]:
        return _bce(q, y, k, grad)
    r = d_sub(ONE, q)
    c = d_sub(ONE, y)
    m = d_add(d_mul(y, r), d_mul(c, q))
    one_2y = d_sub(ONE, d_add(y, y))
    n = d_int(g, 1 << 12)
    if grad and not one_2y[0] and n is not None:
        fq = d_fraction(q)
        return (d_fraction(k) * Fraction(1, 2 ** n) * (fq - Fraction(1, 2))
                / (fq * (1 - fq)))
    ks = d_sign(k)
    vs = ks if not grad else (ks if not y[0] else (-ks if not c[0] else 0))
    k_arb, g_arb, m_arb, y_arb, c_arb = (d_arb(v) for v in (k, g, m, y, c))
    gm1 = d_sub(g, ONE)
    q_y, q_r = d_arb(d_sub(q, y)), d_arb(d_mul(q, r))  # exact: (q - y) / (q r) below

    def parts() -> tuple[Dy, arb, int, int]:
        lq, lr = _logs(q)
        bce = -(y_arb * lq + c_arb * lr)
        if not grad:
            return ZERO, k_arb * _pow(m_arb, g) * bce, vs, vs
        mg1 = _pow(m_arb, gm1)
        t = mg1 * m_arb * (q_y / q_r)
        if one_2y[0]:
            t += g_arb * mg1 * d_arb(one_2y) * bce
        return ZERO, k_arb * t, vs, vs

    return parts


# --------------------------------------------------------------------------- public API


def _result(v: Value, dtype: str, ball: int | None, sticky: bool = True) -> Rounded | arb:
    return _finish(v, FORMATS[dtype], sticky) if ball is None else _ball(v, ball)


def _target(y: Any, smoothing: Any) -> Dy:
    return _smoothed(dy(y), dy(smoothing) if smoothing is not None else None)


# Each takes finite numbers (converted exactly), the target dtype and an optional label
# smoothing E (the target becomes y (1-E) + E/2, formed exactly), and returns Rounded;
# with ball=PREC, the ball of the exact value at PREC bits instead (to rank search
# candidates by their distance to a midpoint); sticky=False: see _finish.


def bce_with_logits(x: Any, y: Any, w: Any = 1.0, p: Any = 1.0, *, grad: bool = False,
                    dtype: str = "float32", smoothing: Any = None, ball: int | None = None,
                    sticky: bool = True) -> Any:
    """bce_with_logits (DESIGN.md section 3) or its d/dx."""
    return _result(_bce_with_logits(dy(x), _target(y, smoothing), dy(w), dy(p), grad),
                   dtype, ball, sticky)


def bce(q: Any, y: Any, w: Any = 1.0, *, grad: bool = False, dtype: str = "float32",
        smoothing: Any = None, ball: int | None = None, sticky: bool = True) -> Any:
    """bce on a probability 0 < q < 1 or its d/dq."""
    return _result(_bce(dy(q), _target(y, smoothing), dy(w), grad), dtype, ball, sticky)


def focal_with_logits(x: Any, y: Any, gamma: Any = 2.0, alpha: Any = None, w: Any = 1.0, *,
                      grad: bool = False, dtype: str = "float32", smoothing: Any = None,
                      ball: int | None = None, sticky: bool = True) -> Any:
    """The focal loss on logits (DESIGN.md section 10) or its d/dx."""
    al = dy(alpha) if alpha is not None else None
    return _result(_focal_with_logits(dy(x), _target(y, smoothing), dy(gamma), al, dy(w),
                                      grad), dtype, ball, sticky)


def focal_probability(q: Any, y: Any, gamma: Any = 2.0, alpha: Any = None, w: Any = 1.0, *,
                      grad: bool = False, dtype: str = "float32", smoothing: Any = None,
                      ball: int | None = None, sticky: bool = True) -> Any:
    """The focal loss on a probability 0 < q < 1 (reference.focal_probability) or d/dq."""
    al = dy(alpha) if alpha is not None else None
    return _result(_focal_probability(dy(q), _target(y, smoothing), dy(gamma), al, dy(w),
                                      grad), dtype, ball, sticky)


# --------------------------------------------------------------------------- hard cases


def is_midpoint(v: Dy, dtype: str) -> bool:
    """v lies exactly halfway between two consecutive finite values of dtype."""
    fmt = FORMATS[dtype]
    if not v[0]:
        return False
    e = _odd(v)[1]
    ulp = max(d_top(v) - fmt.precision + 1, fmt.qmin)
    return e == ulp - 1 and d_top(v) <= fmt.emax


def midpoint_distance(v: arb, dtype: str) -> float:
    """log2 of |v - M| / |v|, M the nearest midpoint of dtype to the ball's centre
    (for ranking search candidates; -inf when the centre is a midpoint)."""
    fmt = FORMATS[dtype]
    man, exp = _man_exp(v.mid())
    if not man:
        return 0.0
    ulp = max(exp + abs(man).bit_length() - 1 - fmt.precision + 1, fmt.qmin)
    if exp >= ulp:
        return 0.0  # a representable centre: half an ulp from the midpoints
    f = Fraction(abs(man)) * Fraction(2) ** (exp - ulp)  # in ulps
    dist = abs(f - (math.floor(f) + Fraction(1, 2)))
    if not dist:
        return -math.inf
    return math.log2(dist) - math.log2(f)


# --------------------------------------------------------------------------- softmax rows
#
# A row of K logits l (finite, or -inf: a masked class), coefficients a_k = w_k p_k with
# p = (1-E) t + E/K (t one-hot for a class index, else the given probabilities; w = 1
# without class weights), W = sum_k a_k. With m = max l, the shifts d_k = l_k - m <= 0
# (exact dyadics), Z = {k : d_k = 0} (the classes tied at the top, z = |Z| >= 1) and
# delta = sum_{d_k < 0} exp(d_k), the sum of exponentials is exp(m) (z + delta) and
#     L = log(z + delta) = log z + log1p(delta / z)
#     logsumexp     = m + L
#     log_softmax_j = d_j - L
#     loss          = sum_k a_k (m - l_k) + W L                 (= sum_k a_k (lse - l_k))
#     grad_j        = -a_j + W exp(d_j) / (z + delta)           (d_j < 0)
#                   = (W / z - a_j) - W delta / (z (z + delta))  (d_j = 0)
# Each is "exact rational D + ball T" with T free of cancellation: log1p(delta / z) stays
# relative for delta = exp(-1e10), and for tied tops beside logits far below (z = 2,
# delta tiny) the tiny excess is kept apart from the rational W / z - a_j. delta = 0
# (equal finite logits, or a single one) leaves D exact except for log z (z >= 2). A
# masked class has softmax 0: log_softmax -inf, gradient -a_j exactly, loss term 0 when
# a_j = 0 and sign(a_j) inf otherwise (opposite signs: NaN); every class masked: NaN
# (logsumexp -inf).

SoftRow = tuple[Rounded, ...]


def _frac(v: Any) -> Fraction:
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"the arb oracle takes finite coefficients only, got {v!r}")
    return Fraction(f)


def _is_dyadic(f: Fraction) -> bool:
    return not f.denominator & (f.denominator - 1)


def _frac_ball(f: Fraction) -> arb:
    """f at ctx.prec (exact when dyadic)."""
    if _is_dyadic(f):
        return d_arb(dy(f))
    return arb(f.numerator) / arb(f.denominator)


class _Row:
    """The finite logits of one row as exact shifts from the max, and (per working
    precision) the balls the forms above use."""

    def __init__(self, logits: Any) -> None:
        vals: list[float | None] = []
        for v in np.asarray(logits, dtype=np.float64).ravel().tolist():
            if v == -math.inf:
                vals.append(None)
            elif not math.isfinite(v):
                raise ValueError(f"the arb oracle takes finite or -inf logits, got {v!r}")
            else:
                vals.append(v)
        self.k = len(vals)
        self.fin = [j for j, v in enumerate(vals) if v is not None]
        if not self.fin:
            return
        m = max(v for v in vals if v is not None)  # float comparisons are exact
        self.m: Dy = dy(m)
        self.d: dict[int, Dy] = {j: d_sub(dy(vals[j]), self.m) for j in self.fin}
        self.z = sum(1 for j in self.fin if not self.d[j][0])
        self.negs = [j for j in self.fin if self.d[j][0]]
        self._cache: dict[int, tuple[dict[int, arb], arb, arb, arb]] = {}

    def balls(self) -> tuple[dict[int, arb], arb, arb, arb]:
        """(exp(d_j) for d_j < 0, delta, z + delta, L) at ctx.prec."""
        p = ctx.prec
        c = self._cache.get(p)
        if c is None:
            exps = {j: d_arb(self.d[j]).exp() for j in self.negs}
            delta = arb(0)
            for e in exps.values():
                delta += e
            z = arb(self.z)
            big_l = z.log() + (delta / z).log1p() if self.z > 1 else delta.log1p()
            c = self._cache[p] = (exps, delta, z + delta, big_l)
        return c

    @property
    def has_tail(self) -> bool:
        """L > 0: more than one finite class."""
        return len(self.fin) > 1


def _row_value(d: Fraction, tail: Callable[[], arb] | None, t_sign: int) -> Value:
    """V = d + tail(): a Value for _finish (dyadic d: the sticky route can decide it)."""
    if tail is None:
        return d
    if _is_dyadic(d):
        dd = dy(d)
        vs = _v_sign(dd, t_sign)
        return lambda: (dd, tail(), t_sign, vs)
    ds = (d > 0) - (d < 0)
    vs = t_sign if ds == t_sign else 0
    return lambda: (ZERO, _frac_ball(d) + tail(), 0, vs)


def _coefficients(k: int, target: Any, weight: Any, smoothing: Any) -> list[Fraction]:
    """a_k = w_k ((1-E) t_k + E/K), exactly."""
    w = [Fraction(1)] * k if weight is None else [_frac(v) for v in weight]
    if len(w) != k:
        raise ValueError(f"{len(w)} weights for {k} classes")
    if isinstance(target, int | np.integer) and not isinstance(target, bool | np.bool_):
        if not 0 <= int(target) < k:
            raise ValueError(f"class index {target} outside [0, {k})")
        t = [Fraction(int(j == int(target))) for j in range(k)]
    else:
        t = [_frac(v) for v in np.asarray(target, dtype=np.float64).ravel().tolist()]
        if len(t) != k:
            raise ValueError(f"{len(t)} target probabilities for {k} classes")
    e = Fraction(0) if smoothing is None else _frac(smoothing)
    if not 0 <= e <= 1:
        raise ValueError(f"label smoothing must be in [0, 1], got {smoothing!r}")
    return [wk * ((1 - e) * tk + e / k) for wk, tk in zip(w, t, strict=True)]


def _limit(v: float) -> Rounded:
    return Rounded(v, "limit", 0)


def _fsign(f: Fraction) -> int:
    return (f > 0) - (f < 0)


def _loss_value(row: _Row, a: list[Fraction]) -> Value | float:
    if not row.fin:
        return math.nan
    masked = {_fsign(a[j]) for j in range(row.k) if j not in row.d} - {0}
    if masked:
        return (math.inf if masked.pop() > 0 else -math.inf) if len(masked) == 1 else math.nan
    d = sum((a[j] * -d_fraction(row.d[j]) for j in row.fin), Fraction(0))
    w = sum(a, Fraction(0))
    if not w or not row.has_tail:
        return d
    return _row_value(d, lambda: _frac_ball(w) * row.balls()[3], _fsign(w))


def _grad_values(row: _Row, a: list[Fraction]) -> list[Value | float]:
    if not row.fin:
        return [math.nan] * row.k
    w = sum(a, Fraction(0))
    ws = _fsign(w)
    balls: dict[int, tuple[arb, arb]] = {}

    def scale() -> tuple[arb, arb]:
        """(W / (z + delta), W delta / (z (z + delta))) at ctx.prec."""
        c = balls.get(ctx.prec)
        if c is None:
            _, delta, zd, _ = row.balls()
            wz = _frac_ball(w) / zd
            c = balls[ctx.prec] = (wz, wz * delta / row.z)
        return c

    out: list[Value | float] = []
    for j in range(row.k):
        if j not in row.d or not w:
            out.append(-a[j])
        elif row.d[j][0]:  # d_j < 0: -a_j + W exp(d_j) / (z + delta)
            out.append(_row_value(-a[j], lambda j=j: scale()[0] * row.balls()[0][j], ws))
        elif not row.negs:  # equal finite logits: softmax is exactly 1/z
            out.append(w / row.z - a[j])
        else:  # tied at the top: (W/z - a_j) - W delta / (z (z + delta))
            out.append(_row_value(w / row.z - a[j], lambda: -scale()[1], -ws))
    return out


def _lse_value(row: _Row) -> Value | float:
    if not row.fin:
        return -math.inf
    if not row.has_tail:
        return row.m
    m = row.m
    return lambda: (m, row.balls()[3], 1, _v_sign(m, 1))


def _log_softmax_values(row: _Row) -> list[Value | float]:
    if not row.fin:
        return [math.nan] * row.k
    out: list[Value | float] = []
    for j in range(row.k):
        if j not in row.d:
            out.append(-math.inf)
        elif not row.has_tail:
            out.append(row.d[j])
        else:
            dj = row.d[j]
            out.append(lambda dj=dj: (dj, -row.balls()[3], -1, -1))
    return out


def _row_result(v: Value | float, dtype: str, ball: int | None, sticky: bool) -> Any:
    if isinstance(v, float):  # a limit (inf, NaN): no ball to give
        return _limit(v) if ball is None else arb(v) if not math.isnan(v) else arb("nan")
    return _result(v, dtype, ball, sticky)


def cross_entropy(logits: Any, target: Any, weight: Any = None, *, smoothing: Any = None,
                  grad: bool = False, dtype: str = "float32", ball: int | None = None,
                  sticky: bool = True) -> Any:
    """sum_k a_k (logsumexp(l) - l_k) of one row (target an int class index or K
    probabilities, weight K class weights or None, smoothing E) as Rounded; grad=True:
    the K gradient components as a tuple of Rounded. ball=PREC: the ball(s) instead."""
    row = _Row(logits)
    a = _coefficients(row.k, target, weight, smoothing)
    if grad:
        return tuple(_row_result(v, dtype, ball, sticky) for v in _grad_values(row, a))
    return _row_result(_loss_value(row, a), dtype, ball, sticky)


def logsumexp(logits: Any, *, dtype: str = "float32", ball: int | None = None,
              sticky: bool = True) -> Any:
    """log sum_k exp(l_k) of one row as Rounded (-inf when every logit is -inf)."""
    return _row_result(_lse_value(_Row(logits)), dtype, ball, sticky)


def log_softmax(logits: Any, *, dtype: str = "float32", ball: int | None = None,
                sticky: bool = True) -> Any:
    """l_j - logsumexp(l) for each j, a tuple of Rounded."""
    return tuple(_row_result(v, dtype, ball, sticky)
                 for v in _log_softmax_values(_Row(logits)))
