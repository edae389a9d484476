"""Certified categorical cross-entropy on class probabilities (DESIGN.md section 10): the
loss of the distribution p / P that a row of K non-negative numbers p represents.

    cross_entropy_probs(p, target) = sum_k a_k (log P - log p_k),   P = sum_j p_j,
    grad_j = d/dp_j = W/P - a_j/p_j,   W = sum_k a_k,

a_k = w_k ((1-E) t_k + E/K) exactly as in softmax.py (a class index or class
probabilities t, class weights w, label smoothing E). It is cross_entropy(log p): keras'
categorical_crossentropy(from_logits=False) divides by P before its log, and
sparse_categorical_crossentropy(from_logits=False) takes log-sum-exp of log p, i.e. log P.
The exact P, never 1: a row rounded to a dtype seldom sums to 1.

Certification: each term is a_k log1p(x_k), x_k = (P - p_k) / p_k >= 0 an exact
rational (P - p_k is the exact sum of the other classes: no cancellation at p_k near P).
Classes with equal p_k are grouped with their a_k summed exactly, x_k = 0 terms vanish,
and the sum is certified by softmax_core.certify's Ziv loop (intervals, widened logs).
For a >= 0 every term is >= 0: no cancellation, decided at the first precision. Signed
targets or weights may cancel: the loop escalates; logs of distinct ratios that cancel
exactly (2 log 2 - log 4) cannot be decided and raise ReferenceUncertainError past the
cap. Otherwise the value is transcendental (a log of a rational != 1) and the loop ends.
The gradient is rational: kept exact, rounded once.

Limits (the other arguments fixed; NaN in p, t or w gives NaN)
---------------------------------------------------------------
- p_k = 0: its term is 0 when a_k = 0 (masking), else sign(a_k) inf (each such term on
  its own: opposite signs give NaN); grad_k = -sign(a_k) inf, or W/P when a_k = 0.
- p_k < 0 (no log) or every p_k = 0 (no distribution: 0/0): NaN, loss and gradient.
- one p_j = +inf: p / P tends to one-hot on j. j's own term tends to 0; the finite
  p_k > 0 diverge together through log P: sign(A) inf, A = the sum of their a_k; with
  A = 0 the finite limit -sum a_k log p_k (signed targets only); p_k = 0 as above.
  Gradient: -a_k/p_k at finite p_k (W/P -> 0), 0 at the +inf classes.
- two or more +inf: p / P among them depends on their ratio: a loss with weight on them
  is NaN unless every a >= 0 and some weight diverges elsewhere (+inf); without weight on
  them, the one-+inf case. Gradient: as for one +inf (W/P and a_j/p_j -> 0 jointly).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
from mpmath import libmp

from . import exact, softmax
from .engine import as_dyadic
from .exact import INF, NAN, NINF, ZERO, Tuple
from .focal import Interval
from .formats import get_format, round_to
from .softmax_core import Finite, Number, Target, certify, exact_sum, frac, represent, scaled, sign

PREFIX = "cross_entropy_probs"
_F = libmp.round_floor
_C = libmp.round_ceiling


def parse(probs: Any, target: Any, weight: Any = None, label_smoothing: Any = 0
          ) -> tuple[list[Tuple], Target]:
    """(probabilities as exact tuples, Target): softmax.parse's domain and messages."""
    try:
        ps, tg = softmax.parse(probs, target, weight, label_smoothing)
    except ValueError as e:
        raise ValueError(str(e).replace("cross_entropy:", f"{PREFIX}:", 1)) from None
    assert tg is not None  # no ignore index here
    return ps, tg


def _undefined(ps: list[Tuple]) -> bool:
    return NAN in ps or any(exact.sign(p) < 0 for p in ps)


def _divergent(signs: set[int]) -> Tuple | None:
    signs = signs - {0}
    if not signs:
        return None
    return (INF if signs.pop() > 0 else NINF) if len(signs) == 1 else NAN


# --------------------------------------------------------------------------- loss


def _terms(ps: list[Tuple], tg: Target, classes: Sequence[int], total: Tuple
           ) -> list[tuple[Number, Tuple, Tuple]]:
    """(c, P - p, p) per distinct p_k > 0 of `classes`: c the exact sum of their a_k
    (zero sums and p_k = P, where log(P/p_k) = 0, left out)."""
    groups: dict[Tuple, Fraction] = {}
    for j in classes:
        a = tg.a(j)
        if sign(a) and ps[j] != total:
            groups[ps[j]] = groups.get(ps[j], Fraction(0)) + frac(a)
    return [(as_dyadic(c), exact.sub(total, p), p) for p, c in groups.items() if c]


def _certified_sum(ps: list[Tuple], tg: Target, classes: Sequence[int]) -> Tuple:
    """sum_{k in classes} a_k log(Q / p_k), Q the exact sum of those p_k (all > 0)."""
    total = exact_sum(ps[j] for j in classes)
    terms = _terms(ps, tg, classes, total)
    if not terms:
        return ZERO

    def tail(q: int) -> Interval:
        p = q + 8
        lo = hi = ZERO
        for c, num, pk in terms:
            x = libmp.mpf_div(num, pk, p, _F), libmp.mpf_div(num, pk, p, _C)
            tl, th = scaled(c, Finite._log1p_s(p, *x), p)
            lo, hi = libmp.mpf_add(lo, tl, p, _F), libmp.mpf_add(hi, th, p, _C)
        return lo, hi

    margin = 20 + len(terms).bit_length()
    return certify(ZERO, tail, margin, lambda: f"{PREFIX} of {_show(ps)}")


def loss_value(ps: list[Tuple], tg: Target) -> Tuple:
    """Certified representative of the loss of one parsed row (limits: module docstring)."""
    if _undefined(ps):
        return NAN
    k = len(ps)
    pos = [j for j in range(k) if ps[j] == INF]
    zeros = [j for j in range(k) if ps[j] == ZERO]
    finite = [j for j in range(k) if ps[j] not in (INF, ZERO)]
    masked = {sign(tg.a(j)) for j in zeros}
    if not pos:
        if not finite:
            return NAN  # every p_k = 0
        limit = _divergent(masked)
        return limit if limit is not None else _certified_sum(ps, tg, finite)
    on_pos = [tg.a(j) for j in pos]
    big = sum((frac(tg.a(j)) for j in finite), Fraction(0))  # A, the coefficient of log P
    if len(pos) > 1 and any(sign(a) for a in on_pos):
        every = all(sign(tg.a(j)) >= 0 for j in range(k))
        return INF if every and (big > 0 or 1 in masked) else NAN
    limit = _divergent(masked | {(big > 0) - (big < 0)})
    if limit is not None:
        return limit
    return _certified_sum(ps, tg, finite) if finite else ZERO


# --------------------------------------------------------------------------- gradient


def grad_values(ps: list[Tuple], tg: Target, which: Sequence[int] | None = None
                ) -> list[Tuple]:
    """Certified (exact rational) representatives of d loss / d p_j for j in `which`."""
    k = len(ps)
    js = range(k) if which is None else which
    if _undefined(ps):
        return [NAN for _ in js]
    pos = INF in ps
    total = None if pos else exact_sum(ps)
    if total == ZERO:
        return [NAN for _ in js]
    share = Fraction(0) if pos else frac(tg.total()) / frac(total)  # W/P
    shared = represent(as_dyadic(share))  # a_j = 0: the gradient is W/P whatever p_j
    out = []
    for j in js:
        a, p = tg.a(j), ps[j]
        if p == INF:
            out.append(ZERO)
        elif not sign(a):
            out.append(shared)
        elif p == ZERO:
            out.append(NINF if sign(a) > 0 else INF)
        else:
            out.append(represent(as_dyadic(share - frac(a) / frac(p))))
    return out


def _show(ps: list[Tuple]) -> str:
    shown = [mpmath.nstr(mpmath.mp.make_mpf(v), 17) for v in ps[:6]]
    return "[" + ", ".join(shown) + (", ...]" if len(ps) > 6 else "]")


# --------------------------------------------------------------------------- rows, bulk


def _key(values: Any) -> tuple | None:
    return None if values is None else tuple(softmax.tuples(values))


@functools.lru_cache(maxsize=1 << 14)
def _row(ps: tuple, target: int | tuple, weight: tuple | None, e: Tuple, grad: bool
         ) -> tuple[Tuple, ...]:
    ls, tg = parse(list(ps), target if isinstance(target, int) else list(target),
                   None if weight is None else list(weight), e)
    return tuple(grad_values(ls, tg)) if grad else (loss_value(ls, tg),)


def row_values(probs: Any, target: Any, *, weight: Any = None, label_smoothing: Any = 0,
               grad: bool = False) -> tuple[Tuple, ...]:
    """The certified representatives of one row: (loss,) or every gradient component;
    cached by the row's exact values (the audit asks for the same rows repeatedly)."""
    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    idx = softmax._index(target)
    if idx is None and isinstance(target, float | np.floating | mpmath.mpf | Fraction):
        parse(probs, target)  # the one-line error for a non-int scalar target
    tkey = idx if idx is not None else _key(target)
    return _row(_key(probs), tkey, _key(weight), exact.to_tuple(label_smoothing), grad)


def cross_entropy_probs(probs: Sequence[Any], target: Any, *,
                        weight: Sequence[Any] | None = None, label_smoothing: Any = 0
                        ) -> mpmath.mpf:
    """sum_k a_k (log P - log p_k), P = sum_j p_j, certified (module docstring).

    target: an int class index or K class probabilities. NaN for a NaN or negative p, for
    an all-zero row; +inf where a class with target mass has p_k = 0. ValueError (one
    line) for a class index outside [0, K), a non-int scalar target, length mismatches,
    smoothing outside [0, 1], infinite weights or target probabilities.
    """
    return mpmath.mp.make_mpf(row_values(probs, target, weight=weight,
                                         label_smoothing=label_smoothing)[0])


def cross_entropy_probs_grad(probs: Sequence[Any], target: Any, *,
                             weight: Sequence[Any] | None = None, label_smoothing: Any = 0
                             ) -> list[mpmath.mpf]:
    """d cross_entropy_probs / d p_j = W/P - a_j/p_j for each j, exact (module docstring:
    -sign(a_j) inf at p_j = 0 with a_j != 0, W/P there with a_j = 0)."""
    return [mpmath.mp.make_mpf(t) for t in row_values(
        probs, target, weight=weight, label_smoothing=label_smoothing, grad=True)]


def rounded_cross_entropy_probs(dtype: str, probs: Any, target: Any, *, weight: Any = None,
                                label_smoothing: Any = 0, grad: bool = False) -> np.ndarray:
    """Elementwise round_to(cross_entropy_probs(row) or its gradient, dtype): probs [N, K],
    target int [N] (class indices) or float [N, K] (probabilities); float64 [N] or [N, K]
    out. Every row goes through the certified mpmath path (cached per row)."""
    fmt = get_format(dtype)
    p = np.asarray(probs)
    if p.ndim != 2:
        raise ValueError(f"{PREFIX}: probabilities must be a 2-D array [N, K], got shape "
                         f"{p.shape}")
    n, k = p.shape
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        if t.shape != (n,):
            raise ValueError(f"{PREFIX}: class indices must have shape ({n},), got {t.shape}")
        rows_t: list[Any] = [int(v) for v in t]
    elif t.shape == (n, k):
        rows_t = list(t)
    else:
        raise ValueError(f"{PREFIX}: target probabilities must have shape ({n}, {k}), got "
                         f"{t.shape}")
    out = np.empty((n, k) if grad else n)
    for i in range(n):
        vals = row_values(p[i], rows_t[i], weight=weight, label_smoothing=label_smoothing,
                          grad=grad)
        out[i] = [round_to(v, fmt) for v in vals] if grad else round_to(vals[0], fmt)
    return out
