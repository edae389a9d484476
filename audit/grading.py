"""Grading: every observed point gets one status (DESIGN.md section 5), ulp and ordinal.

Vectorized numpy over a batch. The exact value arrives as a double-double (hi, lo)
from the reference and the correctly rounded `expected` value in the dtype, so the
ulp error is measured against the exact value, not against its rounding.
Ordinal distances are computed on sign-magnitude bit patterns in uint64: no int
overflow at +-max and no NaN surprise (numpy.testing's nulp_diff pitfalls).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference.formats import get_format

# Severity order = the order statuses are checked in (DESIGN.md section 5).
STATUSES: tuple[str, ...] = (
    "error", "spurious_nan", "spurious_inf", "missing_inf", "wrong_sign", "spurious_zero",
    "inaccurate", "ok",
)
SEVERITY = {s: i for i, s in enumerate(STATUSES)}  # lower = worse
_NAMES = np.array(STATUSES)  # fixed-width strings: vectorized comparisons, no objects


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

    def set_error(self, index: int) -> None:
        """The framework raised for this point."""
        self.code[index] = 0
        self.ulp[index] = np.inf


def ulp_exponent(hi: np.ndarray, dtype: str) -> np.ndarray:
    """Exponent of the dtype spacing at |exact| (subnormal spacing below the normal range)."""
    fmt = get_format(dtype)
    with np.errstate(invalid="ignore"):
        _, e = np.frexp(np.where(np.isfinite(hi), hi, 0.0))
    e = e.astype(np.int64) - 1  # |hi| in [2**e, 2**(e+1))
    e = np.where(hi == 0, fmt.emin, e)
    return np.maximum(e - fmt.precision + 1, fmt.quantum_exp)


def ulp_errors(observed: np.ndarray, expected: np.ndarray, hi: np.ndarray, lo: np.ndarray,
               dtype: str) -> np.ndarray:
    """|observed - exact| / ulp(exact), with DESIGN.md's rules for inf and NaN."""
    o = np.asarray(observed, dtype=np.float64)
    x = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.ldexp(np.abs((o - hi) - lo), -ulp_exponent(hi, dtype))
    # the rules for NaN and inf touch few points: apply them on that subset only
    idx = np.flatnonzero(~(np.isfinite(o) & np.isfinite(x)))
    if idx.size:
        os_, xs_ = o[idx], x[idx]
        o_nan, x_nan = np.isnan(os_), np.isnan(xs_)
        err[idx] = np.where(o_nan | x_nan, np.where(o_nan & x_nan, 0.0, np.inf),
                            np.where(os_ == xs_, 0.0, np.inf))
    return err


_BITS = {"float16": (np.float16, np.uint16), "float32": (np.float32, np.uint32),
         "float64": (np.float64, np.uint64)}


def _order_index(values: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(negative?, magnitude index) of dtype values: the IEEE bit pattern without its sign
    bit orders magnitudes, +-0 is 0 and inf is max + 1. Values must be dtype members."""
    v = np.asarray(values, dtype=np.float64)
    if dtype == "bfloat16":
        # exact: members of bfloat16 are float32 values with 16 zero low bits
        bits = v.astype(np.float32).view(np.uint32) >> np.uint32(16)
        sign = np.uint32(0x8000)
    else:
        ftype, utype = _BITS[dtype]
        bits = v.astype(ftype).view(utype)
        sign = utype(1) << utype(8 * np.dtype(utype).itemsize - 1)
    mag = (bits & ~sign).astype(np.uint64)
    return (bits & sign).astype(bool) & (mag > 0), mag


def ordinal_distances(observed: np.ndarray, expected: np.ndarray, dtype: str) -> np.ndarray:
    """Values of the dtype between observed and expected; -1 where exactly one is NaN."""
    o = np.asarray(observed, dtype=np.float64)
    x = np.asarray(expected, dtype=np.float64)
    o_nan, x_nan = np.isnan(o), np.isnan(x)
    on, om = _order_index(np.where(o_nan, 0.0, o), dtype)
    xn, xm = _order_index(np.where(x_nan, 0.0, x), dtype)
    same = on == xn
    d = np.where(same, np.where(om > xm, om - xm, xm - om), om + xm)  # uint64: no overflow
    d = d.astype(np.float64)
    return np.where(o_nan | x_nan, np.where(o_nan & x_nan, 0.0, -1.0), d)


def grade(observed: np.ndarray | None, expected: np.ndarray, hi: np.ndarray, lo: np.ndarray,
          dtype: str, budget: float) -> Graded:
    """Status per point, checked in DESIGN.md order. observed None = the framework raised."""
    n = len(expected)
    if observed is None:
        return Graded(np.zeros(n, dtype=np.int8), np.full(n, np.inf), np.full(n, -1.0),
                      dtype=dtype)
    o = np.asarray(observed, dtype=np.float64)
    x = np.asarray(expected, dtype=np.float64)
    ulp = ulp_errors(o, x, hi, lo, dtype)
    ordinal = ordinal_distances(o, x, dtype)
    codes = np.where(ulp > budget, np.int8(6), np.int8(7))
    # the class checks (NaN, inf, sign, zero) only concern points that are non-finite,
    # zero, or of opposite sign: decide those on their subset, in DESIGN.md order
    idx = np.flatnonzero(~(np.isfinite(o) & np.isfinite(x)) | (o == 0)
                         | (np.signbit(o) != np.signbit(x)))
    if idx.size:
        os_, xs_ = o[idx], x[idx]
        o_nan, x_nan = np.isnan(os_), np.isnan(xs_)
        o_inf, x_inf = np.isinf(os_), np.isinf(xs_)
        conditions = [
            o_nan & ~x_nan,
            o_inf & ~x_inf & ~x_nan,
            ~o_inf & ~o_nan & x_inf,
            (os_ != 0) & (xs_ != 0) & ~o_nan & ~x_nan & (np.signbit(os_) != np.signbit(xs_)),
            (os_ == 0) & (xs_ != 0) & ~x_nan,
        ]
        codes[idx] = np.select(conditions, np.arange(1, 6, dtype=np.int8), default=codes[idx])
    return Graded(codes, ulp, ordinal, dtype=dtype)
