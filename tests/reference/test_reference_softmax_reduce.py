"""The certified mean and sum of softmax cross-entropies (reference/softmax_reduce.py):

    sum = sum_i loss_i,   mean = sum / den,   den = sum_i w_{y_i} (rows not ignored) | N

checked against the textbook oracle of test_reference_softmax (`naive`: log of the sum of
exponentials at 700+ bits, row by row) summed at high precision and divided by the exact
denominator; against torch's own decomposition of the smoothed mean (LossNLL.cpp:
(1-E) nll + (E/K) smooth, both over the weights of the targets); against the sum of the
single-row cross_entropy values; exact scaling identities; boundary ties decided by a
vanishing tail; ignored rows, weights, limits and argument errors.
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
from reference import softmax_core
from reference.engine import ReferenceUncertainError
from tests.reference.reference_oracle import (
    DTYPES,
    Split,
    agree_bits,
    fraction_to_mpf,
    mismatches,
    same_float,
    to_fraction,
)
from tests.reference.test_reference_softmax import _logit, _mp, naive

INF = math.inf
IGNORE = -100
reduce_ = reference.cross_entropy_reduce


# --------------------------------------------------------------------------- the oracle


def naive_batch(logits, targets, weight=None, smoothing=0.0, ignore_index=None,
                reduction="mean", denominator=None):
    """The rows' naive losses summed at 3000 bits, over the exact denominator (NaN for 0)."""
    hard = isinstance(targets[0], int)
    kept = [(row, t) for row, t in zip(logits, targets, strict=True)
            if not (hard and t == ignore_index)]
    values = [naive(row, t, weight, smoothing) for row, t in kept]
    den = Fraction(1)
    if reduction == "mean":
        if (denominator or ("weights" if hard else "count")) == "count":
            den = Fraction(len(logits))
        else:
            den = sum((Fraction(1) if weight is None else to_fraction(weight[t])
                       for _, t in kept), Fraction(0))
    with mp.workprec(3000):
        if den == 0:
            return mpf("nan")
        return mpmath.fsum(values) / _mp(den)


def torch_smoothed_mean(logits, labels, weight, e):
    """torch's cross_entropy_loss_label_smoothing for reduction='mean', term by term:
    (1-E) * nll_loss(mean) + (E/K) * sum_i sum_k w_k (lse_i - l_ik) / sum_i w_{y_i}."""
    k = len(logits[0])
    w = [Fraction(1)] * k if weight is None else [to_fraction(v) for v in weight]
    with mp.workprec(1500):
        nll, smooth, den = [], [], Fraction(0)
        for row, c in zip(logits, labels, strict=True):
            ls = [fraction_to_mpf(to_fraction(v)) for v in row]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in ls))
            nll.append(_mp(w[c]) * (lse - ls[c]))
            smooth.append(mpmath.fsum(_mp(w[j]) * (lse - ls[j]) for j in range(k)))
            den += w[c]
        e = _mp(to_fraction(e))
        return ((1 - e) * mpmath.fsum(nll) + e / k * mpmath.fsum(smooth)) / _mp(den)


def _same(a: mpf, b: mpf) -> bool:
    """Two certified values of one number: 105 bits alike, the same rounding everywhere."""
    return agree_bits(a, b) >= 105 and all(
        same_float(reference.round_to(a, d), reference.round_to(b, d)) for d in DTYPES)


# --------------------------------------------------------------------------- strategies


@st.composite
def batches(draw):
    """1..5 rows of K = 2..5 logits: class indices (some ignored) or probabilities,
    non-negative weights (some 0), smoothing, either reduction and denominator."""
    k = draw(st.integers(2, 5))
    n = draw(st.integers(1, 5))
    logits = [draw(st.lists(_logit, min_size=k, max_size=k)) for _ in range(n)]
    hard = draw(st.booleans())
    if hard:
        targets = [draw(st.sampled_from([*range(k), IGNORE])) for _ in range(n)]
    else:
        targets = [draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k))
                   for _ in range(n)]
    weight = draw(st.none() | st.lists(st.sampled_from([1.0, 0.5, 3.0, 0.0, 2.0**-20]),
                                       min_size=k, max_size=k))
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.1, 0.25, float(np.float32(0.1))]))
    reduction = draw(st.sampled_from(["mean", "sum"]))
    denominator = draw(st.sampled_from([None, "count", "weights"] if hard else [None, "count"]))
    return logits, targets, weight, smoothing, reduction, denominator


@settings(max_examples=40, deadline=None)
@given(batches())
def test_agrees_with_the_textbook_formula_at_high_precision(batch):
    """105+ bits and the same rounding in every format (NaN for a zero denominator)."""
    logits, targets, weight, e, reduction, den = batch
    got = reduce_(logits, targets, weight=weight, label_smoothing=e, ignore_index=IGNORE,
                  reduction=reduction, denominator=den)
    want = naive_batch(logits, targets, weight, e, IGNORE, reduction, den)
    problems = mismatches(got, want, reference.round_to, bits=105)
    assert not problems, (batch, problems[:4])


def test_smoothed_mean_is_torch_decomposition():
    """Label smoothing under mean: torch divides the smoothing part by the same sum of
    the targets' weights as the nll part; so does the reference (one formula)."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 4)).astype(np.float32).astype(np.float64) * 3
    labels = [0, 3, 1, 1, 2, 0]
    for weight in (None, [1.0, 0.5, 2.0, 0.25]):
        for e in (0.1, 0.5, 1.0):
            got = reduce_(logits, labels, weight=weight, label_smoothing=e)
            want = torch_smoothed_mean(logits.tolist(), labels, weight, e)
            assert not mismatches(got, want, reference.round_to, bits=105), (weight, e)


def test_sum_of_the_single_row_values():
    """Positive rows: the certified single-row values (110+ bits each) summed at 600
    bits agree with the reduction to 105 bits and round the same in every format."""
    rng = np.random.default_rng(11)
    logits = (rng.normal(size=(40, 10)) * 20).astype(np.float32)
    labels = rng.integers(0, 10, size=40)
    weight = np.array([1.0, 0.5, 2.0, 0.0, 1000.0] * 2, dtype=np.float32)
    for w in (None, weight):
        rows = [reference.cross_entropy(r, int(c), weight=w) for r, c in zip(logits, labels,
                                                                              strict=True)]
        with mp.workprec(600):
            total = mpmath.fsum(rows)
        got = reduce_(logits, labels, weight=w, reduction="sum")
        assert agree_bits(got, total) >= 105
        for dtype in DTYPES:
            assert same_float(reference.round_to(got, dtype), reference.round_to(total, dtype))


def test_sum_is_n_times_the_counted_mean():
    """With N a power of two the mean is the sum scaled by 2**-k: the same certified
    tuple shifted; otherwise N * mean agrees with the sum to 105 bits."""
    rng = np.random.default_rng(5)
    for n in (1, 2, 8, 3, 7):
        logits = rng.normal(size=(n, 5)) * 4
        probs = rng.dirichlet(np.ones(5), size=n)
        for targets in (list(rng.integers(0, 5, size=n)), probs):
            total = reduce_(logits, targets, reduction="sum")
            mean = reduce_(logits, targets, reduction="mean", denominator="count")
            if n & (n - 1) == 0:
                assert mpmath.ldexp(mean, n.bit_length() - 1) == total, n
            else:
                with mp.workprec(400):
                    assert agree_bits(mean * n, total) >= 105, n


# --------------------------------------------------------------------------- sticky tails

E10 = 1e10  # a float32: 9765625 * 2**10, odd; its float32 spacing is 1024


@pytest.mark.parametrize(("rows", "labels", "weight", "reduction", "want"), [
    # [1e10, 0] and [1536, 0], label 1: 1e10 + 1536 (a float32 tie, 1e10 + 1024 even)
    # plus exp(-1e10) + exp(-1536): up
    ([[E10, 0.0], [1536.0, 0.0]], [1, 1], None, "sum", E10 + 2048),
    # half of it: 5e9 + 768 (a tie, 5e9 + 512 even, spacing 512) plus half the tail: up
    ([[E10, 0.0], [1536.0, 0.0]], [1, 1], None, "mean", 5e9 + 1024),
    # (1e10 + 1024 + exp(-1e10-1024)) - (512 + exp(-512)), class weights [-1, 1]: the
    # tie 1e10 + 512 (1e10 + 1024 even) with a negative tail: down
    ([[E10 + 1024, 0.0], [0.0, 512.0]], [1, 0], [-1.0, 1.0], "sum", E10),
    # the same rows over N = 2: the tie 5e9 + 256 (5e9 + 512 even), a negative tail: down
    ([[E10 + 1024, 0.0], [0.0, 512.0]], [1, 0], [-1.0, 1.0], "count", 5e9),
])
def test_a_tie_is_decided_by_the_tails_sign(monkeypatch, rows, labels, weight, reduction, want):
    """The rows' exact parts sum to a float32 tie, their tails vanish below every working
    precision: decided at the first precision by the tail's sign (no escalation), where
    round to nearest even on the exact part alone goes the other way."""
    monkeypatch.setattr(softmax_core, "MAX_PRECISION", softmax_core.START_PRECISION)
    red, den = ("mean", "count") if reduction == "count" else (reduction, None)
    got = reduce_(rows, labels, weight=weight, reduction=red, denominator=den)
    assert reference.round_to(got, "float32") == want
    w = [1.0, 1.0] if weight is None else weight
    exact_part = sum(to_fraction(w[c]) * (to_fraction(max(r)) - to_fraction(r[c]))
                     for r, c in zip(rows, labels, strict=True))
    if red == "mean":
        exact_part /= len(rows) if den == "count" else sum(to_fraction(w[c]) for c in labels)
    assert reference.round_to(fraction_to_mpf(exact_part), "float32") != want
    tail_sign = 1 if want > exact_part else -1
    assert not mismatches(got, Split(exact_part, tail_sign), reference.round_to, bits=105)


# --------------------------------------------------------------------------- settings


def test_ignored_rows_drop_out_of_the_sum_and_the_weights():
    rows = [[0.5, -1.0, 2.0], [3.0, 0.0, 0.0], [math.nan, INF, 0.0], [1.0, 1.0, -4.0]]
    labels = [2, 0, IGNORE, 1]
    kept = [rows[i] for i in (0, 1, 3)]
    kl = [labels[i] for i in (0, 1, 3)]
    w = [2.0, 0.5, 1.0]
    for weight in (None, w):
        for red in ("mean", "sum"):
            got = reduce_(rows, labels, weight=weight, ignore_index=IGNORE, reduction=red)
            assert _same(got, reduce_(kept, kl, weight=weight, reduction=red)), (weight, red)
    # "count" keeps the ignored row in N (paddle's mean without weight=)
    counted = reduce_(rows, labels, ignore_index=IGNORE, denominator="count")
    assert not mismatches(counted, naive_batch(rows, labels, None, 0.0, IGNORE, "mean",
                                               "count"), reference.round_to, bits=105)
    with mp.workprec(400):
        assert agree_bits(counted * 4, reduce_(kept, kl, reduction="sum")) >= 105


def test_weights_divide_the_mean():
    rows = [[0.5, -1.0, 2.0], [3.0, 0.0, 0.0], [1.0, 1.0, -4.0], [0.0, 0.0, 0.0]]
    labels = [2, 0, 1, 1]
    w = [2.0, 0.25, 1.5]  # sum of w_{y_i}: 1.5 + 2 + 0.25 + 0.25 = 4
    total = reduce_(rows, labels, weight=w, reduction="sum")
    assert mpmath.ldexp(reduce_(rows, labels, weight=w), 2) == total
    assert mpmath.ldexp(reduce_(rows, labels, weight=w, denominator="count"), 2) == total
    assert not mismatches(reduce_(rows, labels, weight=[1.0, 3.0, 0.5]),
                          naive_batch(rows, labels, [1.0, 3.0, 0.5]), reference.round_to,
                          bits=105)


def test_probabilities_default_to_the_count():
    rows = [[0.5, -1.0, 2.0], [3.0, 0.0, 0.0], [1.0, 1.0, -4.0]]
    probs = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.125, 0.125, 0.75]])
    got = reduce_(rows, probs, weight=[1.0, 2.0, 0.5])
    assert got == reduce_(rows, probs, weight=[1.0, 2.0, 0.5], denominator="count")
    assert not mismatches(got, naive_batch(rows, probs.tolist(), [1.0, 2.0, 0.5]),
                          reference.round_to, bits=105)


def test_equal_rows_with_cancelling_weights_are_exact():
    """Rows sharing S = sum exp(d) share one log1p(S): signed weights that cancel leave
    the exact value (0) or the other rows' value."""
    rows = [[0.0, -1.0], [-1.0, 0.0]]
    assert reduce_(rows, [0, 1], weight=[1.0, -1.0], reduction="sum") == 0
    rows = [[0.0, -3.0], [-1.0, 0.0], [0.0, -1.0]]
    got = reduce_(rows, [1, 1, 0], weight=[-1.0, 1.0], reduction="sum")
    # rows 2 and 3 are +-log1p(e^-1): the sum is row 1's 3 + log1p(e^-3)
    assert not mismatches(got, naive_batch(rows[:1], [1], reduction="sum"),
                          reference.round_to, bits=105)


def test_exactly_cancelling_distinct_logs_raise_rather_than_guess(monkeypatch):
    """log 4 - 2 log 2 = 0 (S = 3 and S = 1, signed weights): no finite precision
    separates it from 0, so the cap raises ReferenceUncertainError."""
    monkeypatch.setattr(softmax_core, "MAX_PRECISION", 512)
    rows = [[0.0] * 4, [0.0, 0.0, -INF, -INF], [0.0, 0.0, -INF, -INF]]
    with pytest.raises(ReferenceUncertainError, match=r"not certified .* sum of 3 rows"):
        reduce_(rows, [0, 1, 1], weight=[1.0, -1.0, 1.0, 1.0], reduction="sum")


# --------------------------------------------------------------------------- limits


def test_limits():
    nan_row, fine = [math.nan, 0.0], [0.0, 1.0]
    assert mpmath.isnan(reduce_([fine, nan_row], [0, 1]))
    assert mpmath.isnan(reduce_([fine, [-INF, -INF]], [0, 1], reduction="sum"))
    assert mpmath.isnan(reduce_([fine, fine], [0, 1], weight=[math.nan, 1.0]))
    # [0, -inf] with weight on the -inf class: +inf (w > 0) or -inf (w < 0)
    assert reduce_([fine, [0.0, -INF]], [0, 1], reduction="sum") == INF
    assert reduce_([fine, [0.0, -INF]], [0, 1]) == INF
    assert reduce_([[-INF, 0.0]], [0], weight=[-1.0, 1.0], reduction="sum") == -INF
    assert reduce_([[-INF, 0.0]], [0], weight=[-1.0, 1.0]) == INF  # -inf / -1
    both = [[0.0, -INF], [-INF, 0.0]]
    assert mpmath.isnan(reduce_(both, [1, 0], weight=[1.0, -1.0], reduction="sum"))
    # zero denominators: 0/0, as torch's nan; the sums are 0
    assert mpmath.isnan(reduce_([fine, fine], [IGNORE, IGNORE], ignore_index=IGNORE))
    assert reduce_([fine, fine], [IGNORE, IGNORE], ignore_index=IGNORE, reduction="sum") == 0
    assert reduce_([fine, fine], [IGNORE, IGNORE], ignore_index=IGNORE,
                   denominator="count") == 0
    assert mpmath.isnan(reduce_([fine, fine], [1, 1], weight=[1.0, 0.0]))
    assert mpmath.isnan(reduce_([fine, [0.0, -INF]], [1, 1], weight=[1.0, 0.0]))
    assert mpmath.isnan(reduce_([fine, fine], [0, 1], weight=[1.0, -1.0]))
    # +inf logits take the single-row limits (exact values)
    assert reduce_([[INF, 0.0], [INF, 1.0]], [0, 0], reduction="sum") == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"logits": [], "targets": []}, r"no rows to reduce"),
    ({"logits": [[0.0, 1.0], [0.0]], "targets": [0, 0]}, r"rows of different lengths"),
    ({"logits": np.zeros(3), "targets": [0]}, r"N rows of K, got shape \(3,\)"),
    ({"logits": [[0.0, 1.0]], "targets": [0, 1]}, r"2 targets for 1 rows"),
    ({"logits": [[0.0, 1.0]], "targets": 0}, r"targets must be N class indices"),
    ({"logits": [[0.0, 1.0]] * 2, "targets": [0, [0.5, 0.5]]}, r"mix class indices"),
    ({"logits": [[0.0, 1.0]], "targets": [0], "reduction": "none"}, r"unknown reduction"),
    ({"logits": [[0.0, 1.0]], "targets": [0], "denominator": "rows"}, r"unknown denominator"),
    ({"logits": [[0.0, 1.0]], "targets": [[0.5, 0.5]], "denominator": "weights"},
     r"'weights' needs class-index targets"),
    ({"logits": [[0.0, 1.0]], "targets": [2]}, r"class index 2 outside \[0, 2\)"),
    ({"logits": [[0.0, 1.0]], "targets": [0.0]}, r"class index must be an int"),
    ({"logits": [[0.0, 1.0]], "targets": [0], "weight": [1.0]}, r"1 weights for 2"),
    ({"logits": [[0.0, 1.0]], "targets": [0], "label_smoothing": 2.0}, r"label smoothing"),
])
def test_bad_arguments_are_one_line_value_errors(kwargs, message):
    kw = dict(kwargs)
    with pytest.raises(ValueError, match=message) as info:
        reduce_(kw.pop("logits"), kw.pop("targets"), **kw)
    assert "\n" not in str(info.value)


def test_exported_like_cross_entropy():
    assert "cross_entropy_reduce" in reference.__all__
    assert isinstance(reduce_([[0.0, 1.0]], [0]), mpf)
