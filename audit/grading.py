"""Grading: every observed point gets one status (DESIGN.md section 5), ulp and ordinal.

Vectorized numpy over a batch. The exact value arrives as a double-double (hi, lo)
from the reference and the correctly rounded `expected` value in the dtype, so the
ulp error is measured against the exact value, not against its rounding.
Ordinal distances are computed on sign-magnitude bit patterns in uint64: no int
overflow at +-max and no NaN surprise (numpy.testing's nulp_diff pitfalls).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from reference.formats import get_format

# Severity order = the order statuses are checked in (DESIGN.md section 5).
STATUSES: tuple[str, ...] = (
    "crash", "error", "spurious_nan", "spurious_inf", "missing_inf", "wrong_sign", "spurious_zero",
    "inaccurate", "ok",
)
SEVERITY = {s: i for i, s in enumerate(STATUSES)}  # lower = worse
_NAMES = np.array(STATUSES)  # fixed-width strings: vectorized comparisons, no objects
CRASH, ERROR, INACCURATE, OK = (np.int8(SEVERITY[s]) for s in ("crash", "error", "inaccurate",
                                                               "ok"))
SPURIOUS_NAN, SPURIOUS_INF, MISSING_INF, WRONG_SIGN, SPURIOUS_ZERO = (
    np.int8(SEVERITY[s]) for s in STATUSES[2:7])


@dataclass
class Graded:
    """Per-point grading of one batch (all arrays have the batch's length)."""

    code: np.ndarray      # int8 index into STATUSES (= severity rank, 0 worst)
    ulp: np.ndarray       # float64, inf for class mismatches
    ordinal: np.ndarray   # float64 (exact integers up to 2**53; -1 = undefined, NaN)
    dtype: str = "float32"

    @property
    def bits(self) -> np.ndarray:
        """Herbie's bits of error, log2(1 + ordinal); the full width where undefined."""
        width = float(get_format(self.dtype).width)
        return np.where(self.ordinal < 0, width, np.log2(1.0 + np.maximum(self.ordinal, 0.0)))

    def max_bits(self) -> float:
        """max(bits) without a log per point (log2 is monotonic)."""
        if self.ordinal.size == 0:
            return 0.0
        if (self.ordinal < 0).any():
            return float(get_format(self.dtype).width)
        return float(np.log2(1.0 + self.ordinal.max()))

    @property
    def status(self) -> np.ndarray:
        """Status names (built on demand: hot paths work on `code`)."""
        return _NAMES[self.code]

    def set_error(self, index: int, crash: bool = False) -> None:
        """The framework raised for this point (crash: its process died on it)."""
        self.code[index] = CRASH if crash else ERROR
        self.ulp[index] = np.inf


def ulp_exponent(hi: np.ndarray, dtype: str) -> np.ndarray:
    """Exponent of the dtype spacing at |exact| (subnormal spacing below the normal range).

    Read from the float64 exponent field: floor(log2 |hi|) for normal hi; zero and
    float64-subnormal hi fall below every format's normal range and get the subnormal
    spacing. Non-finite hi gives a meaningless (but finite) exponent, never used."""
    fmt = get_format(dtype)
    e = (np.asarray(hi, dtype=np.float64).view(np.uint64) >> np.uint64(52)).astype(np.int32)
    e &= 0x7FF
    e -= 1023 + fmt.precision - 1
    return np.maximum(e, fmt.quantum_exp, out=e)  # int32: np.ldexp is 10x slower on int64


def ulp_errors(observed: np.ndarray, expected: np.ndarray, hi: np.ndarray, lo: np.ndarray,
               dtype: str) -> np.ndarray:
    """|observed - exact| / ulp(exact), with DESIGN.md's rules for inf and NaN."""
    o = np.asarray(observed, dtype=np.float64)
    x = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = o - hi
        err -= lo
        np.abs(err, out=err)
        err = np.ldexp(err, -ulp_exponent(hi, dtype), out=err)
    # the rules for NaN and inf touch few points: apply them on that subset only
    idx = np.flatnonzero(~(np.isfinite(o) & np.isfinite(x)))
    if idx.size:
        os_, xs_ = o[idx], x[idx]
        o_nan, x_nan = np.isnan(os_), np.isnan(xs_)
        err[idx] = np.where(o_nan | x_nan, np.where(o_nan & x_nan, 0.0, np.inf),
                            np.where(os_ == xs_, 0.0, np.inf))
    return err


# dtype -> (numpy type to view, signed integer view, right shift, magnitude mask)
_BITS = {"float16": (np.float16, np.int16, 0, 0x7FFF),
         "bfloat16": (np.float32, np.int32, 16, 0x7FFF),
         "float32": (np.float32, np.int32, 0, 0x7FFFFFFF)}


def _order_key(values: np.ndarray, dtype: str) -> np.ndarray:
    """Signed ordinal of dtype values: +-magnitude index (the IEEE pattern without its
    sign bit orders magnitudes), so +0 and -0 are both 0 and inf is max + 1. Values must
    be dtype members (bfloat16 members are float32 values with 16 zero low bits, so the
    float32 pattern shifted right by 16 is theirs)."""
    ftype, itype, shift, mask = _BITS[dtype]
    bits = np.asarray(values, dtype=np.float64).astype(ftype).view(itype)
    if shift:
        bits = bits >> shift  # arithmetic: keeps the sign
    neg = bits >> (8 * bits.itemsize - 1)  # 0 or -1
    key = bits & itype(mask)
    key ^= neg
    key -= neg  # -magnitude where negative
    return key.astype(np.int64)


def _order_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 values: (negative?, magnitude index) as uint64 (a signed difference of two
    float64 indices can exceed int64)."""
    bits = np.asarray(values, dtype=np.float64).view(np.uint64)
    sign = np.uint64(1 << 63)
    mag = bits & ~sign
    return (bits & sign).astype(bool) & (mag > 0), mag


def ordinal_distances(observed: np.ndarray, expected: np.ndarray, dtype: str) -> np.ndarray:
    """Values of the dtype between observed and expected; -1 where exactly one is NaN."""
    o = np.asarray(observed, dtype=np.float64)
    x = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if dtype == "float64":
            on, om = _order_index(o)
            xn, xm = _order_index(x)
            d = np.where(on == xn, np.where(om > xm, om - xm, xm - om), om + xm)
            d = d.astype(np.float64)  # uint64: no overflow
        else:
            d = _order_key(o, dtype)
            d -= _order_key(x, dtype)  # magnitudes < 2**31: no int64 overflow
            np.abs(d, out=d)
            d = d.astype(np.float64)
    idx = np.flatnonzero(np.isnan(o) | np.isnan(x))  # NaN patterns have no ordinal
    if idx.size:
        o_nan, x_nan = np.isnan(o[idx]), np.isnan(x[idx])
        d[idx] = np.where(o_nan & x_nan, 0.0, -1.0)
    return d


BLOCK = 1 << 15  # points graded at a time: ~20 temporaries stay in L2 (2.5x faster at 1M)


def grade(observed: np.ndarray | None, expected: np.ndarray, hi: np.ndarray, lo: np.ndarray,
          dtype: str, budget: float) -> Graded:
    """Status per point, checked in DESIGN.md order. observed None = the framework raised.

    The narrow dtypes are graded by one fused numba kernel (`_fused`) when numba is there
    (reference.fast_numba.available()); the numpy code below is the reference
    implementation it must equal bit for bit, and the fallback."""
    n = len(expected)
    if observed is None:
        return Graded(np.full(n, ERROR, dtype=np.int8), np.full(n, np.inf), np.full(n, -1.0),
                      dtype=dtype)
    o = np.asarray(observed, dtype=np.float64)
    x = np.asarray(expected, dtype=np.float64)
    hi, lo = np.asarray(hi, dtype=np.float64), np.asarray(lo, dtype=np.float64)
    if dtype in _BITS and o.ndim == 1 and o.shape == x.shape == hi.shape == lo.shape:
        kernel = _fused_kernel()
        if kernel is not None:
            return _fused(kernel, o, x, hi, lo, dtype, budget)
    if n <= BLOCK:
        return _grade_block(o, x, hi, lo, dtype, budget)
    out = Graded(np.empty(n, dtype=np.int8), np.empty(n), np.empty(n), dtype=dtype)
    for s in range(0, n, BLOCK):
        e = s + BLOCK
        g = _grade_block(o[s:e], x[s:e], hi[s:e], lo[s:e], dtype, budget)
        out.code[s:e], out.ulp[s:e], out.ordinal[s:e] = g.code, g.ulp, g.ordinal
    return out


def _grade_block(o: np.ndarray, x: np.ndarray, hi: np.ndarray, lo: np.ndarray, dtype: str,
                 budget: float) -> Graded:
    ulp = ulp_errors(o, x, hi, lo, dtype)
    ordinal = ordinal_distances(o, x, dtype)
    codes = np.where(ulp > budget, INACCURATE, OK)
    # the class checks (NaN, inf, sign, zero) only concern points that are non-finite,
    # zero, or of opposite sign, and never equal pairs (+0 == -0 included): decide those
    # on their subset, in DESIGN.md order (underflowed losses make zeros common)
    idx = np.flatnonzero(o != x)  # NaN != NaN: NaN pairs stay in
    if idx.size:
        os_, xs_ = o[idx], x[idx]
        keep = (~(np.isfinite(os_) & np.isfinite(xs_)) | (os_ == 0)
                | (np.signbit(os_) != np.signbit(xs_)))
        idx, os_, xs_ = idx[keep], os_[keep], xs_[keep]
    if idx.size:
        o_nan, x_nan = np.isnan(os_), np.isnan(xs_)
        o_inf, x_inf = np.isinf(os_), np.isinf(xs_)
        conditions = [
            o_nan & ~x_nan,
            o_inf & ~x_inf & ~x_nan,
            ~o_inf & ~o_nan & x_inf,
            (os_ != 0) & (xs_ != 0) & ~o_nan & ~x_nan & (np.signbit(os_) != np.signbit(xs_)),
            (os_ == 0) & (xs_ != 0) & ~x_nan,
        ]
        codes[idx] = np.select(conditions, np.arange(ERROR + 1, INACCURATE, dtype=np.int8),
                               default=codes[idx])
    return Graded(codes, ulp, ordinal, dtype=dtype)


# ---------------------------------------------------------------------------- fused (numba)


def _fused(kernel: Any, o: np.ndarray, x: np.ndarray, hi: np.ndarray, lo: np.ndarray,
           dtype: str, budget: float) -> Graded:
    """grade() in one pass per point: the same float64 operations as ulp_errors (a product
    by the power of two 2**-e is ldexp's exact scaling, correctly rounded once, as
    np.ldexp is: -e stays in [-1022, 1023] for the narrow dtypes), _order_key computed
    from the float64 bits of dtype members (NaN needs none), and the status rules in
    _grade_block's order. A value that is not a member of the dtype (numpy would round
    it in its cast) gets numpy's ordinal, so results are identical for any input."""
    from reference import fast_numba

    fmt = get_format(dtype)
    n = o.size
    code = np.empty(n, dtype=np.int8)
    ulp = np.empty(n)
    ordinal = np.empty(n)
    stray = np.zeros((n + _CHUNK - 1) // _CHUNK, dtype=np.int64)
    args = [fast_numba._readonly(a) for a in (o, x, hi, lo)]
    with fast_numba.launch():
        kernel(*args, fmt.precision, fmt.emin, fmt.emax, fmt.quantum_exp, float(budget),
               code, ulp, ordinal, stray)
    if stray.any():  # values outside the dtype: numpy's cast decides their ordinal
        idx = np.flatnonzero(ordinal == -2.0)
        ordinal[idx] = ordinal_distances(o[idx], x[idx], dtype)
    return Graded(code, ulp, ordinal, dtype=dtype)


_KERNEL: list[Any] = []  # [kernel] once compiled or loaded
_KERNEL_LOCK = threading.Lock()  # graders in threads: compile once


def _fused_kernel() -> Any:
    """The compiled grading kernel, or None when numba is missing or switched off
    (BCE_AUDIT_NO_NUMBA=1). The kernels are the plain functions below, compiled here on
    first use (numba's on-disk cache: once per machine) so that importing audit does not
    import numba. They are module-level functions reaching each other and numba's
    pieces through module globals: a closure over a compiled function changes numba's
    cache key in every process, which would recompile them each time."""
    global prange, _f2i, _i2f, _nb_key, _nb_block, _nb_kernel
    from reference import fast_numba

    if not fast_numba.available():
        return None
    with _KERNEL_LOCK:
        if not _KERNEL:
            from numba import njit, prange

            from reference.fast_numba import _f2i, _i2f

            jit = {"nogil": True, "cache": True, "error_model": "numpy", "fastmath": False}
            _nb_key = njit(inline="always", **jit)(_nb_key)
            _nb_block = njit(**jit)(_nb_block)
            _nb_kernel = njit(parallel=True, **jit)(_nb_kernel)
            _KERNEL.append(_nb_kernel)
    return _KERNEL[0]


prange = range  # numba.prange, _f2i and _i2f once _fused_kernel has compiled the kernels
_f2i = _i2f = None  # type: Any
_CHUNK = 2048  # points per prange iteration (each a count in `stray`)


def _nb_key(v: float, prec: int, emin: int, emax: int, qexp: int) -> tuple:
    """(_order_key of v, v is a member of the dtype) for v not NaN, every case computed
    and one selected (selects vectorize, branches do not)."""
    b = _f2i(v)
    mb = b & ((np.int64(1) << 63) - 1)
    a = _i2f(mb)
    biased = mb >> 52
    frac = mb & ((np.int64(1) << 52) - 1)
    low = (np.int64(1) << (53 - prec)) - 1
    mag_n = ((biased - 1022 - emin) << (prec - 1)) | (frac >> (53 - prec))
    mem_n = ((frac & low) == 0) & (biased - 1023 <= emax)
    m = a * _i2f(np.int64(1023 - qexp) << 52)  # subnormal range: exact, < 2**prec
    mag_s = np.int64(m if m < 1e18 else 0.0)
    mem_s = m == math.floor(m)
    normal = a >= _i2f(np.int64(emin + 1023) << 52)
    inf = a == math.inf
    mag = (np.int64(emax - emin + 2) << (prec - 1)) if inf else (mag_n if normal else mag_s)
    member = inf | (mem_n if normal else mem_s)
    return (-mag if b < 0 else mag), member


def _nb_block(o: np.ndarray, x: np.ndarray, hi: np.ndarray, lo: np.ndarray, prec: int,
              emin: int, emax: int, qexp: int, budget: float, code: np.ndarray,
              ulp: np.ndarray, ordinal: np.ndarray) -> int:
    """One chunk of grade(), every rule as a select (so the loop vectorizes); returns how
    many points hold a value outside the dtype (ordinal -2, see _fused)."""
    stray = 0
    for i in range(o.size):
        oi, xi, h = o[i], x[i], hi[i]
        o_nan, x_nan = oi != oi, xi != xi
        o_inf, x_inf = abs(oi) == math.inf, abs(xi) == math.inf
        nan = o_nan | x_nan
        special = nan | o_inf | x_inf
        both_nan = o_nan & x_nan
        # ulp_errors
        err = abs((oi - h) - lo[i])
        e = max(((_f2i(h) >> 52) & 0x7FF) - (1022 + prec), qexp)
        u = err * _i2f((1023 - e) << 52)
        u_nan = 0.0 if both_nan else math.inf
        u_inf = 0.0 if oi == xi else math.inf
        u = (u_nan if nan else u_inf) if special else u
        ulp[i] = u
        # ordinal_distances
        ko, mo = _nb_key(oi, prec, emin, emax, qexp)
        kx, mx = _nb_key(xi, prec, emin, emax, qexp)
        outside = (not (mo & mx)) & (not nan)
        stray += outside
        d = -2.0 if outside else float(abs(ko - kx))
        ordinal[i] = (0.0 if both_nan else -1.0) if nan else d
        # _grade_block's statuses, in DESIGN.md order
        o_neg, x_neg = _f2i(oi) < 0, _f2i(xi) < 0
        c = INACCURATE if u > budget else OK
        c5 = SPURIOUS_ZERO if (oi == 0) & (xi != 0) & (not x_nan) else c
        c4 = WRONG_SIGN if ((oi != 0) & (xi != 0) & (not nan) & (o_neg != x_neg)) else c5
        c3 = MISSING_INF if (not o_inf) & (not o_nan) & x_inf else c4
        c2 = SPURIOUS_INF if o_inf & (not x_inf) & (not x_nan) else c3
        c1 = SPURIOUS_NAN if o_nan & (not x_nan) else c2
        classes = (oi != xi) & (special | (oi == 0) | (o_neg != x_neg))
        code[i] = c1 if classes else c
    return stray


def _nb_kernel(o: np.ndarray, x: np.ndarray, hi: np.ndarray, lo: np.ndarray, prec: int,
               emin: int, emax: int, qexp: int, budget: float, code: np.ndarray,
               ulp: np.ndarray, ordinal: np.ndarray, stray: np.ndarray) -> None:
    n = o.size
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        a = c * _CHUNK
        b = min(n, a + _CHUNK)  # slices: loops from 0 vectorize (fast_numba._chunk)
        stray[c] = _nb_block(o[a:b], x[a:b], hi[a:b], lo[a:b], prec, emin, emax, qexp,
                             budget, code[a:b], ulp[a:b], ordinal[a:b])
