"""The four target formats, correct rounding into them, and the error measures.

Everything here is integer arithmetic on exact values, so there is no wraparound, no
overflow at +-max and no NaN surprise (the numpy.testing pitfalls DESIGN.md warns of).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mpmath import libmp

from . import exact
from .exact import INF, NAN, NINF, ZERO


@dataclass(frozen=True)
class Format:
    """A binary IEEE-style format: `precision` bits incl. the implicit one."""

    name: str
    precision: int
    emin: int
    emax: int
    width: int  # storage bits; the largest possible "bits of error"

    @property
    def quantum_exp(self) -> int:
        """Exponent of the smallest subnormal."""
        return self.emin - self.precision + 1

    @property
    def max_finite(self) -> float:
        return math.ldexp((1 << self.precision) - 1, self.emax - self.precision + 1)

    @property
    def positive_count(self) -> int:
        """Number of finite values > 0 (subnormals and normals)."""
        return (self.emax - self.emin + 2) * (1 << (self.precision - 1)) - 1


FORMATS: dict[str, Format] = {
    "float16": Format("float16", 11, -14, 15, 16),
    "bfloat16": Format("bfloat16", 8, -126, 127, 16),
    "float32": Format("float32", 24, -126, 127, 32),
    "float64": Format("float64", 53, -1022, 1023, 64),
}


def get_format(dtype: Any) -> Format:
    """Format for a dtype name (also accepts numpy dtypes/types by their name)."""
    if isinstance(dtype, Format):
        return dtype
    name = getattr(dtype, "__name__", None) or getattr(dtype, "name", None) or str(dtype)
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; expected one of {', '.join(FORMATS)}"
        ) from None


def _round_int(man: int, exp: int, negative: bool, fmt: Format) -> float:
    """Round the positive value man * 2**exp (man > 0) into fmt, sign applied last."""
    top = exp + man.bit_length() - 1
    lsb = max(top - fmt.precision + 1, fmt.quantum_exp)
    if exp >= lsb:
        q, e = man, exp
    elif top < lsb - 1:  # below half the spacing: no need to build huge shifts
        q, e = 0, lsb
    else:
        shift = lsb - exp
        q = man >> shift
        rem = man - (q << shift)
        half = 1 << (shift - 1)
        if rem > half or (rem == half and q & 1):
            q += 1
        e = lsb
    if q and e + q.bit_length() - 1 > fmt.emax:
        return -math.inf if negative else math.inf
    value = math.ldexp(q, e) if q else 0.0
    return -value if negative else value


def _round_fraction(value: Fraction, fmt: Format) -> float:
    negative = value < 0
    num, den = abs(value.numerator), value.denominator
    if num == 0:
        return -0.0 if negative else 0.0
    top = num.bit_length() - den.bit_length()
    if (num << max(0, -top)) < (den << max(0, top)):
        top -= 1
    lsb = max(top - fmt.precision + 1, fmt.quantum_exp)
    if lsb <= 0:
        q, rem = divmod(num << -lsb, den)
    else:
        q, rem = divmod(num, den << lsb)
        den <<= lsb
    if 2 * rem > den or (2 * rem == den and q & 1):
        q += 1
    if q and lsb + q.bit_length() - 1 > fmt.emax:
        return -math.inf if negative else math.inf
    result = math.ldexp(q, lsb) if q else 0.0
    return -result if negative else result


def round_to(value: Any, dtype: Any) -> float:
    """`value` (taken exactly) rounded to nearest-even in dtype, as a Python float.

    Gradual underflow to subnormals, overflow to +-inf at the real threshold (values at
    or above max + ulp/2 overflow). A negative value that underflows gives -0.0.
    """
    fmt = get_format(dtype)
    if isinstance(value, float) and value == 0.0:
        return value  # keeps the sign of a float zero
    if isinstance(value, Fraction) and value.denominator & (value.denominator - 1):
        return _round_fraction(value, fmt)
    t = exact.to_tuple(value)
    if t == NAN:
        return math.nan
    if t == INF:
        return math.inf
    if t == NINF:
        return -math.inf
    if t == ZERO:
        return 0.0
    return _round_int(t[1], t[2], bool(t[0]), fmt)


def _index(x: float, fmt: Format) -> int:
    """Position of a dtype value in the sign-magnitude order (+-0 -> 0, inf -> max+1)."""
    if math.isinf(x):
        n = fmt.positive_count + 1
    elif x == 0:
        return 0
    else:
        man, exp = math.frexp(abs(x))  # abs(x) = man * 2**exp, 0.5 <= man < 1
        e = exp - 1
        if e < fmt.emin:
            n = int(abs(x) / math.ldexp(1.0, fmt.quantum_exp))
        else:
            frac = int(math.ldexp(man, fmt.precision))  # in [2**(p-1), 2**p)
            n = (e - fmt.emin + 1) * (1 << (fmt.precision - 1)) + frac - (1 << (fmt.precision - 1))
    return -n if x < 0 else n


def _check_member(x: float, fmt: Format) -> None:
    if not math.isnan(x) and round_to(x, fmt) != x:
        raise ValueError(f"{x!r} is not a {fmt.name} value")


def _as_float(value: Any) -> float:
    t = exact.to_tuple(value)
    return math.nan if t == NAN else libmp.to_float(t)


def ordinal_distance(observed: Any, exact_value: Any, dtype: Any) -> int | None:
    """Number of dtype values between observed and round_to(exact): an exact int.

    Defined across zero (+-0 count as one value) and up to +-inf. None when exactly
    one of the two is NaN (no order exists); 0 when both are NaN.
    """
    fmt = get_format(dtype)
    o = _as_float(observed)
    v = round_to(exact_value, fmt)
    if math.isnan(o) or math.isnan(v):
        return 0 if math.isnan(o) and math.isnan(v) else None
    _check_member(o, fmt)
    return abs(_index(o, fmt) - _index(v, fmt))


def bits_error(observed: Any, exact_value: Any, dtype: Any) -> float:
    """Herbie's bits of error: log2(1 + ordinal distance); the full width for NaN mismatches."""
    fmt = get_format(dtype)
    d = ordinal_distance(observed, exact_value, fmt)
    if d is None:
        return float(fmt.width)
    return math.log2(1 + d)


def ulp_exp(value: Any, dtype: Any) -> int:
    """Exponent of the dtype's spacing at the exact value (subnormal spacing near 0)."""
    fmt = get_format(dtype)
    t = exact.to_tuple(value)
    if exact.is_special(t) or t == ZERO:
        return fmt.quantum_exp
    return max(exact.msb(t) - fmt.precision + 1, fmt.quantum_exp)


def ulp_error(observed: Any, exact_value: Any, dtype: Any) -> float:
    """|observed - exact| / ulp(exact) as a float (DESIGN.md section 4).

    0 when equal, and when exact rounds to +-inf and observed is that inf; +inf when
    observed is NaN/inf and exact is not, and vice versa; 0 when both are NaN.
    """
    fmt = get_format(dtype)
    o = exact.to_tuple(observed)
    v = exact.to_tuple(exact_value)
    if o == NAN or v == NAN:
        return 0.0 if o == v else math.inf
    v_rounded = round_to(v, fmt)
    if math.isinf(v_rounded) or exact.is_inf(o):
        o_f = math.inf if o == INF else (-math.inf if o == NINF else None)
        return 0.0 if o_f == v_rounded else math.inf
    diff = exact.sub(o, v)
    if diff == ZERO:
        return 0.0
    # |diff| / 2**ulp_exp, computed from the exact difference to double precision.
    scaled = libmp.mpf_shift(libmp.mpf_abs(diff), -ulp_exp(v, fmt))
    return libmp.to_float(scaled, rnd=libmp.round_nearest) if exact.msb(scaled) < 1024 \
        else math.inf
