"""Hypothesis strategies for extreme BCE inputs, per dtype, as shrinkable data.

Values are drawn as bit patterns of the dtype, so every binade is equally likely and
subnormals, +-max and +-inf are reached (generic float strategies cap magnitudes or drop
subnormals). On top, weight goes to the dtype's danger zones, derived from the format
(audit.regions.thresholds), never hard-coded.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from audit.batch import Batch
from audit.dtypes import numpy_dtype, to_float64
from audit.regions import representable, thresholds
from reference.formats import get_format

_UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


@st.composite
def bit_pattern_value(draw: st.DrawFn, dtype: str, finite: bool = False) -> float:
    """Any value of the dtype, uniform over its bit patterns (NaN excluded)."""
    fmt = get_format(dtype)
    while True:
        bits = draw(st.integers(0, (1 << fmt.width) - 1))
        v = float(to_float64(np.array([bits], dtype=_UINT[fmt.width]).view(numpy_dtype(dtype)))[0])
        if not math.isnan(v) and (not finite or math.isfinite(v)):
            return v


def danger_logits(dtype: str) -> list[float]:
    """Logits at and around each threshold where the dtype's exp/log1p/sigmoid break."""
    t = thresholds(dtype)
    fmt = get_format(dtype)
    centres = [t.exp_overflow, t.exp_normal_underflow, t.exp_underflow, t.softplus_absorbed,
               t.sigmoid_saturates]
    pts = [c + d for c in centres for d in (-1.0, -0.25, 0.0, 0.25, 1.0)]
    pts += [1e10, 3e38, fmt.max_finite, math.inf, 0.0, math.ldexp(1.0, fmt.quantum_exp)]
    vals = representable(pts, dtype)
    return sorted({*vals.tolist(), *(-vals).tolist()})


def logits(dtype: str) -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(danger_logits(dtype)), bit_pattern_value(dtype),
                     st.floats(-40, 40, width=32).map(lambda v: float(
                         representable([v], dtype)[0])))


def probabilities(dtype: str) -> st.SearchStrategy[float]:
    """q in [0, 1]: exact 0 and 1, a few ulps from each end, bit patterns below 1."""
    fmt = get_format(dtype)
    near = [0.0, 1.0, math.ldexp(1.0, fmt.quantum_exp)] + \
        [1 - k * math.ldexp(1.0, -fmt.precision) for k in (1, 2, 3)]
    below_one = bit_pattern_value(dtype, finite=True).map(abs).filter(lambda v: v <= 1.0)
    return st.one_of(st.sampled_from(representable(near, dtype).tolist()), below_one,
                     st.floats(0, 1).map(lambda v: float(representable([v], dtype)[0])))


def targets(dtype: str) -> st.SearchStrategy[float]:
    """0, 1, soft labels a few ulps from 0 and 1, and uniform in [0, 1]."""
    fmt = get_format(dtype)
    eps = math.ldexp(1.0, -fmt.precision)
    soft = representable([eps, 2 * eps, 1 - eps, 1 - 2 * eps, 2.0 ** -30,
                          math.ldexp(1.0, fmt.quantum_exp)], dtype).tolist()
    return st.one_of(st.sampled_from([0.0, 1.0]), st.sampled_from(soft),
                     st.floats(0, 1).map(lambda v: float(representable([v], dtype)[0])))


def weights(dtype: str) -> st.SearchStrategy[float]:
    fmt = get_format(dtype)
    special = representable([0.0, math.ldexp(1.0, fmt.quantum_exp), 1.0, 3.0,
                             fmt.max_finite, math.inf], dtype).tolist()
    return st.sampled_from(special)


INPUTS = {"logit": logits, "probability": probabilities}  # by families' input_kind


@st.composite
def batches(draw: st.DrawFn, dtype: str, input_kind: str, size: int = 37) -> Batch:
    """A batch of odd size (vector kernels take their tail path too)."""
    n = draw(st.integers(1, size))
    xs = draw(st.lists(INPUTS[input_kind](dtype), min_size=n, max_size=n))
    ys = draw(st.lists(targets(dtype), min_size=n, max_size=n))
    return Batch.of(xs, ys)


@st.composite
def any_batches(draw: st.DrawFn, input_kind: str, size: int = 37) -> Batch:
    """A batch drawn in some dtype's terms; the test rounds it to the dtype under test.

    Keeping the argument dtype-agnostic lets `@example` pin the golden batches while one
    test function serves every dtype.
    """
    source = draw(st.sampled_from(["float16", "bfloat16", "float32", "float64"]))
    return draw(batches(source, input_kind, size))


def round_batch(batch: Batch, dtype: str) -> Batch:
    """Each value rounded exactly once to the dtype (what a user's tensor would hold)."""
    from reference import round_to

    def rounded(a: np.ndarray) -> np.ndarray:
        return np.array([round_to(float(v), dtype) for v in np.ravel(a)]).reshape(a.shape)

    return Batch(rounded(batch.input), rounded(batch.target), rounded(batch.weight),
                 rounded(batch.pos_weight))
