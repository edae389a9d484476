"""The fixed rows of the cross_entropy_probs family (reference/softmax_probs.py): rows of K
class probabilities, the input a categorical cross-entropy takes with from_logits=False.

Pattern data only: softmax_family.prob_row_set / row_blocks round them to the dtype and
make the blocks (Block.logits holds the input row: here probabilities; the row
machinery, workers and records are the same). Patterns, each rounded to the dtype (a
rounded row seldom sums to 1: graded against the exact P):
- softmax of the logit patterns of softmax_family (dominant, equal, spread, normal, masked
  rows; the finite ones), computed in float64: what a softmax layer hands the loss;
- one-hot rows, rows with exact zeros (masked classes), rows not summing to 1 (0.5, 2,
  counts 1..K), probabilities near the dtype's smallest normal and its subnormals, at
  and around keras' epsilon 1e-7, 1 - ulp beside ulp, 1 - 1e-7;
- outside the domain: a NaN, a +inf, a negative probability, an all-zero row.
Targets: class indices (softmax_family._labels: every class for K <= 3, else the first
two, the most and least probable and the last) or class probabilities (`targets`:
uniform, one-hot, two-hot, nearly one-hot, Dirichlet, the row itself, and on rows with
zeros mass on / off the zeros). The `ci` profile takes fewer rows for K = 1000 (CI_BIG,
CI_TARGETS) and the dtypes of CI_DTYPES.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from reference.formats import get_format

CLASS_COUNTS = (2, 3, 10, 1000)
CHECKS = ("values", "grads", "soft", "soft_grads")
KERAS_EPSILON = 1e-7  # keras.config.epsilon(), the clip of from_logits=False
# the `ci` profile: (check -> dtypes); everything runs under `audit`
CI_DTYPES = {"values": ("float16", "bfloat16", "float32", "float64"),
             "grads": ("float16", "float32"), "soft": ("float16", "float32"),
             "soft_grads": ("float32",)}
CI_BIG = ("softmax equal 0", "one-hot", "masked half", "tiny", "1 - ulp", "counts")  # prefixes
CI_TARGETS = ("uniform", "itself", "mass on zeros")  # the K = 1000 targets the ci profile takes


def in_ci(check: str, dtype: str) -> bool:
    return dtype in CI_DTYPES[check]


def softmax(logits: np.ndarray) -> np.ndarray | None:
    """float64 softmax of a row, None where it is not a distribution (NaN, +inf, all -inf)."""
    if np.isnan(logits).any() or np.isposinf(logits).any() or np.isneginf(logits).all():
        return None
    with np.errstate(under="ignore"):
        e = np.exp(logits - logits.max())
    return e / e.sum()


def patterns(k: int, dtype: str, logit_patterns: list[tuple[str, np.ndarray]],
             representable: Callable[[np.ndarray, str], np.ndarray]
             ) -> list[tuple[str, np.ndarray]]:
    """(name, probabilities) before rounding to the dtype; logit_patterns are
    softmax_family's rows of K logits (their softmax is taken after rounding them)."""
    fmt = get_format(dtype)
    tiny = math.ldexp(1.0, fmt.quantum_exp)  # the smallest subnormal
    normal = math.ldexp(1.0, fmt.emin)
    ulp = math.ldexp(1.0, -fmt.precision)  # 1 - ulp: the largest number below 1
    rng = np.random.default_rng(2000 + k)
    rows = []
    for name, logits in logit_patterns:
        p = softmax(representable(logits, dtype))
        if p is not None:
            rows.append((f"softmax {name}", p))

    def first(v: float, rest: float = 0.0, second: float | None = None) -> np.ndarray:
        row = np.full(k, rest)
        row[0] = v
        if second is not None:
            row[1] = second
        return row

    rows.append(("one-hot", first(1.0)))
    half = rng.dirichlet(np.ones(k))
    half[1::2] = 0.0
    rows.append(("masked half", half / half.sum()))
    rows.append(("sum 0.5", rng.dirichlet(np.ones(k)) * 0.5))
    rows.append(("sum 2", rng.dirichlet(np.ones(k)) * 2.0))
    rows.append(("counts", np.arange(1.0, k + 1)))
    rows.append(("tiny", first(1.0, tiny, normal)))
    rows.append(("min normal", first(1.0 - (k - 1) * normal, normal)))
    rows.append(("subnormal", first(1.0, 0.0, 4 * tiny)))
    rows.append(("1 - ulp", first(1.0 - ulp, 0.0, ulp)))
    for v in (KERAS_EPSILON / 10, KERAS_EPSILON, 2 * KERAS_EPSILON, 1e-4):
        rows.append((f"at {v:g}", first(1.0 - v, (v / (k - 1)) if k > 2 else 0.0, v)))
    rows.append(("1 - 1e-7", first(1.0 - KERAS_EPSILON, 0.0, KERAS_EPSILON)))
    rows.append(("nan", first(math.nan, 1.0 / k)))
    rows.append(("+inf", first(math.inf, 1.0 / k)))
    rows.append(("negative", first(-0.25, 1.25 / (k - 1))))
    rows.append(("all zero", np.zeros(k)))
    return rows


def targets(k: int, row: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Class probabilities for one input row."""
    rng = np.random.default_rng(11 + k)
    hot = np.zeros(k)
    hot[0] = 1.0
    two = np.zeros(k)
    two[:2] = 0.5
    near = np.zeros(k)
    near[0], near[1] = 1.0 - 2.0**-10, 2.0**-10
    out = [("uniform", np.full(k, 1.0 / k)), ("one-hot 0", hot), ("two-hot", two),
           ("nearly one-hot", near), ("dirichlet", rng.dirichlet(np.ones(k)))]
    with np.errstate(invalid="ignore"):
        if np.all(row >= 0) and row.sum() > 0 and np.isfinite(row).all():
            out.append(("itself", row / row.sum()))
        zero = row == 0
    if zero.any() and not zero.all():
        off = np.where(zero, 0.0, 1.0)
        out.append(("no mass on zeros", off / off.sum()))
        out.append(("mass on zeros", zero / zero.sum()))
    return out
