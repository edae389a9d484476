"""Build the DESIGN.md section 8 record of a graded case (counts, ulps, worst, repro)."""

from __future__ import annotations

import math
import shlex
from typing import Any

import numpy as np

from audit.checks import Outcome, worst_index
from audit.contracts import Verdict
from audit.results import to_json_value
from reference.cli import exact_decimal
from reference.vectorized import point

MAX_PLOT_POINTS = 1000


def number_arg(v: float) -> str:
    """A CLI argument that reproduces the value bit for bit (hex for finite values)."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v).hex()


def point_json(value: Any) -> Any:
    """One point's input for results.json: a number, or a list for a vector input."""
    if np.ndim(value):
        return [to_json_value(float(v)) for v in np.ravel(value)]
    return to_json_value(float(value))


def point_hex(value: Any) -> Any:
    """Bit-exact text of one point's input (a list of them for a vector input)."""
    if np.ndim(value):
        return [number_arg(float(v)) for v in np.ravel(value)]
    return number_arg(float(value))


def numbers_arg(values: Any) -> str:
    """A comma list of bit-exact CLI numbers (a vector input, or a reduction's batch)."""
    return ",".join(number_arg(float(v)) for v in np.ravel(values))


def repro_command(subject: str, dtype: str, device: str, x: Any, y: float, w: float = 1.0,
                  p: float = 1.0, grad: bool = False, reduction: str = "none",
                  members: tuple[Any, Any] | None = None,
                  params: dict[str, float | None] | None = None,
                  execution: str = "eager") -> str:
    """The one-line `python -m audit probe ...` that shows the same numbers; it names the
    --subject-module a user's subject needs. `x` may be a vector (one point's input)."""
    from audit.subjects import subject_module_of

    if members is not None:
        xs, ys = numbers_arg(members[0]), numbers_arg(members[1])
    else:
        xs = numbers_arg(x) if np.ndim(x) else number_arg(float(x))
        ys = number_arg(y)
    parts = ["python", "-m", "audit", "probe", subject, "--dtype", dtype, f"--input={xs}",
             f"--target={ys}"]
    if w != 1.0:
        parts += ["--weight", number_arg(w)]
    if p != 1.0:
        parts += ["--pos-weight", number_arg(p)]
    if grad:
        parts.append("--grad")
    if reduction != "none":
        parts += ["--reduction", reduction]
    for name, value in (params or {}).items():  # a parametric family's setting
        parts += [f"--{name.replace('_', '-')}",
                  "none" if value is None else number_arg(float(value))]
    if execution != "eager":
        parts += ["--execution", execution]
    parts += ["--device", device]
    module = subject_module_of(subject)
    if module is not None:
        parts += ["--subject-module", module]
    return shlex.join(parts)


def exact_string(hi: float, lo: float) -> str:
    """Decimal of hi + lo to 30+ significant digits (the certified double-double)."""
    if not math.isfinite(hi):
        return to_json_value(hi)
    import mpmath

    with mpmath.workprec(200):
        v = mpmath.mpf(hi) + mpmath.mpf(lo)
        return mpmath.nstr(v, 34, strip_zeros=False) if v else "0"


def _plot_points(out: Outcome) -> list[list]:
    """<= MAX_PLOT_POINTS rows [input, target, ulp, status]: every failing point first
    (up to the cap), then an even sample of the rest."""
    status = out.graded.status
    bad = np.flatnonzero(status != "ok")
    good = np.flatnonzero(status == "ok")
    keep = bad[:: max(1, math.ceil(bad.size / (MAX_PLOT_POINTS // 2)))]
    room = MAX_PLOT_POINTS - keep.size
    keep = np.concatenate([keep, good[:: max(1, math.ceil(good.size / max(room, 1)))]])
    x, y, u = out.points.input, out.points.target, out.graded.ulp
    return [[point_json(x[i]), to_json_value(float(y[i])),
             to_json_value(float(u[i])), str(status[i])] for i in np.sort(keep)]


def build_record(out: Outcome, verdict: Verdict | None, outcome: str, test_id: str) -> dict:
    """One results.json record for a case."""
    case, g = out.case, out.graded
    statuses, counts = np.unique(g.status.astype(str), return_counts=True)
    ulp = g.ulp
    finite_ulp = np.where(np.isnan(ulp), np.inf, ulp)
    i = worst_index(g)
    pts = out.points
    x = pts.input[i] if pts.input.ndim > 1 else float(pts.input[i])  # a vector, or a number
    y, w, p = (float(a[i]) for a in (pts.target, pts.weight, pts.pos_weight))
    members = None if out.members is None else (out.members[0][i], out.members[1][i])
    hi, lo = float(out.exact[0][i]), float(out.exact[1][i])
    observed = None if i in out.errors else float(out.observed[i])
    worst = {
        "input": point_json(x), "target": to_json_value(y), "weight": to_json_value(w),
        "pos_weight": to_json_value(p), "input_hex": point_hex(x), "target_hex": number_arg(y),
        "observed": None if observed is None else to_json_value(observed),
        "expected": to_json_value(float(out.expected[i])),
        "exact": exact_string(hi, lo) if members is not None else exact_reference(
            _op_at(case.subject, pts, i, out.op), x, y, w, p, case.quantity == "grad"),
        "ulp": to_json_value(float(ulp[i])),
        "ordinal": None if g.ordinal[i] < 0 else int(g.ordinal[i]),
        "status": str(g.status[i]), "error": out.errors.get(i),
        "repro": repro_command(case.subject, case.dtype, case.device, x, y, w, p,
                               case.quantity == "grad", case.reduction, members,
                               _params(case.subject, pts, i), case.execution),
    }
    if members is not None:
        worst["batch_inputs"], worst["batch_targets"] = (",".join(repr(float(v)) for v in m)
                                                         for m in members)
    contract = None
    if verdict is not None and verdict.matched:
        by_id = {c.id: c for c in verdict.matched}
        contract = by_id.get(verdict.explained_by[i]) or verdict.matched[0]
        contract = contract.as_record()
    correct = (out.observed == out.expected) | (np.isnan(out.observed) & np.isnan(out.expected))
    extras = _verdict_fields(out)
    return {
        "subject": case.subject, "family": _family(case.subject), "check": case.check,
        "quantity": case.quantity,
        "dtype": case.dtype, "device": case.device, "reduction": case.reduction,
        "execution": case.execution,
        **({"computed_dtype": out.dtype} if out.dtype and out.dtype != case.dtype else {}),
        "mode": out.mode, "test_id": test_id, "outcome": outcome,
        "n": int(g.status.size),
        "counts": {str(s): int(c) for s, c in zip(statuses, counts, strict=True)},
        "max_ulp": to_json_value(float(np.max(finite_ulp))),
        "p99_ulp": to_json_value(float(np.percentile(finite_ulp, 99, method="higher"))),
        "max_bits": g.max_bits(),
        "correctly_rounded": float(np.mean(correct)),
        "worst": worst,
        "contract": contract,
        "points": _plot_points(out),
        **({"label_smoothing": float(pts.extra["label_smoothing"][0])}
           if "label_smoothing" in pts.extra else {}),
        **extras,
        **({"validation": validation_summary(out)} if case.check == "validation" else {}),
    }


def validation_summary(out: Outcome) -> dict:
    """Per kind of invalid input (target, probability, weight, pos_weight): how many
    points the framework rejected (its first message), answered NaN, answered with the
    exact formula's number (within budget), or with another number (and how wrong);
    `by_value` splits the same counts by the invalid value (-0.5, 1.5, inf, -inf, nan)."""
    from audit.checks import VALIDATION_KINDS

    kinds = out.points.extra["kind"].astype(int)
    columns = (out.points.target, out.points.input, out.points.weight, out.points.pos_weight)
    summary: dict = {}
    for k, name in enumerate(VALIDATION_KINDS):
        idx = np.flatnonzero(kinds == k)
        if not idx.size:
            continue
        summary[name] = _validation_counts(out, idx)
        values = np.ravel(columns[k][idx]) if columns[k].ndim == 1 else None
        if values is None:
            continue
        keys = np.array([repr(float(v)) for v in values])
        summary[name]["by_value"] = {
            key: {f: c for f, c in _validation_counts(out, idx[keys == key]).items()
                  if f != "message" or c is not None}
            for key in dict.fromkeys(keys)}
    return summary


def _validation_counts(out: Outcome, idx: np.ndarray) -> dict:
    status, ulp = out.graded.status.astype(str), out.graded.ulp
    raised = np.isin(idx, list(out.errors))
    errors = [out.errors[i] for i in idx if i in out.errors]
    nan = np.isnan(out.observed[idx]) & ~raised
    number = ~np.isnan(out.observed[idx]) & ~raised
    ok = number & (status[idx] == "ok")
    wrong = number & ~ok
    off = ulp[idx][wrong]
    counts = {"n": int(idx.size), "rejected": len(errors), "nan": int(nan.sum()),
              "ok": int(ok.sum()), "wrong": int(wrong.sum()),
              "max_ulp": to_json_value(float(np.max(off))) if off.size else None,
              "message": errors[0] if errors else None,
              "expected_nan": int(np.isnan(out.expected[idx]).sum())}
    if number.any():  # a number the user gets back silently: the lowest (a negative loss)
        values = out.observed[idx][number]
        i = idx[np.flatnonzero(number)[np.argmin(values)]]
        counts["example"] = {
            "input": to_json_value(float(np.ravel(out.points.input[i])[0])),
            "target": to_json_value(float(out.points.target[i])),
            "observed": to_json_value(float(out.observed[i])),
            "expected": to_json_value(float(out.expected[i]))}
    return counts


def nonfinite_mask(pts: Any) -> np.ndarray:
    """Points with an infinite input (any component), target, weight or pos_weight: the
    summary keeps them apart so that one NaN at x = inf does not colour a whole cell."""
    x = pts.input if pts.input.ndim == 1 else np.max(np.abs(pts.input), axis=1)
    return np.isinf(x) | np.isinf(pts.target) | np.isinf(pts.weight) | np.isinf(pts.pos_weight)


def _verdict_fields(out: Outcome) -> dict[str, Any]:
    """What the report's verdicts need beyond the summary: `inf_counts` (statuses of the
    points with an infinite input or weight), `stability` (audit.verdicts, from every
    graded point) and `specials` (the graded family specials, e.g. x = 1e10, hard targets)."""
    from audit import families, verdicts

    fields: dict[str, Any] = {}
    if out.members is None:
        inf = nonfinite_mask(out.points)
        statuses, counts = np.unique(out.graded.status[inf].astype(str), return_counts=True)
        fields["inf_counts"] = {str(s): int(c) for s, c in zip(statuses, counts, strict=True)}
    family = families.get(_family(out.case.subject))
    stability = verdicts.outcome_stability(out, family)
    if stability is not None:
        fields["stability"] = stability
        fields["specials"] = _specials(out, family)
    return fields


def _specials(out: Outcome, family: Any) -> list[dict[str, Any]]:
    """The graded points at the family's special inputs with targets 0 and 1 (observed,
    correctly rounded expected value, exact decimal, ulp, status)."""
    from audit.verdicts import default_setting

    pts, g = out.points, out.graded
    keep = (pts.weight == 1) & (pts.pos_weight == 1) & default_setting(
        family, dict(pts.extra), len(pts))
    rows = []
    for x in family.special_inputs(out.case.dtype):
        for y in (0.0, 1.0):
            hit = np.flatnonzero(keep & (pts.input == x) & (pts.target == y))
            if not hit.size:
                continue
            i = int(hit[0])
            rows.append({
                "input": to_json_value(x), "target": y,
                "observed": None if i in out.errors else to_json_value(float(out.observed[i])),
                "expected": to_json_value(float(out.expected[i])),
                "exact": exact_reference(out.op, x, y, 1.0, 1.0, out.case.quantity == "grad"),
                "ulp": to_json_value(float(g.ulp[i])), "status": str(g.status[i])})
    return rows


def exact_reference(op: str, x: Any, y: float, w: float, p: float, grad: bool) -> str:
    """Exact decimal (40 digits) of one reference point (cached evaluation); a vector
    input is passed as a tuple (hashable for the cache)."""
    key = tuple(float(v) for v in np.ravel(x)) if np.ndim(x) else x
    return exact_decimal(point(op, grad, key, y, w, p))


def _params(name: str, pts: Any, i: int) -> dict[str, float | None] | None:
    """The parameter setting of point i of a parametric family's batch (NaN = None),
    label smoothing included."""
    from audit.families import batch_param_names
    from audit.subjects import SUBJECTS

    s = SUBJECTS.get(name)
    names = batch_param_names(s.family_record, pts.extra) if s is not None else ()
    if not names:
        return None
    values = {k: float(pts.extra[k][i]) for k in names}
    return {k: (None if math.isnan(v) else v) for k, v in values.items()}


def _op_at(name: str, pts: Any, i: int, default: str) -> str:
    """The reference op of point i (a parametric family's own setting), else default."""
    from audit.subjects import SUBJECTS

    params = _params(name, pts, i)
    return default if params is None else SUBJECTS[name].family_record.reference_op(params)


def _family(name: str) -> str:
    from audit.subjects import SUBJECTS

    s = SUBJECTS.get(name)
    return s.family if s is not None else "bce_with_logits"
