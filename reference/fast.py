"""Fast certified reference: vectorized float64 evaluation with a proven error bound.

The mpmath engine (engine.py) certifies ~45k points/s; the audit needs millions. Here
every point is evaluated in float64 numpy together with a rigorous bound E such that
the exact value V lies in [lo, hi] = [v - E, v + E]. Rounding to nearest-even is
monotone, so when lo and hi round to the SAME value of the target format (same bits,
sign of zero included), that value is round_to(V) -- certified, not estimated. Every
other point (interval straddling a rounding boundary or a tie, or inputs outside the
domain where the bound below is proven) is sent to the mpmath path
(`vectorized.point`). The result is bit-identical to the pure mpmath reference by
construction. Only float16, bfloat16 and float32 targets take this path: float64 would
need about 2 x 53 correct bits, which float64 arithmetic cannot certify.

Routes, cheapest first: `_short` (unit weights: every loss with 0 <= y <= 1, gradients
with y in {0, 1}; ~15 numpy passes, certified from the float64 bits of the estimate),
`_general` (any point of the domain; interval [lo, hi] rounded at both ends), tier 2
`_logits_dd` (exact dyadic part in double-double, for near-ties), then mpmath.
`python -m audit bench` prints the measured rates and the share of each route.

Error model (the proof)
-----------------------
u = 2**-53. Basic operations (+ - * /) are IEEE correctly rounded: relative error <= u,
plus an absolute error <= 2**-1075 when the result is subnormal (gradual underflow).
In the logits domain (|x| <= 2**256, 0 <= y <= 1, 0 < w <= 2**200, 0 <= p <= 2**200)
nothing overflows, and every quantity that may underflow is afterwards multiplied by
at most 2**456 (w |x|) in total, over fewer than 16 operations: all underflow together
adds less than 2**-614 absolute, which the absolute term ERR_ABS = 2**-600 covers.
(The bce gradient keeps a relative-only domain: q >= 2**-300, w >= 2**-200.)

numpy's exp, log and log1p are not correctly rounded. ASSUMPTION (A): for float64
arguments, each returns a result with relative error <= LIBM_REL = 2**-45 (128 ulps)
whenever the exact result is a normal float64, and absolute error <= 2**-1060 when it
is below 2**-1022 (underflow). Documented maxima are far smaller: glibc's libm tables
list <= 1-2 ulps for exp/log/log1p on x86_64, numpy's own AVX512/SVML float64 kernels
are documented at <= 4 ulps. (A) is also checked at run time on first use
(`libm_ok`: 3 x 2048 arguments against mpmath, must be within 2**-49, i.e. 16 ulps);
if that check fails the fast path is disabled and everything goes to mpmath.
The test suite then compares every float16 and bfloat16 input exhaustively.

bce_with_logits (a = |x|, e = exp(-a), k = 1 - y + p y, c = w k), as in losses.py:
    loss:  V = D + T,  D = w a (1-y) [x >= 0] or w a p y [x < 0],  T = c log1p(e)
    grad:  V = D + T,  D = w (1-y) or -w p y,  T = -c s or +c s,  s = e / (1 + e)
  * e: relative error <= LIBM_REL (normal); e = 0 is used for a > 700 (absolute error
    < 2**-1009, times |c| <= 2**401 stays below 2**-608).
  * log1p(e_hat): error <= LIBM_REL + (propagated e error) * e / ((1+e) log1p(e)) <=
    2 LIBM_REL + u, since e / ((1+e) log1p(e)) <= 1.
  * s = e / (1 + e): <= 2 LIBM_REL + 2u (1 + e_hat carries at most LIBM_REL).
  * 1 - y, p y, k = (1-y) + p y (two non-negative terms), c, D, T: each a few more u.
  So both computed terms have relative error <= 2 LIBM_REL + 8u < TERM_REL = 2**-42,
  plus an absolute error < 2**-607 from a > 700 (|c| <= 2**401) and < 2**-614 from
  underflow.
  With v = fl(d + t): |v - V| <= 2**-42 (1 + 2**-41) (|d| + |t|) + u |v| + 2**-601.
  We use E = 2**-41 (|d| + |t|) + 2**-600: at least twice that, so the roundings of
  E, v - E and v + E themselves (each <= u |.|) cannot push lo above V or hi below V.
  Cancellation (soft-label gradients) needs no special case: E is relative to
  |d| + |t|, not to |v|, so a cancelled point simply gets a wide interval and falls back.
bce on probabilities, 0 < q < 1:
    loss:  V = w y (-log q) + w (1-y) (-log(1-q)),  both terms >= 0.
  log q = log1p(q - 1) for q >= 1/2 (q - 1 exact by Sterbenz), log(q) otherwise;
  log(1-q) = log(1 - q) for q > 1/2 (1 - q exact), log1p(-q) otherwise. Each term has
  relative error <= LIBM_REL + 3u, the same E as above applies.
    grad:  V = w (q - y) / (q (1 - q)), rational: five correctly rounded operations,
  relative error <= 5u + O(u^2) < 2**-50; E = 2**-48 |v| + 2**-600.
Known signs: where the exact value is known to be > 0 (losses, D = 0 with T > 0) lo is
clamped to +0.0, where < 0, hi to -0.0, so tiny underflowing values certify their signed
zero instead of straddling 0. Exact zeros (w = 0; y = 1 with p = 0; q = y in the bce
gradient) are set to +0.0 directly, NaN inputs to NaN, exactly as losses.py does.
Anything else not covered (inf inputs, y outside [0, 1], negative or huge weights,
|x| > 2**256, q at 0 or 1, ...) falls back. At x = 0 the gradient is dyadic: an exact
float result certifies as usual, an exact tie or zero straddles and falls back.

`approx_parts` gives float64 values with a documented relative error (not a correct
float64 rounding); see its docstring.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from . import losses
from .formats import Format, get_format, round_to

FAST_DTYPES = ("float16", "bfloat16", "float32")

LIBM_REL = 2.0 ** -45   # assumption (A) for np.exp / np.log / np.log1p
LIBM_CHECK = 2.0 ** -49  # what the run-time self-check demands (8x below (A))
TERM_REL = 2.0 ** -42   # proven relative bound of each computed term
ERR_REL = 2.0 ** -41    # E = ERR_REL (|d| + |t|) + ERR_ABS, twice the proven bound
ERR_REL_RATIONAL = 2.0 ** -48
ERR_ABS = 2.0 ** -600
SHORT_ULPS = 1 << 12    # _short: certified when this many float64 ulps from a tie
SHORT_REL = 2.0 ** -43  # _short: relative error bound of v (proven 2**-43.9) ...
SHORT_ABS = 2.0 ** -1000  # ... plus this absolute bound (exp(-700) stands in for e**-|z|),
SHORT_TINY = 2.0 ** -900  # which only matters where v is below this

SMALL = 2.0 ** -200     # bce gradient: w in [SMALL, BIG]
BIG = 2.0 ** 200        # weights and pos_weights at most BIG
XMAX = 2.0 ** 256       # |logit| at most XMAX
QMIN = 2.0 ** -300      # probabilities in [QMIN, 1)
DIFF_MIN = 2.0 ** -500  # |q - y| (bce gradient) is 0 or at least this

CHUNK = 1 << 14         # points per pass: keeps the temporaries in cache
MIN_FAST = 16           # vectorized.rounded uses this module from this many points on

_SIGN = np.uint64(1 << 63)

# how many points took which route since the last reset_stats()
# ("fast" includes "short", the points _short certified, and "tier2", the points the
# double-double tier certified)
STATS: dict[str, int] = {"points": 0, "fast": 0, "short": 0, "tier2": 0, "domain": 0,
                         "uncertain": 0}
_DISABLED = False  # tests flip this to prove the detector matters (never in production)


def reset_stats() -> None:
    """Zero the route counters (bench and tests read STATS)."""
    for k in STATS:
        STATS[k] = 0


def fallback_share() -> float:
    """Share of points since reset_stats() that needed the mpmath path."""
    n = STATS["points"]
    return (STATS["domain"] + STATS["uncertain"]) / n if n else 0.0


# --------------------------------------------------------------------------- rounding


def round_array(v: np.ndarray, fmt: Format, nonneg: bool = False) -> np.ndarray:
    """Correct round-to-nearest-even of finite float64 values into fmt (float64 out).

    Normal range: integer rounding of the float64 bit pattern at bit 53 - precision
    (a carry out of the significand correctly bumps the exponent). Subnormal range of
    fmt: (|v| + C) - C with ulp(C) = the smallest subnormal, one correctly rounded
    float64 addition. Overflow: a result above max_finite (i.e. |v| >= max + ulp/2
    after rounding with unbounded exponent, IEEE semantics) becomes inf. Sign (and
    -0.0 for negative underflow) is copied from v. No ml_dtypes cast: float64 ->
    bfloat16 through float32 would round twice. nonneg: v holds no negative value
    and no -0.0 (saves two passes).
    """
    a = v if nonneg else np.abs(v)
    s = 53 - fmt.precision
    mag = a.view(np.uint64)
    q = mag >> np.uint64(s)
    q &= np.uint64(1)
    q += np.uint64((1 << (s - 1)) - 1)
    q += mag
    q &= np.uint64(~((1 << s) - 1) & ((1 << 64) - 1))
    r = q.view(np.float64)
    sub = a < math.ldexp(1.0, fmt.emin)
    if sub.any():
        c = math.ldexp(1.0, fmt.emin - fmt.precision + 53)
        r = np.where(sub, (a + c) - c, r)
    np.copyto(r, np.inf, where=r > fmt.max_finite)
    return r if nonneg else np.copysign(r, v, out=r)


# --------------------------------------------------------------------------- self-check


@lru_cache(maxsize=1)
def libm_ok() -> bool:
    """Check assumption (A) on this machine's numpy (once): exp, log, log1p against
    mpmath on the argument ranges used here, within LIBM_CHECK = 2**-49."""
    from mpmath import mp, mpf

    rng = np.random.default_rng(2024)
    n = 2048
    a = np.concatenate([rng.uniform(0, 40, n // 2), rng.uniform(0, 708, n // 2)])
    q = np.ldexp(rng.uniform(0.5, 1, n), -rng.integers(1, 300, n))  # (0, 1/2)
    t = np.concatenate([np.ldexp(rng.uniform(0.5, 1, n // 2), -rng.integers(0, 300, n // 2)),
                        -np.ldexp(rng.uniform(0.5, 1, n // 2), -rng.integers(1, 300, n // 2))])
    cases = ((np.exp(-a), a, lambda z: mp.exp(-z)), (np.log(q), q, mp.log),
             (np.log1p(t), t, mp.log1p))
    with mp.workprec(80):
        for got, args, fn in cases:
            for g, z in zip(got.tolist(), args.tolist(), strict=True):
                want = fn(mpf(z))
                if abs(mpf(g) - want) > LIBM_CHECK * abs(want):
                    return False
    return True


# --------------------------------------------------------------------------- kernels


def _exp_neg(a: np.ndarray) -> np.ndarray:
    """exp(-a), a >= 0, with 0 for a > 700: e**-700 < 2**-1009, so |c| e**-a < 2**-608
    (|c| <= 2**401 in the domain), inside ERR_ABS. Also keeps numpy's SIMD exp off its
    slow underflow lanes."""
    e = np.minimum(a, 700.0)
    np.negative(e, out=e)
    np.exp(e, out=e)
    big = a > 700.0
    if big.any():
        e[big] = 0.0
    return e


def _clamp(lo: np.ndarray, hi: np.ndarray, positive: Any, negative: Any) -> None:
    """Use a known sign of V: lo >= +0.0 where V > 0, hi <= -0.0 where V < 0."""
    np.copyto(lo, 0.0, where=positive & (lo <= 0))
    np.copyto(hi, -0.0, where=negative & (hi >= 0))


def _logits(x: np.ndarray, a: np.ndarray, y: Any, w: Any, p: Any, grad: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(v, lo, hi) for bce_with_logits on in-domain points (module docstring); a = |x|.

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


def _prob(q: np.ndarray, y: Any, w: Any, grad: bool
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(v, lo, hi) for bce on in-domain probabilities (module docstring)."""
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


def _two_prod(a: Any, b: Any) -> tuple[Any, Any]:
    """Dekker: a * b = p + e exactly (no FMA in numpy), for |a|, |b| < 2**996 and no
    underflow; under underflow e is off by a few 2**-1074, inside ERR_ABS."""
    p = a * b
    c = a * 134217729.0
    ah = c - (c - a)
    al = a - ah
    c = b * 134217729.0
    bh = c - (c - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _dd_mul(a1: Any, a2: Any, b1: Any, b2: Any) -> tuple[Any, Any]:
    """(a1 + a2)(b1 + b2) as p + e with |error| <= 4u**2 |p| when |a2| <= u|a1|,
    |b2| <= u|b1| (the cross terms are ~u|p|, each rounded with relative error u)."""
    p, e = _two_prod(a1, b1)
    return p, e + (a1 * b2 + a2 * b1 + a2 * b2)


def _logits_dd(x: np.ndarray, y: Any, w: Any, p: Any, grad: bool, fmt: Format
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


def _is_boundary(h: np.ndarray, fmt: Format) -> np.ndarray:
    """h (finite float64) is a rounding boundary of fmt: a midpoint between two
    consecutive fmt values (or the overflow threshold max + ulp/2)."""
    a = np.abs(h)
    s = 53 - fmt.precision
    rem = a.view(np.uint64) & np.uint64((1 << s) - 1)
    normal = rem == np.uint64(1 << (s - 1))
    m = a * math.ldexp(1.0, fmt.precision - fmt.emin)  # in units of half the subnormal step
    sub = (m == np.floor(m)) & (np.fmod(m, 2.0) == 1.0)
    return np.where(a < math.ldexp(1.0, fmt.emin), sub, normal)


def round_dd(h: np.ndarray, low: np.ndarray, fmt: Format, side: Any = 0.0) -> np.ndarray:
    """Correct rounding of the double-double h + low into fmt (|low| << |h|, or h = 0).

    (h, low) is first renormalized exactly (TwoSum), so h = fl(h + low). Every boundary of
    fmt is a float64 and no float64 lies strictly between h and h + low, so h + low
    rounds like h -- unless h IS a boundary, where the sign of low picks the side.
    side (+-1 per point, or 0): round h + low + side * 0+ instead, the limit from that
    side (where h + low is exactly a boundary and side != 0, the side picks it).
    """
    hh = h + low
    bp = hh - h
    ll = (h - (hh - bp)) + (low - bp)  # TwoSum: exact whatever the magnitudes
    if np.any(side):
        ll = np.where(ll != 0, ll, side)
    nudge = _is_boundary(hh, fmt) & (ll != 0)
    if nudge.any():
        hh = np.where(nudge, np.nextafter(hh, np.copysign(np.inf, ll)), hh)
    return round_array(hh, fmt)


def _domain(op: str, grad: bool, x: np.ndarray, ax: np.ndarray, y: Any, w: Any, p: Any
            ) -> Any:
    """Points where the bound of the module docstring is proven (scalars stay scalars)."""
    if op == "bce_with_logits":
        dom = ax <= XMAX
        wd = (w > 0) & (w <= BIG)
        pd = (p >= 0) & (p <= BIG)
        yd = (y >= 0) & (y <= 1)
        return dom & (wd & pd & yd & ~((y == 1) & (p == 0)))
    if grad:
        diff = np.abs(x - y)
        return ((x >= QMIN) & (x < 1) & ((w >= SMALL) & (w <= BIG)) & (diff >= DIFF_MIN)
                & (diff <= BIG))
    return (x > 0) & (x < 1) & (((w > 0) & (w <= BIG)) & ((y >= 0) & (y <= 1)))


def _special(op: str, grad: bool, fmt: Format | None, x: np.ndarray, y: Any, w: Any,
             p: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exact results outside the domain: (mask, value) for NaN, exact zeros and the
    bce limits at q in {0, 1}, the same rules, in the same order, as
    losses.logits_form / prob_form (limits.py for q in {0, 1}: with 0 <= y <= 1 and
    0 < w < inf, the loss is 0 where the log term vanishes (q = y) and +inf otherwise;
    the gradient is w at q = y = 0, -w at q = y = 1, -inf at q = 0 < y, +inf at
    q = 1 > y)."""
    if op == "bce_with_logits":
        nan = np.isnan(x) | np.isnan(y) | np.isnan(w) | np.isnan(p)
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(w) & np.isfinite(p)
        zero = ~nan & ((w == 0) | (finite & (y == 1) & (p == 0)))
        nan, zero = np.broadcast_arrays(nan, zero)
        return nan | zero, np.where(nan, np.nan, 0.0)
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


def _short(x: np.ndarray, y: Any, sign: Any, grad: bool, fmt: Format, out: np.ndarray,
           v: np.ndarray) -> np.ndarray:
    """bce_with_logits with unit weights: losses for any 0 <= y <= 1, gradients for hard
    labels (sign = 1 - 2y = +-1), in about a third of the passes of `_logits` (the
    exhaustive sweeps' case). Writes result and v like `_general`; returns the mask of
    certified points (the others are left to `_general`). Certified points have
    |v - V| <= SHORT_REL |V| + SHORT_ABS (the absolute part from |x| > 700, where v <
    SHORT_TINY), no width needed.

    Loss: V = |x| f + log1p(e), f = 1 - y (x >= 0) or y (x < 0), e = exp(-|x|): two
    non-negative terms. Gradient, y in {0, 1}: (1 - 2y) sigmoid(z), z = (1 - 2y) x,
    sigmoid(z) = (1 or e) / (1 + e). No cancellation in either. Bound (as in the module
    docstring): e to LIBM_REL, log1p(e) to 2 LIBM_REL + u, the quotient to 2 LIBM_REL +
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


def _round_bits(m: np.ndarray, finite: np.ndarray, fmt: Format, out: np.ndarray
                ) -> np.ndarray:
    """`_short`'s certification: m >= 0 estimates |V| to within 2**9.2 float64 ulps (of m);
    writes round(m) into out and returns where that is round(|V|) for sure: m's bits below
    fmt's last place more than SHORT_ULPS from the half-way pattern, fmt normal at m; or,
    where `finite`, m so far below half the smallest subnormal that |V| rounds to 0."""
    s = 53 - fmt.precision
    bits = m.view(np.uint64)
    dist = (bits & np.uint64((1 << s) - 1)).view(np.int64)
    dist -= 1 << (s - 1)
    np.abs(dist, out=dist)
    ok = dist > SHORT_ULPS
    if not _DISABLED:
        ok &= m >= math.ldexp(1.0, fmt.emin)
    else:
        ok = m >= math.ldexp(1.0, fmt.emin)
    ok &= m <= fmt.max_finite
    zero = m < math.ldexp(1.0 - 2.0 ** -30, fmt.quantum_exp - 1)
    zero &= finite
    ok |= zero
    # round at bit s of the pattern (ties, never certified, would go to even); zeros to 0
    q = bits >> np.uint64(s)
    q &= np.uint64(1)
    q += bits
    q += np.uint64((1 << (s - 1)) - 1)
    np.logical_not(zero, out=zero)
    q *= zero
    np.bitwise_and(q, np.uint64(~((1 << s) - 1) & ((1 << 64) - 1)), out=out.view(np.uint64))
    return ok


def _unit(a: Any) -> bool:
    return np.ndim(a) == 0 and a == 1


def _short_labels(y: Any, grad: bool) -> tuple[bool, Any]:
    """(whether _short takes these labels, sign = 1 - 2y for gradients): losses take
    every 0 <= y <= 1, gradients only y in {0, 1}."""
    if not grad:
        return bool(np.all((y >= 0) & (y <= 1))), None
    sign = 1.0 - 2.0 * y
    if np.ndim(y) == 0:
        return sign in (1.0, -1.0), sign
    return bool(np.all(np.abs(sign) == 1.0)), sign


def _general(op: str, grad: bool, fmt: Format | None, x: np.ndarray, y: Any, w: Any, p: Any,
             abs_tol: float = 0.0, rel_tol: float = 0.0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of any points of the ops' domains: (result, status, v, width). status 0 =
    certified (or exact), 1 = outside the fast domain, 2 = interval not inside one rounding
    cell. fmt None: no rounding, status 2 marks a relative bound worse than APPROX_REL
    (approx_parts). width = hi - lo of the certified interval (0 for exact special
    values, inf outside the domain)."""
    n = x.shape[0]
    with np.errstate(all="ignore"):
        ax = np.abs(x)
        dom = np.broadcast_to(_domain(op, grad, x, ax, y, w, p), (n,))
        if op == "bce_with_logits":
            v, lo, hi = _logits(x, ax, y, w, p, grad)
        else:
            v, lo, hi = _prob(x, y, w, grad)
        if fmt is None:
            ok = (hi - lo) <= (rel_tol or APPROX_REL) * np.abs(v) + abs_tol
            out = v
        else:
            nonneg = not grad  # losses: lo >= +0.0 (garbage outside the domain is replaced)
            out = round_array(lo, fmt, nonneg)
            ok = out.view(np.uint64) == round_array(hi, fmt, nonneg).view(np.uint64)
            if _DISABLED:
                ok[:] = True
                out = round_array(v, fmt)
        status = ok.view(np.int8) ^ np.int8(1)
        status <<= 1  # 0 certified, 2 uncertain
        width = hi - lo
        rest = np.flatnonzero(~dom)
        status[rest] = 1
        width[rest] = np.inf
        if rest.size:
            sel = [a[rest] if np.ndim(a) else a for a in (x, y, w, p)]
            exact, value = _special(op, grad, fmt, *sel)
            hit = rest[exact]
            out[hit] = value[exact]
            v[hit] = value[exact]
            status[hit] = 0
            width[hit] = 0.0
    return out, status, v, width


# --------------------------------------------------------------------------- public API


def _prepare(op: str, input: Any, target: Any, weight: Any, pos_weight: Any
             ) -> tuple[tuple[int, ...], list[Any]] | None:
    """Broadcast shape and flat float64 arguments (size-1 ones as 0-d scalars), taken
    exactly like vectorized._points does; None when the fast path does not apply."""
    if op not in losses.OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(losses.OPS)}")
    arrays = [np.asarray(v) for v in (input, target, weight, pos_weight)]
    for a in arrays:
        if a.dtype.kind == "f" and a.dtype.itemsize > 8:
            raise ValueError("inputs wider than float64 are not supported in bulk")
        if a.dtype.kind not in "fiub" and a.dtype.name != "bfloat16":
            return None  # object arrays etc.: the mpmath path decides
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    if op == "bce" and np.any(arrays[3] != 1):
        return None  # the mpmath path raises its "bce has no pos_weight" error
    flat: list[Any] = []
    for i, a in enumerate(arrays):
        a = a.astype(np.float64, copy=False)
        if a.size == 1 and i > 0:
            flat.append(np.float64(a.reshape(())))
        elif i > 1 and a.size and a.flat[0] == 1 and np.all(a == 1):
            flat.append(np.float64(1.0))  # unit weights as arrays: still _short's case
        else:
            flat.append(np.broadcast_to(a, shape).ravel())
    return shape, flat


def _run(op: str, grad: bool, fmt: Format | None, shape: tuple[int, ...], flat: list[Any],
         abs_tol: float = 0.0, rel_tol: float = 0.0, parts: bool = True
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray,
                    np.ndarray | None]:
    """(result, status, v, width, indices of status != 0, indices _general computed) over
    all points, chunk by chunk. v and width only with parts (else None: a fresh array of
    every point costs page faults); width is set where _general computed; the last item
    is None when that is every point (_short never ran)."""
    x = flat[0]
    n = x.shape[0]
    out = np.empty(n)
    status = np.empty(n, dtype=np.int8)
    v = np.empty(n) if parts else None
    width = np.empty(n) if parts else None
    scratch = None if parts else np.empty(min(n, CHUNK))  # _short's working buffer
    short = fmt is not None and op == "bce_with_logits" and _unit(flat[2]) and _unit(flat[3])
    pending = []  # points _short left to _general, batched: its fixed cost is ~100 calls
    general = []  # chunks _general ran on, when _short ran on others
    for s in range(0, n, CHUNK):
        part = [a[s:s + CHUNK] if np.ndim(a) else a for a in flat]
        take, sign = _short_labels(part[1], grad) if short else (False, None)
        if take:
            with np.errstate(all="ignore"):
                vs = scratch[:part[0].size] if v is None else v[s:s + CHUNK]
                ok = _short(part[0], part[1], sign, grad, fmt, out[s:s + CHUNK], vs)
            status[s:s + CHUNK] = 0
            left = np.flatnonzero(~ok)
            STATS["short"] += ok.size - left.size
            pending.append(left + s)
            continue
        general.append(np.arange(s, min(s + CHUNK, n)))
        res = _general(op, grad, fmt, *part, abs_tol, rel_tol)
        out[s:s + CHUNK], status[s:s + CHUNK] = res[:2]
        if v is not None:
            v[s:s + CHUNK], width[s:s + CHUNK] = res[2:]
    rest = np.concatenate(pending) if pending else np.empty(0, dtype=np.intp)
    for s in range(0, rest.size, CHUNK):
        idx = rest[s:s + CHUNK]
        part = [a[idx] if np.ndim(a) else a for a in flat]
        res = _general(op, grad, fmt, *part)
        out[idx], status[idx] = res[:2]
        if v is not None:
            v[idx], width[idx] = res[2:]
    bad = np.flatnonzero(status)
    if fmt is not None and op == "bce_with_logits" and bad.size:
        idx = bad[status[bad] == 2]
        if idx.size:
            part = [a[idx] if np.ndim(a) else a for a in flat]
            with np.errstate(all="ignore"):
                r, ok = _logits_dd(part[0], part[1], part[2], part[3], grad, fmt)
            if not _DISABLED:
                out[idx[ok]] = r[ok]
                status[idx[ok]] = 0
                bad = np.flatnonzero(status)
            STATS["tier2"] += int(np.count_nonzero(ok))
    domain = int(np.count_nonzero(status[bad] == 1))
    STATS["points"] += n
    STATS["fast"] += n - bad.size
    STATS["domain"] += domain
    STATS["uncertain"] += bad.size - domain
    gen = np.concatenate([*general, rest]) if pending else None
    return out, status, v, width, bad, gen


def _args(flat: list[Any], i: int) -> tuple[float, float, float, float]:
    return tuple(float(a[i]) if np.ndim(a) else float(a) for a in flat)  # type: ignore[return-value]


def _round_fallbacks(op: str, grad: bool, fmt: Format, flat: list[Any], out: np.ndarray,
                     bad: np.ndarray) -> None:
    """Points the fast path could not certify: the mpmath reference, in place."""
    from .vectorized import point

    memo: dict[tuple[float, float, float, float], float] = {}  # fallbacks often repeat
    for i in bad.tolist():
        key = _args(flat, i)
        r = memo.get(key)
        if r is None:
            r = memo[key] = round_to(point(op, grad, *key), fmt)
        out[i] = r


def rounded(op: str, dtype: str, input: Any, target: Any, *, weight: Any = 1,
            pos_weight: Any = 1, grad: bool = False) -> np.ndarray:
    """Same contract as vectorized.rounded (DESIGN.md section 3), bit for bit.

    Certified float64 interval evaluation for float16/bfloat16/float32; the points it
    cannot certify (and every float64 target) go through the mpmath path.
    """

    fmt = get_format(dtype)
    prepared = _prepare(op, input, target, weight, pos_weight)
    if prepared is None or fmt.name not in FAST_DTYPES or not libm_ok():
        from . import vectorized

        return vectorized._rounded_mpmath(op, fmt.name, input, target, weight=weight,
                                          pos_weight=pos_weight, grad=grad)
    shape, flat = prepared
    out, _, _, _, bad, _ = _run(op, grad, fmt, shape, flat, parts=False)
    _round_fallbacks(op, grad, fmt, flat, out, bad)
    return out.reshape(shape)


# E = 2**-41 (|d| + |t|) makes hi - lo = 2**-40 |v| plus rounding: accept up to 2**-39,
# i.e. |v - V| <= (hi - lo) / 2 <= 2**-40 |v|.
APPROX_REL = 2.0 ** -39


def approx_parts(op: str, input: Any, target: Any, *, weight: Any = 1, pos_weight: Any = 1,
                 grad: bool = False, abs_tol: float = 0.0, rel_tol: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) with |hi + lo - V| <= 2**-40 |V| + abs_tol at every point: for the
    ulp measure. Grading a dtype passes abs_tol far below its smallest subnormal, so
    values that underflow it need no mpmath at all, and may trade relative accuracy
    for speed with rel_tol (|hi + lo - V| <= rel_tol/2 |V| + abs_tol): a gradient's
    moderate cancellation then stays on the fast path.

    NOT exact_parts' contract: hi is not certified to be the correctly rounded float64
    (that needs ~106 bits; float64 kernels give ~41). Enough to grade ulp error in
    float32 and narrower: the measured ulp error is off by at most 2**-16 ulp of
    float32 (2**-29 of float16), except that a value within 2**-40 of a power of two
    may get the neighbouring binade's ulp (a factor of 2 on an error that is then
    reported as ~0.5 ulp or less anyway). Statuses must come from `rounded`.
    Fast points: hi = the float64 estimate v, lo = 0, accepted only when the certified
    interval has hi - lo <= 2**-39 |v| + abs_tol, i.e. |v - V| <= 2**-40 |v| + abs_tol.
    Points with a
    wider bound (cancellation, underflow, outside the domain) come from
    vectorized.exact_parts (certified hi, lo). Exact zeros are 0, NaN stays NaN, and
    +-inf only where exact_parts gives it.
    """
    from .vectorized import exact_parts

    prepared = _prepare(op, input, target, weight, pos_weight)
    if prepared is None or not libm_ok():
        return exact_parts(op, input, target, weight=weight, pos_weight=pos_weight, grad=grad)
    shape, flat = prepared
    _, _, v, _, bad, _ = _run(op, grad, None, shape, flat, abs_tol, rel_tol)
    lo = _certified_parts(op, grad, flat, v, bad)
    return v.reshape(shape), lo.reshape(shape)


def _certified_parts(op: str, grad: bool, flat: list[Any], v: np.ndarray, idx: np.ndarray
                     ) -> np.ndarray:
    """lo parts (0 on the fast path); points in idx get mpmath's certified (hi, lo) in place."""
    from .vectorized import exact_parts

    lo = np.zeros_like(v)
    if idx.size:
        args = [a[idx] if np.ndim(a) else a for a in flat]
        h, low = exact_parts(op, *args[:2], weight=args[2], pos_weight=args[3], grad=grad)
        v[idx] = h
        lo[idx] = low
    return lo


def rounded_and_parts(op: str, dtype: str, input: Any, target: Any, *, weight: Any = 1,
                      pos_weight: Any = 1, grad: bool = False, abs_tol: float = 0.0,
                      rel_tol: float = APPROX_REL
                      ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """`rounded(...)` and `approx_parts(...)` (same guarantees) from ONE interval
    evaluation: grading needs both on every point."""

    fmt = get_format(dtype)
    prepared = _prepare(op, input, target, weight, pos_weight)
    if prepared is None or fmt.name not in FAST_DTYPES or not libm_ok():
        kw = {"weight": weight, "pos_weight": pos_weight, "grad": grad}
        return (rounded(op, dtype, input, target, **kw),
                approx_parts(op, input, target, abs_tol=abs_tol, rel_tol=rel_tol, **kw))
    shape, flat = prepared
    out, _, v, width, bad, gen = _run(op, grad, fmt, shape, flat)
    _round_fallbacks(op, grad, fmt, flat, out, bad)
    with np.errstate(invalid="ignore"):
        if gen is None:
            loose = np.flatnonzero(~(width <= rel_tol * np.abs(v) + abs_tol))
        else:  # _short's points are within its bounds: usually only _general's are loose
            loose = gen[~(width[gen] <= rel_tol * np.abs(v[gen]) + abs_tol)]
            if rel_tol < 2 * SHORT_REL or abs_tol < SHORT_ABS:
                mask = np.ones(v.size, dtype=bool)
                mask[gen] = False
                if rel_tol >= 2 * SHORT_REL:
                    mask &= np.abs(v) < SHORT_TINY
                loose = np.union1d(loose, np.flatnonzero(mask))
    lo = _certified_parts(op, grad, flat, v, loose)
    return out.reshape(shape), (v.reshape(shape), lo.reshape(shape))
