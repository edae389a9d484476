"""The vectorized grader against the scalar reference measures, and the status order."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from audit.grading import STATUSES, grade, ordinal_distances, ulp_errors
from audit.strategies import bit_pattern_value
from reference.formats import FORMATS

DTYPES = list(FORMATS)
EDGES = {d: [0.0, -0.0, math.inf, -math.inf, FORMATS[d].max_finite, -FORMATS[d].max_finite,
             math.ldexp(1.0, FORMATS[d].quantum_exp), -math.ldexp(1.0, FORMATS[d].quantum_exp),
             1.0, -1.0] for d in DTYPES}


@pytest.mark.parametrize("dtype", DTYPES)
def test_ordinal_matches_reference_on_edges(dtype: str) -> None:
    vals = EDGES[dtype]
    a, b = np.array([x for x in vals for _ in vals]), np.array(vals * len(vals))
    got = ordinal_distances(a, b, dtype)
    want = [reference.ordinal_distance(x, y, dtype) for x, y in zip(a, b, strict=True)]
    assert got.tolist() == [float(w) for w in want]  # exact, no wraparound at +-max/inf


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=60)
@given(data=st.data())
def test_ordinal_and_ulp_match_reference(dtype: str, data: st.DataObject) -> None:
    o = data.draw(bit_pattern_value(dtype))
    v = data.draw(bit_pattern_value(dtype, finite=True))
    exact = reference.bce_with_logits(v, 0.25) if math.isfinite(v) else v
    expected = reference.round_to(exact, dtype)
    hi = reference.round_to(exact, "float64")
    lo = float(exact - hi) if math.isfinite(hi) else 0.0
    d = ordinal_distances(np.array([o]), np.array([expected]), dtype)[0]
    assert d == reference.ordinal_distance(o, exact, dtype)
    u = ulp_errors(np.array([o]), np.array([expected]), np.array([hi]), np.array([lo]), dtype)[0]
    want = reference.ulp_error(o, exact, dtype)
    assert u == want or math.isclose(u, want, rel_tol=1e-9, abs_tol=1e-12)


def test_ordinal_nan_rules() -> None:
    got = ordinal_distances(np.array([np.nan, np.nan, 1.0]), np.array([np.nan, 1.0, np.nan]),
                            "float32")
    assert got.tolist() == [0.0, -1.0, -1.0]


def test_statuses_in_design_order() -> None:
    # (observed, exact) pairs, one per status, in float32
    cases = [
        (np.nan, 1.0, "spurious_nan"),
        (math.inf, 1.0, "spurious_inf"),
        (1.0, 1e39, "missing_inf"),        # 1e39 rounds to inf in float32
        (-1.0, 1.0, "wrong_sign"),
        (0.0, 1e-40, "spurious_zero"),     # a float32 subnormal
        (1.0 + 2**-20, 1.0, "inaccurate"),  # 8 ulps
        (1.0 + 2**-22, 1.0, "ok"),          # 2 ulps, budget 4
        (np.nan, np.nan, "ok"),
        (math.inf, math.inf, "ok"),
        (-math.inf, math.inf, "wrong_sign"),
    ]
    o = np.array([c[0] for c in cases])
    exact = [c[1] for c in cases]
    expected = np.array([reference.round_to(v, "float32") for v in exact])
    hi = np.array(exact)
    g = grade(o, expected, hi, np.zeros_like(hi), "float32", 4.0)
    assert g.status.tolist() == [c[2] for c in cases]
    assert set(g.status.tolist()) <= set(STATUSES)


def test_error_batch() -> None:
    g = grade(None, np.ones(3), np.ones(3), np.zeros(3), "float16", 1.0)
    assert g.status.tolist() == ["error"] * 3 and np.isinf(g.ulp).all()


@pytest.mark.parametrize("op,grad", [("bce_with_logits", False), ("bce_with_logits", True),
                                     ("bce", False), ("bce", True)])
def test_rounded_and_parts_is_rounded_plus_approx_parts(op: str, grad: bool) -> None:
    """The one-pass grading reference rounds exactly like `rounded`, and its parts meet
    approx_parts' contract: within rel_tol/2 |V| + abs_tol of V, so within twice that of
    approx_parts' own parts (the short path may estimate a value below abs_tol
    differently, e.g. e**-1000 as e**-700)."""
    from reference import fast

    rng = np.random.default_rng(5)
    bits = rng.integers(0, 1 << 32, size=20000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32).astype(np.float64)
    x = x[~np.isnan(x)]
    if op == "bce":
        x = np.abs(x) / (1 + np.abs(x))
        x = x.astype(np.float32).astype(np.float64)
    y = rng.choice([0.0, 1.0, 0.25, 2.0 ** -30], size=x.size)
    kw = {"grad": grad, "abs_tol": 2.0 ** -189, "rel_tol": 2.0 ** -30}
    got, (hi, lo) = fast.rounded_and_parts(op, "float32", x, y, **kw)
    np.testing.assert_array_equal(got, reference.rounded(op, "float32", x, y, grad=grad))
    want_hi, want_lo = fast.approx_parts(op, x, y, **kw)
    np.testing.assert_array_equal(np.isnan(hi), np.isnan(want_hi))
    fin = np.isfinite(want_hi)
    np.testing.assert_array_equal(hi[~fin & ~np.isnan(hi)], want_hi[~fin & ~np.isnan(hi)])
    diff = np.abs((hi[fin] - want_hi[fin]) + (lo[fin] - want_lo[fin]))
    assert np.all(diff <= kw["rel_tol"] * np.abs(want_hi[fin]) + 2 * kw["abs_tol"])
