"""Certified softmax cross-entropy, logsumexp and log_softmax (DESIGN.md section 10).

    cross_entropy(l, target) = sum_k a_k (lse - l_k),   lse = log sum_k exp(l_k),
    a_k = w_k p_k,   p = (1-E) t + E/K,
    grad_j = d/dl_j = W softmax_j - a_j,   W = sum_k a_k       (d lse / dl_j = softmax_j)

t is the one-hot vector of a class index or the given class probabilities, E the label
smoothing (formed exactly: E and t as the binary numbers they are, E/K a rational), w
the per-class weights (1 when None): torch's F.cross_entropy(reduction='none') with
weight= and label_smoothing=, for class indices and probabilities alike (for an index c
without smoothing: w_c (lse - l_c), gradient w_c (softmax_j - [j == c])), and the
tf / keras / optax softmax cross-entropies. Targets outside [0, 1], not summing to 1,
and signed weights are graded against this formula as given (no renormalisation).

Cancellation-free forms
-----------------------
With m = max_k l_k (first attained at class M), the exact dyadic shifts d_k = l_k - m <= 0
and S = sum_{k != M} exp(d_k):

    loss          = D + W log1p(S),             D = sum_k a_k (m - l_k)
    grad_M        = (W - a_M) - W S / (1 + S)
    grad_j (j!=M) = -a_j + W exp(d_j) / (1 + S)
    logsumexp     = m + log1p(S)
    log_softmax_j = d_j - log1p(S)

The first part of each is exact (dyadic; rational under label smoothing, kept exact as
(1-E) sum_k w_k t_k x_k + (E/K) sum_k w_k x_k). For a, w >= 0 both parts of a loss
(and of log_softmax) have one sign: no cancellation, and logits [1e10, 0] with label 0
give W log1p(exp(-1e10)) > 0, relatively accurate, never 0. The gradient's parts cancel
where softmax matches the target, anything may cancel for signed targets or weights:
there Ziv's escalation pays.

How each value is certified (Ziv's loop, intervals, the sticky tail of values like
1e10 + exp(-1e10)): softmax_core.py. The bulk entry points with their vectorized
certified float64 path: softmax_fast.py. Means and sums over a batch of rows, certified
as one value: softmax_reduce.py.

Limits (the other arguments fixed; NaN in any logit, probability or weight gives NaN)
-------------------------------------------------------------------------------------
- l_k = -inf: softmax_k = 0; its loss term a_k (lse - l_k) is 0 when a_k = 0 (masking),
  else sign(a_k) inf; its gradient -a_k. The other classes are computed without it.
- every l_k = -inf: NaN (loss, gradient, log_softmax): softmax is 0/0, there is no limit
  (lse - l_k takes any value >= 0 depending on the logits' differences), even for a = 0.
  logsumexp is -inf there (log 0), for K = 0 too.
- one l_a = +inf: softmax is one-hot on a: gradient W - a_a at a, -a_j elsewhere; loss
  = A l_a + ... with A = W - a_a: sign(A) inf, sign(a_n) inf for each masked class n
  with a_n != 0 (they diverge independently: opposite signs give NaN); 0 such terms
  leave the exact limit -sum_{finite k} a_k l_k (0 for a class-index target at a).
- two or more +inf: softmax among them depends on their differences: NaN where it
  matters (gradient at those classes unless W = 0, log_softmax there, a loss with
  weight on them: NaN unless every a >= 0 and some weight lies elsewhere: +inf). A loss
  without weight on them is the one-+inf case with A = W. logsumexp is +inf.

Domain: class index an int in [0, K) (else ValueError naming it); ignore_index: a class
index equal to it gives exactly 0 (gradient all zeros) whatever the logits (torch's
masking); label smoothing finite in [0, 1]; weights and probabilities finite (or NaN).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import mpmath
import numpy as np
from mpmath import libmp

from . import exact
from .engine import ReferenceUncertainError
from .exact import INF, NAN, NINF, ONE, ZERO, Tuple
from .focal import _ineg
from .softmax_core import (
    Finite,
    Number,
    Target,
    frac,
    represent,
    scaled,
    sign,
)

# --------------------------------------------------------------------------- inputs


def tuples(values: Any) -> list[Tuple]:
    """A sequence of numbers as exact tuples (numpy float arrays converted in bulk)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fV" and \
            values.dtype.itemsize <= 8:
        return [libmp.from_float(v) for v in values.astype(np.float64).ravel().tolist()]
    return [exact.to_tuple(v) for v in values]


def _index(target: Any) -> int | None:
    if isinstance(target, bool | np.bool_):
        return None
    if isinstance(target, numbers.Integral):
        return int(target)
    return None


def parse(logits: Any, target: Any, weight: Any = None, label_smoothing: Any = 0,
          ignore_index: Any = None) -> tuple[list[Tuple], Target | None]:
    """(logits, Target) of one row; Target None when the row is ignored (loss 0). A NaN
    anywhere is kept in the logits (NaN out); domain errors are one-line ValueErrors."""
    ls = tuples(logits)
    k = len(ls)
    if k == 0:
        raise ValueError("cross_entropy: no classes (K = 0)")
    e = exact.to_tuple(label_smoothing)
    if e == NAN or exact.is_inf(e) or exact.sign(e) < 0 or exact.sign(exact.sub(ONE, e)) < 0:
        raise ValueError(f"cross_entropy: label smoothing must be finite in [0, 1], "
                         f"got {label_smoothing!r}")
    w = None
    if weight is not None:
        w = tuples(weight)
        if len(w) != k:
            raise ValueError(f"cross_entropy: {len(w)} weights for {k} classes")
        if any(exact.is_inf(v) for v in w):
            raise ValueError("cross_entropy: weights must be finite")
    nan = NAN in ls or (w is not None and NAN in w)
    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    c = _index(target)
    if c is not None:
        if ignore_index is not None and c == ignore_index:
            return ls, None
        if not 0 <= c < k:
            raise ValueError(f"cross_entropy: class index {c} outside [0, {k})")
        b = {c: ONE if w is None else w[c]}
    elif isinstance(target, float | np.floating | mpmath.mpf | Fraction):
        raise ValueError(f"cross_entropy: a class index must be an int, got {target!r}")
    else:
        t = tuples(target)
        if len(t) != k:
            raise ValueError(f"cross_entropy: {len(t)} target probabilities for {k} classes")
        if any(exact.is_inf(v) for v in t):
            raise ValueError("cross_entropy: target probabilities must be finite")
        nan = nan or NAN in t
        b = {j: v if w is None else exact.mul(v, w[j]) for j, v in enumerate(t)
             if v not in (ZERO, NAN)}
    if nan:
        ls = [NAN] * k
    return ls, Target(k, b, w, e)


# --------------------------------------------------------------------------- values


def _split(ls: list[Tuple]) -> tuple[list[int], list[int], dict[int, Tuple]]:
    pos = [j for j, v in enumerate(ls) if v == INF]
    neg = [j for j, v in enumerate(ls) if v == NINF]
    fin = {j: v for j, v in enumerate(ls) if not exact.is_special(v)}
    return pos, neg, fin


def _divergent(signs: set[int]) -> Tuple | None:
    if not signs:
        return None
    return (INF if signs.pop() > 0 else NINF) if len(signs) == 1 else NAN


class LossForm(NamedTuple):
    """A row's loss as d + w log1p(S), S the sum of its Finite f; f None: the loss is d
    itself (exact, or a limit: a special tuple)."""

    d: Number
    w: Number = ZERO
    f: Finite | None = None


def loss_form(ls: list[Tuple], tg: Target | None) -> LossForm:
    """The exact part and tail of the cross-entropy of one parsed row (reductions sum
    these before certifying)."""
    if tg is None:
        return LossForm(ZERO)
    if NAN in ls:
        return LossForm(NAN)
    pos, neg, fin = _split(ls)
    if not pos and not fin:
        return LossForm(NAN)
    w = tg.total()
    signs = {sign(tg.a(j)) for j in neg} - {0}
    if pos:
        on_pos = [tg.a(j) for j in pos]
        if len(pos) > 1 and any(sign(a) for a in on_pos):
            every = all(sign(tg.a(j)) >= 0 for j in range(tg.k))
            return LossForm(INF if every and sign(frac(w) - sum(map(frac, on_pos))) > 0
                            else NAN)
        big = frac(w) - sum(map(frac, on_pos))  # A, the coefficient of l_a -> +inf
        limit = _divergent(signs | ({(big > 0) - (big < 0)} - {0}))
        if limit is not None:
            return LossForm(limit)
        return LossForm(_neg(tg.combo(fin)) if fin else ZERO)
    limit = _divergent(signs)
    if limit is not None:
        return LossForm(limit)
    f = Finite(fin)
    dd = tg.combo({j: exact.neg(v) for j, v in f.d.items()})
    if f.exact or sign(w) == 0:
        return LossForm(dd)
    return LossForm(dd, w, f)


def loss_value(ls: list[Tuple], tg: Target | None) -> Tuple:
    """Certified representative of the cross-entropy of one parsed row."""
    d, w, f = loss_form(ls, tg)
    if f is None:
        return represent(d)
    return f.certify(d, lambda q: scaled(w, f.log1p_s(q), q + 8),
                     lambda: f"loss of logits {_show(ls)}")


def _neg(n: Number) -> Number:
    return -n if isinstance(n, Fraction) else exact.neg(n)


def grad_values(ls: list[Tuple], tg: Target | None, which: Sequence[int] | None = None
                ) -> list[Tuple]:
    """Certified representatives of d loss / d l_j for j in `which` (default: all)."""
    k = len(ls)
    js = range(k) if which is None else which
    if tg is None:
        return [ZERO for _ in js]
    if NAN in ls:
        return [NAN for _ in js]
    pos, _, fin = _split(ls)
    if not pos and not fin:
        return [NAN for _ in js]
    w = tg.total()
    if pos:
        if len(pos) > 1:
            return [NAN if j in pos and sign(w) else represent(_neg(tg.a(j))) for j in js]
        return [represent(frac(w) - frac(tg.a(j)) if j == pos[0] else _neg(tg.a(j)))
                for j in js]
    f = Finite(fin)
    out = []
    for j in js:
        a = tg.a(j)
        what = lambda j=j: f"grad[{j}] of {_show(ls)}"  # noqa: E731
        if j not in fin or sign(w) == 0:
            out.append(represent(_neg(a)))
        elif not f.negs:  # equal finite logits: softmax is exactly 1/n
            out.append(represent(frac(w) / len(fin) - frac(a)))
        else:
            out.append(_grad_at(f, j, w, a, what))
    return out


def _grad_at(f: Finite, j: int, w: Number, a: Number, what: Callable[[], str]) -> Tuple:
    try:
        if j == f.top:  # (W - a_M) - W S/(1+S)
            return f.certify(frac(w) - frac(a),
                             lambda q: _ineg(scaled(w, f.s_ratio(q), q + 8)), what)
        # -a_j + W exp(d_j)/(1+S)
        return f.certify(_neg(a), lambda q: scaled(w, f.softmax(j, q), q + 8), what)
    except ReferenceUncertainError:
        if f.d[j] != ZERO or not f.ones:
            raise
    # A class tied at the top with n others while every other logit is so far below that
    # S = n + delta rounds to n at every precision ([0, 0, -1e10]): the value is a
    # rational a hair from a dyadic (1/2 - exp(-1e10)/4), so split S exactly:
    # W/(1+S) = W/(1+n) - W delta/((1+n)(1+n+delta)), the same for W S/(1+S) reversed.
    n = f.ones
    base = frac(w) / (1 + n) - frac(a) if j != f.top else frac(w) - frac(a) - frac(w) * n / (1 + n)
    return f.certify(base, lambda q: _ineg(scaled(w, f.tied_excess(q), q + 8)), what)


def logsumexp_value(ls: list[Tuple]) -> Tuple:
    if NAN in ls:
        return NAN
    pos, _, fin = _split(ls)
    if pos:
        return INF
    if not fin:
        return NINF
    f = Finite(fin)
    if f.exact:
        return f.m
    return f.certify(f.m, f.log1p_s, lambda: f"logsumexp of {_show(ls)}")


def log_softmax_values(ls: list[Tuple], which: Sequence[int] | None = None) -> list[Tuple]:
    js = range(len(ls)) if which is None else which
    pos, _, fin = _split(ls)
    if NAN in ls or (not pos and not fin):
        return [NAN for _ in js]
    if pos:
        return [(ZERO if len(pos) == 1 else NAN) if j in pos else NINF for j in js]
    f = Finite(fin)
    out = []
    for j in js:
        if j not in fin:
            out.append(NINF)
        elif f.exact:
            out.append(f.d[j])
        else:
            out.append(f.certify(f.d[j], lambda q: _ineg(f.log1p_s(q)),
                                 lambda j=j: f"log_softmax[{j}] of {_show(ls)}"))
    return out


def _show(ls: list[Tuple]) -> str:
    shown = [mpmath.nstr(mpmath.mp.make_mpf(v), 17) for v in ls[:6]]
    return "[" + ", ".join(shown) + (", ...]" if len(ls) > 6 else "]")


# --------------------------------------------------------------------------- public API


def _mpf(t: Tuple) -> mpmath.mpf:
    return mpmath.mp.make_mpf(t)


def logsumexp(logits: Sequence[Any]) -> mpmath.mpf:
    """log(sum_k exp(l_k)), certified: +inf with any +inf logit, -inf when every logit is
    -inf (or there are none), NaN with a NaN logit."""
    return _mpf(logsumexp_value(tuples(logits)))


def log_softmax(logits: Sequence[Any]) -> list[mpmath.mpf]:
    """l_k - logsumexp(l) for each k, certified (limits in the module docstring: all -inf
    or two +inf logits give NaN where softmax is undefined)."""
    return [_mpf(t) for t in log_softmax_values(tuples(logits))]


def cross_entropy(logits: Sequence[Any], target: Any, *, weight: Sequence[Any] | None = None,
                  label_smoothing: Any = 0, ignore_index: int | None = None) -> mpmath.mpf:
    """sum_k w_k p_k (logsumexp(l) - l_k), p = (1-E) t + E/K, certified (module docstring).

    target: an int class index (t one-hot) or K class probabilities t. Every logit
    -inf: NaN (softmax undefined). ValueError for a class index outside [0, K) (unless
    it is ignore_index: loss 0), a non-int scalar target, length mismatches, smoothing
    outside [0, 1], infinite weights or probabilities.
    """
    return _mpf(loss_value(*parse(logits, target, weight, label_smoothing, ignore_index)))


def cross_entropy_grad(logits: Sequence[Any], target: Any, *,
                       weight: Sequence[Any] | None = None, label_smoothing: Any = 0,
                       ignore_index: int | None = None) -> list[mpmath.mpf]:
    """d cross_entropy / d l_j = W softmax_j - w_j p_j, W = sum_k w_k p_k (for a class
    index c: w_c (softmax_j - [j == c])), each certified; zeros for an ignored target."""
    ls, tg = parse(logits, target, weight, label_smoothing, ignore_index)
    return [_mpf(t) for t in grad_values(ls, tg)]
