"""An independent oracle for the self-tests of ``reference/``.

Nothing here imports ``reference``: the point is to check the ground truth against a
second implementation that shares none of its code or tricks.

- Values come from the *textbook* formulas (``log(1 + exp(t))``, ``1 / (1 + exp(-x))``,
  ``log(q)``) evaluated by mpmath at a precision chosen so that even those naive forms are
  accurate: roughly ``1.5 * |x|`` bits on top of a 600-bit margin, so that ``1 + exp(-x)``
  still resolves ``exp(-x)``.  Every evaluation runs inside ``mp.workprec``; the global
  precision is never touched.
- For huge ``|x|`` (where that precision would be absurd) the loss and its gradient are
  an exactly known dyadic part plus a tail below ``2**-4000`` relative; the oracle returns
  the dyadic part as a ``Fraction`` together with the sign of the tail (``Split``).
- Rounding is done with ``fractions.Fraction`` and Python integers (round-to-nearest-even
  with gradual underflow and overflow to inf), not with mpmath's or the reference's
  rounding; the sign of a vanishing tail is honoured as a sticky bit.
- Ordinals (for ulp and ordinal-distance checks) are counted from the format's
  parameters, not from bit patterns.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import numpy as np
from hypothesis import strategies as st
from mpmath import mp, mpf


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: ``precision`` significand bits (hidden bit
    included), normal exponents ``emin..emax``."""

    name: str
    precision: int
    emin: int
    emax: int

    @property
    def quantum_min(self) -> int:
        """Exponent of the smallest subnormal (the spacing below the normal range)."""
        return self.emin - self.precision + 1

    @property
    def max_finite(self) -> Fraction:
        return Fraction(2**self.precision - 1) * Fraction(2) ** (self.emax - self.precision + 1)

    @property
    def overflow_midpoint(self) -> Fraction:
        """Halfway between the largest finite value and ``2**(emax+1)``: rounds to inf."""
        return Fraction(2**self.precision * 2 - 1) * Fraction(2) ** (self.emax - self.precision)

    @property
    def min_subnormal(self) -> Fraction:
        return Fraction(2) ** self.quantum_min

    @property
    def positive_finite_count(self) -> int:
        """How many positive finite values the format has (subnormals included)."""
        binades = self.emax - self.emin + 1
        return binades * 2 ** (self.precision - 1) + (2 ** (self.precision - 1) - 1)


FORMATS = {
    "float16": Format("float16", 11, -14, 15),
    "bfloat16": Format("bfloat16", 8, -126, 127),
    "float32": Format("float32", 24, -126, 127),
    "float64": Format("float64", 53, -1022, 1023),
}
DTYPES = tuple(FORMATS)


# --------------------------------------------------------------------------- exact values


def to_fraction(value) -> Fraction:
    """The exact rational of a finite float, numpy scalar, int or mpf."""
    if isinstance(value, mpf):
        if not mpmath.isfinite(value):
            raise ValueError(f"not finite: {value}")
        sign, man, exp, _ = value._mpf_
        frac = Fraction(int(man)) * Fraction(2) ** int(exp)
        return -frac if sign else frac
    if isinstance(value, np.generic) and not isinstance(value, np.integer):
        value = float(value)  # float16/bfloat16/float32/float64 all widen exactly
    return Fraction(value)


def fraction_to_mpf(q: Fraction) -> mpf:
    """An mpf holding exactly the dyadic rational ``q``."""
    num, den = q.numerator, q.denominator
    if den & (den - 1):
        raise ValueError(f"not dyadic: {q}")
    shift = den.bit_length() - 1
    with mp.workprec(max(64, abs(num).bit_length() + 8)):
        return mpmath.ldexp(mpf(num), -shift)


def negate_exact(value: mpf) -> mpf:
    """-value with all of its bits (mpf arithmetic, negation included, rounds to the
    precision in force)."""
    with mp.workprec(max(64, int(value._mpf_[3]) + 8)):
        return -value


def exact_mpf(value) -> mpf:
    """Any finite float-like value as an mpf, exactly (no rounding to mp.prec)."""
    return fraction_to_mpf(to_fraction(value))


def f64_from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def f32_from_bits(bits: int) -> float:
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


# --------------------------------------------------------------------------- rounding


def _floor_log2(q: Fraction) -> int:
    """floor(log2(q)) for q > 0, with integers only."""
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** e > q:
        e -= 1
    return e


def round_fraction(q: Fraction, dtype: str, tail: int = 0) -> float:
    """Round ``q + tail * epsilon`` to ``dtype`` (nearest, ties to even), where ``tail`` is
    the sign (-1, 0, 1) of a quantity far below every rounding boundary: it only matters
    when ``q`` is exactly halfway or exactly representable with nothing else to decide."""
    fmt = FORMATS[dtype]
    if q == 0:
        if tail == 0:
            return 0.0
        return 0.0 if tail > 0 else -0.0
    negative = q < 0
    a = -q if negative else q
    t = -tail if negative else tail
    e = max(_floor_log2(a), fmt.emin)
    quantum = e - fmt.precision + 1
    scaled = a / Fraction(2) ** quantum
    n = scaled.numerator // scaled.denominator
    rem = scaled - n
    half = Fraction(1, 2)
    if rem > half or (rem == half and (t > 0 or (t == 0 and n % 2 == 1))):
        n += 1
    result = Fraction(n) * Fraction(2) ** quantum
    out = math.inf if result > fmt.max_finite else math.ldexp(n, quantum)
    return -out if negative else out


def round_value(value, dtype: str) -> float:
    """Round an mpf (exactly, all of its bits), a float, or a ``Split`` to ``dtype``."""
    if isinstance(value, Split):
        if value.special is not None:
            return float(value.special)
        return round_fraction(value.dyadic, dtype, value.tail)
    if isinstance(value, mpf):
        if not mpmath.isfinite(value):
            return float(value)
        sign, man, exp, bc = value._mpf_
        if man:
            fmt = FORMATS[dtype]
            top = int(exp) + int(bc)  # 2**(top-1) <= |value| < 2**top
            if top < fmt.quantum_min - 1:  # below half the smallest subnormal
                return -0.0 if sign else 0.0
            if top > fmt.emax + 2:
                return -math.inf if sign else math.inf
    if isinstance(value, float | np.floating) and (value == 0 or not math.isfinite(value)):
        return float(value)  # keeps the sign of a zero
    return round_fraction(to_fraction(value), dtype)


# --------------------------------------------------------------------------- ordinals


def ordinal(value: float, dtype: str) -> int:
    """Position of a ``dtype`` value on the integer line: 0 for ±0, k for the k-th
    positive value, ``positive_finite_count + 1`` for +inf; negatives mirrored."""
    fmt = FORMATS[dtype]
    if math.isnan(value):
        raise ValueError("NaN has no ordinal")
    if value == 0:
        return 0
    sign = -1 if value < 0 else 1
    if math.isinf(value):
        return sign * (fmt.positive_finite_count + 1)
    a = abs(to_fraction(value))
    if a < Fraction(2) ** fmt.emin:
        k = a / fmt.min_subnormal
        assert k.denominator == 1, f"{value} is not a {dtype} value"
        return sign * k.numerator
    e = _floor_log2(a)
    m = a / Fraction(2) ** (e - fmt.precision + 1)
    assert m.denominator == 1, f"{value} is not a {dtype} value"
    index = (e - fmt.emin + 1) * 2 ** (fmt.precision - 1) + (m.numerator - 2 ** (fmt.precision - 1))
    return sign * index


def ulp_at(exact: Fraction, dtype: str) -> Fraction:
    """Spacing of ``dtype`` numbers in the binade of ``exact`` (subnormal spacing below
    the normal range; the top binade's spacing above the largest finite value)."""
    fmt = FORMATS[dtype]
    a = abs(exact)
    e = fmt.emin if a == 0 else max(_floor_log2(a), fmt.emin)
    e = min(e, fmt.emax)
    return Fraction(2) ** (e - fmt.precision + 1)


# --------------------------------------------------------------------------- loss values


@dataclass(frozen=True)
class Split:
    """A value known as ``dyadic + tail`` with ``|tail|`` far below ``2**-4000 * scale``;
    only the tail's sign is kept.  ``special`` holds an inf/nan result instead."""

    dyadic: Fraction
    tail: int
    special: float | None = None


# Above this |x| the tails exp(-|x|) are below 2**-4300 and the oracle switches to Split.
HUGE = 3000.0


def _precision_for(*args: Fraction, x: Fraction = Fraction(0)) -> int:
    """Bits that make the naive formulas accurate to far more than 100 bits: enough for
    ``1 - y`` and the like to be exact, plus ``1.5 * |x|`` so that ``1 + exp(-|x|)``
    keeps ``exp(-|x|)`` to hundreds of bits, plus a 600-bit margin against cancellation."""
    span = 0
    for a in args:
        if a != 0:
            e = _floor_log2(abs(a))
            span = max(span, abs(e) + 64)
    return int(600 + span + 1.5 * float(abs(x)))


def _softplus_naive(t: mpf) -> mpf:
    return mpmath.log(1 + mpmath.exp(t))


def _sigmoid_naive(t: mpf) -> mpf:
    return 1 / (1 + mpmath.exp(-t))


def logits_loss(x, y, weight=1, pos_weight=1, *, extra_bits: int = 0) -> mpf | Split:
    """``w * (p*y*log(1+exp(-x)) + (1-y)*log(1+exp(x)))``, for finite arguments, by the
    textbook formula at high precision (or as a ``Split`` when ``|x| > HUGE``)."""
    fx, fy, fw, fp = (to_fraction(v) for v in (x, y, weight, pos_weight))
    if abs(fx) > HUGE:
        c = 1 - fy + fp * fy
        if fx > 0:
            dyadic, tail_coeff = (1 - fy) * fx, c
        else:
            dyadic, tail_coeff = -fp * fy * fx, c
        if dyadic == 0 and fw != 0 and tail_coeff != 0:
            # nothing but the tail: w*c*softplus(-|x|) = w*c*exp(-|x|)*(1 + O(exp(-|x|)))
            with mp.workprec(400):
                return fraction_to_mpf(fw * tail_coeff) * mpmath.exp(-fraction_to_mpf(abs(fx)))
        tail = (tail_coeff > 0) - (tail_coeff < 0)
        if fw < 0:
            tail = -tail
        if fw == 0:
            tail = 0
        return Split(fw * dyadic, tail)
    prec = _precision_for(fx, fy, fw, fp, x=fx) + extra_bits
    with mp.workprec(prec):
        mx, my, mw, mpw = (fraction_to_mpf(v) for v in (fx, fy, fw, fp))
        return mw * (mpw * my * _softplus_naive(-mx) + (1 - my) * _softplus_naive(mx))


def logits_loss_grad(x, y, weight=1, pos_weight=1, *, extra_bits: int = 0) -> mpf | Split:
    """d/dx of ``logits_loss``: ``w * ((1-y)/(1+exp(-x)) - p*y/(1+exp(x)))``."""
    fx, fy, fw, fp = (to_fraction(v) for v in (x, y, weight, pos_weight))
    c = 1 - fy + fp * fy
    if abs(fx) > HUGE:
        # x > 0: w*((1-y) - c*sigmoid(-x));  x < 0: w*(-p*y + c*sigmoid(x))
        if fx > 0:
            dyadic, tail = (1 - fy), -((c > 0) - (c < 0))
        else:
            dyadic, tail = -fp * fy, (c > 0) - (c < 0)
        if dyadic == 0 and fw != 0 and c != 0:
            # nothing but the tail: ±w*c*sigmoid(-|x|) = ±w*c*exp(-|x|)*(1 + O(exp(-|x|)))
            with mp.workprec(400):
                magnitude = fraction_to_mpf(fw * c) * mpmath.exp(-fraction_to_mpf(abs(fx)))
                return -magnitude if fx > 0 else magnitude
        if fw < 0:
            tail = -tail
        if fw == 0:
            tail = 0
        return Split(fw * dyadic, tail)
    prec = _precision_for(fx, fy, fw, fp, x=fx) + extra_bits
    with mp.workprec(prec):
        mx, my, mw, mpw = (fraction_to_mpf(v) for v in (fx, fy, fw, fp))
        return mw * ((1 - my) * _sigmoid_naive(mx) - mpw * my * _sigmoid_naive(-mx))


def logits_loss_numeric_grad(x, y, weight=1, pos_weight=1) -> mpf:
    """Central difference of the naive loss at 1400+ bits with ``h = 2**-400``: truncation
    error ~ h**2, rounding error ~ 2**-prec / h, both far below 2**-100 for moderate x."""
    fx, fy, fw, fp = (to_fraction(v) for v in (x, y, weight, pos_weight))
    prec = _precision_for(fx, fy, fw, fp, x=fx) + 1400
    with mp.workprec(prec):
        mx, my, mw, mpw = (fraction_to_mpf(v) for v in (fx, fy, fw, fp))
        h = mpmath.ldexp(mpf(1), -400)

        def loss(t):
            return mw * (mpw * my * _softplus_naive(-t) + (1 - my) * _softplus_naive(t))

        return (loss(mx + h) - loss(mx - h)) / (2 * h)


def prob_loss(q, y, weight=1) -> mpf:
    """``-w * (y*log(q) + (1-y)*log(1-q))`` for ``0 < q < 1``, at high precision."""
    fq, fy, fw = (to_fraction(v) for v in (q, y, weight))
    prec = _precision_for(fq, 1 - fq, fy, fw) + 200
    with mp.workprec(prec):
        mq, my, mw = (fraction_to_mpf(v) for v in (fq, fy, fw))
        return -mw * (my * mpmath.log(mq) + (1 - my) * mpmath.log(1 - mq))


def prob_loss_grad(q, y, weight=1) -> mpf:
    """d/dq of ``prob_loss``, as ``w * (q - y) / (q * (1 - q))`` (``q - y`` exact)."""
    fq, fy, fw = (to_fraction(v) for v in (q, y, weight))
    prec = _precision_for(fq, 1 - fq, fy, fw) + 200
    with mp.workprec(prec):
        mq, my, mw = (fraction_to_mpf(v) for v in (fq, fy, fw))
        return mw * (mq - my) / (mq * (1 - mq))


# --------------------------------------------------------------------------- comparisons


def as_mpf(value) -> mpf:
    """An mpf for an mpf, float, Fraction or ``Split`` (its dyadic part), exactly."""
    if isinstance(value, Split):
        return fraction_to_mpf(value.dyadic)
    if isinstance(value, Fraction):
        return fraction_to_mpf(value)
    if isinstance(value, mpf):
        return value
    return exact_mpf(value)


def agree_bits(a, b) -> float:
    """-log2 of the relative difference of two finite values (inf when equal).

    Works in mpmath (not Fractions) so values like exp(-1e10) stay cheap; resolves
    differences down to about 2**-350, which is all the tests ask for."""
    ma, mb = as_mpf(a), as_mpf(b)
    if ma == mb:
        return math.inf
    with mp.workprec(400):
        diff = abs(ma - mb) / max(abs(ma), abs(mb))
        if diff == 0:
            return math.inf
        return -float(mpmath.log(diff, 2))


def same_float(a: float, b: float) -> bool:
    """Identical floats: both NaN, or equal with the same sign (so +0.0 != -0.0)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def mismatches(ref, orc, round_to, *, bits: float = 100, dtypes=DTYPES) -> list[str]:
    """How a reference value ``ref`` disagrees with an oracle value ``orc`` (mpf or
    ``Split``): fewer than ``bits`` agreeing bits, or a different rounding in any dtype.
    ``round_to`` is the reference's rounding (the oracle never imports the reference)."""
    problems = []
    if isinstance(orc, Split):
        target = orc.dyadic
        if target == 0 and orc.tail == 0 and ref != 0:
            problems.append(f"value {ref} != 0")
    else:
        target = orc
    if isinstance(orc, Split) and target == 0:
        pass
    elif isinstance(target, mpf) and not mpmath.isfinite(target):
        same = (mpmath.isnan(ref) and mpmath.isnan(target)) or ref == target
        if not same:
            problems.append(f"value {ref} != {target}")
    elif not mpmath.isfinite(ref):
        problems.append(f"value {ref}, oracle {mpmath.nstr(as_mpf(target), 40)}")
    elif target == 0 or ref == 0:
        if not (target == 0 and ref == 0):
            problems.append(f"value {ref}, oracle {mpmath.nstr(as_mpf(target), 40)}")
    else:
        agreed = agree_bits(ref, target)
        if agreed < bits:
            problems.append(
                f"only {agreed:.1f} bits agree: reference {mpmath.nstr(ref, 40)}, "
                f"oracle {mpmath.nstr(as_mpf(target), 40)}"
            )
    for dtype in dtypes:
        got, want = round_to(ref, dtype), round_value(orc, dtype)
        if not same_float(got, want):
            problems.append(f"round_to(., {dtype}) = {got!r}, correctly rounded {want!r}")
    return problems


# --------------------------------------------------------------------------- strategies


def any_float64(*, allow_nan: bool = False, allow_infinity: bool = True):
    """Every float64 bit pattern is equally likely: covers subnormals, huge and tiny
    magnitudes (and ±inf) as often as the unit range."""
    values = st.integers(0, 2**64 - 1).map(f64_from_bits)
    if not allow_nan:
        values = values.filter(lambda v: not math.isnan(v))
    if not allow_infinity:
        values = values.filter(math.isfinite)
    return values


def logits(*, allow_infinity: bool = False):
    """Logits from the whole float64 range, mixed with the moderate range where both
    softplus terms matter and with float32-exact values."""
    return st.one_of(
        any_float64(allow_infinity=allow_infinity),
        st.floats(-40, 40),
        st.floats(-800, 800),
        st.floats(-1e5, 1e5, width=32),
        st.sampled_from([0.0, -0.0, 1.0, -1.0, 700.0, -700.0, 1e10, -1e10, 3e38, -3e38]),
    )


def unit_targets():
    """Targets in [0, 1] including subnormal ones and the endpoints."""
    return st.one_of(
        st.sampled_from([0.0, 1.0, 0.5, 1 - 2**-24, 2**-30, 1 - 2**-53, 2**-1074]),
        st.floats(0, 1),
        st.integers(0, 2**63 - 1).map(f64_from_bits).filter(lambda v: v <= 1),
    )


def complementable_targets():
    """Targets y in [0, 1] whose complement 1 - y is also a float64 (y = k / 2**m)."""
    return st.integers(0, 53).flatmap(
        lambda m: st.integers(0, 2**m).map(lambda k: math.ldexp(k, -m))
    )


def positive_weights():
    """Weights from 2**-60 to 2**60, plus exact powers of two."""
    return st.one_of(
        st.floats(2.0**-60, 2.0**60),
        st.integers(-60, 60).map(lambda k: math.ldexp(1.0, k)),
    )


def probabilities():
    """q in the open interval (0, 1), subnormals included."""
    return st.one_of(
        st.floats(0, 1, exclude_min=True, exclude_max=True),
        st.integers(1, 0x3FEFFFFFFFFFFFFF).map(f64_from_bits),
        st.sampled_from([0.5, 2**-1074, 1 - 2**-53, 2**-24, 1 - 2**-24]),
    )
