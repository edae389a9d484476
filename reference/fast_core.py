"""The family-independent float64 machinery of reference.fast: error-model constants,
correct rounding of float64 (and double-double) values into the narrow formats, exact
products, and `_short`'s certification from the bits of an estimate.

The proof these pieces serve is the module docstring of fast.py; the per-family kernels
that use them are in bce_fast.py (and, for later families, their own modules). Nothing
here knows a loss family. `_DISABLED` is the test-only switch that turns the
uncertainty detector off (fast.py and `_round_bits` read it on every call).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .formats import Format

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

_DISABLED = False  # tests flip this to prove the detector matters (never in production)


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


# --------------------------------------------------------------------------- arithmetic


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


# --------------------------------------------------------------------------- double-double


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


# --------------------------------------------------------------------------- short route


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
