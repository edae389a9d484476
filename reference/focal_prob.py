"""Certified focal loss on probabilities (DESIGN.md section 10), by rigorous intervals.

    focal(q, y, gamma, alpha, w) = w * alpha_t * (1 - p_t)**gamma * bce(q, y)
    p_t = y q + (1-y)(1-q),  alpha_t = alpha y + (1-alpha)(1-y) (1: None),
    bce(q, y) = -(y log q + (1-y) log(1-q));  the gradient is d/dq.

keras.losses.binary_focal_crossentropy(from_logits=False) is graded against it (Keras
applies alpha only with apply_class_balancing=True, and clips q to [eps, 1 - eps] in
its bce factor alone; nothing is clipped here). The sibling of reference/focal.py (the
loss on logits), certified by the same machinery and with the same contract: a
representative tuple R with |R - V| <= 2**-110 |V| that rounds like the exact value V
in every format (float16, bfloat16, float32, float64).

Domain (anything else is a ValueError with a one-line message, never a guess): gamma
finite >= 0; alpha finite, or None; 0 <= y <= 1; weight finite >= 0. NaN in q, y or
weight gives NaN (checked first); a q outside [0, 1] (infinities included) gives NaN,
as the "bce" family does (the log of a negative number), even where K = 0.

How a value is certified
------------------------
With K = w alpha_t, r = 1 - q and c = 1 - y (all exact), everything but the logs and
the power is an exact dyadic number:

    m = 1 - p_t = y r + c q   (exact)        bce = y L1 + c L2,  L1 = -log q, L2 = -log r
    loss = K m**g bce
    grad = K m**(g-1) [g (1-2y) bce + m (q-y)/(q r)]

using dm/dq = 1-2y and d bce/dq = c/r - y/q = (q-y)/(q r) (exact rational). m and bce
are sums of non-negative terms (no cancellation for 0 <= y <= 1); the two gradient
terms have one sign for hard labels (y = 0: g L2 + q/r > 0; y = 1: -g L1 - r/q < 0)
and may cancel for soft ones, which the escalation below pays for.

Each candidate is an interval that provably contains V, computed with libmp's directed
roundings (reference.focal's helpers: _ilog, _ipow, _imul, ...). log q, log r and, for
a non-integer gamma, log m are interval logs of exact numbers, widened by 4 units of
their precision (mpf_log adds the bits its cancellation next to 1 needs, so they are
relatively accurate; _log_exact steps around its mistake next to 1/4). m**g is binary
powering with directed roundings for an integer 0 <= g <= 64, else exp(g log m) (also
widened); the rational (q-y)/(q r) is two directed divisions. Ziv: focal._certify
doubles the working precision (128, 256, ... up to engine.MAX_PRECISION) until
engine._decided accepts the interval, widened by a hair so that V lies in the OPEN
interval it assumes; past the cap ReferenceUncertainError.

Exact cases and limits: gamma = 0 is the "bce" family with weight K (the engine's own
tuple of bce_forms.prob_form, so identical values, ends included); K = 0 gives 0. The
symmetry focal(q, y, alpha) = focal(1-q, 1-y, 1-alpha) (alpha_t and p_t unchanged;
the gradient changes sign) maps q = 1 to q = 0, where m = y and bce = -y log q:
    y = 0:  m = q, bce = L2 ~ q:  loss ~ K q**(g+1) -> 0,  grad ~ K (g+1) q**g -> 0
    y > 0:  loss -> sign(K) inf (K y**g (-y log q));  grad -> -sign(K) inf (the term
            K m**g (q-y)/(q r) ~ -K y**(g+1)/q beats the logarithmic g (1-2y) bce)
so at q = 1 the loss is 0 for y = 1, sign(K) inf otherwise, and the gradient 0 for
y = 1, +sign(K) inf otherwise.

Exact zeros, and why Ziv always ends. Inside 0 < q < 1 (g > 0, K != 0) the loss is
K m**g bce with m > 0 algebraic and bce = -(y log q + c log r) a nonzero linear form in
logs of rationals, transcendental by Baker's theorem; so the loss is never a dyadic
rounding boundary. The gradient is K m**(g-1) B, B = g (1-2y) bce + A with A =
m (q-y)/(q r) rational.
  y = 1/2 (m = 1/2 for every q): the gradient is K 2**-g (q - 1/2)/(q r), zero exactly
    at q = 1/2 (returned as an exact 0). For an integer g it is rational and computed
    exactly (engine.rational_representative, or the exact tuple: K's odd part can
    cancel q r's, e.g. K = 3/2, q = 1/4, g = 5 gives -1/16, where Ziv alone would
    never end); for a non-integer g it is a nonzero rational times the irrational 2**-g.
  y != 1/2: B = 0 would mean A + g (1-2y)(-y log q - c log r) = 0. When q and r are
    multiplicatively independent, 1, log q, log r are linearly independent over the
    algebraic numbers (Baker), so A = 0 and y = c = 0: impossible. Otherwise log q =
    s log r with s rational and s > 0 (both logs are negative), and log r is
    transcendental (Lindemann), so A = 0 and y s + c = 0: impossible for s > 0.
    Hence B != 0, and B is transcendental (a nonzero such form is, by Baker).
So the gradient is zero only at q = y = 1/2 (for gamma = 0 only at q = y, which the bce
tuple gives), and elsewhere never a rounding boundary, except the y = 1/2 rationals
handled exactly.

Cost (measured, one core shared with other work, scalar path, alpha 0.25, q uniform
in (0, 1)): loss 20-30k points/s for gamma = 2 (binary powering), 17-22k/s for
gamma = 0.5 (one more log and an exp); gradient 20-22k/s and 15-18k/s; hard and soft
labels alike, all certified at the first precision (128 bits). Escalation happens
only where the value really sits near a rounding boundary: soft gradients next to
their zero (256 bits for the float64 neighbours of the zero), a tiny q with a hard
label whose value is still inside the float64 range (y = 0: the loss is
K q**(g+1) (1 + q/2 + ...), a relative distance q/2 from a dyadic when q**g is one, up
to 2048 bits, about 1 ms, for a subnormal q), or a tiny gamma (the gradient is then
within about gamma of the rational K (q-y)/(q r): 2048 bits for gamma = 2**-1000, and an
mpf gamma below about 2**-60000 would exhaust MAX_PRECISION and raise).

Family names (families.focal_prob_op): "focal:gamma=G:alpha=A", the numbers in
focal.format_number's canonical spelling ("2", "0.5", "0.25", "-1.5", or "MANpEXP"), A
"none" for no alpha.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from mpmath import libmp

from . import exact, focal
from .bce_forms import prob_form
from .engine import ReferenceUncertainError, as_dyadic, evaluate, rational_representative
from .exact import HALF, INF, NAN, NINF, ONE, ZERO, Tuple
from .focal import (
    Interval,
    _certify,
    _iadd,
    _idiv_pos,
    _ilog,
    _imul,
    _ineg,
    _ipow,
    _iscale,
    _ln2,
    _msb,
    _shown,
    format_number,
)

PREFIX = "focal"


# --------------------------------------------------------------------------- parameters


def parameters(gamma: Any, alpha: Any) -> tuple[Tuple, Tuple | None]:
    """gamma and alpha as exact tuples (focal.parameters, with this family's prefix)."""
    return focal.parameters(gamma, alpha, PREFIX)


def op_name(gamma: Any = 2, alpha: Any = None) -> str:
    """The canonical family name for (gamma, alpha), e.g. focal:gamma=2:alpha=none."""
    return focal.op_name(gamma, alpha, PREFIX)


def parse_op(name: str) -> tuple[Tuple, Tuple | None]:
    """(gamma, alpha) of a canonical focal family name; ValueError for anything else."""
    return focal.parse_op(name, PREFIX, "reference.focal_prob_op")


# --------------------------------------------------------------------------- evaluation


def _log_exact(t: Tuple, p: int) -> Interval:
    """log t for an exact 0 < t < 1 (any number of bits), as an interval.

    mpmath 1.3.0's mpf_log takes an x in [1/4, 1/2) within 2**-(prec+20) of 1/4 for
    one next to 1 and returns garbage (about x - 1/4): m = y r + c q is such a number
    for y = 1/4 and a tiny q. There it is log(2t) - log 2 (2t in [1/2, 1), both terms
    <= 0: no cancellation)."""
    if _msb(t) == -2:
        two_t = libmp.mpf_shift(t, 1)
        return _iadd(_ilog((two_t, two_t), p), _ineg(_ln2(p)), p)
    return _ilog((t, t), p)


class _Point:
    """One point with 0 < q < 1, g > 0, K != 0; parts(q) -> (0, interval around V)."""

    def __init__(self, grad: bool, q: Tuple, y: Tuple, g: Tuple, k: Tuple) -> None:
        self.grad, self.q, self.y, self.g, self.k = grad, q, y, g, k
        self.r = exact.sub(ONE, q)
        self.c = exact.sub(ONE, y)
        self.m = exact.add(exact.mul(y, self.r), exact.mul(self.c, q))  # > 0 inside
        self.one_minus_2y = exact.sub(ONE, exact.add(y, y))
        self.gm1 = exact.sub(g, ONE)
        self._logs: dict[tuple[Tuple, int], Interval] = {}
        # the precision margin: powers amplify relative errors by g; small labels and
        # probabilities make large logs and long exact mantissas
        margin = 24 + max(0, _msb(g) + 1)
        for t in (self.c, y, q, self.r):
            if t not in (ZERO, ONE):
                margin += max(0, -_msb(t)).bit_length()
        self.margin = margin

    def _log(self, t: Tuple, p: int) -> Interval:
        """log t (t exact, 0 < t < 1), cached: for hard labels m is q or r, whose log
        the bce already took at the same precision."""
        key = (t, p)
        got = self._logs.get(key)
        if got is None:
            got = self._logs[key] = _log_exact(t, p)
        return got

    def _log_m(self, p: int) -> Interval:
        return self._log(self.m, p)

    def parts(self, qb: int) -> tuple[Tuple, Interval]:
        q, r, y, c, g, k, m = self.q, self.r, self.y, self.c, self.g, self.k, self.m
        p = qb + 8
        bce = None
        if y != ZERO:
            bce = _iscale(_ineg(self._log(q, p)), y, p)
        if c != ZERO:
            t = _iscale(_ineg(self._log(r, p)), c, p)
            bce = t if bce is None else _iadd(bce, t, p)
        if not self.grad:
            return ZERO, _iscale(_imul(_ipow((m, m), g, self._log_m, qb), bce, p), k, p)
        num = exact.mul(m, exact.sub(q, y))
        den = exact.mul(q, r)
        b = _idiv_pos((num, num), (den, den), p)  # m (q-y) / (q r), exact rational
        if self.one_minus_2y != ZERO:
            b = _iadd(_iscale(bce, exact.mul(g, self.one_minus_2y), p), b, p)
        mg1 = _ipow((m, m), self.gm1, self._log_m, qb)
        return ZERO, _iscale(_imul(mg1, b, p), k, p)


def _end(grad: bool, q: Tuple, y: Tuple, k: Tuple) -> Tuple:
    """q in {0, 1}, g > 0, K != 0: the limits of the module docstring."""
    label = y if q == ZERO else exact.sub(ONE, y)  # mirror q = 1 to q = 0
    if label == ZERO:
        return ZERO
    inf = INF if k[0] == 0 else NINF
    if not grad:
        return inf
    return _neg_special(inf) if q == ZERO else inf


def _neg_special(t: Tuple) -> Tuple:
    return NINF if t == INF else INF


def _integer(g: Tuple) -> int | None:
    """g as an int when it is an integer (g > 0 here), else None."""
    return int(g[1]) << int(g[2]) if g[2] >= 0 else None


def _half_label_grad(q: Tuple, k: Tuple, n: int) -> Tuple:
    """y = 1/2, integer gamma n: the rational K 2**-n (q - 1/2) / (q (1-q)), exactly.

    Its representative is built for the rational without 2**-n, then shifted: the
    boundaries near it move with it (every one a multiple of the representative's
    grid, which the shift keeps far below both the value and 2**-1075)."""
    fq = exact.to_fraction(q)
    f = as_dyadic(exact.to_fraction(k) * (fq - Fraction(1, 2)) / (fq * (1 - fq)))
    rep = rational_representative(f) if isinstance(f, Fraction) else f
    return libmp.mpf_shift(rep, -n)


def evaluate_point(grad: bool, q: Any, y: Any, gamma: Any = 2, alpha: Any = None,
                   weight: Any = 1) -> tuple[Tuple, int]:
    """(certified representative, working precision that certified it; 0 when exact)."""
    g, al = parameters(gamma, alpha)
    q, y, w = (exact.to_tuple(v) for v in (q, y, weight))
    if NAN in (q, y, w):
        return NAN, 0
    if exact.is_inf(y) or exact.sign(y) < 0 or exact.sign(exact.sub(ONE, y)) < 0:
        raise ValueError(f"{PREFIX}: target must be in [0, 1], got {_shown(y)}")
    if exact.is_inf(w) or exact.sign(w) < 0:
        raise ValueError(f"{PREFIX}: weight must be finite and >= 0, got {_shown(w)}")
    if exact.is_inf(q) or exact.sign(q) < 0 or exact.sign(exact.sub(ONE, q)) < 0:
        return NAN, 0  # not a probability, as prob_form
    one_minus_y = exact.sub(ONE, y)
    if al is None:
        alpha_t = ONE
    else:
        alpha_t = exact.add(exact.mul(al, y), exact.mul(exact.sub(ONE, al), one_minus_y))
    k = exact.mul(w, alpha_t)
    if k == ZERO:
        return ZERO, 0
    if g == ZERO:  # exactly bce with weight K: the engine's own tuple
        return evaluate(prob_form(q, y, k, grad)), 0
    if q in (ZERO, ONE):
        return _end(grad, q, y, k), 0
    if grad and y == HALF:
        if q == HALF:  # the gradient's only zero (module docstring)
            return ZERO, 0
        n = _integer(g)
        if n is not None:
            return _half_label_grad(q, k, n), 0
    point = _Point(grad, q, y, g, k)
    what = (f"grad={grad} q={_shown(q)} y={_shown(y)} gamma={format_number(g)} "
            f"alpha={'none' if al is None else format_number(al)} w={_shown(w)}")
    try:
        return _certify(point.parts, point.margin, what)
    except ReferenceUncertainError:
        raise ReferenceUncertainError(
            f"{PREFIX}: not certified at {focal.MAX_PRECISION} bits: {what}") from None


def value(grad: bool, q: Any, y: Any, gamma: Any = 2, alpha: Any = None, weight: Any = 1
          ) -> Tuple:
    """Certified representative tuple of the focal loss on q (grad False) or its d/dq."""
    return evaluate_point(grad, q, y, gamma, alpha, weight)[0]
