"""The stable public API of DESIGN.md section 3 (scalar functions and reductions), and the
focal losses of section 10 (on logits: reference/focal.py; on probabilities:
reference/focal_prob.py)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import mpmath
import numpy as np

from . import focal, focal_prob, losses
from .engine import evaluate
from .exact import Tuple
from .families import get_family


def _mpf(t: Tuple) -> mpmath.mpf:
    """An mpf holding the tuple exactly: mpmath.mpf(t) would round to the context's
    53 bits and throw away the certified bits and the sticky tail."""
    return mpmath.mp.make_mpf(t)


def bce_with_logits(x: Any, y: Any, weight: Any = 1, pos_weight: Any = 1) -> mpmath.mpf:
    """w * (p*y*softplus(-x) + (1-y)*softplus(x)), certified (see engine.evaluate)."""
    return _mpf(losses.value("bce_with_logits", False, x, y, weight, pos_weight))


def bce_with_logits_grad(x: Any, y: Any, weight: Any = 1, pos_weight: Any = 1) -> mpmath.mpf:
    """d/dx of bce_with_logits."""
    return _mpf(losses.value("bce_with_logits", True, x, y, weight, pos_weight))


def bce(q: Any, y: Any, weight: Any = 1) -> mpmath.mpf:
    """-w * (y*log(q) + (1-y)*log(1-q)), no clamp; NaN outside 0 <= q <= 1."""
    return _mpf(losses.value("bce", False, q, y, weight))


def bce_grad(q: Any, y: Any, weight: Any = 1) -> mpmath.mpf:
    """d/dq of bce: w*(q-y)/(q*(1-q)) (limits at q = 0 and 1)."""
    return _mpf(losses.value("bce", True, q, y, weight))


def focal_with_logits(x: Any, y: Any, gamma: Any = 2, alpha: Any = None, weight: Any = 1
                      ) -> mpmath.mpf:
    """w * alpha_t * (1-p_t)**gamma * bce_with_logits(x, y), certified like bce_with_logits.

    p_t = sigmoid(x)*y + sigmoid(-x)*(1-y); alpha_t = alpha*y + (1-alpha)*(1-y), 1 when
    alpha is None. ValueError outside the domain: gamma finite >= 0, alpha finite or
    None, 0 <= y <= 1, weight finite >= 0 (NaN in x, y or weight gives NaN). Limits for
    infinite x (DESIGN.md section 3). Bulk: reference.rounded(reference.focal_op(gamma,
    alpha), dtype, x, y, weight=w, grad=g).
    """
    return _mpf(focal.value(False, x, y, gamma, alpha, weight))


def focal_with_logits_grad(x: Any, y: Any, gamma: Any = 2, alpha: Any = None,
                           weight: Any = 1) -> mpmath.mpf:
    """d/dx of focal_with_logits (same domain)."""
    return _mpf(focal.value(True, x, y, gamma, alpha, weight))


def focal_probability(q: Any, y: Any, gamma: Any = 2, alpha: Any = None, weight: Any = 1
                      ) -> mpmath.mpf:
    """w * alpha_t * (1-p_t)**gamma * bce(q, y) on a probability q, certified like bce.

    p_t = q*y + (1-q)*(1-y); alpha_t = alpha*y + (1-alpha)*(1-y), 1 when alpha is None
    (keras.losses.binary_focal_crossentropy, from_logits=False, without its clipping).
    ValueError outside the domain: gamma finite >= 0, alpha finite or None, 0 <= y <= 1,
    weight finite >= 0; NaN in q, y or weight, or q outside [0, 1], gives NaN. Limits at
    q = 0 and 1 (reference/focal_prob.py). Bulk: reference.rounded(
    reference.focal_prob_op(gamma, alpha), dtype, q, y, weight=w, grad=g).
    """
    return _mpf(focal_prob.value(False, q, y, gamma, alpha, weight))


def focal_probability_grad(q: Any, y: Any, gamma: Any = 2, alpha: Any = None, weight: Any = 1
                           ) -> mpmath.mpf:
    """d/dq of focal_probability (same domain)."""
    return _mpf(focal_prob.value(True, q, y, gamma, alpha, weight))


def reduce(op: str, reduction: str, inputs: Any, targets: Any, weight: Any = 1,
           pos_weight: Any = 1, grad: bool = False) -> mpmath.mpf:
    """Exact `mean` or `sum` of the elementwise terms, certified like a single value.

    Arguments broadcast like numpy. The result rounds correctly (once) in every format.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; expected 'mean' or 'sum'")
    if get_family(op).opaque:
        raise ValueError(f"reduce: {op} is certified point by point (no exact linear form); "
                         f"reductions are not supported for it")
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=object if isinstance(v, mpmath.mpf)
                                              else None) for v in
                                   (inputs, targets, weight, pos_weight)))
    flat = [a.ravel() for a in arrays]
    n = flat[0].size
    if n == 0:
        raise ValueError("cannot reduce an empty array")
    forms = [losses.form(op, grad, *(a[i] for a in flat)) for i in range(n)]
    scale = Fraction(1, n) if reduction == "mean" else Fraction(1)
    return _mpf(evaluate(losses.sum_forms(forms, scale)))
