"""Certified mean and sum of softmax cross-entropies over a batch of rows (DESIGN.md
sections 3 and 10: a reduction is the exact sum of exact terms, rounded once).

    sum  = sum_i loss_i
    mean = sum_i loss_i / den,   den = sum_i w_{y_i} over the rows not ignored ("weights")
                                    or N, every row counted ("count")

loss_i is reference.cross_entropy of row i (0 for an ignored row), so it carries w_{y_i}
and the label smoothing. "weights" is torch's F.cross_entropy(reduction='mean') for class
indices (LossNLL.cpp: nll_loss divides by the gathered weights of the targets not
ignored, and cross_entropy_loss_label_smoothing divides the smoothing part by that same
sum), keras' sum_over_batch_size with ignore_class (unit weights: the rows not ignored)
and paddle's mean with weight=. "count" divides by N: torch's mean for probability
targets, keras' sum_over_batch_size, and paddle's mean without weight (mean_all: a row
ignored by the default negative ignore_index still counts). The default (None) is
torch's: "weights" for class indices, "count" for probabilities.

Certification: each row is D_i + W_i log1p(S_i) (softmax.loss_form: D_i exact, dyadic or
rational). The value is certified as one number, exact part sum_i D_i / den plus the
tail interval sum_i W_i log1p(S_i) / den, in softmax_core.certify's Ziv loop (sticky
tail included: rows [1e10, 0] with label 1 add 1e10 + exp(-1e10) each, and a sum on a
rounding boundary is decided by the tail's sign). Rows with the same S share one
log1p(S) with their W summed exactly, so equal rows whose signed weights cancel leave
no tail. Distinct S whose logs still cancel exactly (log 4 = 2 log 2, only with signed
weights) cannot be certified: ReferenceUncertainError, never a guess.

Limits: a NaN row (NaN logit, probability or weight; every logit -inf) gives NaN; +inf
and -inf rows together NaN; a zero denominator (every row ignored, weights summing to
0) NaN, as torch's 0/0; else an infinite row gives its infinity (times the sign of den).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
from mpmath import libmp

from .engine import as_dyadic
from .exact import INF, NAN, NINF, ZERO, Tuple
from .focal import Interval
from .softmax import _mpf, loss_form, parse
from .softmax_core import certify, frac, represent, scaled

REDUCTIONS = ("mean", "sum")
DENOMINATORS = ("weights", "count")
_F = libmp.round_floor
_C = libmp.round_ceiling
PREFIX = "cross_entropy_reduce"


def _rows(logits: Any, targets: Any) -> tuple[list[Any], list[Any], bool]:
    """(logit rows, per-row targets, class indices?) with the shapes checked."""
    if isinstance(logits, np.ndarray):
        if logits.ndim != 2:
            raise ValueError(f"{PREFIX}: logits must be N rows of K, got shape {logits.shape}")
        rows = list(logits)
    else:
        rows = [np.asarray(r) if isinstance(r, np.ndarray) else list(r) for r in logits]
    if not rows:
        raise ValueError(f"{PREFIX}: no rows to reduce")
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"{PREFIX}: rows of different lengths {sorted({len(r) for r in rows})}")
    ts = list(targets) if isinstance(targets, np.ndarray) and targets.ndim >= 1 else \
        list(targets) if isinstance(targets, Sequence) else None
    if ts is None:
        raise ValueError(f"{PREFIX}: targets must be N class indices or N rows of "
                         f"probabilities, got {type(targets).__name__}")
    if len(ts) != len(rows):
        raise ValueError(f"{PREFIX}: {len(ts)} targets for {len(rows)} rows")
    ts = [t.item() if isinstance(t, np.integer) else t for t in ts]
    hard = [isinstance(t, int) and not isinstance(t, bool) for t in ts]
    if any(hard) and not all(hard):
        raise ValueError(f"{PREFIX}: targets mix class indices and probability rows")
    return rows, ts, all(hard)


def reduce_value(logits: Any, targets: Any, *, weight: Sequence[Any] | None = None,
                 label_smoothing: Any = 0, ignore_index: int | None = None,
                 reduction: str = "mean", denominator: str | None = None) -> Tuple:
    """Certified representative of the reduction (module docstring)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{PREFIX}: unknown reduction {reduction!r}; expected 'mean' or 'sum'")
    if denominator is not None and denominator not in DENOMINATORS:
        raise ValueError(f"{PREFIX}: unknown denominator {denominator!r}; expected "
                         f"'weights' or 'count'")
    rows, ts, hard = _rows(logits, targets)
    if denominator is None:
        denominator = "weights" if hard else "count"
    if reduction == "mean" and denominator == "weights" and not hard:
        raise ValueError(f"{PREFIX}: denominator 'weights' needs class-index targets "
                         f"(probability targets average over the rows: 'count')")
    parsed = [parse(r, t, weight, label_smoothing, ignore_index) for r, t in zip(rows, ts,
                                                                                   strict=True)]
    forms = [loss_form(ls, tg) for ls, tg in parsed]
    specials = {f.d for f in forms if f.f is None and f.d in (INF, NINF, NAN)}
    if NAN in specials or {INF, NINF} <= specials:
        return NAN
    scale = Fraction(1)
    if reduction == "mean":
        den = Fraction(len(rows))
        if denominator == "weights":  # sum of w_{y_i} over the rows not ignored
            den = sum((frac(tg.weight(int(t))) for (_, tg), t in zip(parsed, ts, strict=True)
                       if tg is not None), Fraction(0))
        if den == 0:
            return NAN  # 0/0 (torch: nan), even with an infinite row
        scale = 1 / den
    if specials:
        inf = specials.pop()
        return inf if scale > 0 else (NINF if inf == INF else INF)
    exact_part = sum((frac(f.d) for f in forms), Fraction(0)) * scale
    groups: dict[tuple, list] = {}  # S -> [W summed exactly, its Finite]
    for f in forms:
        if f.f is not None:
            key = (f.f.ones, tuple(sorted(f.f.negs)))
            g = groups.setdefault(key, [Fraction(0), f.f])
            g[0] += frac(f.w)
    tails = [(as_dyadic(w * scale), fin) for w, fin in groups.values() if w != 0]
    d = as_dyadic(exact_part)
    if not tails:
        return represent(d)
    n, k = len(rows), len(rows[0])
    margin = 20 + k.bit_length() + n.bit_length()

    def tail(q: int) -> Interval:
        p = q + 8
        lo = hi = ZERO
        for w, fin in tails:
            tl, th = scaled(w, fin.log1p_s(q), p)
            lo, hi = libmp.mpf_add(lo, tl, p, _F), libmp.mpf_add(hi, th, p, _C)
        return lo, hi

    return certify(d, tail, margin, lambda: f"{reduction} of {n} rows of {k} logits")


def cross_entropy_reduce(logits: Any, targets: Any, *, weight: Sequence[Any] | None = None,
                         label_smoothing: Any = 0, ignore_index: int | None = None,
                         reduction: str = "mean", denominator: str | None = None
                         ) -> mpmath.mpf:
    """The mean or sum of reference.cross_entropy over N rows of K logits, certified as
    one value (rounds correctly, once, in every format).

    targets: N class indices or N rows of K probabilities. reduction "mean" divides by
    the sum of the targets' class weights over the rows not ignored (denominator
    "weights": torch's mean for class indices; 1 per row without weight=) or by N
    (denominator "count": torch's mean for probabilities, paddle's without weight=);
    None picks torch's. NaN rows, +inf with -inf rows and a zero denominator give NaN.
    ValueError (one line) for an empty batch, ragged rows, a target count that is not
    N, mixed target kinds, an unknown reduction or denominator, "weights" with
    probabilities, and every domain error of cross_entropy.
    """
    return _mpf(reduce_value(logits, targets, weight=weight, label_smoothing=label_smoothing,
                             ignore_index=ignore_index, reduction=reduction,
                             denominator=denominator))

