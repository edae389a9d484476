"""Exact conversion of user numbers into mpmath's raw binary tuples, and tuple helpers.

Every input is taken as the exact dyadic rational its bits hold: no decimal round trip
ever happens here. The rest of reference/ works on mpmath.libmp tuples
``(sign, man, exp, bc)`` because they are exact, hashable and fast.
"""

from __future__ import annotations

import numbers
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
from mpmath import libmp

Tuple = tuple  # an mpmath.libmp raw value: (sign, man, exp, bc) or a special

ZERO = libmp.fzero
ONE = libmp.fone
HALF = libmp.from_man_exp(1, -1)
INF = libmp.finf
NINF = libmp.fninf
NAN = libmp.fnan


def to_tuple(value: Any) -> Tuple:
    """Convert a number to an exact libmp tuple (NaN and +-inf preserved)."""
    if isinstance(value, mpmath.mpf):
        return value._mpf_
    if isinstance(value, bool):
        return libmp.from_int(int(value))
    if isinstance(value, numbers.Integral):
        return libmp.from_int(int(value))
    if isinstance(value, float):
        return libmp.from_float(value)
    if isinstance(value, Fraction):
        return from_fraction(value)
    if isinstance(value, np.generic):
        kind = np.dtype(type(value)).kind
        if kind in "iu":
            return libmp.from_int(int(value))
        if np.dtype(type(value)).itemsize > 8:
            # longdouble: float() would round; as_integer_ratio is exact and dyadic.
            return _from_ratio(*value.as_integer_ratio()) if np.isfinite(value) else \
                libmp.from_float(float(value))
        # float16, bfloat16 (ml_dtypes), float32, float64 widen exactly to a Python float.
        return libmp.from_float(float(value))
    if isinstance(value, tuple) and len(value) == 4:
        return value
    raise TypeError(f"cannot convert {type(value).__name__} {value!r} to an exact number")


def _from_ratio(num: int, den: int) -> Tuple:
    shift = den.bit_length() - 1
    if den != 1 << shift:
        raise ValueError("not a dyadic rational")
    return libmp.from_man_exp(num, -shift)


def from_fraction(value: Fraction) -> Tuple:
    """Exact tuple of a dyadic Fraction (raises for non-dyadic denominators)."""
    return _from_ratio(value.numerator, value.denominator)


def is_inf(t: Tuple) -> bool:
    return t in (INF, NINF)


def is_special(t: Tuple) -> bool:
    return t in (INF, NINF, NAN)


def sign(t: Tuple) -> int:
    """-1, 0 or 1 (NaN gives 0; callers test NaN first)."""
    if t in (ZERO, NAN):
        return 0
    if t == INF:
        return 1
    if t == NINF:
        return -1
    return -1 if t[0] else 1


def msb(t: Tuple) -> int:
    """Exponent of the leading bit: 2**msb <= |t| < 2**(msb+1) (t finite, nonzero)."""
    return t[2] + t[3] - 1


def neg(t: Tuple) -> Tuple:
    return libmp.mpf_neg(t)


def add(a: Tuple, b: Tuple) -> Tuple:
    """Exact sum."""
    return libmp.mpf_add(a, b, 0)


def sub(a: Tuple, b: Tuple) -> Tuple:
    return libmp.mpf_sub(a, b, 0)


def mul(a: Tuple, b: Tuple) -> Tuple:
    """Exact product."""
    return libmp.mpf_mul(a, b, 0)


def pow2(e: int) -> Tuple:
    return (0, 1, e, 1)


def to_fraction(t: Tuple) -> Fraction:
    """Exact Fraction of a finite tuple."""
    s, man, exp, _ = t
    if not man:
        return Fraction(0)
    v = Fraction(man << exp) if exp >= 0 else Fraction(man, 1 << -exp)
    return -v if s else v
