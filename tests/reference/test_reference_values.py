"""Self-tests of the ground truth's values: golden cases, an independent high-precision
oracle, and identities that hold over the whole float range.

"Agrees to 100 bits" is the contract of DESIGN.md section 3 (every value to at least
100 correct bits); two reference values that should be equal may each be off by 2**-100,
so identities between two reference values ask for 98 bits.  Rounded values are compared
bit for bit (sign of zero included): correct rounding leaves no slack.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, note, settings
from hypothesis import strategies as st
from mpmath import mp, mpf

import reference
from tests.reference.reference_oracle import (
    DTYPES,
    FORMATS,
    agree_bits,
    complementable_targets,
    exact_mpf,
    logits,
    logits_loss,
    logits_loss_grad,
    logits_loss_numeric_grad,
    mismatches,
    negate_exact,
    positive_weights,
    prob_loss,
    prob_loss_grad,
    probabilities,
    round_value,
    same_float,
    unit_targets,
)

# --------------------------------------------------------------------------- golden cases

GOLDEN_F32 = [
    pytest.param(
        [[-0.4089, -1.2471, 0.5907], [-0.4897, -0.8267, -0.7349], [0.5241, -0.1246, -0.4751]],
        [[0, 1, 1], [0, 0, 1], [1, 0, 1]],
        0.7193,
        id="mean of 3x3 float32 logits -> 0.7193",
    ),
    pytest.param(
        [[1.9072, 1.1079, 1.4906], [-0.6584, -0.0512, 0.7608], [-0.0614, 0.6583, 0.1095]],
        [[0, 1, 1], [1, 1, 1], [0, 0, 0]],
        0.8000,
        id="mean of 3x3 float32 logits -> 0.8000",
    ),
]

GOLDEN_F64_LOGITS = [[12, 3, 2], [3, 10, 1], [1, 2, 5], [4, 6.5, 1.2], [3, 6, 1]]
GOLDEN_F64_TARGETS = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 0]]


def exact_mean(values) -> mpf:
    with mp.workprec(6000):
        return mpmath.fsum(values) / len(values)


@pytest.mark.parametrize(("logit_rows", "target_rows", "approx"), GOLDEN_F32)
def test_golden_float32_mean(logit_rows, target_rows, approx):
    """The float32 tensors are taken at their exact binary values (numpy.float32 of the
    decimals), the mean is exact, and rounding it to float32 is correct."""
    x = np.array(logit_rows, dtype=np.float32).ravel()
    y = np.array(target_rows, dtype=np.float32).ravel()
    mean = reference.reduce("bce_with_logits", "mean", x, y)
    want = exact_mean([logits_loss(a, b) for a, b in zip(x, y, strict=True)])
    assert abs(float(mean) - approx) < 1e-4, f"mean {mean}"
    assert agree_bits(mean, want) >= 100, f"reference {mean}, oracle {want}"
    assert reference.round_to(mean, "float32") == round_value(want, "float32")
    # the decimals themselves (float64) give a different exact mean: inputs are not repr'd
    mean64 = reference.reduce("bce_with_logits", "mean", x.astype(np.float64), y)
    assert agree_bits(mean64, mean) >= 100
    decimal_mean = reference.reduce(
        "bce_with_logits", "mean", np.array(logit_rows, dtype=np.float64).ravel(), y
    )
    assert agree_bits(decimal_mean, mean) < 40


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
def test_golden_float32_reductions_are_exact_sums(reduction, grad):
    x = np.array(GOLDEN_F32[1].values[0], dtype=np.float32).ravel()
    y = np.array(GOLDEN_F32[1].values[1], dtype=np.float32).ravel()
    term = logits_loss_grad if grad else logits_loss
    terms = [term(a, b, 0.75, 3.0) for a, b in zip(x, y, strict=True)]
    with mp.workprec(6000):
        want = mpmath.fsum(terms) / (len(terms) if reduction == "mean" else 1)
    got = reference.reduce(
        "bce_with_logits", reduction, x, y, weight=0.75, pos_weight=3.0, grad=grad
    )
    assert agree_bits(got, want) >= 100, f"reference {got}, oracle {want}"
    for dtype in DTYPES:
        assert same_float(reference.round_to(got, dtype), round_value(want, dtype)), dtype


def test_golden_float64_elementwise():
    """Reduction "none": each of the 15 losses to 1e-30 relative (100 bits), its
    float64 rounding, and the vectorized ``rounded`` entry point."""
    x = np.array(GOLDEN_F64_LOGITS, dtype=np.float64)
    y = np.array(GOLDEN_F64_TARGETS, dtype=np.float64)
    want = [logits_loss(a, b) for a, b in zip(x.ravel(), y.ravel(), strict=True)]
    for a, b, w in zip(x.ravel(), y.ravel(), want, strict=True):
        got = reference.bce_with_logits(a, b)
        assert agree_bits(got, w) >= 100, f"x={a} y={b}: reference {got}, oracle {w}"
        with mp.workprec(200):
            assert abs(got - w) <= mpf("1e-30") * abs(w)
        assert reference.round_to(got, "float64") == round_value(w, "float64")
    bulk = reference.rounded("bce_with_logits", "float64", x, y)
    assert bulk.shape == x.shape and bulk.dtype == np.float64
    assert bulk.ravel().tolist() == [round_value(w, "float64") for w in want]
    # spot values computed by hand: softplus(-12) and 12 + softplus(-12)... (x=12, y=1)
    assert bulk[0, 0] == pytest.approx(math.log1p(math.exp(-12)), rel=1e-15)
    assert bulk[0, 1] == pytest.approx(3 + math.log1p(math.exp(-3)), rel=1e-15)


def test_golden_float64_sum_and_grad():
    x = np.array(GOLDEN_F64_LOGITS, dtype=np.float64).ravel()
    y = np.array(GOLDEN_F64_TARGETS, dtype=np.float64).ravel()
    with mp.workprec(6000):
        loss_sum = mpmath.fsum(logits_loss(a, b) for a, b in zip(x, y, strict=True))
        grad_sum = mpmath.fsum(logits_loss_grad(a, b) for a, b in zip(x, y, strict=True))
    assert agree_bits(reference.reduce("bce_with_logits", "sum", x, y), loss_sum) >= 100
    got = reference.reduce("bce_with_logits", "sum", x, y, grad=True)
    assert agree_bits(got, grad_sum) >= 100


def test_golden_bce_on_probabilities():
    q = np.array([0.25, 0.5, 0.9, 1e-3, 0.999], dtype=np.float64)
    y = np.array([1, 0, 1, 0, 0], dtype=np.float64)
    want = exact_mean([prob_loss(a, b) for a, b in zip(q, y, strict=True)])
    got = reference.reduce("bce", "mean", q, y)
    assert agree_bits(got, want) >= 100
    assert agree_bits(reference.bce(0.25, 1), mpmath.log(4)) >= 50  # -log(1/4)
    bulk = reference.rounded("bce", "float32", q, y)
    assert bulk.tolist() == [
        round_value(prob_loss(a, b), "float32") for a, b in zip(q, y, strict=True)
    ]
    bulk_grad = reference.rounded("bce", "float32", q, y, weight=2.0, grad=True)
    assert bulk_grad.tolist() == [
        round_value(prob_loss_grad(a, b, 2.0), "float32") for a, b in zip(q, y, strict=True)
    ]


def test_rounded_broadcasts_and_matches_round_to():
    x = np.array(GOLDEN_F64_LOGITS, dtype=np.float64)
    y = np.array([0.0, 0.25, 1.0])
    for grad in (False, True):
        bulk = reference.rounded(
            "bce_with_logits", "bfloat16", x, y, weight=1.5, pos_weight=2.0, grad=grad
        )
        assert bulk.shape == (5, 3)
        fn = reference.bce_with_logits_grad if grad else reference.bce_with_logits
        for (i, j), got in np.ndenumerate(bulk):
            value = fn(x[i, j], y[j], weight=1.5, pos_weight=2.0)
            assert same_float(got, reference.round_to(value, "bfloat16")), (i, j, grad)


# --------------------------------------------------------------------------- exact inputs


def test_inputs_are_taken_at_their_exact_binary_values():
    """A float32 0.1 is 0.100000001490116..., not 0.1; bfloat16, float16 and ints alike;
    an mpf argument keeps all of its bits."""
    f32 = np.float32(0.1)
    assert reference.bce_with_logits(f32, 1) == reference.bce_with_logits(float(f32), 1.0)
    assert agree_bits(reference.bce_with_logits(f32, 1), reference.bce_with_logits(0.1, 1)) < 40
    assert agree_bits(reference.bce_with_logits(f32, 1), logits_loss(f32, 1)) >= 100
    import ml_dtypes

    for scalar in (ml_dtypes.bfloat16(0.3), np.float16(0.3), np.float64(0.3)):
        got = reference.bce_with_logits(scalar, np.float32(0.25), weight=np.float16(3))
        assert agree_bits(got, logits_loss(float(scalar), 0.25, 3.0)) >= 100, type(scalar)
    assert agree_bits(reference.bce_with_logits(3, 0), logits_loss(3.0, 0.0)) >= 100
    with mp.workprec(300):
        y = 1 - mpmath.ldexp(mpf(1), -200)  # 1 - 2**-200, held exactly by this mpf
    got = reference.bce_with_logits(40.0, y)
    want = logits_loss(40.0, exact_mpf(y))  # = 2**-200 * 40 + softplus(-40)
    assert agree_bits(got, want) >= 100, f"reference {got}, oracle {want}"


# --------------------------------------------------------------------------- oracle sweeps


@settings(max_examples=150, deadline=None)
@given(x=logits(), y=unit_targets(), w=positive_weights(), p=positive_weights())
@example(x=700.0, y=1.0, w=1.0, p=1.0)
@example(x=-745.0, y=0.0, w=1.0, p=1.0)
@example(x=2.0**-1074, y=0.5, w=1.0, p=1.0)
@example(x=1e10, y=1.0, w=1.0, p=1.0)
@example(x=2049.0, y=0.0, w=1.0, p=1.0)  # float16 midpoint: the tail must round it up
def test_loss_matches_naive_formula_at_high_precision(x, y, w, p):
    got = reference.bce_with_logits(x, y, weight=w, pos_weight=p)
    want = logits_loss(x, y, w, p)
    note(f"reference {got}\noracle {want}")
    assert not mismatches(got, want, reference.round_to)


@settings(max_examples=120, deadline=None)
@given(x=logits(), y=unit_targets(), w=positive_weights(), p=positive_weights())
@example(x=800.0, y=1.0, w=1.0, p=1.0)
@example(x=-800.0, y=0.0, w=1.0, p=1.0)
@example(x=0.0, y=0.5, w=1.0, p=1.0)  # exactly zero
def test_grad_matches_naive_formula_at_high_precision(x, y, w, p):
    got = reference.bce_with_logits_grad(x, y, weight=w, pos_weight=p)
    want = logits_loss_grad(x, y, w, p)
    note(f"reference {got}\noracle {want}")
    assert not mismatches(got, want, reference.round_to)


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(-60, 60),
    y=st.one_of(unit_targets(), st.floats(-3, 4)),
    w=st.floats(0.125, 8),
    p=st.floats(0.125, 8),
)
def test_grad_is_the_derivative_of_the_loss(x, y, w, p):
    """Central difference at 1400+ bits with h = 2**-400, good to far beyond 100 bits of
    the size of the two gradient terms (the scale that cancellation is measured against)."""
    got = reference.bce_with_logits_grad(x, y, weight=w, pos_weight=p)
    numeric = logits_loss_numeric_grad(x, y, w, p)
    with mp.workprec(400):
        mx, my = exact_mpf(x), exact_mpf(y)
        scale = w * (abs(1 - my) / (1 + mpmath.exp(-mx)) + abs(p * my) / (1 + mpmath.exp(mx)))
        assert abs(got - numeric) <= mpmath.ldexp(scale, -100), f"{got} vs {numeric}"


@settings(max_examples=120, deadline=None)
@given(q=probabilities(), y=unit_targets(), w=positive_weights())
@example(q=2.0**-1074, y=0.0, w=1.0)
@example(q=1 - 2**-53, y=1.0, w=1.0)
@example(q=0.5, y=0.5, w=1.0)
def test_bce_on_probabilities_matches_naive_formula(q, y, w):
    got = reference.bce(q, y, weight=w)
    want = prob_loss(q, y, w)
    assert not mismatches(got, want, reference.round_to), (got, want)
    got_grad = reference.bce_grad(q, y, weight=w)
    want_grad = prob_loss_grad(q, y, w)  # w * (q - y) / (q * (1 - q))
    assert not mismatches(got_grad, want_grad, reference.round_to), (got_grad, want_grad)


# --------------------------------------------------------------------------- identities


def _limit_or_value(value):
    return float(value) if not mpmath.isfinite(value) else value


@settings(max_examples=150, deadline=None)
@given(x=logits(allow_infinity=True), y=complementable_targets())
@example(x=math.inf, y=1.0)
@example(x=-math.inf, y=0.0)
@example(x=745.0, y=1.0)
def test_label_flip_symmetry(x, y):
    """L(x, y) = L(-x, 1 - y) and G(x, y) = -G(-x, 1 - y) with unit weights."""
    for fn, flip in ((reference.bce_with_logits, False), (reference.bce_with_logits_grad, True)):
        a, b = fn(x, y), fn(-x, 1 - y)
        if flip:
            b = negate_exact(b)
        if not (mpmath.isfinite(a) and mpmath.isfinite(b)):
            assert _limit_or_value(a) == _limit_or_value(b), (fn.__name__, a, b)
            continue
        if a != 0 or b != 0:
            assert agree_bits(a, b) >= 98, (fn.__name__, a, b)
        for dtype in DTYPES:
            ra, rb = reference.round_to(a, dtype), reference.round_to(b, dtype)
            assert same_float(ra, rb), (fn.__name__, dtype, ra, rb)


@settings(max_examples=150, deadline=None)
@given(
    x=logits(allow_infinity=True),
    y=unit_targets(),
    w=st.one_of(positive_weights(), st.just(0.0)),
    p=st.one_of(positive_weights(), st.just(0.0)),
)
def test_loss_is_nonnegative_for_targets_in_unit_interval(x, y, w, p):
    got = reference.bce_with_logits(x, y, weight=w, pos_weight=p)
    assert not mpmath.isnan(got)
    assert got >= 0
    for dtype in DTYPES:
        assert reference.round_to(got, dtype) >= 0


def _normal_in(value: float, dtype: str) -> bool:
    fmt = FORMATS[dtype]
    return math.ldexp(1.0, fmt.emin) <= abs(value) <= float(fmt.max_finite)


@settings(max_examples=100, deadline=None)
@given(x=logits(), y=unit_targets(), k=st.integers(-40, 40), w=positive_weights())
def test_weight_scales_the_loss(x, y, k, w):
    """L(x, y, w) = w * L(x, y, 1); for w = 2**k the rounded values scale exactly
    wherever both lie in the normal range."""
    base = reference.bce_with_logits(x, y)
    for weight in (math.ldexp(1.0, k), w):
        scaled = reference.bce_with_logits(x, y, weight=weight)
        with mp.workprec(max(200, 2 * mp.prec)):
            expected = exact_mpf(weight) * base
        if base == 0:
            assert scaled == 0
        else:
            assert agree_bits(scaled, expected) >= 98, (weight, scaled, expected)
    power = math.ldexp(1.0, k)
    scaled = reference.bce_with_logits(x, y, weight=power)
    for dtype in DTYPES:
        r1 = reference.round_to(base, dtype)
        if _normal_in(r1, dtype) and _normal_in(r1 * power, dtype):
            assert reference.round_to(scaled, dtype) == r1 * power, dtype
    grad = reference.bce_with_logits_grad(x, y, weight=power)
    grad1 = reference.bce_with_logits_grad(x, y)
    if grad1 != 0:
        with mp.workprec(200):
            assert agree_bits(grad, exact_mpf(power) * grad1) >= 98


@settings(max_examples=100, deadline=None)
@given(x=logits(), p=st.one_of(positive_weights(), st.floats(0, 1e6)))
def test_pos_weight_scales_the_positive_term(x, p):
    """With y = 1 only the positive term is left: L(x, 1, p) = p * L(x, 1, 1)."""
    for fn in (reference.bce_with_logits, reference.bce_with_logits_grad):
        base, got = fn(x, 1.0), fn(x, 1.0, pos_weight=p)
        if base == 0 or p == 0:
            assert got == 0, (fn.__name__, got)
            continue
        with mp.workprec(200):
            expected = exact_mpf(p) * base
        assert agree_bits(got, expected) >= 98, (fn.__name__, got, expected)
