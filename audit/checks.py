"""Audit checks: deterministic point sets per (subject, check, dtype, device, reduction),
evaluated in one framework call per batch, graded against the reference, summarized
into a DESIGN.md section 8 record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import reference
from audit import regions
from audit.grading import Graded, grade
from audit.subjects import Subject
from reference.vectorized import double_double

# check name -> (quantity, needs weights, reductions it runs under)
CHECKS: dict[str, tuple[str, bool]] = {
    "values": ("loss", False),
    "grads": ("grad", False),
    "weighted": ("loss", True),
    "weighted_grads": ("grad", True),
    "reduced": ("loss", False),
}
PAD = 64  # batches are padded to a multiple of this so every point takes the vector path
REDUCED_BATCHES = 96
REDUCED_SIZE = 7


@dataclass(frozen=True)
class Case:
    """One audit test: a subject's check in one dtype, device and reduction."""

    subject: str
    check: str
    dtype: str
    device: str
    reduction: str = "none"

    @property
    def quantity(self) -> str:
        return CHECKS[self.check][0]

    @property
    def id(self) -> str:
        red = "" if self.reduction == "none" else f" reduction={self.reduction}"
        return f"{self.subject}[{self.dtype}-{self.device}] {self.check}{red}"


@dataclass
class Outcome:
    """Everything measured for one case (nothing is dropped, even on failure)."""

    case: Case
    points: dict[str, np.ndarray]
    observed: np.ndarray
    expected: np.ndarray
    exact: tuple[np.ndarray, np.ndarray]
    graded: Graded
    errors: dict[int, str] = field(default_factory=dict)
    mode: str = "grid"
    op: str = "bce_with_logits"


def point_set(subject: Subject, check: str, dtype: str) -> tuple[dict[str, np.ndarray], str]:
    """The fixed inputs of a check, as float64 arrays exact in the dtype, and the mode.

    16-bit dtypes are exhaustive: every input value of the dtype (every probability in
    [0, 1] for bce) with hard targets, plus the grid with soft targets.
    """
    logits = subject.reference_op == "bce_with_logits"
    inputs = regions.logit_grid(dtype) if logits else regions.probability_grid(dtype)
    soft = regions.soft_targets(dtype)
    if CHECKS[check][1]:
        inputs = inputs[:: max(1, inputs.size // 80)]
        w = regions.weight_grid(dtype) if subject.weight else np.array([1.0])
        p = regions.weight_grid(dtype) if subject.pos_weight and logits else np.array([1.0])
        x, y, w, p = regions.cross(inputs, np.array([0.0, 0.5, 1.0]), w, p)
        return {"x": x, "y": y, "w": w, "p": p}, "grid"
    mode = "grid"
    if regions.exhaustive_ok(dtype):
        every = regions.all_values(dtype)
        every = every[~np.isnan(every)]
        if not logits:
            every = every[(every >= 0) & (every <= 1)]
        x1, y1 = regions.cross(every, regions.hard_targets())
        x2, y2 = regions.cross(inputs, soft)
        x, y = np.concatenate([x1, x2]), np.concatenate([y1, y2])
        mode = "exhaustive"
    else:
        x, y = regions.cross(inputs, np.concatenate([regions.hard_targets(), soft]))
    return {"x": x, "y": y, "w": np.ones_like(x), "p": np.ones_like(x)}, mode


def _padded(a: np.ndarray) -> np.ndarray:
    extra = (-a.size) % PAD
    return np.concatenate([a, np.repeat(a[:1], extra)]) if extra else a


def run_framework(subject: Subject, case: Case, pts: dict[str, np.ndarray],
                  reduction: str = "none") -> tuple[np.ndarray, dict[int, str]]:
    """Observed values; a batch that raises is split until the raising points are
    isolated (torch's BCELoss rejects a whole batch for one bad point)."""
    n = pts["x"].size
    errors: dict[int, str] = {}
    use_w = CHECKS[case.check][1] and subject.weight
    use_p = CHECKS[case.check][1] and subject.pos_weight

    def run(x: np.ndarray, y: np.ndarray, w: np.ndarray, p: np.ndarray) -> np.ndarray:
        kw = {"weight": _padded(w) if use_w else None, "pos_weight": _padded(p) if use_p else None}
        out = subject.evaluate(case.dtype, case.device, _padded(x), _padded(y),
                               reduction=reduction, grad=case.quantity == "grad", **kw)
        return np.asarray(out, dtype=np.float64)[: x.size]

    try:  # the whole batch in one call: no index copies on the common path
        return run(pts["x"], pts["y"], pts["w"], pts["p"]), errors
    except Exception:
        # bisect with an explicit stack: a recursive closure would be a reference cycle
        # keeping every batch's arrays alive until the cyclic GC happens to run
        observed = np.full(n, np.nan)
        stack = [np.arange(n)]
        while stack:
            idx = stack.pop()
            try:
                observed[idx] = run(*(pts[k][idx] for k in ("x", "y", "w", "p")))
            except Exception as e:  # a framework error is a finding, never a crash
                if idx.size == 1:
                    errors[int(idx[0])] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                else:
                    stack += [idx[idx.size // 2:], idx[: idx.size // 2]]
    return observed, errors


def reference_values(op: str, dtype: str, pts: dict[str, np.ndarray], grad: bool
                     ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(expected, (hi, lo)): the correctly rounded value in the dtype, and the exact value
    as precise as the dtype's ulp measure needs: fast parts within 2**-31 relative for
    float32 and narrower (the measured ulp error is then off by at most 2**-8 ulp of
    float32), the certified double-double for float64. Statuses never depend on the
    parts: they come from the correctly rounded `expected`."""
    args = (pts["x"], pts["y"])
    kw = {"weight": pts["w"], "pos_weight": pts["p"], "grad": grad}
    if dtype == "float64":
        return reference.rounded(op, dtype, *args, **kw), reference.exact_parts(op, *args, **kw)
    from reference.fast import rounded_and_parts
    from reference.formats import get_format

    tol = math.ldexp(1.0, get_format(dtype).quantum_exp - 40)  # 2**-40 subnormal ulps
    return rounded_and_parts(op, dtype, *args, abs_tol=tol, rel_tol=2.0 ** -30, **kw)


def run_case(subject: Subject, case: Case, budget: float) -> Outcome:
    """Evaluate and grade one elementwise case (reduction "none")."""
    pts, mode = point_set(subject, case.check, case.dtype)
    observed, errors = run_framework(subject, case, pts)
    expected, parts = reference_values(subject.reference_op, case.dtype, pts,
                                       case.quantity == "grad")
    graded = grade(observed, expected, *parts, case.dtype, budget)
    for i in errors:
        graded.set_error(i)
    return Outcome(case, pts, observed, expected, parts, graded, errors, mode,
                   subject.reference_op)


def run_reduced_case(subject: Subject, case: Case, budget: float) -> Outcome:
    """Reductions: fixed random batches of grid points, each graded as one value."""
    pts, _ = point_set(subject, "values", case.dtype)
    rng = np.random.default_rng(20261123)
    n = pts["x"].size
    picks = [rng.choice(n, REDUCED_SIZE, replace=False) for _ in range(REDUCED_BATCHES)]
    observed = np.full(REDUCED_BATCHES, np.nan)
    errors: dict[int, str] = {}
    expected = np.empty(REDUCED_BATCHES)
    hi, lo = np.empty(REDUCED_BATCHES), np.empty(REDUCED_BATCHES)
    red = "mean" if case.reduction == "keras_default" else case.reduction
    for b, idx in enumerate(picks):
        try:
            out = subject.evaluate(case.dtype, case.device, pts["x"][idx], pts["y"][idx],
                                   reduction=case.reduction)
            observed[b] = float(np.asarray(out))
        except Exception as e:
            errors[b] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        exact = reference.reduce(subject.reference_op, red, pts["x"][idx], pts["y"][idx])
        expected[b] = reference.round_to(exact, case.dtype)
        hi[b], lo[b] = double_double(exact._mpf_)
    graded = grade(observed, expected, hi, lo, case.dtype, budget)
    for i in errors:
        graded.set_error(i)
    # a batch is reported by its first point; the record keeps every member
    batch_pts = {k: np.array([v[idx[0]] for idx in picks]) for k, v in pts.items()}
    batch_pts["members"] = np.array([",".join(repr(float(v)) for v in pts["x"][idx])
                                     for idx in picks], dtype=object)
    batch_pts["member_targets"] = np.array([",".join(repr(float(v)) for v in pts["y"][idx])
                                            for idx in picks], dtype=object)
    return Outcome(case, batch_pts, observed, expected, (hi, lo), graded, errors, "sampled",
                   subject.reference_op)


def worst_index(graded: Graded) -> int:
    """The worst point: most severe status first, then largest ulp error."""
    ulp = np.where(np.isnan(graded.ulp), np.inf, graded.ulp)
    order = np.lexsort((-ulp, graded.code))
    return int(order[0])
