"""Self-tests of ``reference.round_to`` and the error measures (DESIGN.md section 4).

Where numpy / ml_dtypes convert with a single correct rounding they are the oracle:
numpy's float64->float32, float64->float16 and float32->float16 casts, and ml_dtypes'
float32->bfloat16.  ml_dtypes' float64->bfloat16 goes through float32 (double rounding:
1 + 2**-8 + 2**-40 becomes 1.0 instead of 1 + 2**-7), so bfloat16 roundings of wider
values are checked against the Fraction oracle instead.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mpmath import mp, mpf

import reference
from tests.reference.reference_oracle import (
    DTYPES,
    FORMATS,
    any_float64,
    fraction_to_mpf,
    negate_exact,
    ordinal,
    round_fraction,
    round_value,
    same_float,
    to_fraction,
    ulp_at,
)

BF16 = ml_dtypes.bfloat16


def _as_input(v: float):
    """Nonzero values go in as mpf (the reference's own currency), zeros as floats so
    that the sign of -0.0 survives."""
    return mpf(v) if v != 0 else v


def _assert_all_same(values, got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    same = (got == want) & (np.signbit(got) == np.signbit(want))
    same |= np.isnan(got) & np.isnan(want)
    bad = np.flatnonzero(~same)
    assert bad.size == 0, f"{what}: {bad.size} wrong, e.g. " + ", ".join(
        f"{float(values[i])!r} -> {got[i]!r} (want {want[i]!r})" for i in bad[:5]
    )


def _round_all(values, dtype):
    return [reference.round_to(_as_input(v), dtype) for v in values]


# --------------------------------------------------------------------------- every value


def _all_float16():
    v = np.arange(2**16, dtype=np.uint16).view(np.float16)
    return v[~np.isnan(v)]


def _all_bfloat16():
    v = np.arange(2**16, dtype=np.uint16).view(BF16)
    return v[~np.isnan(v.astype(np.float32))]


def test_every_float16_value():
    """Each float16 value is fixed by float16/float32/float64 rounding; its bfloat16
    rounding (3 bits fewer, wider exponent) matches ml_dtypes from float32."""
    h = _all_float16()
    values = h.astype(np.float64).tolist()
    for dtype in ("float16", "float32", "float64"):
        _assert_all_same(values, _round_all(values, dtype), values, f"float16 -> {dtype}")
    want = h.astype(np.float32).astype(BF16).astype(np.float64)
    _assert_all_same(values, _round_all(values, "bfloat16"), want, "float16 -> bfloat16")


def test_every_bfloat16_value():
    """Each bfloat16 value is fixed by bfloat16/float32 rounding; its float16 rounding
    (overflow above 65520, subnormals below 2**-14, zero below 2**-25) matches numpy."""
    b = _all_bfloat16()
    values = b.astype(np.float64).tolist()
    for dtype in ("bfloat16", "float32", "float64"):
        _assert_all_same(values, _round_all(values, dtype), values, f"bfloat16 -> {dtype}")
    with np.errstate(over="ignore"):
        want = b.astype(np.float32).astype(np.float16).astype(np.float64)
    _assert_all_same(values, _round_all(values, "float16"), want, "bfloat16 -> float16")


def _midpoints(sorted_values: np.ndarray, top: float) -> np.ndarray:
    """Exact midpoints of consecutive finite values (and of max and the overflow
    power), both signs, in a type that holds them exactly."""
    wide = sorted_values.astype(np.float64)  # float32 sums of the top values overflow
    mids = (wide[:-1] + wide[1:]) / 2
    mids = np.append(mids, top)
    return np.concatenate([mids, -mids])


def test_every_float16_midpoint_and_its_neighbours():
    """Ties go to even (and the top tie to inf); one float64 ulp either side decides."""
    h = _all_float16().astype(np.float64)
    positive = np.unique(h[(h >= 0) & np.isfinite(h)])
    mids = _midpoints(positive, float(FORMATS["float16"].overflow_midpoint))
    for points in (mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)):
        with np.errstate(over="ignore"):
            want = points.astype(np.float16).astype(np.float64)
        values = points.tolist()
        _assert_all_same(values, _round_all(values, "float16"), want, "float16 ties")


def test_every_bfloat16_midpoint_and_its_neighbours():
    b = _all_bfloat16().astype(np.float32)
    positive = np.unique(b[(b >= 0) & np.isfinite(b)])
    top = float(FORMATS["bfloat16"].overflow_midpoint)
    mids = _midpoints(positive, top).astype(np.float32)  # exact: 9 significant bits
    for points in (mids, np.nextafter(mids, np.float32(np.inf)),
                   np.nextafter(mids, np.float32(-np.inf))):
        want = points.astype(BF16).astype(np.float64)
        values = points.astype(np.float64).tolist()
        _assert_all_same(values, _round_all(values, "bfloat16"), want, "bfloat16 ties")


# --------------------------------------------------------------------------- sampled values


@settings(max_examples=300, deadline=None)
@given(v=any_float64())
@example(v=1 + 2**-8 + 2**-40)  # ml_dtypes (via float32) says 1.0; correct is 1 + 2**-7
@example(v=65520 - 2.0**-8)
@example(v=2.0**-25)
@example(v=2.0**-25 + 2.0**-60)
@example(v=-(2.0**-150))
@example(v=float(FORMATS["float32"].overflow_midpoint))  # -> inf
def test_float64_values_round_like_a_single_correct_cast(v):
    with np.errstate(over="ignore"):
        numpy_casts = {
            "float32": float(np.float64(v).astype(np.float32)),
            "float16": float(np.float64(v).astype(np.float16)),
        }
    for dtype in DTYPES:
        got = reference.round_to(v, dtype)
        want = numpy_casts.get(dtype, round_value(v, dtype))
        assert same_float(got, want), f"round_to({v!r}, {dtype}) = {got!r}, want {want!r}"
        assert same_float(round_value(v, dtype), want), "oracle disagrees with numpy"
        assert same_float(reference.round_to(_as_input(v), dtype), want), "as mpf"


@st.composite
def wide_mpf(draw):
    """An mpf with up to 160 significant bits anywhere from 2**-1200 to 2**1100: more
    bits than float64, so a conversion through float would double-round."""
    man = draw(st.integers(1, 2**160))
    top = draw(st.integers(-1200, 1100))
    negative = draw(st.booleans())
    q = Fraction(man) * Fraction(2) ** (top - man.bit_length())
    return fraction_to_mpf(-q if negative else q)


@settings(max_examples=300, deadline=None)
@given(v=wide_mpf())
def test_wide_mpf_values_round_once(v):
    for dtype in DTYPES:
        got, want = reference.round_to(v, dtype), round_value(v, dtype)
        assert same_float(got, want), f"round_to({v}, {dtype}) = {got!r}, want {want!r}"


# Values held exactly by mpf with more bits than float64; rounding them to float64 first
# and then to the narrower format is the classic double-rounding bug.
DOUBLE_ROUNDING_TRAPS = [
    ("float32", (0, -24, -60), 1 + 2**-23),
    ("float32", (0, -24, -(2**10)), 1 + 2**-23),
    ("bfloat16", (0, -8, -30), 1 + 2**-7),
    ("float16", (0, -11, -80), 1 + 2**-10),
    ("float16", (-25, -70), 2.0**-24),  # half the smallest subnormal, plus a bit
    ("float64", (0, -53, -100), 1 + 2**-52),
    ("float64", (-1075, -1200), 2.0**-1074),
]


@pytest.mark.parametrize(("dtype", "powers", "want"), DOUBLE_ROUNDING_TRAPS,
                         ids=[f"{d} {p}" for d, p, _ in DOUBLE_ROUNDING_TRAPS])
def test_round_to_uses_every_bit_of_an_mpf(dtype, powers, want):
    """sum(2**e for e in powers), built exactly, is just above a tie: it rounds up."""
    with mp.workprec(4096):
        value = mpmath.fsum(mpmath.ldexp(mpf(1), e) for e in powers)
        negative = -value  # mpf arithmetic rounds to the precision in force: negate here
    assert reference.round_to(value, dtype) == want
    assert reference.round_to(negative, dtype) == -want


# --------------------------------------------------------------------------- boundaries


def _boundary_cases():
    """(dtype, description, exact Fraction, tiny nudge sign, expected float)."""
    cases = []
    for name, fmt in FORMATS.items():
        mx = float(fmt.max_finite)
        sub = math.ldexp(1.0, fmt.quantum_min)
        min_normal = math.ldexp(1.0, fmt.emin)
        cases += [
            (name, "max -> max", fmt.max_finite, 0, mx),
            (name, "(max + 2**(emax+1))/2 -> inf", fmt.overflow_midpoint, 0, math.inf),
            (name, "just below that tie -> max", fmt.overflow_midpoint, -1, mx),
            (name, "just above that tie -> inf", fmt.overflow_midpoint, 1, math.inf),
            (name, "-(the tie) -> -inf", -fmt.overflow_midpoint, 0, -math.inf),
            (name, "2**(emax+1) -> inf", Fraction(2) ** (fmt.emax + 1), 0, math.inf),
            (name, "smallest subnormal -> itself", fmt.min_subnormal, 0, sub),
            (name, "half of it -> +0", fmt.min_subnormal / 2, 0, 0.0),
            (name, "-(half of it) -> -0", -fmt.min_subnormal / 2, 0, -0.0),
            (name, "just above half -> smallest subnormal", fmt.min_subnormal / 2, 1, sub),
            (name, "just below half -> +0", fmt.min_subnormal / 2, -1, 0.0),
            (name, "1.5 subnormals -> 2 (even)", 3 * fmt.min_subnormal / 2, 0, 2 * sub),
            (name, "2.5 subnormals -> 2 (even)", 5 * fmt.min_subnormal / 2, 0, 2 * sub),
            (name, "min normal - half subnormal -> min normal",
             Fraction(2) ** fmt.emin - fmt.min_subnormal / 2, 0, min_normal),
            (name, "1 + half ulp -> 1 (even)", 1 + Fraction(2) ** -fmt.precision, 0, 1.0),
            (name, "1 + 3 half ulps -> 1 + 2 ulps (even)",
             1 + 3 * Fraction(2) ** -fmt.precision, 0, 1 + 2 * 2.0 ** (1 - fmt.precision)),
        ]
    return cases


BOUNDARIES = _boundary_cases()


@pytest.mark.parametrize(("dtype", "what", "exact", "nudge", "want"), BOUNDARIES,
                         ids=[f"{d}: {w}" for d, w, *_ in BOUNDARIES])
def test_rounding_boundaries(dtype, what, exact, nudge, want):
    """The exact value (an mpf; nudged by 2**-300 relative where asked) rounds as said,
    and the Fraction oracle agrees."""
    assert same_float(round_fraction(exact, dtype, nudge), want), "oracle"
    value = fraction_to_mpf(exact)
    if nudge:
        with mp.workprec(2000):
            value = value + nudge * mpmath.ldexp(abs(value), -300)
    assert same_float(reference.round_to(value, dtype), want)


def test_round_to_takes_floats_ints_and_numpy_scalars_exactly():
    mid64 = 2**1024 - 2**970  # the float64 overflow tie, as a Python int
    assert reference.round_to(mid64, "float64") == math.inf
    assert reference.round_to(mid64 - 1, "float64") == float(FORMATS["float64"].max_finite)
    assert reference.round_to(2**53 + 1, "float64") == 2.0**53
    assert reference.round_to(2**53 + 3, "float64") == 2.0**53 + 4
    assert reference.round_to(3, "float16") == 3.0
    assert reference.round_to(np.float32(0.1), "float64") == float(np.float32(0.1))
    assert reference.round_to(np.float16(-0.0), "float32") == 0.0
    assert math.copysign(1, reference.round_to(-0.0, "bfloat16")) == -1
    assert reference.round_to(BF16(1.5), "float16") == 1.5
    assert reference.round_to(65520.0, "float16") == math.inf
    assert reference.round_to(np.float64(65519.99), "float16") == 65504.0
    assert reference.round_to(math.inf, "float16") == math.inf
    assert reference.round_to(mpf("-inf"), "bfloat16") == -math.inf
    assert math.isnan(reference.round_to(math.nan, "float32"))
    assert math.isnan(reference.round_to(mpf("nan"), "float64"))
    zero = reference.round_to(mpf(0), "float32")
    assert zero == 0 and math.copysign(1, zero) == 1


# --------------------------------------------------------------------------- ulp error


def _f(q: Fraction) -> float:
    return float(q)


ULP_CASES = [
    # observed, exact, dtype, ulp error, why
    (1.0, Fraction(1), "float32", 0.0, "equal"),
    (1.0, 1 + Fraction(1, 2**24), "float32", 0.5, "tie below"),
    (1 + 2**-23, 1 + Fraction(1, 2**24), "float32", 0.5, "tie above"),
    (1.0, 1 + Fraction(1, 2**25), "float32", 0.25, "fractional"),
    (1.0, 1 + Fraction(1, 2**9), "bfloat16", 0.25, "bfloat16 ulp at 1 is 2**-7"),
    (1.0, 1 + Fraction(3, 2**11), "float16", 1.5, "float16 ulp at 1 is 2**-10"),
    (2.0**-149, 3 * Fraction(2) ** -149, "float32", 2.0, "subnormal spacing 2**-149"),
    (2.0**-126, 2 ** Fraction(-126) + 2 ** Fraction(-149), "float32", 1.0,
     "min normal binade has the subnormal spacing"),
    (2.0**-149, Fraction(0), "float32", 1.0, "exact zero: spacing is the subnormal one"),
    (0.0, Fraction(0), "float64", 0.0, "zero"),
    (-0.0, Fraction(0), "float64", 0.0, "-0 equals exact 0"),
    (2.0**-24, 2 ** Fraction(-26), "float16", 0.75, "float16 subnormal spacing 2**-24"),
    (2 - 2.0**-23, 2 + Fraction(1, 2**60), "float32", 0.5 + 2.0**-38,
     "just above 2: spacing of [2, 4)"),
    (2 + 2.0**-22, 2 - Fraction(1, 2**60), "float32", 2 + 2.0**-37,
     "just below 2: spacing of [1, 2)"),
    (1e300, to_fraction(1e300), "float64", 0.0, "huge equal"),
]


@pytest.mark.parametrize(("observed", "exact", "dtype", "want", "why"), ULP_CASES,
                         ids=[c[-1] for c in ULP_CASES])
def test_ulp_error_values(observed, exact, dtype, want, why):
    """|o - v| / ulp(v), ulp(v) the spacing of the binade of the exact v."""
    got = reference.ulp_error(observed, fraction_to_mpf(exact), dtype)
    assert got == pytest.approx(want, rel=1e-12, abs=0), why
    oracle = abs(to_fraction(observed) - exact) / ulp_at(exact, dtype)
    assert float(oracle) == pytest.approx(want, rel=1e-12, abs=0), "oracle"


def _top(dtype):
    return float(FORMATS[dtype].max_finite)


SPECIAL_ULP_CASES = [
    (math.inf, "rounds to max", "float32", math.inf, "observed inf, exact rounds to max"),
    (_top("float32"), "inf", "float32", math.inf, "exact +inf (a limit), observed max"),
    (math.inf, "inf", "float32", 0.0, "both +inf"),
    (-math.inf, "inf", "float16", math.inf, "opposite infinities"),
    (math.inf, "tie above max", "float32", 0.0, "exact rounds to inf, observed inf"),
    (-math.inf, "-tie above max", "bfloat16", 0.0, "exact rounds to -inf, observed -inf"),
    (math.nan, "one", "float64", math.inf, "observed NaN, exact finite"),
    (math.nan, "inf", "float64", math.inf, "observed NaN, exact inf"),
    (1.0, "nan", "float64", math.inf, "exact NaN, observed finite"),
    # Both NaN: NaN in -> NaN out is the correct answer (DESIGN.md section 3), and section
    # 5 only calls an observed NaN spurious when the exact value is not NaN: so 0.
    (math.nan, "nan", "float32", 0.0, "both NaN count as agreement"),
    (_top("float16"), "max + quarter ulp", "float16", 0.25, "exact just above max, finite"),
]


def _special_exact(kind: str, dtype: str) -> mpf:
    fmt = FORMATS[dtype]
    table = {
        "inf": mpf("inf"),
        "nan": mpf("nan"),
        "one": mpf(1),
        "rounds to max": fraction_to_mpf(fmt.max_finite + Fraction(2) ** (fmt.emax - 60)),
        "tie above max": fraction_to_mpf(fmt.overflow_midpoint),
        "-tie above max": negate_exact(fraction_to_mpf(fmt.overflow_midpoint)),
        "max + quarter ulp": fraction_to_mpf(
            fmt.max_finite + Fraction(2) ** (fmt.emax - fmt.precision - 1)
        ),
    }
    return table[kind]


@pytest.mark.parametrize(("observed", "kind", "dtype", "want", "why"), SPECIAL_ULP_CASES,
                         ids=[c[-1] for c in SPECIAL_ULP_CASES])
def test_ulp_error_at_infinities_and_nans(observed, kind, dtype, want, why):
    got = reference.ulp_error(observed, _special_exact(kind, dtype), dtype)
    assert got == pytest.approx(want, rel=1e-12, abs=0), why


@st.composite
def observed_and_exact(draw):
    """A dtype value o and an exact v near it (or anywhere), both finite."""
    dtype = draw(st.sampled_from(DTYPES))
    o = round_value(draw(any_float64(allow_infinity=False)), dtype)
    if not math.isfinite(o):
        o = float(FORMATS[dtype].max_finite)
    if draw(st.booleans()) and o != 0:
        k = draw(st.integers(-3 * FORMATS[dtype].precision, 4))
        v = to_fraction(o) * (1 + draw(st.sampled_from([1, -1])) * Fraction(2) ** k)
    else:
        v = to_fraction(draw(any_float64(allow_infinity=False)))
    if not math.isfinite(round_fraction(v, dtype)):
        v = to_fraction(o)
    return dtype, o, v


@settings(max_examples=200, deadline=None)
@given(case=observed_and_exact())
def test_ulp_error_ordinal_and_bits_against_oracle(case):
    dtype, o, v = case
    exact = fraction_to_mpf(v)
    ratio = abs(to_fraction(o) - v) / ulp_at(v, dtype)
    want_ulp = float(ratio) if ratio < 2**1024 else math.inf
    assert reference.ulp_error(o, exact, dtype) == pytest.approx(want_ulp, rel=1e-9, abs=0)
    distance = reference.ordinal_distance(o, exact, dtype)
    want = abs(ordinal(o, dtype) - ordinal(round_fraction(v, dtype), dtype))
    assert type(distance) is int and distance == want
    assert reference.bits_error(o, exact, dtype) == pytest.approx(math.log2(1 + want))


# --------------------------------------------------------------------------- ordinal distance


def test_ordinal_distance_edges():
    f64 = FORMATS["float64"]
    top64 = float(f64.max_finite)
    n64 = f64.positive_finite_count  # 2047 * 2**52 - 1, counted from the format
    assert n64 == 0x7FEFFFFFFFFFFFFF  # ... and it is the bit pattern of max as an integer
    # -max .. +max: n64 steps down to 0 and n64 steps up, past the int64 range
    d = reference.ordinal_distance(-top64, mpf(top64), "float64")
    assert type(d) is int and d == 2 * n64 and d > 2**63
    assert reference.bits_error(-top64, mpf(top64), "float64") == pytest.approx(
        math.log2(1 + 2 * n64)
    )
    assert reference.ordinal_distance(-0.0, mpf(0), "float32") == 0
    assert reference.ordinal_distance(0.0, fraction_to_mpf(-(Fraction(2) ** -200)),
                                      "float32") == 0  # -tiny rounds to -0 == +0
    sub32 = 2.0**-149
    assert reference.ordinal_distance(-sub32, mpf(sub32), "float32") == 2
    assert reference.ordinal_distance(math.inf, mpf(_top("float32")), "float32") == 1
    f16 = FORMATS["float16"]
    assert reference.ordinal_distance(math.inf, mpf("-inf"), "float16") == 2 * (
        f16.positive_finite_count + 1
    )
    assert reference.ordinal_distance(
        1.0, fraction_to_mpf(1 + Fraction(1, 2**24) + Fraction(1, 2**60)), "float32"
    ) == 1  # the exact value rounds to 1 + 2**-23 first
    assert reference.ordinal_distance(65504.0, mpf(65520), "float16") == 1
    assert reference.bits_error(1.0, mpf(1), "bfloat16") == 0.0
    assert reference.bits_error(1.0 + 3 * 2.0**-7, mpf(1), "bfloat16") == 2.0
