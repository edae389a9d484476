"""Certified focal loss on logits (DESIGN.md section 10), by rigorous interval arithmetic.

    focal_with_logits(x, y, gamma, alpha, w) = w * alpha_t * (1 - p_t)**gamma * bce(x, y)
    p_t = sigmoid(x) y + sigmoid(-x) (1-y),  alpha_t = alpha y + (1-alpha)(1-y) (1: None),
    bce(x, y) = y softplus(-x) + (1-y) softplus(x);  the gradient is d/dx.

The loss is a product of transcendental factors, so it is not an engine.Linear form.
It is certified like engine.evaluate certifies bce: the result is a representative tuple
R with |R - V| <= 2**-110 |V| that rounds like the exact value V in every format
(float16, bfloat16, float32, float64), so formats.round_to(R, dtype) is correctly rounded.

Domain (anything else is a ValueError with a one-line message, never a guess): gamma
finite >= 0; alpha finite, or None; 0 <= y <= 1; weight finite >= 0; x any value.
NaN in x, y or weight gives NaN (checked before the domain of y and weight).

How a value is certified
------------------------
The symmetry focal(x, y, alpha) = focal(-x, 1-y, 1-alpha) (alpha_t is unchanged; the
gradient changes sign) reduces everything to x = a >= 0. With K = w alpha_t (exact),
c = 1 - y, e = exp(-a), s- = sigmoid(-a) = e/(1+e), s+ = sigmoid(a) = 1/(1+e),
l = log1p(e):

    m = 1 - p_t = y s- + c s+             bce = c a + l           (loss = K m**g bce)
    grad = K [g m**(g-1) (1-2y) s+ s- bce + m**g (c s+ - y s-)]

m and bce are sums of non-negative terms (no cancellation for 0 <= y <= 1); the two
gradient terms have one sign for hard labels.

log m, needed for non-integer powers, is taken cancellation-free where it can be:
-(a + l) for c = 0, -l for c = 1. c s+ - y s- is s+ (y = 0), -s- (y = 1),
(1-e)/(2(1+e)) (y = 1/2, 1-e at the precision its cancellation needs), else a plain
difference (soft-label gradients may cancel: the escalation below pays for it).
Each candidate is an interval [lo, hi] that provably contains V, computed with
libmp's directed roundings (the machinery under mpmath.iv); every transcendental result
(exp, log, ln 2) is widened by 4 more units of its precision, so the bound does not even
rest on mpmath's last-bit accuracy. log1p(e) is [e - e**2/2, e] when e < 2**-(q+4)
(rigorous for 0 <= e < 1, and that narrow) and log(1 + e) with 1 + e at the precision
the cancellation needs otherwise.

Ziv: at working precision wp (128, 256, ... up to engine.MAX_PRECISION) the interval is
accepted when engine._decided holds for it, widened by a hair so that V lies in the
OPEN interval _decided assumes; else wp doubles; past the cap ReferenceUncertainError.

Huge logits: for a -> inf (c > 0) the value tends to an exact dyadic D (the loss to
K c**(g+1) a, the gradient to K c**(g+1), when c**g is an exact dyadic: `exact_power`)
plus a tail T of relative size about a e, which no precision can add when a = 1e10. Then
the value is computed as D + T, with T from cancellation-free expansions in
u = (2y-1) s- / c (so that m = c (1+u)):

    loss:  T = K c**g [expm1(g log1p u) c a + (1+u)**g l]
    grad:  T = K c**g [g (1+u)**(g-1) (1-2y) s+ s- bce / c + c expm1(g log1p u)
                       - (1+u)**g s-]

(series with rigorous remainders for the tiny log1p/expm1 arguments; log1p u = -l when
c = 1), and when T's interval has one sign and lies below the rounding grid around D, V
rounds like D + sign(T) 2**(k-1) (the engine's sticky tail, engine._sticky_exponent):
certified at the first precision, whatever the exponent of e.

Exact cases: gamma = 0 is bce_with_logits with weight K (engine.evaluate of the same
linear form, so identical tuples; infinite x included); K = 0 gives 0; the gradient at
x = 0 with y = 1/2 is 0. Limits for infinite x (the other arguments fixed), from the
forms above with a -> inf (mirror for -inf):
    loss:  c = 0 -> 0 (K m**g l, both vanish);  c > 0 -> sign(K) inf  (K c**(g+1) a)
    grad:  c = 0 -> 0;  c > 0 -> K c**(g+1)  (exact when dyadic, else certified)
so at -inf the loss is 0 for y = 0, sign(K) inf otherwise, and the gradient -K y**(g+1).

Cost: about 15-20k points/s per core (scalar path, moderate x, hard or soft labels,
loss or gradient), huge |x| included: they certify at the first precision. Escalation
happens only where the value really sits near a rounding boundary: soft-label
gradients next to their zero (256 bits), or a tiny gamma (gamma = 2**-1000 puts
m**gamma within 2**-1000 of 1, so V next to the dyadic bce part: 1-2k bits). An mpf
gamma below about 2**-60000 would exhaust MAX_PRECISION there and raise.

Family names (families.focal_op): "focal_with_logits:gamma=G:alpha=A", the numbers in
`format_number`'s canonical spelling ("2", "0.5", "0.25", "-1.5", or "MANpEXP" for a
value that is not a float64), A "none" for no alpha.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from mpmath import libmp

from . import exact
from .bce_forms import logits_form
from .engine import (
    MAX_PRECISION,
    SIGMOID_NEG,
    ReferenceUncertainError,
    _decided,
    _sticky_exponent,
    evaluate,
    magnitude_bound,
)
from .exact import HALF, INF, NAN, NINF, ONE, ZERO, Tuple

PREFIX = "focal_with_logits"
START_PRECISION = 128

_F = libmp.round_floor
_C = libmp.round_ceiling
_N = libmp.round_nearest
_add = libmp.mpf_add
_mul = libmp.mpf_mul
_div = libmp.mpf_div
_msb = exact.msb
_neg = exact.neg

Interval = tuple[Tuple, Tuple]  # (lo, hi), finite, lo <= hi
_ZI = (ZERO, ZERO)
_ONE_I = (ONE, ONE)


# --------------------------------------------------------------------------- parameters


def _number(value: Any, what: str, prefix: str = PREFIX) -> Tuple:
    try:
        return exact.to_tuple(value)
    except TypeError as e:
        raise ValueError(f"{prefix}: {what} must be a number, got {value!r}") from e


def _given(value: Any, t: Tuple) -> str:
    return _shown(t) if isinstance(value, tuple) else repr(value)


def parameters(gamma: Any, alpha: Any, prefix: str = PREFIX) -> tuple[Tuple, Tuple | None]:
    """gamma and alpha as exact tuples (alpha None stays None); ValueError off the domain,
    naming the family `prefix`."""
    g = _number(gamma, "gamma", prefix)
    if g == NAN or exact.is_inf(g) or exact.sign(g) < 0:
        raise ValueError(f"{prefix}: gamma must be finite and >= 0, got {_given(gamma, g)}")
    if alpha is None:
        return g, None
    al = _number(alpha, "alpha", prefix)
    if al == NAN or exact.is_inf(al):
        raise ValueError(f"{prefix}: alpha must be finite (or None), got {_given(alpha, al)}")
    return g, al


def format_number(t: Tuple) -> str:
    """Canonical exact spelling: an integer, a float64 repr, or MANpEXP (MAN * 2**EXP)."""
    if t == ZERO:
        return "0"
    try:
        f = libmp.to_float(t, rnd=_N)
    except OverflowError:
        f = math.inf
    if math.isfinite(f) and libmp.from_float(f) == t:
        return str(int(f)) if f.is_integer() and abs(f) < 2.0 ** 53 else repr(f)
    s, man, e, _ = t
    return f"{'-' if s else ''}{man}p{e}"


_MANEXP = re.compile(r"(-?)([0-9]+)p(-?[0-9]+)")


def parse_number(text: str) -> Tuple:
    """Inverse of format_number (any spelling float() takes is read; callers check that
    the spelling was the canonical one)."""
    if m := _MANEXP.fullmatch(text):
        t = libmp.from_man_exp(int(m.group(2)), int(m.group(3)))
        return _neg(t) if m.group(1) else t
    return libmp.from_float(float(text))


def op_name(gamma: Any = 2, alpha: Any = None, prefix: str = PREFIX) -> str:
    """The canonical family name for (gamma, alpha), e.g. focal_with_logits:gamma=2:alpha=none
    (`prefix`: focal_prob's family shares the spelling)."""
    g, al = parameters(gamma, alpha, prefix)
    a_text = "none" if al is None else format_number(al)
    return f"{prefix}:gamma={format_number(g)}:alpha={a_text}"


def parse_op(name: str, prefix: str = PREFIX, api: str = "reference.focal_op"
             ) -> tuple[Tuple, Tuple | None]:
    """(gamma, alpha) of a canonical focal family name; ValueError for anything else."""
    parts = name.split(":")
    usage = f"{prefix}:gamma=G:alpha=A (A a number or none; see {api})"
    if len(parts) != 3 or parts[0] != prefix or not parts[1].startswith("gamma=") or \
            not parts[2].startswith("alpha="):
        raise ValueError(f"malformed focal op name {name!r}; expected {usage}")
    try:
        g = parse_number(parts[1][len("gamma="):])
        a_text = parts[2][len("alpha="):]
        al = None if a_text == "none" else parse_number(a_text)
    except (ValueError, OverflowError):
        raise ValueError(f"malformed focal op name {name!r}; expected {usage}") from None
    canonical = op_name(g, al, prefix)
    if canonical != name:
        raise ValueError(f"non-canonical focal op name {name!r}; its canonical name is "
                         f"{canonical!r} ({api})")
    return g, al


# --------------------------------------------------------------------------- intervals


def _slack(t: Tuple, p: int) -> Tuple:
    """4 units in the last place of a p-bit t: the widening of a transcendental result."""
    return (0, 1, _msb(t) - p + 3, 1)


def _widen(r: Tuple, p: int) -> Interval:
    """An interval around a nearest-rounded p-bit transcendental result r (nonzero)."""
    d = _slack(r, p)
    return exact.sub(r, d), exact.add(r, d)


def _iadd(a: Interval, b: Interval, p: int) -> Interval:
    return _add(a[0], b[0], p, _F), _add(a[1], b[1], p, _C)


def _ineg(a: Interval) -> Interval:
    return _neg(a[1]), _neg(a[0])


def _iscale(a: Interval, k: Tuple, p: int) -> Interval:
    """k * a, k exact."""
    if k == ZERO:
        return _ZI
    if k[0] == 0:
        return _mul(a[0], k, p, _F), _mul(a[1], k, p, _C)
    return _mul(a[1], k, p, _F), _mul(a[0], k, p, _C)


def _imul(a: Interval, b: Interval, p: int) -> Interval:
    if a[0][0] == 0 and b[0][0] == 0:  # both >= 0 (a zero tuple has sign 0)
        return _mul(a[0], b[0], p, _F), _mul(a[1], b[1], p, _C)
    lows = [_mul(u, v, p, _F) for u in a for v in b]
    highs = [_mul(u, v, p, _C) for u in a for v in b]
    lo = lows[0]
    for t in lows[1:]:
        if libmp.mpf_lt(t, lo):
            lo = t
    hi = highs[0]
    for t in highs[1:]:
        if libmp.mpf_gt(t, hi):
            hi = t
    return lo, hi


def _idiv_pos(a: Interval, b: Interval, p: int) -> Interval:
    """a / b for b > 0."""
    if a[0][0] == 0:
        return _div(a[0], b[1], p, _F), _div(a[1], b[0], p, _C)
    if a[1][0] == 1 or a[1] == ZERO:
        return _div(a[0], b[0], p, _F), _div(a[1], b[1], p, _C)
    return _div(a[0], b[0], p, _F), _div(a[1], b[0], p, _C)


def _iexp(z: Interval, p: int) -> Interval:
    if z[0] == z[1]:
        if z[0] == ZERO:
            return _ONE_I
        return _widen(libmp.mpf_exp(z[0], p, _N), p)
    return (_widen(libmp.mpf_exp(z[0], p, _N), p)[0],
            _widen(libmp.mpf_exp(z[1], p, _N), p)[1])


def _ilog(x: Interval, p: int) -> Interval:
    """log of a positive interval (mpf_log is relatively accurate near 1)."""
    if x[0] == x[1]:
        if x[0] == ONE:
            return _ZI
        return _widen(libmp.mpf_log(x[0], p, _N), p)
    lo = ZERO if x[0] == ONE else _widen(libmp.mpf_log(x[0], p, _N), p)[0]
    hi = ZERO if x[1] == ONE else _widen(libmp.mpf_log(x[1], p, _N), p)[1]
    return lo, hi


def _ln2(p: int) -> Interval:
    return _widen(libmp.mpf_ln2(p, _N), p)


def _magnitude(a: Interval) -> int | None:
    """msb of the larger end in absolute value (None for [0, 0])."""
    ends = [_msb(t) for t in a if t != ZERO]
    return max(ends) if ends else None


def _small_int(g: Tuple, limit: int = 64) -> int | None:
    """g as an int when it is a non-negative integer <= limit."""
    if g == ZERO:
        return 0
    s, man, e, _ = g
    if s or e < 0 or e + man.bit_length() > limit.bit_length():
        return None
    n = man << e
    return n if n <= limit else None


def _ipow(m: Interval, g: Tuple, log_m: Callable[[int], Interval], q: int) -> Interval:
    """m**g for m > 0 and exact g (any sign), relative error far below 2**-q.

    log_m(p) gives log(m) with p bits (cancellation-free where the caller can)."""
    n = _small_int(g)
    if n is not None:
        if n == 0:
            return _ONE_I
        p = q + 8
        lo, hi = ONE, ONE
        blo, bhi = m
        while True:  # binary powering; positive numbers, so each end rounds its way
            if n & 1:
                lo, hi = _mul(lo, blo, p, _F), _mul(hi, bhi, p, _C)
            n >>= 1
            if not n:
                return lo, hi
            blo, bhi = _mul(blo, blo, p, _F), _mul(bhi, bhi, p, _C)
    p = q + 8
    lg = log_m(p)
    big = _magnitude(lg)
    if big is None:
        return _ONE_I
    extra = max(0, _msb(g) + big + 2)
    if extra:  # g log m is large: its absolute error must still be below 2**-q
        lg = log_m(p + extra)
    return _iexp(_iscale(lg, g, p + extra), p)


def _series_ok(t: Tuple, p: int, f: Callable[[Tuple, int, int], Tuple], rem: int
               ) -> Interval:
    """[S - err, S + err] around the k-term series S = f(t, k, pp) of a function
    with f(0) = 0, |t| <= 2**-16: k chosen so that the remainder, below
    2**(rem_k) = 2**((k+1)(msb t + 1) + rem), and the rounding error are below
    2**(msb t - p - 10)."""
    s = -(_msb(t) + 1)  # |t| < 2**-s
    k = -(-(p + 14 + rem) // s)
    pp = p + 16 + k.bit_length()
    value = f(t, k, pp)
    err = (0, 1, _msb(t) - p - 9, 1)
    return exact.sub(value, err), exact.add(value, err)


def _log1p_terms(t: Tuple, k: int, pp: int) -> Tuple:
    total, power = ZERO, ONE
    for i in range(1, k + 1):
        power = _mul(power, t, pp, _N)
        term = libmp.mpf_div(power, libmp.from_int(i), pp, _N)
        total = _add(total, term if i & 1 else _neg(term), pp, _N)
    return total


def _expm1_terms(t: Tuple, k: int, pp: int) -> Tuple:
    total, term = ZERO, ONE
    for i in range(1, k + 1):
        term = libmp.mpf_div(_mul(term, t, pp, _N), libmp.from_int(i), pp, _N)
        total = _add(total, term, pp, _N)
    return total


def _monotone_small(x: Interval, p: int, terms: Callable[[Tuple, int, int], Tuple],
                    rem: int) -> Interval:
    """An increasing f (log1p, expm1) with f(0) = 0 on a tiny interval."""
    ends = []
    for i, t in enumerate(x):
        if t == ZERO:
            ends.append(ZERO)
        else:
            ends.append(_series_ok(t, p, terms, rem)[i])
    return ends[0], ends[1]


def _log1p_small(u: Interval, p: int) -> Interval:
    # remainder of the alternating/negative series: |t|**(k+1) / ((k+1)(1-|t|)) < 2|t|**(k+1)
    return _monotone_small(u, p, _log1p_terms, 1)


def _expm1_small(z: Interval, p: int) -> Interval:
    # remainder: |z|**(k+1)/(k+1)! e**|z| < 2 |z|**(k+1)
    return _monotone_small(z, p, _expm1_terms, 1)


# --------------------------------------------------------------------------- exact parts


def exact_power(c: Tuple, g: Tuple, max_bits: int = 4096) -> Tuple | None:
    """c**g as an exact tuple (c > 0 and g >= 0 dyadic), or None when it is irrational
    or its mantissa would exceed max_bits (a value with that many significant bits is
    nowhere near a rounding boundary's short pattern: Ziv decides it directly)."""
    if g == ZERO or c == ONE:
        return ONE
    _, man, ce, bc = c
    _, gman, ge, _ = g
    gman = int(gman)  # exponents stay Python ints (math.ldexp in round_to needs them)
    n, j = (gman << ge, 0) if ge >= 0 else (gman, -ge)  # g = n / 2**j, n odd when j > 0
    root, re_ = man, int(ce)
    if j:
        if re_ % (1 << j):
            return None
        if man != 1:
            if (1 << j) > bc:
                return None
            for _ in range(j):
                r = math.isqrt(root)
                if r * r != root:
                    return None
                root = r
        re_ >>= j
    if root == 1:
        return (0, 1, re_ * n, 1)
    if root.bit_length() * n > max_bits:
        return None
    return libmp.from_man_exp(root ** n, re_ * n)


# --------------------------------------------------------------------------- evaluation


def _logistic(a: Tuple, q: int) -> tuple[Interval, Interval, Interval, Interval]:
    """(e, s-, s+, l) for a >= 0: exp(-a), e/(1+e), 1/(1+e), log1p(e)."""
    if a == ZERO:
        e = _ONE_I
        half = (HALF, HALF)
        return e, half, half, _ln2(q + 8)
    e = _iexp((_neg(a), _neg(a)), q + 8)
    one_e = (_add(ONE, e[0], q + 8, _F), _add(ONE, e[1], q + 8, _C))
    sm = _idiv_pos(e, one_e, q + 8)
    sp = _idiv_pos(_ONE_I, one_e, q + 8)
    if _msb(e[1]) < -(q + 4):
        # 0 <= e < 1: e - e**2/2 <= log1p(e) <= e, and e/2 < 2**-(q+5) makes it narrow
        sq = libmp.mpf_shift(_mul(e[0], e[0], q + 8, _C), -1)
        lp = (_add(e[0], _neg(sq), q + 8, _F), e[1])
    else:
        p = q + 8 + max(0, -_msb(e[0]))  # 1 + e to within 2**-(q+8) e
        lp = _ilog((_add(ONE, e[0], p, _F), _add(ONE, e[1], p, _C)), q + 8)
    return e, sm, sp, lp


def _one_minus_exp(a: Tuple, q: int) -> Interval:
    """1 - exp(-a) for a > 0, to q relative bits despite the cancellation for tiny a."""
    p = q + 8 + max(0, -_msb(a))
    e = _iexp((_neg(a), _neg(a)), p)
    return _add(ONE, _neg(e[1]), p, _F), _add(ONE, _neg(e[0]), p, _C)


class _Point:
    """One finite point, mirrored to a = |x| >= 0; parts(q) -> (D, T interval)."""

    def __init__(self, grad: bool, a: Tuple, y: Tuple, g: Tuple, k: Tuple) -> None:
        self.grad, self.a, self.y, self.g, self.k = grad, a, y, g, k
        self.c = exact.sub(ONE, y)
        self.one_minus_2y = exact.sub(ONE, exact.add(y, y))
        self.gm1 = exact.sub(g, ONE)
        self.power = None  # c**g exact, when the D + T split is used
        if self.c != ZERO and a != ZERO:
            b = magnitude_bound(SIGMOID_NEG, a)  # e < 2**b
            gb = max(0, _msb(g) + 2)
            if b - _msb(self.c) + gb <= -64:
                self.power = exact_power(self.c, g)
        # the precision margin: powers amplify relative errors by g, logs of small
        # labels are larger numbers
        margin = 24 + max(0, _msb(g) + 1)
        for t in (self.c, y):
            if t not in (ZERO, ONE):
                margin += max(0, -_msb(t)).bit_length()
        self.margin = margin

    # log(m) for the non-integer powers, cancellation-free where it can be
    def _log_m(self, m: Interval, l1: Interval) -> Callable[[int], Interval]:
        a, c, y = self.a, self.c, self.y
        if c == ZERO:  # m = s- :  log m = -(a + l)
            return lambda p: _ineg(_iadd((a, a), l1, p))
        if c == ONE:   # m = s+ :  log m = -l
            return lambda p: _ineg(l1)
        if y == HALF:  # m = 1/2
            return lambda p: _ineg(_ln2(p))
        return lambda p: _ilog(m, p)

    def parts(self, q: int) -> tuple[Tuple, Interval]:
        if self.power is not None:
            return self._split(q)
        return ZERO, self._direct(q)

    def _direct(self, q: int) -> Interval:
        a, c, y, g, k = self.a, self.c, self.y, self.g, self.k
        p = q + 8
        e, sm, sp, l1 = _logistic(a, q)
        m = (HALF, HALF) if y == HALF else _iadd(_iscale(sm, y, p), _iscale(sp, c, p), p)
        bce = _iadd((exact.mul(c, a),) * 2, l1, p)
        log_m = self._log_m(m, l1)
        if not self.grad:
            return _iscale(_imul(_ipow(m, g, log_m, q), bce, p), k, p)
        if y == ZERO:
            gb = sp
        elif y == ONE:
            gb = _ineg(sm)
        elif y == HALF:  # (s+ - s-)/2 = (1 - e) / (2 (1 + e))
            one_e = _iadd(_ONE_I, e, p)
            gb = _idiv_pos(_iscale(_one_minus_exp(a, q), HALF, p), one_e, p)
        else:
            gb = _iadd(_iscale(sp, c, p), _ineg(_iscale(sm, y, p)), p)
        mg1 = _ipow(m, self.gm1, log_m, q)
        mg = _imul(mg1, m, p)
        t2 = _imul(mg, gb, p)
        if self.one_minus_2y == ZERO:
            return _iscale(t2, k, p)
        t1 = _imul(_imul(_imul(mg1, sp, p), sm, p), bce, p)
        t1 = _iscale(_iscale(t1, g, p), self.one_minus_2y, p)
        return _iscale(_iadd(t1, t2, p), k, p)

    def _split(self, q: int) -> tuple[Tuple, Interval]:
        a, c, g, k = self.a, self.c, self.g, self.k
        p = q + 8
        kp = exact.mul(k, self.power)
        _, sm, sp, l1 = _logistic(a, q)
        two_y_m1 = _neg(self.one_minus_2y)
        if c == ONE:
            u, lu = _ineg(sm), _ineg(l1)  # u = -s-: log1p(u) = log(s+) = -l
        else:
            u = _idiv_pos(_iscale(sm, two_y_m1, p), (c, c), p)
            lu = _log1p_small(u, p)
        gm1 = _expm1_small(_iscale(lu, g, p), p)        # (1+u)**g - 1
        big_g = _iadd(_ONE_I, gm1, p)                    # (1+u)**g
        ca = exact.mul(c, a)
        if not self.grad:
            t = _iadd(_iscale(gm1, ca, p), _imul(big_g, l1, p), p)
            return exact.mul(kp, ca), _iscale(t, kp, p)
        t3 = _ineg(_imul(big_g, sm, p))
        t2 = _iscale(gm1, c, p)
        t = _iadd(t2, t3, p)
        if self.one_minus_2y != ZERO:
            one_u = _iadd(_ONE_I, u, p)
            g_prime = _idiv_pos(big_g, one_u, p)         # (1+u)**(g-1)
            bce = _iadd((ca, ca), l1, p)
            t1 = _imul(_imul(_imul(g_prime, sp, p), sm, p), bce, p)
            t1 = _iscale(_iscale(t1, g, p), self.one_minus_2y, p)
            t = _iadd(_idiv_pos(t1, (c, c), p), t, p)   # m**(g-1) = c**g (1+u)**(g-1) / c
        return exact.mul(kp, c), _iscale(t, kp, p)


def _certify(parts: Callable[[int], tuple[Tuple, Interval]], margin: int,
             what: str) -> tuple[Tuple, int]:
    """Ziv's loop over parts(q) -> (D exact, T interval) with V = D + T."""
    wp = START_PRECISION
    while wp <= MAX_PRECISION:
        q = wp + margin
        d, (tl, th) = parts(q)
        if d != ZERO:
            if tl != ZERO and th != ZERO and tl[0] == th[0]:
                k = _sticky_exponent(d)
                if max(_msb(tl), _msb(th)) <= k - 2:  # |T| < 2**(k-1): a sticky bit
                    return exact.add(d, (tl[0], 1, k - 1, 1)), wp
            lo, hi = _add(d, tl, q, _F), _add(d, th, q, _C)
        else:
            lo, hi = tl, th
        if lo != ZERO and hi != ZERO and lo[0] == hi[0]:
            # V in [lo, hi]; _decided reasons about an OPEN interval: widen by a hair
            hair = (0, 1, min(_msb(lo), _msb(hi)) - q - 8, 1)
            lo, hi = exact.sub(lo, hair), exact.add(hi, hair)
            if _decided(lo, hi):
                return libmp.mpf_shift(exact.add(lo, hi), -1), wp
        wp *= 2
    raise ReferenceUncertainError(f"{PREFIX}: not certified at {MAX_PRECISION} bits: {what}")


def _limit(grad: bool, c: Tuple, g: Tuple, k: Tuple) -> tuple[Tuple, int]:
    """a = +inf (after mirroring), k != 0, g > 0."""
    if c == ZERO:
        return ZERO, 0
    if not grad:
        return (INF if k[0] == 0 else NINF), 0
    g1 = exact.add(g, ONE)
    power = exact_power(c, g1)
    if power is not None:
        return exact.mul(k, power), 0
    log_c = lambda p: _ilog((c, c), p)  # noqa: E731

    def parts(q: int) -> tuple[Tuple, Interval]:
        return ZERO, _iscale(_ipow((c, c), g1, log_c, q), k, q + 8)

    return _certify(parts, 24 + max(0, _msb(g1) + 1) + max(0, -_msb(c)).bit_length(),
                    f"limit {exact.to_fraction(c)}**{exact.to_fraction(g1)}")


def evaluate_point(grad: bool, x: Any, y: Any, gamma: Any = 2, alpha: Any = None,
                   weight: Any = 1) -> tuple[Tuple, int]:
    """(certified representative, working precision that certified it; 0 when exact)."""
    g, al = parameters(gamma, alpha)
    x, y, w = (exact.to_tuple(v) for v in (x, y, weight))
    if NAN in (x, y, w):
        return NAN, 0
    if exact.is_inf(y) or exact.sign(y) < 0 or exact.sign(exact.sub(ONE, y)) < 0:
        raise ValueError(f"{PREFIX}: target must be in [0, 1], got {_shown(y)}")
    if exact.is_inf(w) or exact.sign(w) < 0:
        raise ValueError(f"{PREFIX}: weight must be finite and >= 0, got {_shown(w)}")
    one_minus_y = exact.sub(ONE, y)
    if al is None:
        alpha_t = ONE
    else:
        alpha_t = exact.add(exact.mul(al, y), exact.mul(exact.sub(ONE, al), one_minus_y))
    k = exact.mul(w, alpha_t)
    if k == ZERO:
        return ZERO, 0
    if g == ZERO:  # exactly bce_with_logits with weight K: the engine's own tuple
        return evaluate(logits_form(x, y, k, ONE, grad)), 0
    flip = exact.sign(x) < 0
    a, yy = (_neg(x), one_minus_y) if flip else (x, y)
    if a == INF:
        r, wp = _limit(grad, exact.sub(ONE, yy), g, k)
    elif grad and a == ZERO and yy == HALF:
        return ZERO, 0
    else:
        point = _Point(grad, a, yy, g, k)
        r, wp = _certify(point.parts, point.margin,
                         f"grad={grad} x={_shown(x)} y={_shown(y)} gamma={format_number(g)} "
                         f"alpha={'none' if al is None else format_number(al)} w={_shown(w)}")
    return (_neg(r) if grad and flip else r), wp


def _shown(t: Tuple) -> str:
    if t == NAN:
        return "nan"
    if t in (INF, NINF):
        return "inf" if t == INF else "-inf"
    return format_number(t)


def value(grad: bool, x: Any, y: Any, gamma: Any = 2, alpha: Any = None, weight: Any = 1
          ) -> Tuple:
    """Certified representative tuple of the focal loss (grad False) or its d/dx."""
    return evaluate_point(grad, x, y, gamma, alpha, weight)[0]
