"""The two binary cross-entropy families as linear forms of the engine (DESIGN.md section 3).

Cancellation-free forms, with a = |x|, k = 1 - y + p*y:

    loss, x >= 0:  w(1-y) x   + w k softplus(-a)        grad, x >= 0:  w(1-y) - w k sigmoid(-a)
    loss, x <  0:  -w p y x   + w k softplus(-a)        grad, x <  0:  -w p y + w k sigmoid(-a)

For y in [0,1] and w, p >= 0 the loss terms have one sign: no cancellation. Anything
else (soft-label gradients, targets outside [0,1], negative weights) is made certain
by the engine's precision escalation. bce on probabilities:

    loss:  -w y log(q) - w (1-y) log(1-q)          grad:  w (q - y) / (q (1 - q))  (rational)

`logits_form` and `prob_form` are the `form` of the families "bce_with_logits" and "bce"
(families.py registers them; losses.form dispatches through that registry).
"""

from __future__ import annotations

from typing import Any

from . import exact, limits
from .engine import LOG, LOG1M, SIGMOID_NEG, SOFTPLUS_NEG, Linear, evaluate
from .exact import HALF, NAN, ONE, ZERO, Tuple
from .limits import Ext


def _logits_finite(x: Tuple, y: Tuple, w: Tuple, p: Tuple, grad: bool) -> Linear:
    one_minus_y = exact.sub(ONE, y)
    py = exact.mul(p, y)
    k = exact.add(one_minus_y, py)
    a = x if exact.sign(x) >= 0 else exact.neg(x)
    if not grad:
        d = exact.mul(exact.mul(w, one_minus_y), x) if exact.sign(x) >= 0 else \
            exact.neg(exact.mul(exact.mul(w, py), x))
        return Linear(d, ((exact.mul(w, k), SOFTPLUS_NEG, a),))
    if exact.sign(x) >= 0:
        d, c = exact.mul(w, one_minus_y), exact.neg(exact.mul(w, k))
    else:
        d, c = exact.neg(exact.mul(w, py)), exact.mul(w, k)
    if x == ZERO:  # sigmoid(0) = 1/2 exactly: the gradient is dyadic
        return Linear(exact.add(d, exact.mul(c, HALF)))
    return Linear(d, ((c, SIGMOID_NEG, a),))


def _sign_of(form: Linear) -> int:
    return exact.sign(evaluate(form))


def _logits_limit(x: Tuple, y: Tuple, w: Tuple, p: Tuple, grad: bool) -> Tuple:
    """Some argument is infinite (none is NaN)."""
    if exact.is_inf(w) and not any(map(exact.is_inf, (x, y, p))):
        inner = exact.sign(evaluate(_logits_finite(x, y, ONE, p, grad)))
        return limits.result(limits.mul(limits.num(w), Ext("F", inner) if inner else limits.Z))
    fx, fnx = _kernel_limits(x, grad)
    if exact.is_inf(y) and not exact.is_inf(x):
        # loss = w (y k + softplus(x)),    k = p softplus(-x) - softplus(x)
        # grad = w (sigmoid(x) - y j),     j = p sigmoid(-x) + sigmoid(x)
        a = x if exact.sign(x) >= 0 else exact.neg(x)
        pm1 = exact.sub(p, ONE)
        if not exact.is_inf(p):
            if not grad:
                d = exact.neg(x) if exact.sign(x) >= 0 else exact.neg(exact.mul(p, x))
                s = _sign_of(Linear(d, ((pm1, SOFTPLUS_NEG, a),)))
            elif exact.sign(x) >= 0:
                s = _sign_of(Linear(ONE, ((pm1, SIGMOID_NEG, a),)))
            else:
                s = _sign_of(Linear(p, ((exact.neg(pm1), SIGMOID_NEG, a),)))
            if s == 0:  # the y-term vanishes identically: an ordinary finite value
                return evaluate(_logits_finite(x, ZERO, w, ONE, grad))
            coef = Ext("F", s)
        else:
            coef = limits.num(p)
        y_term = limits.mul(limits.num(y), coef)
        if grad:
            y_term = limits.neg(y_term)
        return limits.result(limits.mul(limits.num(w), limits.add(y_term, fx)))
    wn, yn = limits.num(w), limits.num(y)
    py = limits.mul(limits.num(p), yn)
    one_minus_y = limits.num(exact.sub(ONE, y)) if not exact.is_inf(y) else \
        Ext("I", -exact.sign(y))
    if grad:
        inner = limits.add(limits.mul(one_minus_y, fx), limits.neg(limits.mul(py, fnx)))
    else:
        inner = limits.add(limits.mul(py, fnx), limits.mul(one_minus_y, fx))
    if inner.kind == "F" and inner.value is None:
        # only p was infinite and its term vanished (y = 0 handled by the caller)
        raise AssertionError("unreachable: finite transcendental limit")
    return limits.result(limits.mul(wn, inner))


def _kernel_limits(x: Tuple, grad: bool) -> tuple[Ext, Ext]:
    """(F(x), F(-x)) where F is softplus (loss) or sigmoid (grad), as Ext values."""
    if x == exact.INF:
        return (limits.const(1, ONE), limits.vanishing()) if grad else \
            (Ext("I", 1), limits.vanishing())
    if x == exact.NINF:
        return (limits.vanishing(), limits.const(1, ONE)) if grad else \
            (limits.vanishing(), Ext("I", 1))
    return limits.const(1), limits.const(1)


def logits_form(x: Any, y: Any, weight: Any = 1, pos_weight: Any = 1, grad: bool = False
                ) -> Linear:
    """The linear form of bce_with_logits (or its d/dx) at one point."""
    x, y, w, p = (exact.to_tuple(v) for v in (x, y, weight, pos_weight))
    if NAN in (x, y, w, p):
        return Linear(NAN)
    if w == ZERO:
        return Linear(ZERO)
    if exact.is_inf(p) and y == ZERO:
        p = ONE  # p only multiplies y: with y = 0 its value is irrelevant
    if any(map(exact.is_inf, (x, y, w, p))):
        return Linear(_logits_limit(x, y, w, p, grad))
    return _logits_finite(x, y, w, p, grad)


def _prob_finite(q: Tuple, y: Tuple, w: Tuple, grad: bool) -> Linear:
    if grad:
        fq, fy = exact.to_fraction(q), exact.to_fraction(y)
        return Linear(exact.to_fraction(w) * (fq - fy) / (fq * (1 - fq)))
    return Linear(ZERO, ((exact.neg(exact.mul(w, y)), LOG, q),
                         (exact.neg(exact.mul(w, exact.sub(ONE, y))), LOG1M, q)))


def _prob_limit(q: Tuple, y: Tuple, w: Tuple, grad: bool) -> Tuple:
    """q in {0, 1} or y, w infinite; q is in [0, 1] and nothing is NaN."""
    wn, yn = limits.num(w), limits.num(y)
    one_minus_y = limits.num(exact.sub(ONE, y)) if not exact.is_inf(y) else \
        Ext("I", -exact.sign(y))
    interior = q not in (ZERO, ONE)
    if grad:
        if q == ZERO and y == ZERO:
            return w  # d/dq of -w log(1-q) at 0
        if q == ONE and y == ONE:
            return exact.neg(w)  # d/dq of -w log(q) at 1
        diff = limits.num(exact.sub(q, y)) if not exact.is_inf(y) else Ext("I", -exact.sign(y))
        inv = limits.const(1) if interior else Ext("I", 1)  # 1 / (q (1 - q))
        return limits.result(limits.mul(wn, limits.mul(diff, inv)))
    if interior and exact.is_inf(w) and not exact.is_inf(y):
        s = exact.sign(evaluate(_prob_finite(q, y, ONE, False)))
        return limits.result(limits.mul(wn, Ext("F", s) if s else limits.Z))
    if interior:  # y infinite: loss = -w (y log(q/(1-q)) + log(1-q))
        s = exact.sign(exact.sub(q, HALF))
        if s == 0:
            return evaluate(_prob_finite(q, ZERO, w, False)) if not exact.is_inf(w) else \
                limits.result(limits.mul(wn, limits.const(1)))
        y_term = limits.mul(yn, Ext("F", s))
        return limits.result(limits.neg(limits.mul(wn, limits.add(y_term, limits.const(-1)))))
    log_q = Ext("I", -1) if q == ZERO else limits.Z
    log_1mq = Ext("I", -1) if q == ONE else limits.Z
    inner = limits.add(limits.mul(yn, log_q), limits.mul(one_minus_y, log_1mq))
    return limits.result(limits.neg(limits.mul(wn, inner)))


def prob_form(q: Any, y: Any, weight: Any = 1, grad: bool = False) -> Linear:
    """The linear form of bce on a probability q (or its d/dq) at one point."""
    q, y, w = (exact.to_tuple(v) for v in (q, y, weight))
    if NAN in (q, y, w) or exact.is_inf(q) or exact.sign(q) < 0 or \
            exact.sign(exact.sub(ONE, q)) < 0:
        return Linear(NAN)  # not a probability: log of a negative number
    if w == ZERO:
        return Linear(ZERO)
    if q in (ZERO, ONE) or exact.is_inf(y) or exact.is_inf(w):
        return Linear(_prob_limit(q, y, w, grad))
    return _prob_finite(q, y, w, grad)
