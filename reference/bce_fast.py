"""reference.fast's kernels for the two bce families (the `FastPath` hooks that
families.py registers for "bce_with_logits" and "bce").

Each hook evaluates one chunk of points in float64 with the proven error bound of
fast.py's module docstring (the proof lives there, next to the driver that relies on
it); the family-independent pieces come from fast_core.py. Hooks receive all four bulk
arguments x (input), y (target), w (weight), p (pos_weight), each a float64 array or a
0-d scalar; bce ignores p (the driver only lets p = 1 through).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .fast_core import (
    ERR_ABS,
    ERR_REL,
    ERR_REL_RATIONAL,
    _clamp,
    _dd_mul,
    _exp_neg,
    _round_bits,
    _two_prod,
    _unit,
    round_array,
    round_dd,
)
from .formats import Format

SMALL = 2.0 ** -200     # bce gradient: w in [SMALL, BIG]
BIG = 2.0 ** 200        # weights and pos_weights at most BIG
XMAX = 2.0 ** 256       # |logit| at most XMAX
QMIN = 2.0 ** -300      # probabilities in [QMIN, 1)
DIFF_MIN = 2.0 ** -500  # |q - y| (bce gradient) is 0 or at least this


# --------------------------------------------------------------------------- bce_with_logits


def logits_domain(grad: bool, x: np.ndarray, ax: np.ndarray, y: Any, w: Any, p: Any
                  ) -> Any:
    """Points where the bound of fast.py's module docstring is proven (scalars stay
    scalars)."""
    dom = ax <= XMAX
    wd = (w > 0) & (w <= BIG)
    pd = (p >= 0) & (p <= BIG)
    yd = (y >= 0) & (y <= 1)
    return dom & (wd & pd & yd & ~((y == 1) & (p == 0)))


def logits_special(grad: bool, fmt: Format | None, x: np.ndarray, y: Any, w: Any, p: Any
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Exact results outside the domain: (mask, value) for NaN and exact zeros, the same
    rules, in the same order, as bce_forms.logits_form."""
    nan = np.isnan(x) | np.isnan(y) | np.isnan(w) | np.isnan(p)
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(w) & np.isfinite(p)
    zero = ~nan & ((w == 0) | (finite & (y == 1) & (p == 0)))
    nan, zero = np.broadcast_arrays(nan, zero)
    return nan | zero, np.where(nan, np.nan, 0.0)


def logits_interval(grad: bool, x: np.ndarray, a: np.ndarray, y: Any, w: Any, p: Any
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(v, lo, hi) for bce_with_logits on in-domain points (fast.py's module docstring);
    a = |x|.

    lo and hi include the outward margin (E is twice the proven bound) and the known
    signs: losses are > 0; a gradient whose dyadic part is exactly 0 has the sign of T.
    """
    e = _exp_neg(a)
    omy = 1.0 - y
    py = p * y
    c = w * (omy + py)
    pos = x >= 0
    if grad:
        t = 1.0 + e
        np.divide(e, t, out=t)
        t *= c
        np.negative(t, out=t, where=pos)
        d = np.where(pos, w * omy, -(w * py))
        v = d + t
        err = d - t  # d and t have opposite signs: |d - t| = |d| + |t|
        np.abs(err, out=err)
        err *= ERR_REL
        err += ERR_ABS
        lo, hi = v - err, v + err
        # exact D = 0 (tested on the inputs: the computed d may underflow): V = T
        positive = ~pos & ((p == 0) | (y == 0))
        negative = pos & (y == 1)
        if np.any(positive):
            np.copyto(lo, 0.0, where=positive & (lo <= 0))
        if np.any(negative):
            np.copyto(hi, -0.0, where=negative & (hi >= 0))
    else:
        t = np.log1p(e)
        t *= c
        d = np.where(pos, omy, py)
        d *= a
        if not (np.ndim(w) == 0 and w == 1):
            d *= w
        v = d + t
        # V > 0. lo = v (1 - ERR_REL) - ERR_ABS is never -0.0, so maximum gives +0.0
        lo = v * (1.0 - ERR_REL)
        lo -= ERR_ABS
        np.maximum(lo, 0.0, out=lo)
        hi = v * (1.0 + ERR_REL)
        hi += ERR_ABS
    return v, lo, hi


def logits_tier2(grad: bool, fmt: Format, x: np.ndarray, y: Any, w: Any, p: Any
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Second tier for points the float64 interval could not certify: the dyadic part
    D (w (1-y) x, w p y |x|, w (1-y) or -w p y) exactly in double-double, the tail T as
    in tier 1. Soft labels such as y = 0.3 make fl(1 - y) x sit within 2**-54 of a
    float32 tie for 1 in 5 mantissas; the exact D separates those from the tie.

    Bound: D to 4u**2 |D| (Fast2Sum(1, -y) and Dekker products are exact), T to
    2**-42 |T| + 2**-601; (s, r) = TwoSum(D_hi, t) exact, r2 = fl(r + D_lo) adds
    u |r2|. E = 2**-40 |t| + 2**-97 |D_hi| + 2**-50 |r2| + 2**-600 is at least twice
    that, so fl(r2 -+ E) stays outside. The bounds s + fl(r2 -+ E) are double-doubles,
    rounded exactly by round_dd; certified where both round to the same bits (or, for
    gradients with an exact D, where D+-0 on T's side and the far bound do; or, for
    gradients at |x| <= 2**-30 with unit weights, where both ends of the bracket from
    tanh's series do, see below).
    """
    a = np.abs(x)
    pos = x >= 0
    oh = 1.0 - y
    ol = (1.0 - oh) - y  # Fast2Sum: 1 - y = oh + ol exactly, 0 <= y <= 1
    ph, pl = _two_prod(p, y)
    fh = np.where(pos, oh, ph)
    fl = np.where(pos, ol, pl)
    e = _exp_neg(a)
    c = w * (oh + ph)
    if grad:
        fh = np.where(pos, fh, -fh)
        fl = np.where(pos, fl, -fl)
        dh, dl = _dd_mul(w, 0.0, fh, fl)
        t = c * (e / (1.0 + e))
        t = np.where(pos, -t, t)
    else:
        m1, m2 = _two_prod(w, a)
        dh, dl = _dd_mul(m1, m2, fh, fl)
        t = c * np.log1p(e)
    s = dh + t
    bp = s - dh
    r = (dh - (s - bp)) + (t - bp)  # TwoSum: dh + t = s + r exactly
    r2 = r + dl
    err = 2.0 ** -40 * np.abs(t) + 2.0 ** -97 * np.abs(dh) + 2.0 ** -50 * np.abs(r2) + ERR_ABS
    out = round_dd(s, r2 - err, fmt)
    upper = round_dd(s, r2 + err, fmt)
    ok = out.view(np.uint64) == upper.view(np.uint64)
    if grad and not ok.all():
        # A tail below the error floor (|x| > ~415) straddles D itself, e.g. a soft label
        # whose 1 - y is a tie. But T = -+c s is never 0 and its sign is known, and the
        # double-double D is exact where w = 1 (1 - y by Fast2Sum; p y by Dekker, exact for
        # p = 1 without underflow): V lies strictly on T's side of D, between D+-0 and the
        # far end of the interval. Where those two round alike, that is the rounding.
        side = np.where(pos, -1.0, 1.0)
        exact = (w == 1) & (pos | ((p == 1) & ((y == 0) | (y >= 2.0 ** -900))))
        exact = np.broadcast_to(exact, side.shape)
        near = round_dd(dh, dl, fmt, side)
        far = np.where(side > 0, upper, out)
        alt = exact & ~ok & (near.view(np.uint64) == far.view(np.uint64))
        out = np.where(alt, near, out)
        ok |= alt
        # Near x = 0 with w = p = 1, V = (1/2 - y) + tanh(x/2)/2 and 1/2 - y may be a tie
        # that the tail's 2**-42 relative error cannot separate from. tanh(x/2)/2 =
        # (x/4)(1 - d), 0 <= d <= x**2/12 < 2**-61 for |x| <= 2**-30; 1/2 - y = h + l
        # exactly (TwoSum); E = 2**-49 (|l| + |x/4|) covers d and the two roundings of
        # fl(fl(l + x/4) -+ E), so h + that brackets V: round both ends exactly.
        small = ~ok & (a <= 2.0 ** -30) & (a > 0)
        small &= np.broadcast_to((w == 1) & (p == 1), small.shape)
        if small.any():
            i = np.flatnonzero(small)
            yi = np.broadcast_to(y, x.shape)[i]
            h = 0.5 - yi
            bp = h - 0.5
            lo_ = (0.5 - (h - bp)) + (-yi - bp)
            q = 0.25 * x[i]
            e2 = 2.0 ** -49 * (np.abs(lo_) + np.abs(q))
            first = round_dd(h, (lo_ + q) - e2, fmt)
            second = round_dd(h, (lo_ + q) + e2, fmt)
            same = first.view(np.uint64) == second.view(np.uint64)
            out[i[same]] = first[same]
            ok[i[same]] = True
    return out, ok


def logits_short_applies(flat: list[Any]) -> bool:
    """`_short` takes a batch with unit weight and pos_weight (0-d scalars equal to 1)."""
    return _unit(flat[2]) and _unit(flat[3])


def logits_short(x: np.ndarray, y: Any, sign: Any, grad: bool, fmt: Format, out: np.ndarray,
                 v: np.ndarray) -> np.ndarray:
    """bce_with_logits with unit weights: losses for any 0 <= y <= 1, gradients for hard
    labels (sign = 1 - 2y = +-1), in about a third of the passes of `logits_interval` (the
    exhaustive sweeps' case). Writes result and v like `_general`; returns the mask of
    certified points (the others are left to `_general`). Certified points have
    |v - V| <= SHORT_REL |V| + SHORT_ABS (the absolute part from |x| > 700, where v <
    SHORT_TINY), no width needed.

    Loss: V = |x| f + log1p(e), f = 1 - y (x >= 0) or y (x < 0), e = exp(-|x|): two
    non-negative terms. Gradient, y in {0, 1}: (1 - 2y) sigmoid(z), z = (1 - 2y) x,
    sigmoid(z) = (1 or e) / (1 + e). No cancellation in either. Bound (as in fast.py's
    module docstring): e to LIBM_REL, log1p(e) to 2 LIBM_REL + u, the quotient to 2 LIBM_REL +
    3u; |x| f to 2u (1 - y and the product), the sum adds u: the magnitude m satisfies
    |m - |V|| <= 2**-43.9 |V|, i.e. fewer than 2**9.2 float64 ulps of m. (For |x| > 700,
    e = exp(-700) stands for a smaller exact e**-|x|: absolute error below 2**-1009, far
    under every format's smallest subnormal, as in `_exp_neg`.)
    Certification without rounding an interval: the float64 bits of m below fmt's last
    place are more than SHORT_ULPS = 2**12 float64 ulps away from the half-way pattern.
    Then no rounding boundary of fmt lies within the error (across a power of two the
    nearest boundary is ~2**(51 - p) float64 ulps away), so m and |V| round alike. Only
    where fmt is normal (tiny <= m <= max_finite; NaN fails both); an m below half fmt's
    smallest subnormal by more than the bound certifies a zero signed like V (finite x
    only: limits at inf are the general path's). The rest is left uncertified."""
    a = np.abs(x)
    e = np.minimum(a, 700.0)
    np.negative(e, out=e)
    np.exp(e, out=e)
    if grad:
        den = 1.0 + e
        np.copyto(e, 1.0, where=x * sign >= 0)
        np.divide(e, den, out=v)
    else:
        np.log1p(e, out=v)
        f = np.where(x >= 0, 1.0 - y, y)
        f *= a
        v += f
    ok = _round_bits(v, a <= XMAX, fmt, out)
    if grad:
        out *= sign  # exact: sign is +-1 (-0.0 for a zero with y = 1)
        v *= sign
    return ok


def logits_short_labels(y: Any, grad: bool) -> tuple[bool, Any]:
    """(whether `logits_short` takes one chunk's labels, sign = 1 - 2y for gradients):
    losses take every 0 <= y <= 1, gradients only y in {0, 1}."""
    if not grad:
        return bool(np.all((y >= 0) & (y <= 1))), None
    sign = 1.0 - 2.0 * y
    if np.ndim(y) == 0:
        return sign in (1.0, -1.0), sign
    return bool(np.all(np.abs(sign) == 1.0)), sign


# --------------------------------------------------------------------------- bce


def prob_domain(grad: bool, x: np.ndarray, ax: np.ndarray, y: Any, w: Any, p: Any) -> Any:
    """Probabilities where the bound of fast.py's module docstring is proven (scalars
    stay scalars)."""
    if grad:
        diff = np.abs(x - y)
        return ((x >= QMIN) & (x < 1) & ((w >= SMALL) & (w <= BIG)) & (diff >= DIFF_MIN)
                & (diff <= BIG))
    return (x > 0) & (x < 1) & (((w > 0) & (w <= BIG)) & ((y >= 0) & (y <= 1)))


def prob_special(grad: bool, fmt: Format | None, x: np.ndarray, y: Any, w: Any, p: Any
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact results outside the domain: (mask, value) for NaN, exact zeros and the
    limits at q in {0, 1}, the same rules, in the same order, as bce_forms.prob_form
    (limits.py for q in {0, 1}: with 0 <= y <= 1 and 0 < w < inf, the loss is 0 where
    the log term vanishes (q = y) and +inf otherwise; the gradient is w at q = y = 0, -w
    at q = y = 1, -inf at q = 0 < y, +inf at q = 1 > y)."""
    nan = np.isnan(y) | np.isnan(w) | ~((x >= 0) & (x <= 1))
    zero = ~nan & (w == 0)
    if grad:  # q == y inside (0, 1): the rational gradient is exactly 0
        zero |= ~nan & (x == y) & (x > 0) & (x < 1) & np.isfinite(w)
    edge = ~nan & ~zero & (w > 0) & (w < np.inf) & (y >= 0) & (y <= 1) & ((x == 0) | (x == 1))
    nan, zero, edge = np.broadcast_arrays(nan, zero, edge)
    value = np.where(nan, np.nan, 0.0)
    if edge.any():
        at = x == y
        if grad:
            ww = np.broadcast_to(np.asarray(w, dtype=np.float64), x.shape)
            ww = ww if fmt is None else round_array(ww, fmt)
            lim = np.where(at, np.where(x == 0, ww, -ww), np.where(x == 0, -np.inf, np.inf))
        else:
            lim = np.where(at, 0.0, np.inf)
        value = np.where(edge, lim, value)
    return nan | zero | edge, value


def prob_interval(grad: bool, q: np.ndarray, a: np.ndarray, y: Any, w: Any, p: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(v, lo, hi) for bce on in-domain probabilities (fast.py's module docstring); a
    (= |q|) and p (= 1) are not used."""
    if grad:
        diff = q - y
        v = w * diff
        v /= q * (1.0 - q)
        err = np.abs(v)
        err *= ERR_REL_RATIONAL
        err += ERR_ABS
        lo, hi = v - err, v + err
        _clamp(lo, hi, diff > 0, diff < 0)
        return v, lo, hi
    small = q < 0.5
    big = ~small
    lq = np.empty_like(q)
    l1q = np.empty_like(q)
    np.log(q, out=lq, where=small)
    np.log1p(q - 1.0, out=lq, where=big)
    np.log1p(-q, out=l1q, where=small)
    np.log(1.0 - q, out=l1q, where=big)
    v = lq * (w * y)
    v += l1q * (w * (1.0 - y))
    np.negative(v, out=v)
    err = v * ERR_REL
    err += ERR_ABS
    lo, hi = v - err, v + err
    np.copyto(lo, 0.0, where=lo <= 0)  # V > 0
    return v, lo, hi
