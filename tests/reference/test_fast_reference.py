"""reference.fast must agree bit for bit with the pure mpmath reference.

The oracle here is `losses.value` + `formats.round_to` called directly: no fast path,
no lru_cache. Exhaustive over float16 and bfloat16 inputs, a random float32 sample,
Hypothesis properties, constructed near-tie points that only mpmath can decide, and a
proof that the uncertainty detector matters (switching it off gives wrong answers).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from unittest import mock

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import bce_fast, fast, fast_core, fast_numba, losses, vectorized
from reference.formats import get_format, round_to

DTYPES = ("float16", "bfloat16", "float32")


@contextlib.contextmanager
def route(name: str) -> Iterator[None]:
    """Run reference.fast on one route: "numba" (the fused kernels, the default where
    numba is installed) or "numpy" (the reference implementation: BCE_AUDIT_NO_NUMBA=1)."""
    off = {"numba": "0", "numpy": "1"}[name]
    with mock.patch.dict(os.environ, {fast_numba.ENV_OFF: off}):
        yield


# every comparison with mpmath checks both routes (the numba one only where it runs here)
ROUTES = ("numba", "numpy") if fast_numba.enabled() else ("numpy",)


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
        for r in ROUTES:
            with route(r):
                got = fast.rounded(op, dt, x, y, weight=w, pos_weight=p, grad=grad).ravel()
            bad = np.flatnonzero(got.view(np.uint64) != want[dt].view(np.uint64))
            assert bad.size == 0, (
                f"{op} grad={grad} {dt} {r} route: {bad.size} disagreements, first "
                f"x={np.ravel(x)[bad[0]]!r} fast={got[bad[0]]!r} mpmath={want[dt][bad[0]]!r}")


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


# --------------------------------------------------------------------------- numba route

needs_numba = pytest.mark.skipif(not fast_numba.enabled(),
                                 reason="numba not installed (the numpy route is tested)")


def mixed_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """n points for bce_with_logits in every region both routes distinguish: float32 bit
    patterns and moderate logits, hard, soft and ±0.5-tie labels, weights that are 1,
    random, tiny, huge or 0, a few points outside the fast domain (NaN, inf, negative
    weights, labels above 1) and a few float64 logits past 2**256."""
    x = np.concatenate([f32_bits(rng, n // 2), (rng.standard_normal(n // 2) * 30)])
    x = x.astype(np.float32).astype(np.float64)
    x[rng.integers(0, n, n // 5000)] = rng.choice([2.0 ** 300, -(2.0 ** 300)], n // 5000)
    y = rng.choice(np.array([0.0, 1.0, 0.5, 0.25, 0.3]), n)
    soft = rng.random(n) < 0.5
    y[soft] = rng.random(int(soft.sum())).astype(np.float32)
    w = rng.choice(np.array([1.0, 1.5, 2.0 ** -130, 1e30, 0.0]), n, p=[0.6, 0.1, 0.1, 0.1, 0.1])
    p = rng.choice(np.array([1.0, 3.0, 0.0, 2.0 ** 150]), n, p=[0.7, 0.1, 0.1, 0.1])
    odd = rng.integers(0, n, n // 2000)  # outside the domain: mpmath decides these
    w[odd[: odd.size // 2]] = -1.0
    y[odd[odd.size // 2:]] = 1.5
    y[rng.integers(0, n, n // 1000)] = np.nan
    return x, y, w, p


@needs_numba
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
def test_numba_route_equals_numpy_route(grad):
    """The fused kernels (short route, general interval, tier 2) against the numpy
    reference implementation: 600k points, each with hard labels and unit weights (the
    short route's batches), soft labels and unit weights (the general interval and tier
    2), arrays of weights and pos_weights, arrays of ones with a few other values, and a
    scalar weight with an array of pos_weights, in every dtype: identical bits (9M
    results per quantity)."""
    rng = np.random.default_rng(11)
    x, y, w, p = mixed_points(rng, 600_000)
    hard = rng.integers(0, 2, x.size).astype(np.float64)
    ones = np.ones(x.size)  # arrays of ones: the kernels find the unit chunks themselves
    some = ones.copy()
    some[::70_000] = 2.0
    for dt in DTYPES:
        for args in ((x, hard, 1.0, 1.0), (x, y, 1.0, 1.0), (x, y, w, p),
                     (x, hard, ones, some), (x, y, 1.0, p)):
            got = {}
            for r in ("numba", "numpy"):
                with route(r):
                    fast.reset_stats()
                    got[r] = fast.rounded("bce_with_logits", dt, args[0], args[1],
                                          weight=args[2], pos_weight=args[3], grad=grad)
                    assert fast.STATS["points"] == x.size
            bad = np.flatnonzero(got["numba"].view(np.uint64) != got["numpy"].view(np.uint64))
            assert bad.size == 0, (dt, [tuple(np.broadcast_to(a, x.shape)[bad[0]]
                                              for a in args)], got["numba"][bad[0]],
                                   got["numpy"][bad[0]])


@needs_numba
@pytest.mark.parametrize("grad", [False, True], ids=["loss", "grad"])
def test_numba_parts_meet_the_contract(grad):
    """rounded_and_parts on the numba route: the same rounding as the numpy route, and
    parts within rel_tol/2 |V| + abs_tol of the exact value (both routes meet that bound,
    so they are within twice it of each other; the exact parts are checked on a sample)."""
    rng = np.random.default_rng(12)
    x, y, w, p = mixed_points(rng, 400_000)
    kw = {"grad": grad, "abs_tol": 2.0 ** -189, "rel_tol": 2.0 ** -30}
    for args in ((x, rng.integers(0, 2, x.size).astype(np.float64), 1.0, 1.0), (x, y, w, p)):
        res = {}
        for r in ("numba", "numpy"):
            with route(r):
                res[r] = fast.rounded_and_parts("bce_with_logits", "float32", args[0],
                                                args[1], weight=args[2], pos_weight=args[3],
                                                **kw)
        (a, (ha, la)), (b, (hb, lb)) = res["numba"], res["numpy"]
        assert np.array_equal(a.view(np.uint64), b.view(np.uint64))
        assert np.array_equal(np.isnan(ha), np.isnan(hb))
        fin = np.isfinite(hb)
        assert np.array_equal(ha[~fin & ~np.isnan(hb)], hb[~fin & ~np.isnan(hb)])
        diff = np.abs((ha[fin] - hb[fin]) + (la[fin] - lb[fin]))
        assert np.all(diff <= kw["rel_tol"] * np.abs(hb[fin]) + 2 * kw["abs_tol"])
        i = rng.choice(x.size, 300, replace=False)
        sel = [np.broadcast_to(v, x.shape)[i] for v in args]
        eh, el = vectorized.exact_parts("bce_with_logits", sel[0], sel[1], weight=sel[2],
                                        pos_weight=sel[3], grad=grad)
        fe = np.isfinite(eh)
        err = np.abs((ha[i][fe] - eh[fe]) + (la[i][fe] - el[fe]))
        assert np.all(err <= kw["rel_tol"] / 2 * np.abs(eh[fe]) + kw["abs_tol"])


@needs_numba
def test_numba_grading_equals_numpy_grading():
    """audit.grading.grade's fused kernel against its numpy implementation, every output
    bit for bit: observed values near, on and far from the expected ones, NaN, ±inf, ±0,
    wrong signs, subnormals, values outside the dtype (numpy's cast decides those)."""
    from audit.grading import grade

    rng = np.random.default_rng(13)
    n = 1_000_000
    for dt in DTYPES:
        fmt = get_format(dt)
        exact = np.concatenate([f32_bits(rng, n // 2), rng.standard_normal(n // 2)])
        exact[rng.integers(0, n, n // 100)] = 0.0
        expected = fast.round_array(np.where(np.isfinite(exact), exact, 1.0), fmt)
        hi = exact.copy()
        lo = np.ldexp(rng.standard_normal(n), -60) * np.abs(np.nan_to_num(hi))
        obs = expected.copy()
        k = rng.integers(0, n, (7, n // 20))
        obs[k[0]] = fast.round_array(obs[k[0]] * (1 + rng.normal(0, 1e-3, k.shape[1])), fmt)
        obs[k[1]] = np.nan
        obs[k[2]] = rng.choice([np.inf, -np.inf], k.shape[1])
        obs[k[3]] = rng.choice([0.0, -0.0], k.shape[1])
        obs[k[4]] *= -1
        obs[k[5]] = fast.round_array(np.ldexp(rng.random(k.shape[1]), fmt.emin), fmt)
        obs[k[6][:100]] = 1.0 + 2.0 ** -40  # not a member of any of these dtypes
        expected[rng.integers(0, n, 1000)] = np.nan
        expected[rng.integers(0, n, 1000)] = np.inf
        for budget in (1.0, 4.0):
            got = {}
            for r in ("numba", "numpy"):
                with route(r):
                    got[r] = grade(obs, expected, hi, lo, dt, budget)
            for field in ("code", "ulp", "ordinal"):
                a, b = getattr(got["numba"], field), getattr(got["numpy"], field)
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), (dt, field)
            assert len(set(got["numba"].code.tolist())) >= 6


@needs_numba
def test_numba_math_functions_within_their_proven_bounds():
    """exp_neg and log1p_unit (fast_numba's own, branch-free) against mpmath at the ends
    of their reduced ranges, where the truncation and rounding bounds are reached, and the
    constants the proof relies on."""
    from mpmath import mp, mpf

    assert (fast_numba.XMAX, fast_numba.BIG) == (bce_fast.XMAX, bce_fast.BIG)
    hi_bits = np.float64(fast_numba.LN2_HI).view(np.uint64)
    assert int(hi_bits) & ((1 << 21) - 1) == 0  # 32 significant bits: k LN2_HI exact
    with mp.workprec(200):
        assert abs(mpf(fast_numba.LN2_HI) + mpf(fast_numba.LN2_LO) - mp.log(2)) < mpf(2) ** -86
    half = math.log(2) / 2
    k = np.arange(0, 1011, dtype=np.float64)
    t = np.concatenate([k * math.log(2) + half * (1 - 1e-9), k * math.log(2) - half * (1 - 1e-9),
                        np.random.default_rng(14).uniform(0, 700, 4000), [0.0, 700.0]])
    t = t[(t >= 0) & (t <= 700)]
    e = np.concatenate([[0.0, 1.0, 2.0 ** -1011, 1 - 2.0 ** -53],
                        np.random.default_rng(15).uniform(0.9, 1, 2000),
                        np.ldexp(1.0, -np.arange(0, 1012))])
    ge, gl = np.empty_like(t), np.empty_like(e)
    fast_numba._math_kernel(t, e, ge, gl)
    bound = mpf(2) ** mpf(-50.5)
    with mp.workprec(120):
        for g, z in zip(ge.tolist(), t.tolist(), strict=True):
            want = mp.exp(-mpf(z))
            assert abs(mpf(g) - want) <= bound * want, z
        for g, z in zip(gl.tolist(), e.tolist(), strict=True):
            want = mp.log1p(mpf(z))
            assert abs(mpf(g) - want) <= bound * want, z
    assert fast_numba.math_ok()


@needs_numba
def test_numba_route_switches_off(monkeypatch):
    """BCE_AUDIT_NO_NUMBA=1, a failed self-check of the compiled math, or the detector
    switched off: the numpy route, with the same answers."""
    x = np.linspace(-50, 50, 4096)
    path = fast.get_family("bce_with_logits").fast
    want = fast.rounded("bce_with_logits", "float32", x, 1.0)
    assert fast._numba_route(path)
    assert not fast._numba_route(fast.get_family("bce").fast)  # bce has no kernels here
    with route("numpy"):
        assert not fast._numba_route(path)
    monkeypatch.setattr(fast_numba, "math_ok", lambda: False)
    assert not fast._numba_route(path)

    def refuse(*a, **k):
        raise AssertionError("the numba route ran")

    monkeypatch.setattr(fast_numba, "logits", refuse)
    got = fast.rounded("bce_with_logits", "float32", x, 1.0)
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
    monkeypatch.undo()
    monkeypatch.setattr(fast_core, "_DISABLED", True)
    assert not fast._numba_route(path)
    monkeypatch.undo()
    try:  # one thread per launch (processes that run one per core): the same answers
        fast_numba.configure(threads=1)
        got = fast.rounded("bce_with_logits", "float32", x, 1.0)
    finally:
        fast_numba.configure(threads=None)
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
