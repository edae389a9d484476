"""Label smoothing (reference/smoothing.py): the exact smoothed target, checked against
an independent mpmath computation, identities and hand-checked values."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest

import reference
from reference import smoothing
from reference.families import get_family
from reference.formats import round_to

E32 = float(np.float32(0.1))  # 0.1 as the float32 value it is: 13421773 * 2**-27


def _independent(x: float, t: Fraction, grad: bool) -> mpmath.mpf:
    """t*softplus(-x) + (1-t)*softplus(x) (or d/dx) at 120 digits, t exact."""
    with mpmath.workdps(120):
        tt = mpmath.mpf(t.numerator) / t.denominator
        xx = mpmath.mpf(x)
        if grad:
            return 1 / (1 + mpmath.exp(-xx)) - tt
        return tt * mpmath.log1p(mpmath.exp(-xx)) + (1 - tt) * mpmath.log1p(mpmath.exp(xx))


CASES = [  # (x, y, E): hard, soft and tiny targets; tiny ones make t inexact in float64
    (0.0, 1.0, E32), (3.0, 0.0, E32), (-50.0, 1.0, E32), (17.25, 1.0, 0.2),
    (-2.5, 0.30000001192092896, E32), (1e-30, 2.0 ** -130, E32), (40.0, 2.0 ** -149, E32),
    (-0.75, 1 - 2.0 ** -24, 0.5), (88.0, 0.0, 2.0 ** -20), (1e10, 1.0, E32),
]


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize(("x", "y", "e"), CASES)
def test_against_an_independent_computation(x, y, e, grad):
    op = smoothing.op_name(e, "bce_with_logits")
    t = Fraction(y) * (1 - Fraction(e)) + Fraction(e) / 2
    truth = _independent(x, t, grad)
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        got = reference.rounded(op, dtype, np.array([x]), np.array([y]), grad=grad)[0]
        assert got == round_to(truth, dtype), (dtype, x, y, e)


def test_the_target_is_exact_beyond_float64():
    # y = 2**-130 (a bfloat16 subnormal-range value): t spans 2**-4 .. 2**-157
    t = smoothing.smoothed_target(2.0 ** -130, E32)
    exact_t = Fraction(2.0 ** -130) * (1 - Fraction(E32)) + Fraction(E32) / 2
    assert reference.exact.to_fraction(t) == exact_t
    assert Fraction(float(exact_t)) != exact_t  # float64 could not have held it


def test_hand_checked_values():
    # x = 0: softplus(0) = log 2 whatever the target; E = 1 sends every target to 1/2
    op = smoothing.op_name(1.0, "bce_with_logits")
    got = reference.rounded(op, "float64", np.array([0.0, 5.0]), np.array([1.0, 0.0]))
    half = reference.rounded("bce_with_logits", "float64", np.array([0.0, 5.0]),
                             np.array([0.5, 0.5]))
    assert got.tolist() == half.tolist()
    assert got[0] == float(mpmath.log(2))
    # gradient sigmoid(x) - t at x = 0, y = 1, E = 0.5: 1/2 - 3/4 = -1/4 exactly
    op = smoothing.op_name(0.5, "bce_with_logits")
    assert reference.rounded(op, "float32", np.array([0.0]), np.array([1.0]),
                             grad=True)[0] == -0.25


def test_bce_and_focal_wrap_with_the_exact_target():
    # where t is a float64, the wrapper equals the op at t, for every family kind
    e, y = 0.25, np.array([0.0, 1.0, 0.5, 0.75])
    t = y * (1 - e) + e / 2
    q = np.array([0.125, 0.5, 0.999, 2.0 ** -20])
    x = np.array([-3.0, 0.5, 12.0, -40.0])
    for op, inputs in (("bce", q), ("bce_with_logits", x),
                       (reference.focal_op(2, 0.25), x), (reference.focal_op(0.5), x)):
        name = smoothing.op_name(e, op)
        for grad in (False, True):
            a = reference.rounded(name, "float32", inputs, y, grad=grad)
            b = reference.rounded(op, "float32", inputs, t, grad=grad)
            assert a.tolist() == b.tolist(), (op, grad)


def test_reductions_of_a_linear_family():
    op = smoothing.op_name(E32, "bce_with_logits")
    x, y = np.array([0.0, 3.0, -2.0]), np.array([1.0, 0.0, 1.0])
    total = reference.reduce(op, "sum", x, y)
    with mpmath.workdps(60):
        want = sum(_independent(float(a), Fraction(b) * (1 - Fraction(E32)) + Fraction(E32) / 2,
                                False) for a, b in zip(x, y, strict=True))
        assert abs(total - want) < mpmath.mpf(2) ** -100 * want


def test_nan_target_stays_nan():
    op = smoothing.op_name(0.1, "bce_with_logits")
    assert np.isnan(reference.rounded(op, "float32", np.array([1.0]), np.array([np.nan]))[0])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("inf"), float("nan")])
def test_bad_smoothing_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match="label smoothing must be a finite number in"):
        smoothing.op_name(bad, "bce_with_logits")


@pytest.mark.parametrize("name", ["smoothed:0.1", "smoothed::bce", "smoothed:0.10:bce",
                                  "smoothed:0:bce", "smoothed:0.1:nope"])
def test_malformed_names_are_refused(name):
    with pytest.raises(ValueError):
        get_family(name)


def test_zero_smoothing_is_refused_as_a_name():
    with pytest.raises(ValueError, match="the op itself"):
        smoothing.op_name(0.0, "bce")
