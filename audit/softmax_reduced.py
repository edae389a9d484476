"""The `reduced` check of the cross_entropy row subjects: fixed batches of rows, each
reduced by the framework (its mean or sum) and graded as one value against
reference.cross_entropy_reduce with the framework's own semantics (what its mean
divides by: Subject.denominators, declared in the subject files).

Batches (fixed seed; rows drawn from the family's fixed rows, softmax_family.row_sets):
- `random 0..7`: 16 rows each of K = 2, 3, 10, 1000 in turn, drawn among the ordinary
  rows (finite logits spread by at most 60: what the reduction itself does, not the
  rows' own troubles, which the row checks grade); class indices, with class weights
  in batches 1, 3 and 5 where the subject takes them, probabilities in 6 and 7;
- `masked and dominant`: K = 10 rows with -inf masks (weight off them) and dominant
  logits (a loss of 1e4 beside one of about exp(-1e4)), class indices;
- `large losses`: 16 losses of about 1e4 (a sum past float16's range, not the mean);
- `ignored` (and `ignored weighted`): every third class index is softmax_family.
  IGNORE_INDEX, which drops out of the sum and, per the framework, of the denominator;
- `smoothed`: class indices with label smoothing E (subjects that take it);
- `all ignored`, `zero weights`: denominators of 0 (the exact mean is 0/0: NaN).

A subject without class weights (keras) gets the weighted batches unweighted and no
`ignored weighted` / `zero weights`; tf.nn's and optax's cross-entropies return
per-example losses and have no reduction: their cases are skips (NOT_TAKEN).
Region variables (contracts) are per batch: k, x_max, x_min, x_spread (the widest
row), masked, pinf, nans, y (0 class indices, -1 probabilities), e, w (1), rows,
ignored (rows), den (the exact denominator the mean divides by; 1 for a sum) and total
(the exact sum of the batch's losses, in float64).
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, replace

import numpy as np

from audit import softmax_family as sf
from audit import workers
from audit.grading import Graded, grade
from audit.subjects import Subject
from reference import softmax_reduce
from reference.engine import ReferenceUncertainError
from reference.formats import round_to
from reference.points import double_double

SEED = 20261123
ROWS = 16
RANDOM_KS = (2, 3, 10, 1000)
WEIGHTED = (1, 3, 5)  # random batches with class weights (where the subject takes them)
PROBS = (6, 7)  # random batches with probability targets
SPREAD = 60.0  # the random batches' rows: max - min of the logits at most this
# (K = 10 pattern, class index): masks with the label on a finite logit, and dominant
# logits with the label on them (losses of about exp(-1e4)) and off them (about 1e4)
MASKED_AND_DOMINANT = (("mask one", 1), ("mask many", 0), ("mask all but one", 0),
                       ("dominant 10000", 0), ("dominant 10000", 1), ("dominant -10000", 0),
                       ("dominant -10000", 1), ("dominant 100", 1), ("spread 100", 0),
                       ("normal 1", 3))


@dataclass
class Reduced:
    """One batch: its name, rows and targets (a softmax_family.Block, one call), and
    its kind ("label", "weighted", "probs": Subject.denominators' keys)."""

    name: str
    block: sf.Block
    kind: str


def case_reductions(subject: Subject) -> tuple[str, ...]:
    """The reductions a subject's `reduced` cases run: its own, or mean and sum (skips,
    with not_taken's reason) when it has none."""
    own = tuple(r for r in subject.reductions if r != "none")
    return own or ("mean", "sum")


def semantics(subject: Subject, reduction: str, kind: str) -> tuple[str, str | None]:
    """(reference reduction, denominator) of the subject's reduction on a batch kind."""
    by_kind = subject.denominators.get(reduction)
    if by_kind is None:
        return "sum", None
    return "mean", by_kind[kind]


# --------------------------------------------------------------------------- batches


def _pool(dtype: str) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """K -> (pattern names, rows, class indices) of the fixed `values` rows that are
    ordinary: finite logits spread by at most SPREAD (the rows that are hard on their
    own, masks, dominant and infinite logits, are the `masked and dominant` batch's)."""
    out = {}
    for b in sf.blocks("values", dtype):
        if b.k not in RANDOM_KS:
            continue
        with np.errstate(invalid="ignore"):
            spread = b.logits.max(axis=1) - b.logits.min(axis=1)
        keep = np.isfinite(b.logits).all(axis=1) & (spread <= SPREAD)
        out[b.k] = (b.pattern[keep], b.logits[keep], b.labels[keep])
    return out


def _probs(rng: np.random.Generator, k: int, dtype: str, row: np.ndarray) -> np.ndarray:
    """One of the family's probability patterns for the row, with no mass on a -inf."""
    pats = [p for _, p in sf._prob_patterns(k, dtype, row)]
    pats = [p for p in pats if not (np.isneginf(row) & (p > 0)).any()]
    return pats[int(rng.integers(len(pats)))]


def batches(dtype: str, smoothing: float = sf.DEFAULT_SMOOTHING) -> list[Reduced]:
    """Every batch of the check (weighted ones carry their class weights); the same under
    both profiles (the `ci` rows), so the contracts hold in both."""
    rng = np.random.default_rng(SEED)
    pool = _pool(dtype)
    out = []

    def weights(k: int) -> np.ndarray:
        return sf.representable(np.resize(sf.WEIGHT_CYCLE, k), dtype)

    def draw(k: int, n: int = ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        names, rows, labels = pool[k]
        idx = rng.choice(len(rows), n, replace=len(rows) < n)
        return names[idx], rows[idx], labels[idx]

    for i in range(8):
        k = RANDOM_KS[i % len(RANDOM_KS)]
        names, rows, labels = draw(k)
        if i in PROBS:
            probs = sf.representable(np.stack([_probs(rng, k, dtype, r) for r in rows]), dtype)
            out.append(Reduced(f"random {i}", sf.Block(rows, names, probs=probs), "probs"))
            continue
        b = sf.Block(rows, names, labels=labels)
        weighted = i in WEIGHTED
        out.append(Reduced(f"random {i}", replace(b, weight=weights(k)) if weighted else b,
                           "weighted" if weighted else "label"))
    # -inf masks (the label on a finite logit) and dominant rows
    names, rows = sf.row_sets(dtype, False, (10,))[0]
    idx = [int(np.flatnonzero(names == n)[0]) for n, _ in MASKED_AND_DOMINANT]
    labs = np.array([c for _, c in MASKED_AND_DOMINANT], np.int64)
    out.append(Reduced("masked and dominant", sf.Block(rows[idx], names[idx], labels=labs),
                       "label"))
    # 16 losses of about 1e4: a sum past float16's range, a mean well inside it
    big = [int(np.flatnonzero(names == "dominant -10000")[0])] * ROWS
    out.append(Reduced("large losses", sf.Block(rows[big], names[big],
                                                labels=np.zeros(ROWS, np.int64)), "label"))
    names, rows, labels = draw(3)
    labels = labels.copy()
    labels[::3] = sf.IGNORE_INDEX
    ignored = sf.Block(rows, names, labels=labels, ignore_index=sf.IGNORE_INDEX)
    out.append(Reduced("ignored", ignored, "label"))
    out.append(Reduced("ignored weighted", replace(ignored, weight=weights(3)), "weighted"))
    names, rows, labels = draw(10)
    out.append(Reduced("smoothed", sf.Block(rows, names, labels=labels,
                                            smoothing=round_to(smoothing, dtype)), "label"))
    names, rows, _ = draw(3, 4)
    out.append(Reduced("all ignored", sf.Block(
        rows, names, labels=np.full(4, sf.IGNORE_INDEX, np.int64),
        ignore_index=sf.IGNORE_INDEX), "label"))
    names, rows, _ = draw(10, 4)
    zero = int(sf.WEIGHT_CYCLE.index(0.0))
    out.append(Reduced("zero weights", sf.Block(rows, names, labels=np.full(4, zero, np.int64),
                                                weight=weights(10)), "weighted"))
    return out


def subject_batches(subject: Subject, dtype: str, smoothing: float = sf.DEFAULT_SMOOTHING
                    ) -> list[Reduced]:
    """The batches as the subject takes them: unweighted without class weights (the
    weight-only batches dropped), no smoothed batch without label smoothing."""
    out = []
    for r in batches(dtype, smoothing):
        if r.block.smoothing and not subject.label_smoothing:
            continue
        if r.kind == "weighted" and not subject.weight:
            if r.name in ("ignored weighted", "zero weights"):
                continue
            r = Reduced(r.name, replace(r.block, weight=None), "label")
        out.append(r)
    return out


# --------------------------------------------------------------------------- evaluation


def call(subject: Subject, dtype: str, device: str, b: sf.Block, reduction: str) -> float:
    """One framework call: the reduced loss of the block (no padding: it would count)."""
    arrays, params = sf._arrays_params(subject.family, b)
    values, _ = workers.evaluate(subject.name, subject.framework, dtype, device, arrays,
                                 reduction, False, "contiguous", params, "eager")
    return float(np.asarray(values, dtype=np.float64).reshape(-1)[0])


def denominator(b: sf.Block, reduction: str, den: str | None) -> float:
    """The exact denominator the mean divides by (as a float, for regions); 1 for a sum."""
    if reduction == "sum":
        return 1.0
    if den == "count":
        return float(len(b))
    on = b.labels != b.ignore_index if b.ignore_index is not None else np.ones(len(b), bool)
    w = np.ones(b.k) if b.weight is None else b.weight
    return float(w[b.labels[on]].sum())


_CACHE: dict[tuple, tuple | None] = {}


def reference_value(dtype: str, r: Reduced, reduction: str, den: str | None
                    ) -> tuple | None:
    """The certified representative (an mpmath tuple) of a batch's reduction, or None
    when the reference cannot certify it; cached (subjects share batches)."""
    b = r.block
    key = (dtype, r.name, reduction, den, b.smoothing, b.ignore_index,
           *(None if a is None else a.tobytes() for a in (b.logits, b.labels, b.probs, b.weight)))
    if key not in _CACHE:
        try:
            _CACHE[key] = softmax_reduce.reduce_value(
                b.logits, b.target(), weight=b.weight, label_smoothing=b.smoothing,
                ignore_index=b.ignore_index, reduction=reduction, denominator=den)
        except ReferenceUncertainError:
            _CACHE[key] = None
    return _CACHE[key]


def variables(r: Reduced, den: float, total: float) -> dict[str, float]:
    """The batch's region variables (module docstring)."""
    v = sf.variables(r.block, False)
    ignored = 0 if r.block.ignore_index is None else int(
        (r.block.labels == r.block.ignore_index).sum())
    with np.errstate(invalid="ignore"):
        return {"k": float(r.block.k), "x_max": float(np.nanmax(v["x_max"])),
                "x_min": float(np.nanmin(v["x_min"])),
                "x_spread": float(np.nanmax(v["x_spread"])),
                "masked": float(v["masked"].sum()), "pinf": float(v["pinf"].sum()),
                "nans": float(v["nans"].sum()), "y": -1.0 if r.block.labels is None else 0.0,
                "xl": math.nan, "margin": math.nan, "w": 1.0, "e": float(r.block.smoothing),
                "p": 1.0, "rows": float(len(r.block)), "ignored": float(ignored),
                "den": den, "total": total}


@dataclass
class ReducedOutcome:
    """Every batch of a case graded as one value (uncertain batches left out)."""

    case: sf.RowCase
    batches: list[Reduced]
    observed: np.ndarray
    expected: np.ndarray
    exact: tuple[np.ndarray, np.ndarray]
    graded: Graded
    variables: dict[str, np.ndarray]
    errors: dict[int, str]
    uncertain: int = 0
    mode: str = "sampled"


def run_case(subject: Subject, case: sf.RowCase, budget: float, deep: bool = False
             ) -> ReducedOutcome:
    """Evaluate and grade every batch of a `reduced` case (`deep` changes nothing: the
    batches are the same under both profiles)."""
    from audit.checks import error_text

    rs = subject_batches(subject, case.dtype, case.label_smoothing)
    obs, exp, hi, lo, var, kept = [], [], [], [], [], []
    errors: dict[int, str] = {}
    crashes: set[int] = set()
    for r in rs:
        red, den = semantics(subject, case.reduction, r.kind)
        t = reference_value(case.dtype, r, red, den)
        if t is None:
            continue
        i = len(kept)
        try:
            obs.append(call(subject, case.dtype, case.device, r.block, case.reduction))
        except workers.WorkerUnavailable:
            raise
        except Exception as e:  # the framework raised, or its worker died: findings
            obs.append(math.nan)
            errors[i] = error_text(e)
            if isinstance(e, workers.WorkerCrash):
                crashes.add(i)
        kept.append(r)
        exp.append(round_to(t, case.dtype))
        h, low = double_double(t)
        hi.append(h)
        lo.append(low)
        total = t if red == "sum" else reference_value(case.dtype, r, "sum", None)
        var.append(variables(r, denominator(r.block, red, den),
                             math.nan if total is None else round_to(total, "float64")))
    arrays = [np.array(a, dtype=np.float64) for a in (obs, exp, hi, lo)]
    g = grade(*arrays, case.dtype, budget)
    for i in errors:
        g.set_error(i, crash=i in crashes)
    merged = {n: np.array([v[n] for v in var]) for n in (var[0] if var else {})}
    return ReducedOutcome(case, kept, arrays[0], arrays[1], (arrays[2], arrays[3]), g,
                          merged, errors, uncertain=len(rs) - len(kept))


# --------------------------------------------------------------------------- records


def repro(subject: str, dtype: str, device: str, reduction: str, batch: str) -> str:
    """A one-line command printing the batch's observed and certified values."""
    code = (f"from audit.softmax_reduced import probe; probe({subject!r}, {dtype!r}, "
            f"{device!r}, {reduction!r}, {batch!r})")
    return shlex.join(["python", "-c", code])


def probe(subject: str, dtype: str, device: str, reduction: str, batch: str) -> dict:
    """Print (and return) one batch of a `reduced` case as JSON: its rows, what the
    framework returned and the certified value."""
    from audit.records import exact_string
    from audit.results import to_json_value
    from audit.subjects import get

    s = get(subject)
    r = next(b for b in subject_batches(s, dtype) if b.name == batch)
    red, den = semantics(s, reduction, r.kind)
    t = reference_value(dtype, r, red, den)
    observed = call(s, dtype, device, r.block, reduction)
    expected = round_to(t, dtype) if t is not None else math.nan
    g = grade(np.array([observed]), np.array([expected]), *(np.array([v]) for v in
              double_double(t)), dtype, 0.0) if t is not None else None
    out = {"subject": subject, "dtype": dtype, "device": device, "reduction": reduction,
           "batch": batch, "rows": len(r.block), "classes": r.block.k,
           "graded_as": {"reduction": red, "denominator": den},
           "observed": to_json_value(observed), "expected": to_json_value(expected),
           "exact": exact_string(*double_double(t)) if t is not None else None,
           "ulp": None if g is None else to_json_value(float(g.ulp[0])),
           "logits": _runs(r.block.logits), "targets": _targets(r.block)}
    print(json.dumps(out))
    return out


def _runs(values: np.ndarray) -> str:
    from audit.results import to_json_value
    from audit.softmax_records import runs

    return runs(values, lambda v: str(to_json_value(v)))


def _targets(b: sf.Block) -> str:
    return _runs(b.labels.astype(np.float64)) if b.labels is not None else _runs(b.probs)


def worst_point(out: ReducedOutcome, i: int) -> dict:
    from audit.records import exact_string, number_arg
    from audit.results import to_json_value
    from audit.softmax_records import row_hex, row_json

    case, g, r = out.case, out.graded, out.batches[i]
    b = r.block
    y = float(b.labels[0]) if b.labels is not None else -1.0
    w = float(b.weight[int(b.labels[0])]) if b.weight is not None and b.labels is not None \
        and 0 <= b.labels[0] < b.k else 1.0
    hi, lo = float(out.exact[0][i]), float(out.exact[1][i])
    worst = {
        "input": row_json(b.logits[0]), "target": to_json_value(y), "weight": to_json_value(w),
        "pos_weight": 1.0, "input_hex": row_hex(b.logits[0]), "target_hex": number_arg(y),
        "observed": None if i in out.errors else to_json_value(float(out.observed[i])),
        "expected": to_json_value(float(out.expected[i])),
        "exact": exact_string(hi, lo) if math.isfinite(hi) else to_json_value(hi),
        "ulp": to_json_value(float(g.ulp[i])),
        "ordinal": None if g.ordinal[i] < 0 else int(g.ordinal[i]),
        "status": str(g.status[i]), "error": out.errors.get(i),
        "repro": repro(case.subject, case.dtype, case.device, case.reduction, r.name),
        "batch_inputs": _runs(b.logits), "batch_targets": _targets(b),
        "classes": b.k, "component": None, "pattern": r.name,
    }
    if b.probs is not None:
        worst["probs"] = row_json(b.probs[0])
    if b.weight is not None:
        worst["class_weight"] = row_json(b.weight)
    return worst


def build_record(out: ReducedOutcome, verdict, outcome: str, test_id: str) -> dict:
    """One results.json record for a `reduced` case (a point per batch)."""
    from audit.results import to_json_value
    from audit.softmax_records import graded_fields
    from audit.subjects import get

    case, g = out.case, out.graded
    inf = (out.variables["masked"] > 0) if g.code.size else np.zeros(0, bool)
    i, graded = graded_fields(g, out.observed, out.expected, verdict, inf)
    record = {
        "subject": case.subject, "family": get(case.subject).family, "check": case.check,
        "quantity": case.quantity, "dtype": case.dtype, "device": case.device,
        "reduction": case.reduction, "execution": "eager", "mode": out.mode,
        "test_id": test_id, "outcome": outcome, "n": int(g.code.size), **graded,
        "worst": worst_point(out, i) if g.code.size else None,
        # [batch index, class count, ulp, status]: one point per batch
        "points": [[j, float(r.block.k), to_json_value(float(g.ulp[j])), str(g.status[j])]
                   for j, r in enumerate(out.batches)],
        "classes": sorted({r.block.k for r in out.batches}),
        "uncertain": out.uncertain,
    }
    smoothing = {r.block.smoothing for r in out.batches if r.block.smoothing}
    if smoothing:
        record["label_smoothing"] = float(min(smoothing))
    return record


def describe(out: ReducedOutcome, verdict) -> str:
    """What failed, batch by batch, with repro commands."""
    lines = []
    idx = np.flatnonzero(verdict.unexplained)
    c = out.case
    if idx.size:
        lines.append(f"{idx.size} unexplained finding(s) of {out.graded.code.size} batches:")
        for i in idx:
            r = out.batches[int(i)]
            error = f" error={out.errors[int(i)]}" if int(i) in out.errors else ""
            command = repro(c.subject, c.dtype, c.device, c.reduction, r.name)
            lines.append(f"  {out.graded.status[i]}: batch {r.name!r} ({len(r.block)} rows of "
                         f"K={r.block.k}) observed={float(out.observed[i])!r} expected="
                         f"{float(out.expected[i])!r} ulp={out.graded.ulp[i]:.3g}{error}\n"
                         f"    repro: {command}")
    for k in verdict.unobserved:
        lines.append(f"contract {k.id!r} no longer holds: no {'|'.join(k.status)} batch in "
                     f"region `{k.region}` (the framework changed or the contract is wrong)")
    return "\n".join(lines)
