"""Fused, multi-threaded numba kernels for reference.fast's bce_with_logits route.

fast.py's numpy route (bce_fast.py's hooks) is the reference implementation; this module
evaluates the SAME certified intervals, point by point in one pass over the batch,
instead of ~15-40 numpy passes per chunk: the short route (`bce_fast.logits_short`), the
general interval (`logits_domain`, `logits_interval`, `logits_special`), the rounding
of both ends (`fast_core.round_array`) and tier 2 (`logits_tier2`, with `round_dd`),
with the same float64 operations in the same order and the same certification tests.
What it leaves uncertified goes to mpmath, as on the numpy route (fast.py does that).
The rounded results are therefore bit-identical to mpmath's by construction, and so to
the numpy route's; only the float64 estimate v (the grading parts) differs, within the
same proven bound, because exp and log1p differ (below).

Exact IEEE semantics: no fastmath (so no reassociation, no implicit contraction into
FMA, no "no NaN" assumptions; the only FMAs are the explicit Horner steps below, and
tier 2's Dekker products stay exact), error_model="numpy" (x / 0 is inf, never an
exception). Each basic operation is correctly rounded, which is all fast.py's proof
assumes of them. parallel=True: prange over chunks of CHUNK points, handed out GRAB at
a time (a shared machine stalls a static split at its slowest thread); nogil, so other
threads (the framework's IPC, the grader) go on meanwhile; the workqueue threading layer
(see below), every launch inside `launch()`. cache=True: compiled once per machine
(15-30 s), loaded from __pycache__ afterwards (a fresh process's first call: ~0.7 s with
numba's import and the self-check).

exp and log1p (the libm assumption)
-----------------------------------
numba's math.exp / math.log1p are scalar libm calls (~15 ns a point for both): the
kernels use their own, branch-free (so LLVM vectorizes them), with PROVEN error bounds
inside assumption (A) of fast.py (relative error <= LIBM_REL = 2**-45), so every bound
of fast.py's proof holds unchanged. u = 2**-53; every operation is correctly rounded
(|delta| <= u). The Horner steps are explicit FMAs (`_fma`, 1.5x faster than a product
and a sum): one rounding where the bounds below count two, so they hold as written (and
would without FMA).
Underflow: none below (every intermediate stays normal or is exactly 0: an underflowing
step would also be ~50x slower).

exp_neg(t) = e**-t for 0 <= t <= 700 (callers clamp, as fast_core._exp_neg does):
  k = floor(fl(fl(t * INVLN2) + 0.5)), an integer in [0, 1010]; the two roundings move
  t/ln2 by < 2**-42, so |t - k ln2| <= ln2/2 + 2**-42 < 0.34658.
  z = fl(fl(k LN2_HI - t) + fl(k LN2_LO)), LN2_HI + LN2_LO = ln2 within 2**-86 (fdlibm's
  split): k LN2_HI is exact (32 significant bits times k < 2**10), |k LN2_HI - t| <
  0.3466 (|ln2 - LN2_HI| < 2**-32), so the subtraction, the product k LN2_LO
  (< 2**-22) and the sum add at most 2**-54.5 + 2**-75 + 2**-54.5, plus k 2**-86 < 2**-76:
  |z - z*| < 2**-53.4 for z* = k ln2 - t, |z| < 0.3467. e**-t = 2**-k e**z*.
  P(z) = sum_{j<=13} c_j z**j in Horner form, c_j = fl(1/j!) (exact for j <= 2):
  truncation |z|**14/14! e**|z| <= 2**-56.7 e**z (relative, as e**z >= e**-|z|);
  coefficient rounding <= u sum_{j>=3} |z|**j/j! < 0.02u e**z; Horner (Higham 5.1: the
  j-th term carries theta_{2j+1}) <= u sum (2j+1)|z|**j/j! (1 + 30u) = u e**|z| (1 + 2|z|)
  (1 + 30u) < 3.4u e**z. The error in z adds e**2**-53.4 - 1 < 0.76u. Scaling by
  2**-k (built from its bits, 13 <= 1023 - k <= 1023) is exact: P(z) in [0.70, 1.42]
  keeps the product normal. Total relative error < 4.3u < 2**-50.5.
log1p_unit(e) = log(1 + e) for e = 0 or 2**-1011 <= e <= 1 (every e exp_neg returns):
  s = fl(e / fl(2 + e)) = s* (1 + eps_s), s* = e / (2 + e) in [0, 1/3], |eps_s| <= 2u(1+u);
  log1p(e) = 2 atanh(s*) = 2 s* Q(s*^2), Q(w) = sum_j w**j/(2j + 1), 1 <= Q <= 1.04.
  w = fl(s s): relative error <= 5.01u, which moves Q by <= 5.01u w Q'(w) <= 0.22u (w <=
  1/9); truncation after j = 15: w**16/33/(1 - w) < 2**-55.6 < 0.17u; coefficient
  rounding < u (Q - 1) < 0.04u; Horner <= u sum_j (2j+1) c_j w**j (1 + 32u) = u/(1 - w)
  (1 + 32u) < 1.13u; fl(2s) is exact and the final product adds u. Total < 4.6u <
  2**-50.5 (e = 0 gives 0 exactly, as log1p does). Below s = 2**-300 the kernel takes w = 0
  (keeping the Horner steps out of the subnormal range, which costs ~50x a step on x86):
  then Q = 1 exactly, off by Q(s*^2) - 1 < s*^2 < 2**-599, far inside the bound.
`math_ok()` checks both on this machine's compiled code once (fast.libm_ok's arguments
and threshold, 2**-49) and turns this route off if they fail; it is also off when numba
is missing or BCE_AUDIT_NO_NUMBA=1 (then fast.py takes the numpy route).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np

from .fast_core import ERR_ABS, ERR_REL, LIBM_CHECK, SHORT_ABS, SHORT_REL, SHORT_TINY, SHORT_ULPS
from .formats import Format

try:
    import numba
    from numba import njit, prange, set_parallel_chunksize, types
    from numba.extending import intrinsic, overload
except ImportError:  # the numpy route is the reference implementation and the fallback
    numba = None

if numba is not None and "NUMBA_THREADING_LAYER" not in os.environ:
    # GNU OpenMP (numba's default when present) spin-waits after each parallel region:
    # on a shared machine the spinning threads take the cores from the work (measured 1.8x
    # slower than workqueue here), and it is not fork-safe; workqueue is. It may not be
    # entered from two threads at once: `launch` serializes every launch of this module's
    # kernels (and of audit.grading's).
    numba.config.THREADING_LAYER = "workqueue"

ENV_OFF = "BCE_AUDIT_NO_NUMBA"
CHUNK = 2048   # points per prange iteration (a few arrays of it stay in L1)
GRAB = 4       # iterations a thread takes at a time (dynamic scheduling)
LOCK = threading.Lock()

XMAX = 2.0 ** 256  # bce_fast's domain constants (checked equal in the tests)
BIG = 2.0 ** 200

INVLN2 = 1.4426950408889634            # fl(1 / ln 2)
LN2_HI = 6.93147180369123816490e-01    # 0x3fe62e42fee00000: 32 significant bits
LN2_LO = 1.90821492927058770002e-10    # 0x3dea39ef35793c76
_E = tuple(1.0 / math.factorial(j) for j in range(14))
_L = tuple(1.0 / (2 * j + 1) for j in range(16))


def available() -> bool:
    """numba importable and not switched off (read on every call: tests flip the env)."""
    return numba is not None and os.environ.get(ENV_OFF) != "1"


def enabled() -> bool:
    """The numba route may run: available and its math self-check passed."""
    return available() and math_ok()


def format_params(fmt: Format) -> tuple[int, tuple[float, float, float, float, float]]:
    """(s, (tiny, sub, max_finite, zero, sub_scale)) for the kernels' rounding: s = 53 -
    precision, tiny = smallest normal, sub = the constant of round_array's subnormal
    addition, zero = _round_bits' threshold for a certified zero, sub_scale =
    _is_boundary's 2**(precision - emin)."""
    return 53 - fmt.precision, (math.ldexp(1.0, fmt.emin),
                                math.ldexp(1.0, fmt.emin - fmt.precision + 53),
                                fmt.max_finite,
                                math.ldexp(1.0 - 2.0 ** -30, fmt.quantum_exp - 1),
                                math.ldexp(1.0, fmt.precision - fmt.emin))


if numba is not None:
    _JIT = {"nogil": True, "cache": True, "error_model": "numpy", "fastmath": False}

    @intrinsic
    def _f2i(typingctx: Any, x: Any) -> Any:
        """The bits of a float64 as int64 (a bitcast; vectorizes)."""
        if x != types.float64:
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.bitcast(args[0], context.get_value_type(types.int64))
        return types.int64(types.float64), codegen

    @intrinsic
    def _i2f(typingctx: Any, x: Any) -> Any:
        """The float64 with these int64 bits."""
        if x != types.int64:
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.bitcast(args[0], context.get_value_type(types.float64))
        return types.float64(types.int64), codegen

    def _at(a: Any, i: int) -> float:
        """a[i] for a per-point array, a itself for a scalar (numba: the overload)."""
        return a[i] if np.ndim(a) else a

    @overload(_at, inline="always")
    def _ol_at(a, i):  # type: ignore[no-untyped-def]  # numba compares these names bare
        if isinstance(a, types.Array):
            return lambda a, i: a[i]
        return lambda a, i: a

    def _ones(a: Any) -> bool:
        """Every value of a (a chunk's array, or a scalar) is 1 (numba: the overload)."""
        return bool(np.all(np.asarray(a) == 1))

    @overload(_ones, inline="always")
    def _ol_ones(a):  # type: ignore[no-untyped-def]
        if isinstance(a, types.Array):
            def impl(a):  # type: ignore[no-untyped-def]
                for v in a:  # noqa: SIM110  (numba compiles no generator)
                    if v != 1.0:
                        return False
                return True
            return impl
        return lambda a: a == 1.0

    def _part(a: Any, start: int, stop: int) -> Any:
        """a[start:stop] for a per-point array, a itself for a scalar (numba: the overload)."""
        return a[start:stop] if np.ndim(a) else a

    @overload(_part, inline="always")
    def _ol_part(a, start, stop):  # type: ignore[no-untyped-def]
        if isinstance(a, types.Array):
            return lambda a, start, stop: a[start:stop]
        return lambda a, start, stop: a

    E0, E1, E2, E3, E4, E5, E6, E7, E8, E9, E10, E11, E12, E13 = _E
    L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15 = _L

    @intrinsic
    def _fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        """a * b + c rounded once (IEEE fusedMultiplyAdd: llvm.fma, a libm call where the
        CPU has none). Only the Horner steps below use it, by name: nothing is
        contracted behind the code's back."""
        if not all(t == types.float64 for t in (a, b, c)):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.fma(*args)
        return types.float64(types.float64, types.float64, types.float64), codegen

    @njit(inline="always", **_JIT)
    def exp_neg(t: float) -> float:
        """e**-t, 0 <= t <= 700, relative error < 2**-50.5 (module docstring)."""
        kf = math.floor(t * INVLN2 + 0.5)
        z = (kf * LN2_HI - t) + kf * LN2_LO
        q = _fma(E13, z, E12)
        q = _fma(q, z, E11)
        q = _fma(q, z, E10)
        q = _fma(q, z, E9)
        q = _fma(q, z, E8)
        q = _fma(q, z, E7)
        q = _fma(q, z, E6)
        q = _fma(q, z, E5)
        q = _fma(q, z, E4)
        q = _fma(q, z, E3)
        q = _fma(q, z, E2)
        q = _fma(q, z, E1)
        q = _fma(q, z, E0)
        return q * _i2f((1023 - np.int64(kf)) << 52)

    @njit(inline="always", **_JIT)
    def log1p_unit(e: float) -> float:
        """log(1 + e), e = 0 or 2**-1011 <= e <= 1, relative error < 2**-50.5."""
        s = e / (2.0 + e)
        w = s * s if s >= 2.0 ** -300 else 0.0  # subnormal w: each op ~50x slower
        q = _fma(L15, w, L14)
        q = _fma(q, w, L13)
        q = _fma(q, w, L12)
        q = _fma(q, w, L11)
        q = _fma(q, w, L10)
        q = _fma(q, w, L9)
        q = _fma(q, w, L8)
        q = _fma(q, w, L7)
        q = _fma(q, w, L6)
        q = _fma(q, w, L5)
        q = _fma(q, w, L4)
        q = _fma(q, w, L3)
        q = _fma(q, w, L2)
        q = _fma(q, w, L1)
        q = _fma(q, w, L0)
        return (2.0 * s) * q

    @njit(**_JIT)
    def _math_kernel(t: np.ndarray, e: np.ndarray, out_exp: np.ndarray, out_log: np.ndarray
                     ) -> None:
        for i in range(t.size):
            out_exp[i] = exp_neg(t[i])
        for i in range(e.size):
            out_log[i] = log1p_unit(e[i])

    @njit(inline="always", **_JIT)
    def _round(v: float, nonneg: bool, s: int, fp: tuple) -> float:
        """fast_core.round_array for one value (the same operations)."""
        a = v if nonneg else abs(v)
        b = _f2i(a)
        q = ((b >> s) & 1) + ((np.int64(1) << (s - 1)) - 1) + b
        q &= ~((np.int64(1) << s) - 1)
        r = _i2f(q)
        r = ((a + fp[1]) - fp[1]) if a < fp[0] else r
        r = math.inf if r > fp[2] else r
        return r if nonneg else math.copysign(r, v)

    @njit(inline="always", **_JIT)
    def _round_bits(m: float, finite: bool, s: int, fp: tuple) -> tuple:
        """fast_core._round_bits for one value: (round(m), certified)."""
        b = _f2i(m)
        dist = abs((b & ((np.int64(1) << s) - 1)) - (np.int64(1) << (s - 1)))
        ok = (dist > SHORT_ULPS) & (m >= fp[0]) & (m <= fp[2])
        zero = (m < fp[3]) & finite
        q = ((b >> s) & 1) + b + ((np.int64(1) << (s - 1)) - 1)
        q = 0 if zero else q
        return _i2f(q & ~((np.int64(1) << s) - 1)), ok | zero

    @njit(inline="always", **_JIT)
    def _short(xi: float, yi: float, grad: bool, s: int, fp: tuple) -> tuple:
        """bce_fast.logits_short for one point (unit weights): (result, v, certified)."""
        a = abs(xi)
        t = a if a < 700.0 else 700.0  # NaN too (a NaN into a float-to-int is poison)
        e = exp_neg(t)
        if grad:
            sign = 1.0 - 2.0 * yi
            num = 1.0 if xi * sign >= 0 else e
            m = num / (1.0 + e)
            m = m if a == a else math.nan  # NaN x: v NaN, uncertified, as numpy's exp(NaN)
        else:  # NaN x: v = NaN through f * a
            f = (1.0 - yi) if xi >= 0 else yi
            m = log1p_unit(e) + f * a
        r, ok = _round_bits(m, a <= XMAX, s, fp)
        if grad:
            r *= sign  # exact: sign = +-1 (-0.0 for a zero with y = 1)
            m *= sign
        return r, m, ok

    @njit(inline="always", **_JIT)
    def _general(xi: float, yi: float, wi: float, pi: float, grad: bool, s: int, fp: tuple
                 ) -> tuple:
        """fast._general for one bce_with_logits point (logits_domain, logits_interval,
        logits_special, round_array of both ends): (result, status, v, width)."""
        a = abs(xi)
        dom = ((a <= XMAX) & (wi > 0) & (wi <= BIG) & (pi >= 0) & (pi <= BIG) & (yi >= 0)
               & (yi <= 1) & (not ((yi == 1) & (pi == 0))))
        t0 = a if a < 700.0 else 700.0  # NaN x is outside the domain: any e will do
        e = exp_neg(t0)
        e = 0.0 if a > 700.0 else e  # fast_core._exp_neg
        omy = 1.0 - yi
        py = pi * yi
        c = wi * (omy + py)
        pos = xi >= 0
        if grad:
            t = e / (1.0 + e)
            t = t * c
            t = -t if pos else t
            d = wi * omy if pos else -(wi * py)
            v = d + t
            err = abs(d - t) * ERR_REL + ERR_ABS
            lo = v - err
            hi = v + err
            lo = 0.0 if ((not pos) & ((pi == 0) | (yi == 0)) & (lo <= 0)) else lo
            hi = -0.0 if (pos & (yi == 1) & (hi >= 0)) else hi
            r_lo = _round(lo, False, s, fp)
            r_hi = _round(hi, False, s, fp)
        else:
            t = log1p_unit(e) * c
            d = (omy if pos else py) * a * wi
            v = d + t
            lo = v * (1.0 - ERR_REL) - ERR_ABS
            lo = 0.0 if lo < 0.0 else lo  # np.maximum(lo, 0.0); lo is never -0.0
            hi = v * (1.0 + ERR_REL) + ERR_ABS
            r_lo = _round(lo, True, s, fp)
            r_hi = _round(hi, True, s, fp)
        status = 0 if _f2i(r_lo) == _f2i(r_hi) else 2
        width = hi - lo
        out = r_lo
        if not dom:
            nan = math.isnan(xi) | math.isnan(yi) | math.isnan(wi) | math.isnan(pi)
            finite = (math.isfinite(xi) & math.isfinite(yi) & math.isfinite(wi)
                      & math.isfinite(pi))
            zero = (not nan) & ((wi == 0) | (finite & (yi == 1) & (pi == 0)))
            if nan | zero:
                out = math.nan if nan else 0.0
                v = out
                status = 0
                width = 0.0
            else:
                status = 1
                width = math.inf
        return out, status, v, width

    @njit(inline="always", **_JIT)
    def _two_prod(a: float, b: float) -> tuple:
        """fast_core._two_prod (Dekker; exact without contraction into FMA, which this
        module never enables)."""
        p = a * b
        c = a * 134217729.0
        ah = c - (c - a)
        al = a - ah
        c = b * 134217729.0
        bh = c - (c - b)
        bl = b - bh
        return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl

    @njit(inline="always", **_JIT)
    def _dd_mul(a1: float, a2: float, b1: float, b2: float) -> tuple:
        """fast_core._dd_mul."""
        p, e = _two_prod(a1, b1)
        return p, e + (a1 * b2 + a2 * b1 + a2 * b2)

    @njit(inline="always", **_JIT)
    def _is_boundary(h: float, s: int, fp: tuple) -> bool:
        """fast_core._is_boundary for one value."""
        a = abs(h)
        if a < fp[0]:
            m = a * fp[4]  # below 2**precision: an exact small integer when integral
            return (m == math.floor(m)) & (np.fmod(m, 2.0) == 1.0)
        return (_f2i(a) & ((np.int64(1) << s) - 1)) == (np.int64(1) << (s - 1))

    @njit(inline="always", **_JIT)
    def _round_dd(h: float, low: float, side: float, s: int, fp: tuple) -> float:
        """fast_core.round_dd for one value (side 0: none)."""
        hh = h + low
        bp = hh - h
        ll = (h - (hh - bp)) + (low - bp)
        if side != 0:
            ll = ll if ll != 0 else side
        if _is_boundary(hh, s, fp) & (ll != 0):
            hh = np.nextafter(hh, math.copysign(math.inf, ll))
        return _round(hh, False, s, fp)

    @njit(**_JIT)
    def _tier2(xi: float, yi: float, wi: float, pi: float, grad: bool, s: int, fp: tuple
               ) -> tuple:
        """bce_fast.logits_tier2 for one point (the same operations; its docstring has
        the bound): (result, certified)."""
        a = abs(xi)
        pos = xi >= 0
        oh = 1.0 - yi
        ol = (1.0 - oh) - yi
        ph, pl = _two_prod(pi, yi)
        fh = oh if pos else ph
        fl = ol if pos else pl
        t0 = a if a < 700.0 else 700.0
        e = exp_neg(t0)
        e = 0.0 if a > 700.0 else e
        c = wi * (oh + ph)
        if grad:
            fh = fh if pos else -fh
            fl = fl if pos else -fl
            dh, dl = _dd_mul(wi, 0.0, fh, fl)
            t = c * (e / (1.0 + e))
            t = -t if pos else t
        else:
            m1, m2 = _two_prod(wi, a)
            dh, dl = _dd_mul(m1, m2, fh, fl)
            t = c * log1p_unit(e)
        sm = dh + t
        bp = sm - dh
        r = (dh - (sm - bp)) + (t - bp)
        r2 = r + dl
        err = 2.0 ** -40 * abs(t) + 2.0 ** -97 * abs(dh) + 2.0 ** -50 * abs(r2) + ERR_ABS
        out = _round_dd(sm, r2 - err, 0.0, s, fp)
        upper = _round_dd(sm, r2 + err, 0.0, s, fp)
        ok = _f2i(out) == _f2i(upper)
        if grad and not ok:
            side = -1.0 if pos else 1.0
            exact = (wi == 1) & (pos | ((pi == 1) & ((yi == 0) | (yi >= 2.0 ** -900))))
            if exact:
                near = _round_dd(dh, dl, side, s, fp)
                far = upper if side > 0 else out
                if _f2i(near) == _f2i(far):
                    return near, True
            if (a <= 2.0 ** -30) & (a > 0) & (wi == 1) & (pi == 1):
                h = 0.5 - yi
                bp = h - 0.5
                lo_ = (0.5 - (h - bp)) + (-yi - bp)
                q = 0.25 * xi
                e2 = 2.0 ** -49 * (abs(lo_) + abs(q))
                first = _round_dd(h, (lo_ + q) - e2, 0.0, s, fp)
                second = _round_dd(h, (lo_ + q) + e2, 0.0, s, fp)
                if _f2i(first) == _f2i(second):
                    return first, True
        return out, ok

    @njit(**_JIT)
    def _general_one(xi: float, yi: float, wi: float, pi: float, grad: bool, s: int,
                     fp: tuple) -> tuple:
        """_general as a real call: inlined into a chunk's fallback loop it makes LLVM
        give up vectorizing the short-route loop before it (2.3x slower)."""
        return _general(xi, yi, wi, pi, grad, s, fp)

    @njit(inline="always", **_JIT)
    def _loose_general(v: float, width: float, rel_tol: float, abs_tol: float) -> bool:
        return not (width <= rel_tol * abs(v) + abs_tol)

    @njit(inline="always", **_JIT)
    def _loose_short(v: float, rel_tol: float, abs_tol: float) -> bool:
        """fast.rounded_and_parts' rule for a point the short route certified (its bound
        is SHORT_REL |V| + SHORT_ABS, the absolute part only below SHORT_TINY)."""
        if rel_tol < 2 * SHORT_REL:
            return True
        if abs_tol < SHORT_ABS:
            return abs(v) < SHORT_TINY
        return False

    @njit(inline="always", **_JIT)
    def _chunk(x: np.ndarray, y: np.ndarray, w: Any, p: Any, grad: bool, s: int,
               fp: tuple, rel_tol: float, abs_tol: float, out: np.ndarray,
               status: np.ndarray, v: np.ndarray, loose: np.ndarray) -> tuple:
        """One chunk of logits_batch: the short route where its labels allow, the general
        interval for the rest, tier 2 for what that leaves uncertain. Returns how many
        points the short route and tier 2 certified.

        Every array is a slice of the chunk: loops from 0 are what LLVM vectorizes (from a
        run-time start numba keeps its negative-index wraparound: 3x slower). grad must be a
        literal constant at the call: each call site is inlined and its branches folded
        away (a run-time flag in these loops stops vectorization, 5x); v and loose are
        always written (scratch when the caller wants no parts) for the same reason."""
        n = x.size
        take = _ones(w) and _ones(p)  # the short route takes unit weights
        if take:
            for i in range(n):
                yi = y[i]
                good = abs(1.0 - 2.0 * yi) == 1.0 if grad else (yi >= 0) & (yi <= 1)
                if not good:
                    take = False
                    break
        short = 0
        if take:
            for i in range(n):
                r, m, ok = _short(x[i], y[i], grad, s, fp)
                out[i] = r
                status[i] = 0 if ok else 2
                short += ok
                v[i] = m
                loose[i] = _loose_short(m, rel_tol, abs_tol)
            if short == n:
                return short, 0
            for i in range(n):
                if status[i] != 0:
                    r, st, m, wd = _general_one(x[i], y[i], _at(w, i), _at(p, i), grad, s,
                                                fp)
                    out[i] = r
                    status[i] = st
                    v[i] = m
                    loose[i] = _loose_general(m, wd, rel_tol, abs_tol)
        else:
            for i in range(n):
                r, st, m, wd = _general(x[i], y[i], _at(w, i), _at(p, i), grad, s, fp)
                out[i] = r
                status[i] = st
                v[i] = m
                loose[i] = _loose_general(m, wd, rel_tol, abs_tol)
        tier2 = 0
        for i in range(n):
            if status[i] == 2:
                r, ok = _tier2(x[i], y[i], _at(w, i), _at(p, i), grad, s, fp)
                if ok:
                    out[i] = r
                    status[i] = 0
                    tier2 += 1
        return short, tier2

    # One compiled function per quantity: each inlines _chunk with a literal grad, and
    # compiling them apart (not inlined copies inside the parallel loop) keeps the first
    # compile at seconds instead of a minute.
    @njit(**_JIT)
    def _chunk_loss(x: np.ndarray, y: np.ndarray, w: Any, p: Any, s: int,
                    fp: tuple, rel_tol: float, abs_tol: float, out: np.ndarray,
                    status: np.ndarray, v: np.ndarray, loose: np.ndarray) -> tuple:
        return _chunk(x, y, w, p, False, s, fp, rel_tol, abs_tol, out, status, v,
                      loose)

    @njit(**_JIT)
    def _chunk_grad(x: np.ndarray, y: np.ndarray, w: Any, p: Any, s: int,
                    fp: tuple, rel_tol: float, abs_tol: float, out: np.ndarray,
                    status: np.ndarray, v: np.ndarray, loose: np.ndarray) -> tuple:
        return _chunk(x, y, w, p, True, s, fp, rel_tol, abs_tol, out, status, v,
                      loose)

    @njit(parallel=True, **_JIT)
    def logits_batch(x: np.ndarray, y: np.ndarray, w: Any, p: Any, grad: bool,
                     s: int, fp: tuple, parts: bool, rel_tol: float, abs_tol: float,
                     out: np.ndarray, status: np.ndarray, v: np.ndarray, loose: np.ndarray,
                     counts: np.ndarray) -> None:
        """fast._run for bce_with_logits over the whole batch: out (rounded), status (0
        certified, 1 outside the domain, 2 uncertain) and, with parts, v and loose (the
        points rounded_and_parts must take mpmath's parts for; without parts, v and loose
        are not read). A chunk whose weights and pos_weights are all 1 and whose labels
        all qualify (losses any 0 <= y <= 1, gradients y in {0, 1}) takes the short route
        first, as fast._run does chunk by chunk (it scans whole arrays of ones into the
        scalar 1 first: here that is part of the one pass); the points it leaves take the
        general interval, and what that leaves uncertain tier 2 (bce_fast.logits_tier2).
        counts[c]: points of chunk c the short route certified, left uncertified
        (status != 0), loose, and tier 2 certified."""
        n = x.size
        chunks = (n + CHUNK - 1) // CHUNK
        for c in prange(chunks):
            a = c * CHUNK
            b = min(n, a + CHUNK)
            xs, ys, ws, ps = x[a:b], y[a:b], _part(w, a, b), _part(p, a, b)
            os_, ss = out[a:b], status[a:b]
            if parts:
                vs, ls = v[a:b], loose[a:b]
            else:  # scratch
                vs, ls = np.empty(b - a), np.empty(b - a, dtype=np.bool_)
            if grad:
                k = _chunk_grad(xs, ys, ws, ps, s, fp, rel_tol, abs_tol, os_, ss, vs,
                                ls)
            else:
                k = _chunk_loss(xs, ys, ws, ps, s, fp, rel_tol, abs_tol, os_, ss, vs,
                                ls)
            counts[c, 0] = k[0]
            counts[c, 3] = k[1]
            bad = 0
            for i in range(b - a):
                bad += ss[i] != 0
            counts[c, 1] = bad
            if parts:
                nl = 0
                for i in range(b - a):
                    nl += ls[i]
                counts[c, 2] = nl

    @njit(**_JIT)
    def _gather(mask: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """np.flatnonzero(mask) reading only the chunks whose count is nonzero (numpy's
        scans all of a mostly-zero mask at ~2 ns a point)."""
        idx = np.empty(counts.sum(), dtype=np.int64)
        k = 0
        for c in range(counts.size):
            if counts[c]:
                a = c * CHUNK
                for i in range(a, min(mask.size, a + CHUNK)):
                    if mask[i]:
                        idx[k] = i
                        k += 1
        return idx


@lru_cache(maxsize=1)
def math_ok() -> bool:
    """The compiled exp_neg and log1p_unit against mpmath, once per process (fast.libm_ok's
    arguments and threshold LIBM_CHECK = 2**-49; their proven bound is 2**-50.5)."""
    if numba is None:
        return False
    from mpmath import mp, mpf

    rng = np.random.default_rng(2024)
    n = 2048
    t = np.concatenate([rng.uniform(0, 40, n // 2), rng.uniform(0, 700, n // 2),
                        [0.0, 700.0, math.log(2) / 2, 5e-324]])
    e = np.concatenate([np.ldexp(rng.uniform(0.5, 1, n), -rng.integers(0, 1011, n)),
                        rng.uniform(0, 1, n), [0.0, 1.0, 2.0 ** -1011, float(np.exp(-700.0))]])
    got_exp, got_log = np.empty_like(t), np.empty_like(e)
    _math_kernel(t, e, got_exp, got_log)
    with mp.workprec(80):  # log1p(0) must be exactly 0: |g - 0| > 0 fails
        for got, args, fn in ((got_exp, t, lambda z: mp.exp(-z)), (got_log, e, mp.log1p)):
            for g, z in zip(got.tolist(), args.tolist(), strict=True):
                want = fn(mpf(z))
                if abs(mpf(g) - want) > LIBM_CHECK * abs(want):
                    return False
    return True


_THREADS: list[int] = []  # configure(threads=...): [n] once set


def configure(*, threads: int | None = None) -> None:
    """Threads per kernel launch from now on (None: every core numba has). Processes
    that run one per core (parallel sweeps) want 1, as their frameworks' workers do."""
    _THREADS[:] = [] if threads is None else [max(1, int(threads))]


@contextlib.contextmanager
def launch() -> Iterator[None]:
    """Around every parallel kernel call (this module's and audit.grading's): LOCK, the
    configured thread count, and chunks handed out GRAB at a time (both settings are the
    calling thread's; a cached kernel cannot set the chunk size itself)."""
    with LOCK:
        threads = numba.get_num_threads()
        if _THREADS:
            numba.set_num_threads(min(_THREADS[0], numba.config.NUMBA_NUM_THREADS))
        old = set_parallel_chunksize(GRAB)
        try:
            yield
        finally:
            set_parallel_chunksize(old)
            numba.set_num_threads(threads)


def _readonly(a: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only float64 view: one array type for the kernels (a user's
    read-only input would otherwise compile a second specialization)."""
    a = np.ascontiguousarray(a, dtype=np.float64).view()
    a.flags.writeable = False
    return a


def logits(flat: list[Any], grad: bool, fmt: Format, parts: bool, rel_tol: float = 0.0,
           abs_tol: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None,
                      tuple[int, int]]:
    """Run logits_batch on fast._prepare's flat arguments: (out, status, indices left
    uncertified, v, indices of loose points, (points the short route certified, points
    tier 2 certified)); v and the loose indices only with parts."""
    x = _readonly(flat[0])
    n = x.size
    y = flat[1]
    y = _readonly(np.full(n, y) if np.ndim(y) == 0 else y)
    w, p = flat[2:4]
    if np.ndim(w) == np.ndim(p) == 0:
        w, p = float(w), float(p)
    else:  # both arrays: two compiled specializations, not four
        w, p = (_readonly(np.full(n, a) if np.ndim(a) == 0 else a) for a in (w, p))
    s, fp = format_params(fmt)
    out = np.empty(n)
    status = np.empty(n, dtype=np.int8)
    v = np.empty(n if parts else 1)
    loose = np.empty(n if parts else 1, dtype=np.bool_)
    counts = np.zeros(((n + CHUNK - 1) // CHUNK, 4), dtype=np.int64)
    with launch():
        logits_batch(x, y, w, p, grad, s, fp, parts, float(rel_tol), float(abs_tol),
                     out, status, v, loose, counts)
    bad = _gather(status, np.ascontiguousarray(counts[:, 1]))
    routes = int(counts[:, 0].sum()), int(counts[:, 3].sum())
    if not parts:
        return out, status, bad, None, None, routes
    return out, status, bad, v, _gather(loose, np.ascontiguousarray(counts[:, 2])), routes
