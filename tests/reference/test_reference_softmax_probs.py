"""The certified categorical cross-entropy on probabilities (reference/softmax_probs.py;
DESIGN.md section 10):

    cross_entropy_probs(p, target) = sum_k a_k (log P - log p_k),  P = sum_j p_j,
    grad_j = W/P - a_j/p_j

checked against an independent oracle written here (the textbook formula with mpmath at
700+ bits, the exponent span of the row added; the gradient as an exact Fraction),
against identities (cross_entropy of logits whose softmax is the row, scaling by dyadic
constants, permutations), hand-checked values, limits and masking. Rounded values are
compared bit for bit with the oracle's own rounding (reference_oracle.round_value).
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mp, mpf

import reference
from reference.engine import ReferenceUncertainError
from tests.reference.reference_oracle import (
    DTYPES,
    fraction_to_mpf,
    mismatches,
    round_fraction,
    same_float,
    to_fraction,
)

INF, NAN = math.inf, math.nan
ce, ce_grad = reference.cross_entropy_probs, reference.cross_entropy_probs_grad


# --------------------------------------------------------------------------- the oracle


def _coefficients(k: int, target, weight, smoothing) -> list[Fraction]:
    t = [Fraction(int(j == target)) for j in range(k)] if isinstance(target, int) else \
        [to_fraction(v) for v in target]
    w = [Fraction(1)] * k if weight is None else [to_fraction(v) for v in weight]
    e = to_fraction(smoothing)
    return [w[j] * ((1 - e) * t[j] + e / k) for j in range(k)]


def _precision(probs) -> int:
    """700 bits plus the binary exponent span of the row: log P - log p_k cancels by
    about log2(P / (P - p_k)) bits where p_k is close to P, at most the span."""
    es = [f.numerator.bit_length() - f.denominator.bit_length()
          for f in (to_fraction(v) for v in probs) if f]
    return 700 + (max(es) - min(es) if es else 0) + 64


def textbook(probs, target, weight=None, smoothing=0.0) -> mpf:
    """sum_k a_k (log(sum p) - log p_k), term by term, at 700+ bits (a_k = 0 skipped)."""
    a = _coefficients(len(probs), target, weight, smoothing)
    with mp.workprec(_precision(probs)):
        ps = [fraction_to_mpf(to_fraction(v)) for v in probs]
        log_p = mpmath.log(mpmath.fsum(ps))
        return mpmath.fsum(mpf(c.numerator) / c.denominator * (log_p - mpmath.log(p))
                           for c, p in zip(a, ps, strict=True) if c)


def exact_grad(probs, target, weight=None, smoothing=0.0) -> list[Fraction]:
    a = _coefficients(len(probs), target, weight, smoothing)
    ps = [to_fraction(v) for v in probs]
    total = sum(ps)
    return [sum(a) / total - (c / p if c else 0) for c, p in zip(a, ps, strict=True)]


def _check(probs, target, weight=None, smoothing=0.0) -> list[str]:
    kw = {"weight": weight, "label_smoothing": smoothing}
    problems = mismatches(ce(probs, target, **kw), textbook(probs, target, weight, smoothing),
                          reference.round_to, bits=105)
    for j, (g, want) in enumerate(zip(ce_grad(probs, target, **kw),
                                      exact_grad(probs, target, weight, smoothing),
                                      strict=True)):
        for d in DTYPES:
            got, exp = reference.round_to(g, d), round_fraction(want, d)
            if not same_float(got, exp) and not (got == exp == 0):
                problems.append(f"grad[{j}] {d}: {got!r} != {exp!r}")
    return [f"probs={probs!r} target={target!r} weight={weight!r} E={smoothing}: {p}"
            for p in problems]


# --------------------------------------------------------------------------- strategies

_prob = st.one_of(st.floats(2.0**-30, 1.0), st.floats(0.0, 1.0, width=16),
                  st.sampled_from([1.0, 0.5, 1e-8, 2.0**-149, 5e-324, 1 - 2.0**-53, 1e10]))


@st.composite
def rows(draw, soft: bool | None = None, signed: bool = False):
    k = draw(st.integers(2, 6))
    probs = draw(st.lists(_prob, min_size=k, max_size=k).filter(lambda p: max(p) > 0))
    soft = draw(st.booleans()) if soft is None else soft
    if soft:
        lo = -1.0 if signed else 0.0
        target = draw(st.lists(st.floats(lo, 1.0), min_size=k, max_size=k))
        # mass only where p > 0 (elsewhere the loss is inf: tested apart)
        target = [t if p > 0 else 0.0 for t, p in zip(target, probs, strict=True)]
    else:
        target = draw(st.sampled_from([j for j in range(k) if probs[j] > 0]))
    weight = draw(st.none() | st.lists(st.sampled_from([1.0, 0.5, 3.0, 2.0**-20]),
                                       min_size=k, max_size=k))
    smoothing = 0.0 if min(probs) == 0 else \
        draw(st.sampled_from([0.0, 0.0, 0.1, 0.25, float(np.float32(0.1))]))
    return probs, target, weight, smoothing


# --------------------------------------------------------------------------- agreement


@settings(max_examples=200, deadline=None)
@given(rows())
def test_agrees_with_the_textbook_formula_at_high_precision(row):
    """Loss (105+ bits) and every gradient component (exact) round alike in every dtype:
    class indices and probabilities, weights, smoothing, subnormal and near-1 entries."""
    problems = _check(*row)
    assert not problems, "\n".join(problems[:10])


@settings(max_examples=40, deadline=None)
@given(rows(soft=True, signed=True))
def test_signed_targets_are_graded_against_the_formula_as_given(row):
    """Targets in [-1, 1] (no renormalisation): terms of both signs, Ziv escalates."""
    probs, target, weight, smoothing = row
    try:
        got = ce(probs, target, weight=weight, label_smoothing=smoothing)
    except ReferenceUncertainError:  # an exact cancellation of logs: never a guess
        return
    assert not mismatches(got, textbook(*row), reference.round_to, bits=100), (row, got)


def close(a: mpf, b, bits: int = 105) -> bool:
    """a and b agree to `bits` relative bits (evaluated at 300 bits)."""
    with mp.workprec(300):
        b = b() if callable(b) else b
        return abs(a - b) <= abs(b) * mpf(2) ** -bits


def test_hand_checked_values():
    def ln(x):
        return lambda: mpmath.log(x)

    assert close(ce([0.5, 0.25, 0.25], 0), ln(2))
    assert close(ce([0.5, 0.25, 0.25], 1), ln(4))
    assert close(ce([1.0, 3.0], 0), ln(4))  # P = 4, not 1
    assert close(ce([0.1] * 10, 3), ln(mpf(0.1) * 10 / mpf(0.1)))
    assert close(ce([1.0, 3.0], [0.5, 0.5]), lambda: (mpmath.log(4) + mpmath.log(mpf(4) / 3)) / 2)
    assert ce([1.0, 0.0, 0.0], 0) == 0  # one-hot: exactly 0
    assert close(ce([2.0, 2.0], 1), ln(2))
    # [1, 2**-1074]: log1p(2**-1074) and log(1 + 2**1074)
    assert close(ce([1.0, 5e-324], 0), lambda: mpf(2) ** -1074)
    assert close(ce([1.0, 5e-324], 1), lambda: mpmath.log(1 + mpf(2) ** 1074))
    assert reference.round_to(ce([1.0, 5e-324], 0), "float64") == 5e-324
    # 1 - 2**-53 and 2**-53 sum to 1: the loss at class 0 is about 2**-53
    assert reference.round_to(ce([1 - 2.0**-53, 2.0**-53], 0), "float64") == \
        float(-mpmath.log1p(-mpf(2) ** -53))
    assert ce_grad([0.5, 0.25, 0.25], 0) == [-1, 1, 1]
    assert ce_grad([1.0, 0.0, 3.0], [0.5, 0.5, 0.0]) == [-0.25, -INF, 0.25]


def test_label_smoothing_and_weights_are_formed_exactly():
    """E/K a rational: a = (1-E) t + E/K times w, not rounded anywhere."""
    p, e = [0.25, 0.5, 0.25], float(np.float32(0.1))
    want = textbook(p, 1, [2.0, 0.5, 1.0], e)
    assert not mismatches(ce(p, 1, weight=[2.0, 0.5, 1.0], label_smoothing=e), want,
                          reference.round_to, bits=110)
    grads = ce_grad(p, 1, weight=[2.0, 0.5, 1.0], label_smoothing=e)
    for g, q in zip(grads, exact_grad(p, 1, [2.0, 0.5, 1.0], e), strict=True):
        assert all(reference.round_to(g, d) == round_fraction(q, d) for d in DTYPES)


# --------------------------------------------------------------------------- identities


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=2, max_size=6), st.data())
def test_the_softmax_of_logits_gives_their_cross_entropy(logits, data):
    """cross_entropy_probs(softmax(l)) = cross_entropy(l) up to the rounding of softmax
    to float64 (relative 2**-52 per entry: the losses agree to 2**-45), and
    p_j * grad_probs_j = W softmax_j - a_j = grad_logits_j to the same accuracy."""
    k = len(logits)
    target = data.draw(st.integers(0, k - 1) | st.lists(st.floats(0, 1), min_size=k,
                                                        max_size=k))
    with mp.workprec(200):
        ex = [mpmath.exp(mpf(v)) for v in logits]
        p = [float(v / mpmath.fsum(ex)) for v in ex]
    got, want = ce(p, target), reference.cross_entropy(logits, target)
    assert abs(got - want) <= mpf(2) ** -45 * (1 + abs(want)), (p, target, got, want)
    gl = reference.cross_entropy_grad(logits, target)
    gp = ce_grad(p, target)
    w = sum(_coefficients(k, target, None, 0.0))
    for j in range(k):
        assert abs(mpf(p[j]) * gp[j] - gl[j]) <= mpf(2) ** -45 * (1 + abs(w)), j


@settings(max_examples=60, deadline=None)
@given(rows(), st.sampled_from([2.0, 0.5, 2.0**-40, 3.0, 0.75, 1024.0]))
def test_scaling_by_a_dyadic_constant(row, c):
    """p -> c p (exact in float64 for these rows) leaves the loss's rounding unchanged
    in every dtype and divides the gradient by c exactly."""
    probs, target, weight, smoothing = row
    scaled = [c * v for v in probs]
    if any(to_fraction(s) != to_fraction(c) * to_fraction(v)
           for s, v in zip(scaled, probs, strict=True)):
        return  # c p rounded (underflow): not the same row
    kw = {"weight": weight, "label_smoothing": smoothing}
    a, b = ce(scaled, target, **kw), ce(probs, target, **kw)
    assert all(same_float(reference.round_to(a, d), reference.round_to(b, d)) for d in DTYPES)
    assert close(a, b, 110) if b else a == 0
    g, gs = exact_grad(probs, target, weight, smoothing), ce_grad(scaled, target, **kw)
    for d in DTYPES:
        assert [reference.round_to(v, d) for v in gs] == \
            [round_fraction(q / to_fraction(c), d) for q in g]


@settings(max_examples=60, deadline=None)
@given(rows(), st.randoms(use_true_random=False))
def test_permutation_symmetry(row, rnd):
    probs, target, weight, smoothing = row
    k = len(probs)
    perm = list(range(k))
    rnd.shuffle(perm)
    inv = [perm.index(j) for j in range(k)]
    pp = [probs[perm[j]] for j in range(k)]
    tp = inv[target] if isinstance(target, int) else [target[perm[j]] for j in range(k)]
    wp = None if weight is None else [weight[perm[j]] for j in range(k)]
    kw = {"label_smoothing": smoothing}
    a, b = ce(probs, target, weight=weight, **kw), ce(pp, tp, weight=wp, **kw)
    # sums of the same terms in another order: the same certified rounding
    assert all(reference.round_to(a, d) == reference.round_to(b, d) for d in DTYPES)
    ga, gb = ce_grad(probs, target, weight=weight, **kw), ce_grad(pp, tp, weight=wp, **kw)
    assert [gb[j] for j in inv] == ga


# --------------------------------------------------------------------------- limits


def test_masked_classes_count_zero():
    """a_k = 0 at p_k = 0: the term is 0 (not 0 * inf); its gradient is W/P."""
    assert close(ce([0.0, 0.5, 0.5], 1), lambda: mpmath.log(2))
    assert close(ce([0.0, 0.5, 0.5], [0.0, 0.5, 0.5]), lambda: mpmath.log(2))
    assert ce_grad([0.0, 0.5, 0.5], 1) == [1, -1, 1]


def test_mass_on_a_zero_probability_is_infinite():
    assert ce([0.0, 1.0], 0) == INF
    assert ce([0.0, 1.0], [0.5, 0.5]) == INF
    assert ce([0.0, 0.0, 1.0], [0.5, -0.5, 1.0]) != ce([0.0, 0.0, 1.0], [0.5, -0.5, 1.0])
    assert ce([0.0, 1.0], [-0.5, 1.5]) == -INF
    assert ce_grad([0.0, 1.0], 0) == [-INF, 1]
    assert ce_grad([0.0, 1.0], [-0.5, 1.5]) == [INF, -0.5]  # W/P - a_1/p_1 = 1 - 1.5


@pytest.mark.parametrize("row", [[NAN, 1.0], [0.5, -0.25, 1.0], [0.0, 0.0], [-INF, 1.0]])
def test_undefined_rows_are_nan(row):
    """NaN, a negative probability (no log) and an all-zero row (no distribution)."""
    assert mpmath.isnan(ce(row, 1))
    assert all(mpmath.isnan(g) for g in ce_grad(row, 1))


def test_nan_in_the_target_or_weight_is_nan():
    assert mpmath.isnan(ce([0.5, 0.5], [NAN, 1.0]))
    assert mpmath.isnan(ce([0.5, 0.5], 0, weight=[1.0, NAN]))


def test_plus_inf_probabilities_take_the_limit():
    """p / P tends to one-hot on the +inf class."""
    assert ce([INF, 1.0], 0) == 0
    assert ce([INF, 1.0], 1) == INF
    assert ce([INF, 1.0, 0.0], [1.0, 0.0, 0.0]) == 0
    assert ce([INF, 1.0, 0.0], [0.5, 0.0, 0.5]) == INF  # mass on p = 0
    # signed mass cancelling on the finite classes: -sum a_k log p_k stays finite
    assert close(ce([INF, 1.0, 2.0], [1.0, 0.5, -0.5]), lambda: mpmath.log(2) / 2)
    assert ce([INF, INF, 1.0], 2) == INF
    assert ce([INF, INF, 1.0], [0.5, 0.25, 0.25]) == INF  # a >= 0 and weight elsewhere
    assert mpmath.isnan(ce([INF, INF, 1.0], 0))  # the ratio of the two decides
    assert ce_grad([INF, 2.0, 0.0], [0.5, 0.5, 0.0]) == [0, -0.25, 0]
    assert ce_grad([INF, 2.0, 0.0], [0.5, 0.0, 0.5]) == [0, 0, -INF]


def test_an_exact_cancellation_of_logs_raises_rather_than_guesses():
    """2 log(4/2) - log(4/1) = 0 exactly: no precision decides its sign."""
    with pytest.raises(ReferenceUncertainError):
        ce([2.0, 1.0, 1.0], [2.0, -1.0, 0.0])
    assert ce([1.0, 1.0, 2.0], [1.0, -1.0, 0.0]) == 0  # equal p: grouped, exactly 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: ce([0.5, 0.5], 2), r"cross_entropy_probs: class index 2 outside \[0, 2\)"),
    (lambda: ce([0.5, 0.5], 1.0), "must be an int"),
    (lambda: ce([0.5, 0.5], [1.0]), "1 target probabilities for 2 classes"),
    (lambda: ce([0.5, 0.5], 0, label_smoothing=2), "label smoothing"),
    (lambda: ce([], 0), "no classes"),
])
def test_domain_errors_are_one_line_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- bulk


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_bulk_path_is_round_to_of_the_scalar_functions(dtype):
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(5), 30)
    p[3, 2] = 0.0
    p[4] = [1.0, 0, 0, 0, 0]
    labels = rng.integers(0, 5, 30)
    labels[3] = 2  # mass on the zero: inf
    soft = rng.dirichlet(np.ones(5), 30)
    for target in (labels, soft):
        for grad in (False, True):
            got = reference.rounded_cross_entropy_probs(dtype, p, target, grad=grad)
            for i in range(30):
                t = int(target[i]) if target.ndim == 1 else target[i]
                want = [reference.round_to(v, dtype) for v in (
                    ce_grad(p[i], t) if grad else [ce(p[i], t)])]
                assert np.array_equal(np.atleast_1d(got[i]), want, equal_nan=True), (i, grad)


def test_bulk_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        reference.rounded_cross_entropy_probs("float32", np.ones(3), np.array([0]))
    with pytest.raises(ValueError, match="shape"):
        reference.rounded_cross_entropy_probs("float32", np.ones((2, 3)), np.array([0]))
    with pytest.raises(ValueError, match="outside"):
        reference.rounded_cross_entropy_probs("float32", np.ones((1, 3)), np.array([3]))


def test_a_row_of_a_thousand_classes_is_quick():
    """A class-index row of K = 1000 is one log (the others are masked by a = 0) and its
    gradient K - 1 copies of W/P."""
    p = np.full(1000, 1e-3)
    p[7] = 0.25
    assert close(ce(p, 7), lambda: mpmath.log(mpmath.fsum(p) / mpf(0.25)), 90)
    g = ce_grad(p, 3)
    assert len(set(g[:3] + g[4:])) == 1
