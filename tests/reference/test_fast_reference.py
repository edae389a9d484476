"""reference.fast must agree bit for bit with the pure mpmath reference.

The oracle here is `losses.value` + `formats.round_to` called directly: no fast path,
no lru_cache. Exhaustive over float16 and bfloat16 inputs, a random float32 sample,
Hypothesis properties, constructed near-tie points that only mpmath can decide, and a
proof that the uncertainty detector matters (switching it off gives wrong answers).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import fast, fast_core, losses, vectorized
from reference.formats import get_format, round_to

DTYPES = ("float16", "bfloat16", "float32")


def mp_rounded(op: str, grad: bool, x, y, w=1.0, p=1.0) -> dict[str, np.ndarray]:
    """Pure mpmath rounding of every point into each fast dtype (one evaluation each)."""
    x, y, w, p = (np.broadcast_to(np.asarray(a, dtype=np.float64), np.shape(x)).ravel()
                  for a in (x, y, w, p))
    reps = [losses.value(op, grad, a, b, c, d)
            for a, b, c, d in zip(x.tolist(), y.tolist(), w.tolist(), p.tolist(), strict=True)]
    return {dt: np.array([round_to(t, dt) for t in reps]) for dt in DTYPES}


def assert_same(op: str, grad: bool, x, y, w=1.0, p=1.0, dtypes=DTYPES) -> None:
    try:
        want = mp_rounded(op, grad, x, y, w, p)
    except ArithmeticError as e:  # the reference cannot certify a point: same error
        for dt in dtypes:
            with pytest.raises(type(e)):
                fast.rounded(op, dt, x, y, weight=w, pos_weight=p, grad=grad)
        return
    for dt in dtypes:
        got = fast.rounded(op, dt, x, y, weight=w, pos_weight=p, grad=grad).ravel()
        bad = np.flatnonzero(got.view(np.uint64) != want[dt].view(np.uint64))
        assert bad.size == 0, (
            f"{op} grad={grad} {dt}: {bad.size} disagreements, first x={np.ravel(x)[bad[0]]!r} "
            f"fast={got[bad[0]]!r} mpmath={want[dt][bad[0]]!r}")


def all_values(dtype) -> np.ndarray:
    """Every bit pattern of a 16-bit format, as exact float64 (NaN and inf included)."""
    with np.errstate(invalid="ignore"):  # NaN payloads
        return np.arange(1 << 16, dtype=np.uint16).view(dtype).astype(np.float64)


def f32_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    bits = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    with np.errstate(invalid="ignore"):  # NaN payloads
        return bits.view(np.float32).astype(np.float64)


# --------------------------------------------------------------------------- rounding


def boundary_heavy_float64(rng: np.random.Generator, fmt, n: int) -> np.ndarray:
    """Random values plus exact ties, their float64 neighbours, subnormal and overflow
    thresholds of fmt."""
    e = rng.integers(fmt.quantum_exp - 3, fmt.emax + 2, n)
    m = rng.integers(1 << (fmt.precision - 1), 1 << fmt.precision, n)  # p-bit significands
    ties = np.ldexp((2 * m + 1).astype(np.float64), e - fmt.precision)  # (m + 1/2) ulp
    vals = np.concatenate([
        ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf),
        np.ldexp(rng.uniform(0.5, 1, n), e),
        [fmt.max_finite, fmt.max_finite * (1 + 2.0 ** -fmt.precision),
         math.ldexp(1.0, fmt.quantum_exp - 1), math.ldexp(1.0, fmt.emin), 0.0, 5e-324],
    ])
    vals = vals[np.isfinite(vals)]
    return np.concatenate([vals, -vals])


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_array_matches_round_to(dtype):
    fmt = get_format(dtype)
    v = boundary_heavy_float64(np.random.default_rng(1), fmt, 4000)
    got = fast.round_array(v, fmt)
    want = np.array([round_to(float(a), fmt) for a in v])
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_dd_matches_round_to(dtype):
    """h on a tie with a tiny low part must round by the low part's sign."""
    from fractions import Fraction

    fmt = get_format(dtype)
    rng = np.random.default_rng(2)
    h = boundary_heavy_float64(rng, fmt, 500)
    for low in (np.ldexp(np.abs(h), -80), -np.ldexp(np.abs(h), -80), np.zeros_like(h),
                np.full_like(h, 2.0 ** -1074)):
        got = fast.round_dd(h, low, fmt)
        nonzero = (h != 0) | (low != 0)  # the sign of an exact 0 is not a rounding matter
        want = np.array([round_to(Fraction(a) + Fraction(b), fmt)
                         for a, b in zip(h[nonzero].tolist(), low[nonzero].tolist(),
                                         strict=True)])
        assert np.array_equal(got[nonzero].view(np.uint64), want.view(np.uint64))


# --------------------------------------------------------------------------- exhaustive


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
def test_every_16bit_logit(dtype, grad):
    x = all_values(dtype)
    for y in (0.0, 1.0):
        assert_same("bce_with_logits", grad, x, y)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
def test_every_16bit_probability(dtype, grad):
    x = all_values(dtype)
    q = x[(x >= 0) & (x <= 1)]
    for y in (0.0, 1.0):
        assert_same("bce", grad, q, y)


def test_float32_random_sample():
    """50k float32 bit patterns and N(0, 8) logits, hard and soft labels, weights."""
    rng = np.random.default_rng(3)
    n = 6000
    for grad in (False, True):
        for x in (f32_bits(rng, n), (rng.standard_normal(n) * 8).astype(np.float32)):
            y = rng.choice(np.array([0.0, 1.0, 0.3, 0.1]), n)
            soft = rng.random(n).astype(np.float32).astype(np.float64)
            assert_same("bce_with_logits", grad, x, y)
            assert_same("bce_with_logits", grad, x, soft, 1.5, 3.0)
        q = np.abs(np.tanh(f32_bits(rng, n // 2)).astype(np.float32))
        assert_same("bce", grad, q, rng.choice(np.array([0.0, 1.0, 0.25, 0.3]), n // 2),
                    rng.random(n // 2).astype(np.float32))


def test_float32_unit_weights_take_the_short_path():
    """Unit weights (scalars or arrays of ones) with hard labels, or any label for the
    loss, go through fast._short; every answer still equals mpmath's."""
    rng = np.random.default_rng(6)
    n = 6000
    x = np.concatenate([f32_bits(rng, n), (rng.standard_normal(n) * 30).astype(np.float32),
                        [0.0, -0.0, 2.0 ** -149, -(2.0 ** -149), 104.0, -104.0, 88.72, -88.72]])
    for grad in (False, True):
        soft = [] if grad else [(rng.random(x.size).astype(np.float32), 1.0), (0.3, 1.0)]
        for y, w in [(0.0, 1.0), (1.0, np.ones(x.size)), (rng.integers(0, 2, x.size), 1.0),
                     *soft]:
            fast.reset_stats()
            got = fast.rounded("bce_with_logits", "float32", x, y, weight=w, grad=grad)
            assert fast.STATS["short"] > 0.9 * x.size
            want = mp_rounded("bce_with_logits", grad, x, np.broadcast_to(y, x.shape))
            bad = np.flatnonzero(got.view(np.uint64) != want["float32"].view(np.uint64))
            assert bad.size == 0, (grad, x[bad[:3]], got[bad[:3]], want["float32"][bad[:3]])


# --------------------------------------------------------------------------- properties

f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
unit = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.3]), st.floats(0, 1, width=32))
weights = st.one_of(st.sampled_from([0.0, 1.0, 2.0 ** -130, 1e30]),
                    st.floats(0, 1e6, width=32), st.floats(width=32))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(f32, st.one_of(unit, f32), weights, weights),
                min_size=fast.MIN_FAST, max_size=40),
       st.booleans(), st.sampled_from(["bce_with_logits", "bce"]))
def test_property_any_float32_points(points, grad, op):
    x, y, w, p = (np.array(c, dtype=np.float64) for c in zip(*points, strict=True))
    if op == "bce":
        p = 1.0
        x = np.where(np.isfinite(x), np.abs(np.tanh(x)), x)
    assert_same(op, grad, x, y, w, p)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(f32, st.sampled_from([0.0, 1.0])), min_size=fast.MIN_FAST,
                max_size=40), st.booleans())
def test_property_hard_labels(points, grad):
    x, y = (np.array(c, dtype=np.float64) for c in zip(*points, strict=True))
    assert_same("bce_with_logits", grad, x, y)


tiny_or_huge = st.one_of(st.floats(0, 2.0 ** -1000), st.floats(2.0 ** 190, 2.0 ** 210),
                         st.sampled_from([5e-324, 2.0 ** -1022, 2.0 ** 200, 2.0 ** 256]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.floats(), tiny_or_huge, st.floats(-1e4, 1e4)),
                          st.one_of(unit, tiny_or_huge), st.one_of(weights, tiny_or_huge),
                          st.one_of(weights, tiny_or_huge)),
                min_size=fast.MIN_FAST, max_size=30), st.booleans())
def test_property_float64_underflow_edges(points, grad):
    """float64 inputs at the domain's edges: subnormal targets/weights, |x| near 2**256."""
    x, y, w, p = (np.array(c, dtype=np.float64) for c in zip(*points, strict=True))
    x = np.where(np.arange(x.size) % 2 == 1, -x, x)
    assert_same("bce_with_logits", grad, x, y, w, p)


# --------------------------------------------------------------------------- the detector


def hard_cases() -> tuple[np.ndarray, dict[str, float]]:
    """Logits whose loss (y = 1) is a tie of the format plus a tail far below 2**-600:
    V = |x| + softplus(-|x|) with |x| a midpoint, so V rounds UP, a float64 estimate
    sees the tie and would round to even (down)."""
    x = -np.array([2049.0, 2.0 ** 24 + 1, 2.0 ** 8 + 1, 4097.0, 2.0 ** 25 + 2])
    return x, {"float16": 2050.0, "float32": 16777218.0, "bfloat16": 258.0}


def test_fallback_is_exercised_and_right():
    x, first = hard_cases()
    x = np.resize(x, 64)
    for dt in DTYPES:
        fast.reset_stats()
        got = fast.rounded("bce_with_logits", dt, x, 1.0)
        assert fast.STATS["uncertain"] > 0 and 0 < fast.fallback_share() < 1
        assert_same("bce_with_logits", False, x, 1.0, dtypes=(dt,))
        if dt == "float16":
            assert got[0] == first["float16"]
        if dt == "float32":
            assert got[1] == first["float32"]
        if dt == "bfloat16":
            assert got[2] == first["bfloat16"]


def test_without_the_detector_answers_are_wrong(monkeypatch):
    x, _ = hard_cases()
    x = np.resize(x, 64)
    right = fast.rounded("bce_with_logits", "float32", x, 1.0)
    monkeypatch.setattr(fast_core, "_DISABLED", True)  # the switch fast and _short read
    wrong = fast.rounded("bce_with_logits", "float32", x, 1.0)
    assert not np.array_equal(right, wrong)
    assert wrong[1] == 2.0 ** 24  # the tie rounded to even, the tail ignored


def test_double_double_tier_certifies_soft_labels():
    """y = 0.3: fl(1 - y) x lies within 2**-54 of a float32 tie for many x; the
    double-double tier settles them without mpmath."""
    rng = np.random.default_rng(4)
    x = np.abs(f32_bits(rng, 4000))
    x = x[np.isfinite(x)]
    fast.reset_stats()
    fast.rounded("bce_with_logits", "float32", x, 0.3)
    assert fast.STATS["tier2"] > 20
    assert fast.STATS["uncertain"] <= 2


def test_soft_label_gradients_at_extreme_logits_settle_without_mpmath():
    """1 - y is a float32 tie for half of all y in [1/4, 1/2); at |x| > 415 the tail is
    below every error floor, but its sign is known and D is exact: tier 2 decides. Near
    x = 0, labels in [1/8, 1/4) make 1/2 - y a tie: tier 2's series bracket decides."""
    rng = np.random.default_rng(8)
    y = rng.uniform(0.25, 0.5, 3000).astype(np.float32).astype(np.float64)
    x = np.ldexp(rng.uniform(1, 2, 3000), rng.integers(9, 127, 3000))
    x = np.concatenate([x, -x]).astype(np.float32).astype(np.float64)
    y = np.concatenate([y, y])
    fast.reset_stats()
    got = fast.rounded("bce_with_logits", "float32", x, y, grad=True)
    assert fast.STATS["tier2"] > 500 and fast.STATS["uncertain"] == 0
    want = mp_rounded("bce_with_logits", True, x, y)["float32"]
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
    # near x = 0, V = (1/2 - y) + tanh(x/2)/2: a tie 1/2 - y plus a tiny signed tail
    xs = np.ldexp(rng.uniform(1, 2, 3000), rng.integers(-149, -31, 3000)) * rng.choice(
        [-1.0, 1.0], 3000)
    xs = xs.astype(np.float32).astype(np.float64)
    ys = rng.uniform(0.125, 0.25, 3000).astype(np.float32).astype(np.float64)  # 1/2 - y: ties
    fast.reset_stats()
    got = fast.rounded("bce_with_logits", "float32", xs, ys, grad=True)
    assert fast.STATS["tier2"] > 500 and fast.STATS["uncertain"] == 0
    want = mp_rounded("bce_with_logits", True, xs, ys)["float32"]
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
    # a weight makes D inexact: those ties go to mpmath, still right
    fast.reset_stats()
    got = fast.rounded("bce_with_logits", "float32", x[:200], y[:200], weight=1.5, grad=True)
    assert fast.STATS["uncertain"] > 0
    want = mp_rounded("bce_with_logits", True, x[:200], y[:200], 1.5)["float32"]
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_short_path_certifies_only_what_its_error_bound_allows(dtype):
    """Fault injection for `_round_bits`: around ties, subnormal and overflow thresholds, every
    estimate it certifies must round like every value within the proven error (2**9.2
    float64 ulps, taken as 2**9.3) on both sides; near ties it must certify something."""
    fmt = get_format(dtype)
    rng = np.random.default_rng(9)
    ties = np.abs(boundary_heavy_float64(rng, fmt, 300))
    ties = ties[(ties > 0) & (ties < 2.0 ** 1000)]
    k = np.concatenate([np.arange(-40, 41), rng.integers(-(1 << 14), 1 << 14, 120),
                        (1 << 12) + np.arange(-700, 701, 7)]).astype(np.float64)
    m = (ties[:, None] * (1 + k[None, :] * 2.0 ** -52)).ravel()  # k float64 ulps (roughly)
    m = m[np.isfinite(m)]
    out = np.empty_like(m)
    ok = fast._round_bits(m.copy(), np.ones(m.size, dtype=bool), fmt, out)
    assert ok.any() and not ok.all()
    ulp = np.spacing(m)
    for off in (-(2.0 ** 9.3), 2.0 ** 9.3):
        worst = fast.round_array(np.maximum(m + off * ulp, 0.0), fmt)  # |V| >= 0
        assert np.array_equal(worst[ok].view(np.uint64), out[ok].view(np.uint64))


# --------------------------------------------------------------------------- plumbing


def test_vectorized_rounded_dispatches_and_shapes():
    x = np.linspace(-30, 30, 64, dtype=np.float32).reshape(8, 8)
    y = np.array([0.0, 0.25, 1.0, 0.5, 0.0, 1.0, 0.75, 0.1])
    fast.reset_stats()
    got = vectorized.rounded("bce_with_logits", "bfloat16", x, y, weight=2.0, grad=True)
    assert fast.STATS["points"] == 64 and got.shape == (8, 8)
    want = vectorized._rounded_mpmath("bce_with_logits", "bfloat16", x, y, weight=2.0,
                                      grad=True)
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
    with pytest.raises(ValueError):
        fast.rounded("bce", "float32", x, 0.5, pos_weight=2.0)
    with pytest.raises(ValueError):
        fast.rounded("nope", "float32", x, 0.5)


def test_approx_parts_bound():
    rng = np.random.default_rng(5)
    x = np.concatenate([f32_bits(rng, 300), rng.standard_normal(300) * 8])
    y = rng.choice(np.array([0.0, 1.0, 0.3]), x.size)
    for grad in (False, True):
        hi, lo = fast.approx_parts("bce_with_logits", x, y, grad=grad)
        ehi, elo = vectorized.exact_parts("bce_with_logits", x, y, grad=grad)
        fin = np.isfinite(ehi) & (ehi != 0)
        assert np.array_equal(np.isnan(hi), np.isnan(ehi))
        assert np.array_equal(hi[~fin & ~np.isnan(ehi)], ehi[~fin & ~np.isnan(ehi)])
        err = np.abs((hi[fin] - ehi[fin]) + (lo[fin] - elo[fin]))
        assert np.all(err <= 2.0 ** -40 * np.abs(ehi[fin]))


@pytest.mark.parametrize("rel_tol", [2.0 ** -30, 2.0 ** -50])
@pytest.mark.parametrize("abs_tol", [0.0, 2.0 ** -189])
def test_rounded_and_parts_hard_labels(rel_tol, abs_tol):
    """The short path's parts honour rel_tol and abs_tol (logits beyond 700 are
    only absolutely accurate); below its own bound (2**-43) every point gets mpmath's
    certified parts."""
    rng = np.random.default_rng(7)
    x = np.concatenate([f32_bits(rng, 400), rng.standard_normal(400) * 8])
    x = x[np.isfinite(x)]
    y = rng.integers(0, 2, x.size).astype(np.float64)
    for grad in (False, True):
        got, (hi, lo) = fast.rounded_and_parts("bce_with_logits", "float32", x, y, grad=grad,
                                               rel_tol=rel_tol, abs_tol=abs_tol)
        assert np.array_equal(got.view(np.uint64), fast.rounded(
            "bce_with_logits", "float32", x, y, grad=grad).view(np.uint64))
        ehi, elo = vectorized.exact_parts("bce_with_logits", x, y, grad=grad)
        err = np.abs((hi - ehi) + (lo - elo))
        assert np.all(err <= rel_tol / 2 * np.abs(ehi) + abs_tol)
        if rel_tol < 2 * fast.SHORT_REL:
            assert np.array_equal(hi, ehi) and np.array_equal(lo, elo)


def test_probability_edges_and_specials():
    """q in {0, 1}, NaN, out-of-range q, zero weights: exact rules without mpmath."""
    q = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, np.nan, -0.5, 1.5, 0.25, 0.5, np.inf] * 2)
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.3, 0.3, 0.5, 0.5, 0.5, 0.25, 0.5, 0.0] * 2)
    for w in (1.5, 0.1, 0.0, np.array([1.0, 3.0, 0.0, 7.0] * 6)):
        for grad in (False, True):
            fast.reset_stats()
            assert_same("bce", grad, q, y, w)
            assert fast.STATS["domain"] == 0
