"""Audit checks: deterministic point sets per (subject, check, dtype, device, reduction),
evaluated in one framework call per batch, graded against the reference, summarized
into a DESIGN.md section 8 record.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import reference
from audit import regions, workers
from audit.batch import Batch
from audit.dtypes import DTYPES, ulp_budget
from audit.families import LABEL_SMOOTHING, param_groups
from audit.grading import Graded, grade
from audit.subjects import Subject
from reference.families import get_family
from reference.formats import round_to
from reference.vectorized import double_double

# check name -> (quantity, needs weights)
CHECKS: dict[str, tuple[str, bool]] = {
    "values": ("loss", False),
    "grads": ("grad", False),
    "weighted": ("loss", True),
    "weighted_grads": ("grad", True),
    "reduced": ("loss", False),
    # subjects that take label smoothing: the grid with targets smoothed by E (Case)
    "smoothed": ("loss", False),
    "smoothed_grads": ("grad", False),
    # DESIGN.md section 10: inputs outside the family's domain (targets outside [0, 1],
    # probabilities outside [0, 1], negative and NaN weights), graded against the exact
    # formula; a framework that rejects them gets `error` with its message
    "validation": ("loss", True),
}
INVALID_TARGETS = (-0.5, 1.5, math.inf, -math.inf, math.nan)
INVALID_PROBABILITIES = (-0.5, 1.5, math.inf, -math.inf, math.nan)
INVALID_WEIGHTS = (-1.0, math.nan)
SMOOTHED_CHECKS = ("smoothed", "smoothed_grads")
# compiled and autocast executions run these, in these dtypes (all under the audit profile)
EXECUTION_CHECKS = ("values", "grads", "validation")
EXECUTION_DTYPES = ("float32", "bfloat16")
PAD = 64  # batches are padded to a multiple of this so every point takes the vector path
REDUCED_BATCHES = 96
REDUCED_SIZE = 7
CRASH_FANOUT = 16  # a crash costs a new worker: split crashing batches 16 ways, not 2


@dataclass(frozen=True)
class Case:
    """One audit test: a subject's check in one dtype, device and reduction."""

    subject: str
    check: str
    dtype: str
    device: str
    reduction: str = "none"
    label_smoothing: float = 0.0  # E of the smoothed checks, as given (rounded per dtype)
    execution: str = "eager"  # runners.EXECUTIONS

    @property
    def quantity(self) -> str:
        return CHECKS[self.check][0]

    @property
    def id(self) -> str:
        red = "" if self.reduction == "none" else f" reduction={self.reduction}"
        ls = f" label_smoothing={self.label_smoothing:g}" if self.label_smoothing else ""
        ex = "" if self.execution == "eager" else f" execution={self.execution}"
        return f"{self.subject}[{self.dtype}-{self.device}] {self.check}{red}{ls}{ex}"


@dataclass
class Outcome:
    """Everything measured for one case (nothing is dropped, even on failure)."""

    case: Case
    points: Batch
    observed: np.ndarray
    expected: np.ndarray
    exact: tuple[np.ndarray, np.ndarray]
    graded: Graded
    errors: dict[int, str] = field(default_factory=dict)
    mode: str = "grid"
    op: str = "bce_with_logits"
    crashes: frozenset[int] = frozenset()
    members: tuple[np.ndarray, np.ndarray] | None = None  # reductions: each batch's points
    dtype: str = ""  # the dtype graded in (autocast: what the framework returned)


def point_set(subject: Subject, check: str, dtype: str, label_smoothing: float = 0.0
              ) -> tuple[Batch, str]:
    """The fixed inputs of a check, as float64 arrays exact in the dtype, and the mode.

    16-bit dtypes are exhaustive: every input value of the dtype in the family's domain
    with hard targets, plus the family's grid with soft targets. The smoothed checks
    take the grid (and the classic traps) at the family's default setting, with the
    smoothing E rounded to the dtype in every point's extras: the framework gets that E,
    the reference grades against the exact y*(1-E) + E/2 (certified point by point).
    """
    family = subject.family_record
    inputs = family.grid(dtype)[:: family.input_stride]
    soft = regions.soft_targets(dtype)
    if check == "validation":
        return validation_points(subject, dtype), "grid"
    if check in SMOOTHED_CHECKS:
        inputs = np.union1d(inputs[:: max(1, 2 * inputs.size // 400)],
                            family.special_inputs(dtype))
        x, y = regions.cross(inputs, np.array([0.0, 0.5, 1.0, *soft[::3]]))
        extra = {k: np.full(x.size, np.nan if v is None else float(v))
                 for k, v in family.default.items()}
        extra[LABEL_SMOOTHING] = np.full(x.size, round_to(label_smoothing, dtype))
        return Batch(x, y, np.ones_like(x), np.ones_like(x), extra), "grid"
    if family.params:  # one grid per parameter setting; NaN stands for a None value
        inputs = np.union1d(inputs, family.special_inputs(dtype))  # keep +-inf, +-max
        x, y = regions.cross(inputs, np.array([0.0, 0.5, 1.0, *soft[::3]]))
        cols = {k: [] for k in family.param_names}
        for setting in family.params:
            for k in cols:
                v = setting[k]
                cols[k].append(np.full(x.size, np.nan if v is None else float(v)))
        k = len(family.params)
        return Batch(np.tile(x, k), np.tile(y, k), np.ones(x.size * k), np.ones(x.size * k),
                     {n: np.concatenate(v) for n, v in cols.items()}), "grid"
    if CHECKS[check][1]:
        inputs = inputs[:: max(1, inputs.size // 80)]
        w = regions.weight_grid(dtype) if subject.weight else np.array([1.0])
        p = regions.weight_grid(dtype) if subject.pos_weight and family.weights \
            else np.array([1.0])
        x, y, w, p = regions.cross(inputs, np.array([0.0, 0.5, 1.0]), w, p)
        return Batch(x, y, w, p), "grid"
    mode = "grid"
    if regions.exhaustive_ok(dtype) and family.exhaustive:
        x1, y1 = regions.cross(family.every_input(dtype), regions.hard_targets())
        x2, y2 = regions.cross(inputs, soft)
        x, y = np.concatenate([x1, x2]), np.concatenate([y1, y2])
        mode = "exhaustive"
    else:
        x, y = regions.cross(inputs, np.concatenate([regions.hard_targets(), soft]))
    return Batch(x, y, np.ones_like(x), np.ones_like(x)), mode


def validation_points(subject: Subject, dtype: str) -> Batch:
    """Invalid targets on ordinary inputs; for probability families, invalid probabilities
    with hard targets; negative and NaN weights / pos_weights where the subject takes
    them. `extra["kind"]` says which (0 target, 1 probability, 2 weight, 3 pos_weight)."""
    family = subject.family_record
    prob = family.input_kind == "probability"
    ordinary = np.array([0.25, 0.5, 0.875] if prob else [-20.0, -2.0, 0.0, 2.0, 20.0])
    rows = [(*regions.cross(ordinary, np.array(INVALID_TARGETS)), 1.0, 1.0, 0)]
    if prob:
        rows.append((*regions.cross(np.array(INVALID_PROBABILITIES), np.array([0.0, 1.0])),
                     1.0, 1.0, 1))
    some = ordinary[1:3]
    for flag, kind in ((subject.weight, 2), (subject.pos_weight and family.weights, 3)):
        if flag:
            x, y, w = regions.cross(some, np.array([0.0, 1.0]), np.array(INVALID_WEIGHTS))
            rows.append((x, y, w, 1.0, kind) if kind == 2 else (x, y, 1.0, w, kind))
    cols = [np.concatenate([np.broadcast_to(np.asarray(r[i], dtype=np.float64), r[0].shape)
                            for r in rows]) for i in range(5)]
    x, y, w, p, kind = (np.array([round_to(v, dtype) for v in c]) if i < 4 else c
                        for i, c in enumerate(cols))
    return Batch(x, y, w, p, {"kind": kind})


VALIDATION_KINDS = ("target", "probability", "weight", "pos_weight")
_UNDEFINED_OUTSIDE = ("focal_with_logits", "focal")


def validation_reason(subject: Subject) -> str | None:
    """Why a subject has no validation check (its formula has no value off the domain)."""
    if subject.family in _UNDEFINED_OUTSIDE:
        return (f"{subject.family} has no value outside 0 <= y <= 1 (1 - p_t can be "
                "negative, raised to a real power): nothing exact to grade against")
    return None


def mismatched_shapes(subject: Subject, case: Case) -> str:
    """What the framework does with an input of PAD values and a target of PAD - 1:
    'rejected: <its error>' or 'accepted: <what it returned>'."""
    x = np.full(PAD, subject.family_record.centre)
    y = np.zeros(PAD - 1)
    try:
        out, _ = workers.evaluate(subject.name, subject.framework, case.dtype, case.device,
                                  [x, y, None, None], "none", False, "contiguous", None,
                                  case.execution)
    except workers.WorkerUnavailable:
        raise
    except Exception as e:
        return f"rejected: {error_text(e)}"
    return f"accepted: {np.size(out)} values"


def padded(a: np.ndarray) -> np.ndarray:
    extra = (-a.size) % PAD
    return np.concatenate([a, np.repeat(a[:1], extra)]) if extra else a


def error_text(e: BaseException) -> str:
    """'TypeName: first line' of a framework failure (its own type, not the proxy's)."""
    if isinstance(e, workers.FrameworkError):
        return f"{e.kind}: {e.message[:200]}"
    text = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {text}"


def run_framework(subject: Subject, case: Case, pts: Batch, reduction: str = "none"
                  ) -> tuple[np.ndarray, dict[int, str], frozenset[int]]:
    """Observed values, errors and crashes. A batch that raises is split until the raising
    points are isolated (torch's BCELoss rejects a whole batch for one bad point); one
    that kills the worker is split CRASH_FANOUT ways until the killing points are found
    (each crash restarts the worker). WorkerUnavailable propagates: a skip, not a finding.
    A parametric family's batch is run once per parameter setting."""
    groups = param_groups(subject.family_record, dict(pts.extra), len(pts))
    if len(groups) == 1:
        return _run_group(subject, case, pts, reduction, groups[0][0] or None)
    observed = np.full(len(pts), np.nan)
    errors: dict[int, str] = {}
    crashes: set[int] = set()
    for params, idx in groups:
        o, e, k = _run_group(subject, case, pts.take(idx), reduction, params)
        observed[idx] = o
        errors.update({int(idx[i]): t for i, t in e.items()})
        crashes.update(int(idx[i]) for i in k)
    return observed, errors, frozenset(crashes)


def _run_group(subject: Subject, case: Case, pts: Batch, reduction: str,
               params: dict | None) -> tuple[np.ndarray, dict[int, str], frozenset[int]]:
    n = len(pts)
    errors: dict[int, str] = {}
    crashes: set[int] = set()
    use_w = CHECKS[case.check][1] and subject.weight
    use_p = CHECKS[case.check][1] and subject.pos_weight

    def run(b: Batch) -> np.ndarray:
        kw = {"weight": padded(b.weight) if use_w else None,
              "pos_weight": padded(b.pos_weight) if use_p else None}
        out = subject.evaluate(case.dtype, case.device, padded(b.input), padded(b.target),
                               reduction=reduction, grad=case.quantity == "grad",
                               params=params, execution=case.execution, **kw)
        return np.asarray(out, dtype=np.float64)[: len(b)]

    try:  # the whole batch in one call: no index copies on the common path
        return run(pts), errors, frozenset()
    except workers.WorkerUnavailable:
        raise
    except Exception as first:
        # bisect with an explicit stack: a recursive closure would be a reference cycle
        # keeping every batch's arrays alive until the cyclic GC happens to run
        observed = np.full(n, np.nan)
        stack = [(np.arange(n), first)]
        while stack:
            idx, known = stack.pop()
            try:
                if known is not None:
                    raise known
                observed[idx] = run(pts.take(idx))
            except workers.WorkerUnavailable:
                raise
            except Exception as e:  # a framework error is a finding, never a crash of ours
                crashed = isinstance(e, workers.WorkerCrash)
                if idx.size == 1:
                    errors[int(idx[0])] = error_text(e)
                    if crashed:
                        crashes.add(int(idx[0]))
                else:
                    parts = np.array_split(idx, min(idx.size, CRASH_FANOUT if crashed else 2))
                    stack += [(p, None) for p in reversed(parts)]
    return observed, errors, frozenset(crashes)


def reference_values(op: str, dtype: str, pts: Batch | dict, grad: bool
                     ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(expected, (hi, lo)): the correctly rounded value in the dtype, and the exact value
    as precise as the dtype's ulp measure needs: fast parts within 2**-31 relative for
    float32 and narrower (the measured ulp error is then off by at most 2**-8 ulp of
    float32), the certified double-double for float64. Statuses never depend on the
    parts: they come from the correctly rounded `expected`. `pts` may hold scalars (a
    dict x, y, w, p): the reference broadcasts."""
    if isinstance(pts, Batch):
        args, w, p = (pts.input, pts.target), pts.weight, pts.pos_weight
    else:
        args, w, p = (pts["x"], pts["y"]), pts["w"], pts["p"]
    kw = {"weight": w, "pos_weight": p, "grad": grad}
    if dtype == "float64" or get_family(op).fast is None:  # the certified mpmath path
        key = _memo_key(op, dtype, grad, (*args, w, p)) if isinstance(pts, Batch) else None
        if key is not None and (known := _recall(key)) is not None:
            return known
        out = (reference.rounded(op, dtype, *args, **kw), reference.exact_parts(op, *args, **kw))
        if key is not None:
            _remember(key, out)
        return out
    from reference.fast import rounded_and_parts
    from reference.formats import get_format

    tol = math.ldexp(1.0, get_format(dtype).quantum_exp - 40)  # 2**-40 subnormal ulps
    return rounded_and_parts(op, dtype, *args, abs_tol=tol, rel_tol=2.0 ** -30, **kw)


# The mpmath path's results by (op, dtype, grad, the points' bytes): the subjects of a
# family (torch, tf, keras, jax, paddle) grade the same fixed points, and float64's
# certified values cost about a second a check. Entries are read-only; MEMO_SIZE bounds
# the memory (a few MB each). `share_memo(folder)` adds a folder the processes of one
# pytest run (xdist workers) share: one computes, the others load (the plugin makes it
# per run and removes it at the end, so nothing outlives the code that computed it).
_MEMO: dict[tuple, tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]] = {}
MEMO_SIZE = 48
_SHARED: list[Path] = []


def share_memo(folder: str | os.PathLike[str] | None) -> None:
    _SHARED[:] = [] if folder is None else [Path(folder)]


def _memo_file(key: tuple) -> Path:
    op, dtype, grad, digest = key
    name = hashlib.blake2b(f"{op}|{dtype}|{grad}".encode() + digest, digest_size=16)
    return _SHARED[0] / f"{name.hexdigest()}.npy"


def _recall(key: tuple) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
    if key in _MEMO:
        return _MEMO[key]
    if not _SHARED:
        return None
    try:
        stacked = np.load(_memo_file(key), allow_pickle=False)
    except (OSError, ValueError):  # not there (yet), or being replaced
        return None
    out = (stacked[0], (stacked[1], stacked[2]))
    _remember(key, out, share=False)
    return out


def _memo_key(op: str, dtype: str, grad: bool, arrays: tuple) -> tuple:
    digest = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        digest.update(repr(a.shape).encode())
        digest.update(a.tobytes())
    return op, dtype, bool(grad), digest.digest()


def _remember(key: tuple, out: tuple[np.ndarray, tuple[np.ndarray, np.ndarray]], *,
              share: bool = True) -> None:
    for a in (out[0], *out[1]):
        a.flags.writeable = False  # shared by every caller with these points
    if len(_MEMO) >= MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))  # the oldest
    _MEMO[key] = out
    if share and _SHARED:
        path = _memo_file(key)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        with contextlib.suppress(OSError):  # a full disk only costs the others a recompute
            np.save(tmp, np.stack([np.asarray(a, np.float64).reshape(-1)
                                   for a in (out[0], *out[1])]))
            os.replace(tmp, path)  # whole or absent, never half written


def subject_reference(subject: Subject, dtype: str, pts: Batch, grad: bool
                      ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """reference_values for a subject's batch: per parameter setting of a parametric
    family (each setting is its own reference op), else in one call."""
    family = subject.family_record
    groups = param_groups(family, dict(pts.extra), len(pts))
    if len(groups) == 1:
        return reference_values(family.reference_op(groups[0][0]), dtype, pts, grad)
    expected, hi, lo = (np.empty(len(pts)) for _ in range(3))
    for params, idx in groups:
        e, (h, low) = reference_values(family.reference_op(params), dtype, pts.take(idx), grad)
        expected[idx], hi[idx], lo[idx] = e, h, low
    return expected, (hi, lo)


def grade_observed(observed: np.ndarray, errors: dict[int, str], crashes: frozenset[int],
                   expected: np.ndarray, parts: tuple[np.ndarray, np.ndarray], dtype: str,
                   budget: float) -> Graded:
    """Grade a batch, then mark the points that raised (error) or killed the worker."""
    graded = grade(observed, expected, *parts, dtype, budget)
    for i in errors:
        graded.set_error(i, crash=i in crashes)
    return graded


def computed_dtype(subject: Subject, case: Case) -> str:
    """The dtype the framework returns for the case (autocast decides it; otherwise the
    case's own), from one small call on the family's centre."""
    if not case.execution.startswith("autocast_"):
        return case.dtype
    returned: list[str] = []
    centre = np.full(PAD, subject.family_record.centre)
    subject.evaluate(case.dtype, case.device, centre, np.ones(PAD), execution=case.execution,
                     returned=returned)
    return returned[0] if returned[0] in DTYPES else case.dtype


def run_case(subject: Subject, case: Case, budget: float) -> Outcome:
    """Evaluate and grade one elementwise case (reduction "none"); under autocast the
    values are graded in the dtype the framework really returned (Outcome.dtype)."""
    pts, mode = point_set(subject, case.check, case.dtype, case.label_smoothing)
    observed, errors, crashes = run_framework(subject, case, pts)
    dtype = computed_dtype(subject, case)
    if dtype != case.dtype:
        budget = ulp_budget(dtype)
    expected, parts = subject_reference(subject, dtype, pts, case.quantity == "grad")
    graded = grade_observed(observed, errors, crashes, expected, parts, dtype, budget)
    op = subject.reference_op
    if LABEL_SMOOTHING in pts.extra:  # the smoothed op of the family's default setting
        op = subject.family_record.reference_op(
            {LABEL_SMOOTHING: float(pts.extra[LABEL_SMOOTHING][0])})
    return Outcome(case, pts, observed, expected, parts, graded, errors, mode, op, crashes,
                   dtype=dtype)


def run_reduced_case(subject: Subject, case: Case, budget: float) -> Outcome:
    """Reductions: fixed random batches of grid points, each graded as one value."""
    pts, _ = point_set(subject, "values", case.dtype)
    rng = np.random.default_rng(20261123)
    n = len(pts)
    picks = [rng.choice(n, REDUCED_SIZE, replace=False) for _ in range(REDUCED_BATCHES)]
    observed = np.full(REDUCED_BATCHES, np.nan)
    errors: dict[int, str] = {}
    crashes: set[int] = set()
    expected = np.empty(REDUCED_BATCHES)
    hi, lo = np.empty(REDUCED_BATCHES), np.empty(REDUCED_BATCHES)
    red = "mean" if case.reduction == "keras_default" else case.reduction
    for b, idx in enumerate(picks):
        try:
            out = subject.evaluate(case.dtype, case.device, pts.input[idx], pts.target[idx],
                                   reduction=case.reduction, execution=case.execution)
            observed[b] = float(np.asarray(out))
        except workers.WorkerUnavailable:
            raise
        except Exception as e:
            errors[b] = error_text(e)
            if isinstance(e, workers.WorkerCrash):
                crashes.add(b)
        exact = reference.reduce(subject.reference_op, red, pts.input[idx], pts.target[idx])
        expected[b] = reference.round_to(exact, case.dtype)
        hi[b], lo[b] = double_double(exact._mpf_)
    graded = grade_observed(observed, errors, frozenset(crashes), expected, (hi, lo),
                            case.dtype, budget)
    # a batch is reported by its first point; the record keeps every member
    firsts = np.array([idx[0] for idx in picks])
    members = (np.array([pts.input[idx] for idx in picks]),
               np.array([pts.target[idx] for idx in picks]))
    return Outcome(case, pts.take(firsts), observed, expected, (hi, lo), graded, errors,
                   "sampled", subject.reference_op, frozenset(crashes), members)


def worst_index(graded: Graded) -> int:
    """The worst point: most severe status first, then largest ulp error."""
    ulp = np.where(np.isnan(graded.ulp), np.inf, graded.ulp)
    order = np.lexsort((-ulp, graded.code))
    return int(order[0])
