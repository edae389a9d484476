"""Self-tests of the ground truth in its hard regimes: results far below 1e-300,
overflow thresholds, huge logits whose tail acts as a sticky bit, soft and out-of-range
targets, zero and infinite weights, infinite inputs (limits) and NaN.

Every case is checked three ways: the value to 100 bits against the oracle, its
rounding in all four formats (``round_to`` of the returned mpf, so the mpf itself must
carry the rounding decision), and the bulk entry point ``reference.rounded``.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from mpmath import mpf

import reference
from tests.reference.reference_oracle import (
    DTYPES,
    FORMATS,
    agree_bits,
    logits_loss,
    logits_loss_grad,
    mismatches,
    prob_loss,
    prob_loss_grad,
    round_value,
    same_float,
)


def check_case(x, y, w=1.0, p=1.0, *, grad=False):
    """Reference vs oracle for one point: value, round_to in every dtype, rounded()."""
    fn = reference.bce_with_logits_grad if grad else reference.bce_with_logits
    oracle = logits_loss_grad if grad else logits_loss
    got = fn(x, y, weight=w, pos_weight=p)
    want = oracle(x, y, w, p)
    problems = mismatches(got, want, reference.round_to)
    for dtype in DTYPES:
        bulk = reference.rounded("bce_with_logits", dtype, np.array([x]), np.array([y]),
                                 weight=w, pos_weight=p, grad=grad)
        if not same_float(float(bulk[0]), round_value(want, dtype)):
            problems.append(f"rounded(..., {dtype}) = {bulk[0]!r}, want "
                            f"{round_value(want, dtype)!r}")
    quantity = "grad" if grad else "loss"
    assert not problems, f"{quantity}(x={x!r}, y={y!r}, w={w!r}, p={p!r}):\n" + "\n".join(
        problems
    )


def expect_rounded(x, y, w=1.0, p=1.0, *, grad=False, **want):
    """The stated correctly rounded results (independent of the oracle's algebra)."""
    fn = reference.bce_with_logits_grad if grad else reference.bce_with_logits
    value = fn(x, y, weight=w, pos_weight=p)
    for dtype, expected in want.items():
        got = reference.round_to(value, dtype)
        assert same_float(got, expected), f"round_to(., {dtype}) = {got!r}, want {expected!r}"
        bulk = reference.rounded("bce_with_logits", dtype, np.array([x]), np.array([y]),
                                 weight=w, pos_weight=p, grad=grad)
        assert same_float(float(bulk[0]), expected), f"rounded(., {dtype}) = {bulk[0]!r}"


# --------------------------------------------------------------------------- tiny results


def test_loss_far_below_1e300():
    """L(700, 1) = log1p(exp(-700)) ~ 9.86e-305: naive float64 evaluation gives 0."""
    got = reference.bce_with_logits(700.0, 1.0)
    assert agree_bits(got, logits_loss(700.0, 1.0)) >= 100
    assert abs(float(got) / 9.859676543759770e-305 - 1) < 1e-14
    check_case(700.0, 1.0)
    check_case(-700.0, 0.0)


def test_loss_at_x_1e10_is_exp_of_minus_1e10():
    got = reference.bce_with_logits(1e10, 1.0)
    assert got > 0
    with mpmath.workprec(300):
        assert agree_bits(got, mpmath.exp(-mpf(1e10))) >= 100
    expect_rounded(1e10, 1.0, float16=0.0, bfloat16=0.0, float32=0.0, float64=0.0)
    expect_rounded(-1e10, 0.0, float16=0.0, bfloat16=0.0, float32=0.0, float64=0.0)


# exp(-x) crosses each format's subnormal range and its underflow-to-zero threshold.
UNDERFLOW_GRID = {
    "float64": [708.0, 720.0, 740.0, 744.4, 745.1, 745.2, 746.0],
    "float32": [87.0, 95.0, 103.0, 103.27, 103.3, 104.0],
    "bfloat16": [87.0, 90.0, 92.0, 93.0, 103.3],
    "float16": [9.7, 12.0, 16.0, 16.6, 17.3, 17.4],
}


@pytest.mark.parametrize(
    "x", sorted({x for xs in UNDERFLOW_GRID.values() for x in xs}), ids=lambda x: f"x={x}"
)
def test_gradual_underflow_of_the_loss(x):
    check_case(x, 1.0)
    check_case(x, 1.0, grad=True)
    check_case(-x, 0.0, p=3.0)


# --------------------------------------------------------------------------- overflow


def test_float16_overflow_threshold():
    """(1-y)*x at the float16 tie 65520 (between max 65504 and 2**16)."""
    f16 = FORMATS["float16"]
    assert float(f16.overflow_midpoint) == 65520.0
    expect_rounded(65504.0, 0.0, float16=65504.0, float64=65504.0)
    expect_rounded(65520 - 2.0**-36, 0.0, float16=65504.0)  # below the tie, tail tiny
    expect_rounded(65520.0, 0.0, float16=math.inf, float32=65520.0)  # tie + tail -> inf
    expect_rounded(131040.0, 0.5, float16=math.inf)
    # negative tails: the exact value sits just below the tie and stays finite
    expect_rounded(131040.0, 0.5, p=-3.0, float16=65504.0, float32=65520.0)  # c = -1
    expect_rounded(-131040.0, 2.0, p=0.25, float16=65504.0, float32=65520.0)  # c = -1/2
    expect_rounded(65520.0, 0.0, w=-1.0, float16=-math.inf)
    for x, y, p in [(65520.0, 0.0, 1.0), (131040.0, 0.5, -3.0), (-131040.0, 2.0, 0.25)]:
        check_case(x, y, p=p)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_float32_range_overflow_threshold(dtype):
    """The same construction at (2 - 2**-p) * 2**127 (exact in float64)."""
    fmt = FORMATS[dtype]
    tie, top = float(fmt.overflow_midpoint), float(fmt.max_finite)
    expect_rounded(top, 0.0, **{dtype: top})
    expect_rounded(tie, 0.0, **{dtype: math.inf}, float64=tie)
    expect_rounded(2 * tie, 0.5, p=-3.0, **{dtype: top}, float64=tie)
    expect_rounded(-2 * tie, 2.0, p=0.25, **{dtype: top}, float64=tie)
    expect_rounded(2 * tie, 0.5, **{dtype: math.inf})
    for x, y, p in [(tie, 0.0, 1.0), (2 * tie, 0.5, -3.0), (-2 * tie, 2.0, 0.25)]:
        check_case(x, y, p=p)


def test_float64_overflow_threshold():
    top = float(FORMATS["float64"].max_finite)
    ulp = 2.0**971
    expect_rounded(top, 0.0, float64=top, float32=math.inf)
    expect_rounded(-top, 1.0, float64=top)
    expect_rounded(top, -(2.0**-53), float64=math.inf)  # (1 + 2**-53) max: past the tie
    expect_rounded(top, 2.0**-54, float64=top)  # max - half ulp + 2**917 + tail
    expect_rounded(top, 2.0**-53, float64=top - ulp)
    expect_rounded(top, 0.5, w=4.0, float64=math.inf)
    for y in (0.0, -(2.0**-53), 2.0**-54, 2.0**-53, 0.5, 2.0):
        check_case(top, y)
        check_case(-top, 1 - y)


# --------------------------------------------------------------------------- sticky tails


STICKY_CASES = [
    # (x, y, w, p, grad, dtype, correct, ties-to-even of the dyadic part alone)
    pytest.param(2.0**30 * (1 + 2**-24), 0.0, 1.0, 1.0, False, "float32",
                 2.0**30 * (1 + 2**-23), 2.0**30, id="L(2^30(1+2^-24), 0): tail rounds up"),
    pytest.param(2.0**30 * (1 + 2**-8), 0.0, 1.0, 1.0, False, "bfloat16",
                 2.0**30 * (1 + 2**-7), 2.0**30, id="bfloat16: tail rounds up"),
    pytest.param(2.0**14 * (1 + 2**-11), 0.0, 1.0, 1.0, False, "float16",
                 2.0**14 * (1 + 2**-10), 2.0**14, id="L(16392, 0) float16: tail rounds up"),
    pytest.param(-(2.0**30) * (1 + 2**-24), 1.0, 1.0, 1.0, False, "float32",
                 2.0**30 * (1 + 2**-23), 2.0**30, id="L(-x, 1) mirrored: tail rounds up"),
    pytest.param(2.0**30 * (1 + 2**-24), 0.0, -1.0, 1.0, False, "float32",
                 -(2.0**30) * (1 + 2**-23), -(2.0**30), id="w = -1: magnitude rounds up"),
    pytest.param(2.0**31 * (1 + 3 * 2**-24), 0.5, 1.0, -3.0, False, "float32",
                 2.0**30 * (1 + 2**-23), 2.0**30 * (1 + 2**-22),
                 id="p = -3: negative tail rounds down"),
    pytest.param(1e10, 2.0**-25, 1.0, 1.0, True, "float32", 1 - 2.0**-24, 1.0,
                 id="G(1e10, 2^-25) = 1 - 2^-25 - tail: rounds down"),
    pytest.param(1e10, 2.0**-9, 1.0, 1.0, True, "bfloat16", 1 - 2.0**-8, 1.0,
                 id="bfloat16 grad: rounds down"),
    pytest.param(1e10, 2.0**-12, 1.0, 1.0, True, "float16", 1 - 2.0**-11, 1.0,
                 id="float16 grad: rounds down"),
    pytest.param(1e300, 2.0**-54, 1.0, 1.0, True, "float64", 1 - 2.0**-53, 1.0,
                 id="float64 grad at 1e300: rounds down"),
    pytest.param(-1e10, 1.0, 1.0, 1 + 3 * 2.0**-24, True, "float32", -(1 + 2.0**-23),
                 -(1 + 2.0**-22), id="G(-1e10, 1, p) = -p + tail: magnitude rounds down"),
    pytest.param(-3e38, 0.0, 1.0, 1.0, True, "float32", 0.0, 0.0,
                 id="G(-3e38, 0) = sigmoid(-3e38): +0"),
]


@pytest.mark.parametrize(("x", "y", "w", "p", "grad", "dtype", "correct", "tie_even"),
                         STICKY_CASES)
def test_vanishing_tail_decides_the_rounding(x, y, w, p, grad, dtype, correct, tie_even):
    """The dyadic part (1-y)*x, 1-y or -p*y sits exactly on a tie of ``dtype``; the
    tail (~exp(-|x|), billions of bits down) breaks it, in the direction of its sign."""
    assert correct != tie_even or correct == 0.0
    expect_rounded(x, y, w, p, grad=grad, **{dtype: correct})
    check_case(x, y, w, p, grad=grad)


@pytest.mark.parametrize("x", [1e10, 3e38, -1e10, -3e38, float(np.float32(3e38))])
@pytest.mark.parametrize("y", [0.0, 1.0, 0.5])
def test_huge_logits(x, y):
    check_case(x, y)
    check_case(x, y, grad=True)
    check_case(x, y, w=0.75, p=3.0)


def test_huge_logit_loss_is_the_dyadic_part_rounded():
    """L(1e10, 0) = 1e10 + exp(-1e10): 1e10 is exact in float32 (9765625 * 2**10)."""
    expect_rounded(1e10, 0.0, float64=1e10, float32=1e10, float16=math.inf)
    expect_rounded(3e38, 0.5, float64=1.5e38, float32=float(np.float32(1.5e38)))
    expect_rounded(3e38, 0.0, float16=math.inf, float64=3e38)


# --------------------------------------------------------------------------- soft labels


SOFT_LABELS = [1 - 2.0**-24, 2.0**-30, 1 - 2.0**-53, 2.0**-1074]
SOFT_LOGITS = [0.0, 2.0**-40, 1 + 2.0**-24, 3.0, -17.5, 40.0, 745.0, -745.0, 2.0**60, -1e10]


@pytest.mark.parametrize("y", SOFT_LABELS, ids=lambda y: f"y={y!r}")
@pytest.mark.parametrize("x", SOFT_LOGITS, ids=lambda x: f"x={x!r}")
def test_soft_labels(x, y):
    check_case(x, y)
    check_case(x, y, grad=True)


# --------------------------------------------------------------------------- other targets


@pytest.mark.parametrize("y", [2.0, -1.0, 1.5, -0.25, 1e6])
@pytest.mark.parametrize("x", [-30.0, -2.0, 0.0, 0.5, 3.0, 50.0, 1e10, -1e10])
def test_targets_outside_unit_interval(x, y):
    """Loss can be negative; cancellation between the two softplus terms is real."""
    check_case(x, y)
    check_case(x, y, grad=True)


def test_loss_is_negative_for_target_two():
    """L(x, 2) = softplus(-x) - x < 0 for x > log(golden ratio)."""
    assert reference.bce_with_logits(3.0, 2.0) < 0
    assert reference.round_to(reference.bce_with_logits(1e10, 2.0), "float32") == -1e10


@pytest.mark.parametrize("x", [
    float(mpmath.log(mpmath.phi)),
    float(np.float32(mpmath.log(mpmath.phi))),
    math.nextafter(float(mpmath.log(mpmath.phi)), 1),
])
def test_cancellation_near_the_root_of_target_two(x):
    """L(x, 2) = softplus(-x) - x vanishes at x = log(phi): the result is ~1e-17 of the
    terms (or ~1e-8 for the float32 x), so the reference must escalate precision."""
    check_case(x, 2.0)
    check_case(x, 2.0, w=3.0, p=1.0, grad=True)


# --------------------------------------------------------------------------- weights 0, inf


@pytest.mark.parametrize("x", [-1e10, -3.0, 0.0, 2.5, 800.0])
def test_zero_and_infinite_weights(x):
    assert reference.bce_with_logits(x, 0.5, weight=0.0) == 0
    assert reference.bce_with_logits_grad(x, 0.5, weight=0.0) == 0
    assert reference.bce_with_logits(x, 0.5, weight=math.inf) == math.inf
    assert reference.bce_with_logits(x, 0.5, weight=-math.inf) == -math.inf
    assert reference.bce_with_logits(x, 1.0, pos_weight=0.0) == 0
    assert reference.bce_with_logits_grad(x, 1.0, pos_weight=0.0) == 0
    # p = +inf with y = 0 gives 0 for the positive term: only softplus(x) remains
    assert agree_bits(reference.bce_with_logits(x, 0.0, pos_weight=math.inf),
                      logits_loss(x, 0.0)) >= 100
    assert reference.bce_with_logits(x, 0.25, pos_weight=math.inf) == math.inf
    check_case(x, 0.25, p=0.0)


# --------------------------------------------------------------------------- limits


INF = math.inf
LOSS_LIMITS = [
    # (x, y, w, p) -> limit of the exact function as the infinite argument grows
    ((INF, 1.0, 1.0, 1.0), 0.0),
    ((INF, 1.0, 2.0, 7.0), 0.0),
    ((INF, 0.5, 1.0, 1.0), INF),
    ((INF, 0.0, 1.0, 1.0), INF),
    ((INF, 2.0, 1.0, 1.0), -INF),
    ((INF, 1.5, 1.0, 3.0), -INF),
    ((INF, 0.5, 0.0, 1.0), 0.0),
    ((INF, 0.5, -1.0, 1.0), -INF),
    ((-INF, 0.0, 1.0, 1.0), 0.0),
    ((-INF, 0.0, 1.0, 5.0), 0.0),
    ((-INF, 0.5, 1.0, 1.0), INF),
    ((-INF, 1.0, 1.0, 1.0), INF),
    ((-INF, -1.0, 1.0, 1.0), -INF),
    ((-INF, 0.5, 1.0, 0.0), 0.0),
    ((-INF, 0.5, 1.0, -3.0), -INF),
    ((-INF, 1.5, 1.0, 3.0), INF),
    ((-INF, 0.5, 0.0, 1.0), 0.0),
    ((2.0, 0.0, 1.0, INF), None),  # p = inf with y = 0: the finite softplus(2)
]


def _limit_id(case):
    (x, y, w, p), want = case
    return f"L(x={x}, y={y}, w={w}, p={p}) -> {want}"


@pytest.mark.parametrize(("args", "want"), LOSS_LIMITS, ids=[_limit_id(c) for c in LOSS_LIMITS])
def test_loss_limits(args, want):
    x, y, w, p = args
    got = reference.bce_with_logits(x, y, weight=w, pos_weight=p)
    if want is None:
        want_value = logits_loss(x, y, w, 1.0)
        assert agree_bits(got, want_value) >= 100
        return
    assert not mpmath.isnan(got)
    assert got == want
    for dtype in DTYPES:
        assert same_float(reference.round_to(got, dtype), want) or got == want == 0
        bulk = reference.rounded("bce_with_logits", dtype, np.array([x]), np.array([y]),
                                 weight=w, pos_weight=p)
        assert float(bulk[0]) == want, dtype


GRAD_LIMITS = [
    # grad at +inf is w*(1-y); at -inf it is -w*p*y
    ((INF, 0.25, 2.0, 3.0), 1.5),
    ((INF, 1.0, 1.0, 1.0), 0.0),
    ((INF, 0.0, 1.0, 1.0), 1.0),
    ((INF, 2.0, 1.0, 1.0), -1.0),
    ((INF, 0.5, 0.0, 1.0), 0.0),
    ((-INF, 0.25, 2.0, 3.0), -1.5),
    ((-INF, 0.0, 1.0, 1.0), 0.0),
    ((-INF, 1.0, 1.0, 1.0), -1.0),
    ((-INF, 1.0, 1.0, 0.0), 0.0),
    ((-INF, -1.0, 0.5, 2.0), 1.0),
    ((INF, 1 - 2.0**-24, 1.0, 1.0), 2.0**-24),
]


@pytest.mark.parametrize(("args", "want"), GRAD_LIMITS, ids=[_limit_id(c) for c in GRAD_LIMITS])
def test_grad_limits(args, want):
    x, y, w, p = args
    got = reference.bce_with_logits_grad(x, y, weight=w, pos_weight=p)
    assert got == want
    for dtype in DTYPES:
        bulk = reference.rounded("bce_with_logits", dtype, np.array([x]), np.array([y]),
                                 weight=w, pos_weight=p, grad=True)
        assert float(bulk[0]) == reference.round_to(got, dtype) == round_value(mpf(want), dtype)


NAN = math.nan
NAN_CASES = [
    (NAN, 0.5, 1.0, 1.0),
    (1.0, NAN, 1.0, 1.0),
    (1.0, 0.5, NAN, 1.0),
    (1.0, 0.5, 1.0, NAN),
    (NAN, 0.5, 0.0, 1.0),  # NaN in -> NaN out even where 0 * anything would be 0
    (1.0, 0.0, 1.0, NAN),  # ... and where the NaN multiplies y = 0
    (INF, NAN, 1.0, 1.0),
    (INF, 1.0, NAN, 1.0),
    (-INF, 0.0, 1.0, NAN),
]


@pytest.mark.parametrize("args", NAN_CASES, ids=[str(c) for c in NAN_CASES])
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
def test_nan_in_nan_out(args, grad):
    x, y, w, p = args
    fn = reference.bce_with_logits_grad if grad else reference.bce_with_logits
    assert mpmath.isnan(fn(x, y, weight=w, pos_weight=p))
    assert math.isnan(reference.round_to(fn(x, y, weight=w, pos_weight=p), "float16"))
    bulk = reference.rounded("bce_with_logits", "float32", np.array([x]), np.array([y]),
                             weight=w, pos_weight=p, grad=grad)
    assert math.isnan(bulk[0])


@pytest.mark.parametrize("args", [(NAN, 0.5, 1.0), (0.5, NAN, 1.0), (0.5, 0.5, NAN),
                                  (0.25, 0.0, NAN)])
def test_nan_in_nan_out_on_probabilities(args):
    q, y, w = args
    assert mpmath.isnan(reference.bce(q, y, weight=w))
    assert mpmath.isnan(reference.bce_grad(q, y, weight=w))


def test_probability_endpoints():
    """q = 0 with y = 1 and q = 1 with y = 0 are -log(0) = +inf, unambiguously."""
    assert reference.bce(0.0, 1.0) == math.inf
    assert reference.bce(1.0, 0.0) == math.inf
    assert reference.bce(0.0, 1.0, weight=-2.0) == -math.inf
    assert reference.bce_grad(0.0, 1.0) == -math.inf  # w (q - y) / (q (1 - q))
    assert reference.bce_grad(1.0, 0.0) == math.inf


@pytest.mark.parametrize("q", [2.0**-1074, 2.0**-149, 1e-300, 1 - 2.0**-53, 1 - 2.0**-24])
@pytest.mark.parametrize("y", [0.0, 1.0, 0.5, 2.0**-30, 1.5])
def test_probabilities_near_the_endpoints(q, y):
    assert not mismatches(reference.bce(q, y), prob_loss(q, y), reference.round_to)
    assert not mismatches(reference.bce_grad(q, y), prob_loss_grad(q, y), reference.round_to)


def test_reduction_of_nan_and_limits():
    x = np.array([1.0, INF, -INF])
    y = np.array([0.5, 1.0, 0.0])
    with mpmath.workprec(200):
        want = (logits_loss(1.0, 0.5)) / 3
    assert agree_bits(reference.reduce("bce_with_logits", "mean", x, y), want) >= 100
    assert mpmath.isnan(reference.reduce("bce_with_logits", "sum", np.array([1.0, NAN]),
                                         np.array([0.5, 0.5])))
    assert reference.reduce("bce_with_logits", "sum", np.array([1.0, INF]),
                            np.array([0.5, 0.5])) == INF
