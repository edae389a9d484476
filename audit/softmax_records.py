"""results.json records, repro commands and cross-framework equivalence entries of the row
families (audit/softmax_family.py).

A record has the fields of every record (DESIGN.md section 8); its worst point's input
is the row of logits (a list, or for K > ROW_LIST_MAX the compact text `probe --logits`
takes: runs of equal values as V*N), its target the class index (-1: probabilities, in
`probs`), and `classes` / `component` say which row size and gradient component. Plot
points are [margin (class indices; for K = 2 the BCE logit) or spread of the row
(probabilities), class index, ulp, status].
"""

from __future__ import annotations

import math
import shlex
from typing import Any

import numpy as np

from audit.checks import worst_index
from audit.contracts import Verdict
from audit.records import exact_string, number_arg
from audit.results import to_json_value
from audit.softmax_family import PROBS_FAMILY, Block, RowOutcome, plot_x

ROW_LIST_MAX = 1000  # longer rows are written as compact runs (results.json, repro)
MAX_PLOT_POINTS = 1000


def runs(values: Any, fmt: Any = number_arg) -> str:
    """A comma list of bit-exact numbers, runs of three or more equal values as V*N."""
    out: list[str] = []
    flat = [float(v) for v in np.ravel(values)]
    i = 0
    while i < len(flat):
        j = i
        while j + 1 < len(flat) and (flat[j + 1] == flat[i] or (
                math.isnan(flat[j + 1]) and math.isnan(flat[i]))) and \
                math.copysign(1, flat[j + 1]) == math.copysign(1, flat[i]):
            j += 1
        n = j - i + 1
        text = fmt(flat[i])
        out += [f"{text}*{n}"] if n >= 3 else [text] * n
        i = j + 1
    return ",".join(out)


def row_json(values: Any) -> Any:
    """A row for results.json: a list of numbers, or compact runs for a long row."""
    if np.size(values) > ROW_LIST_MAX:
        return runs(values, lambda v: str(to_json_value(v)))
    return [to_json_value(float(v)) for v in np.ravel(values)]


def row_hex(values: Any) -> Any:
    if np.size(values) > ROW_LIST_MAX:
        return runs(values)
    return [number_arg(float(v)) for v in np.ravel(values)]


def repro(subject: str, dtype: str, device: str, b: Block, row: int, grad: bool) -> str:
    """The one-line `python -m audit probe ...` showing the same numbers."""
    from audit.subjects import ROW_SUBJECTS, subject_module_of

    s = ROW_SUBJECTS.get(subject)
    flag = "--probs-row" if s is not None and s.family == PROBS_FAMILY else "--logits"
    parts = ["python", "-m", "audit", "probe", subject, "--dtype", dtype,
             f"{flag}={runs(b.logits[row])}"]
    if b.labels is not None:
        parts.append(f"--label={int(b.labels[row])}")
    elif b.probs is not None:
        parts.append(f"--probs={runs(b.probs[row])}")
    if b.weight is not None:
        parts.append(f"--weight={runs(b.weight)}")
    if b.smoothing:
        parts += ["--label-smoothing", number_arg(b.smoothing)]
    if b.ignore_index is not None:
        parts.append(f"--ignore-index={b.ignore_index}")
    if grad:
        parts.append("--grad")
    parts += ["--device", device]
    module = subject_module_of(subject)
    if module is not None:
        parts += ["--subject-module", module]
    return shlex.join(parts)


def _plot_points(out: RowOutcome) -> list[list]:
    """<= MAX_PLOT_POINTS rows [x, class index, ulp, status]: failing points first."""
    status = out.graded.status
    bad = np.flatnonzero(status != "ok")
    good = np.flatnonzero(status == "ok")
    keep = bad[:: max(1, math.ceil(bad.size / (MAX_PLOT_POINTS // 2)))]
    room = MAX_PLOT_POINTS - keep.size
    keep = np.sort(np.concatenate([keep, good[:: max(1, math.ceil(good.size / max(room, 1)))]]))
    xs = {bi: plot_x(b) for bi, b in enumerate(out.blocks)}
    rows = []
    for i in keep:
        bi, r, _ = (int(v) for v in out.where[i])
        rows.append([to_json_value(float(xs[bi][r])), to_json_value(float(out.variables["y"][i])),
                     to_json_value(float(out.graded.ulp[i])), str(status[i])])
    return rows


def worst_point(out: RowOutcome, i: int) -> dict:
    """The worst graded point of a record, with its repro command."""
    case, g = out.case, out.graded
    bi, r, j = (int(v) for v in out.where[i])
    b = out.blocks[bi]
    y = float(b.labels[r]) if b.labels is not None else -1.0
    w = float(b.weight[int(b.labels[r])]) if b.weight is not None and b.labels is not None \
        and 0 <= b.labels[r] < b.k else 1.0
    observed = None if i in out.errors else to_json_value(float(out.observed[i]))
    hi, lo = float(out.exact[0][i]), float(out.exact[1][i])
    worst = {
        "input": row_json(b.logits[r]), "target": to_json_value(y),
        "weight": to_json_value(w), "pos_weight": 1.0, "input_hex": row_hex(b.logits[r]),
        "target_hex": number_arg(y), "observed": observed,
        "expected": to_json_value(float(out.expected[i])),
        "exact": exact_string(hi, lo) if math.isfinite(hi) else to_json_value(hi),
        "ulp": to_json_value(float(g.ulp[i])),
        "ordinal": None if g.ordinal[i] < 0 else int(g.ordinal[i]),
        "status": str(g.status[i]), "error": out.errors.get(i),
        "repro": repro(case.subject, case.dtype, case.device, b, r, case.quantity == "grad"),
        "classes": b.k, "component": None if j < 0 else j, "pattern": str(b.pattern[r]),
    }
    if b.probs is not None:
        worst["probs"] = row_json(b.probs[r])
    if b.weight is not None:
        worst["class_weight"] = row_json(b.weight)
    return worst


def graded_fields(g: Any, observed: np.ndarray, expected: np.ndarray,
                  verdict: Verdict | None, inf: np.ndarray) -> tuple[int, dict]:
    """(the worst point's index, the record fields every row-family record shares: counts,
    max / p99 ulp, bits, the share correctly rounded, the contract of the worst point and
    the counts among points with an infinite input `inf`)."""
    statuses, counts = np.unique(g.status.astype(str), return_counts=True)
    finite_ulp = np.where(np.isnan(g.ulp), np.inf, g.ulp)
    i = worst_index(g) if g.code.size else 0
    contract = None
    if verdict is not None and verdict.matched:
        by_id = {c.id: c for c in verdict.matched}
        contract = (by_id.get(verdict.explained_by[i]) or verdict.matched[0]).as_record()
    correct = (observed == expected) | (np.isnan(observed) & np.isnan(expected))
    inf_status, inf_counts = np.unique(g.status[inf].astype(str), return_counts=True)
    return i, {
        "counts": {str(s): int(c) for s, c in zip(statuses, counts, strict=True)},
        "max_ulp": to_json_value(float(np.max(finite_ulp))) if g.code.size else 0.0,
        "p99_ulp": to_json_value(float(np.percentile(finite_ulp, 99, method="higher")))
        if g.code.size else 0.0,
        "max_bits": g.max_bits(),
        "correctly_rounded": float(np.mean(correct)) if g.code.size else 1.0,
        "contract": contract,
        "inf_counts": {str(s): int(c) for s, c in zip(inf_status, inf_counts, strict=True)},
    }


def build_row_record(out: RowOutcome, verdict: Verdict | None, outcome: str, test_id: str
                     ) -> dict:
    """One results.json record for a row case."""
    from audit.subjects import get

    case, g = out.case, out.graded
    inf = np.isinf(out.variables["x_max"]) | (out.variables["masked"] > 0)
    i, graded = graded_fields(g, out.observed, out.expected, verdict, inf)
    record = {
        "subject": case.subject, "family": get(case.subject).family, "check": case.check,
        "quantity": case.quantity, "dtype": case.dtype, "device": case.device,
        "reduction": "none", "execution": "eager", "mode": out.mode, "test_id": test_id,
        "outcome": outcome, "n": int(g.code.size), **graded,
        "worst": worst_point(out, i) if g.code.size else None,
        "points": _plot_points(out),
        "classes": sorted({b.k for b in out.blocks}),
        "uncertain": out.uncertain,
    }
    smoothing = {b.smoothing for b in out.blocks if b.smoothing}
    if smoothing:
        record["label_smoothing"] = float(min(smoothing))
    return record


# --------------------------------------------------------------------------- equivalence


def pairwise(names: list[str], dtype: str, device: str, quantity: str, budget: float,
             deep: bool = False) -> list[dict]:
    """Cross-framework equivalence of row subjects of one family on the same fixed rows
    (the `values` / `grads` blocks), the certified truth as arbiter: one
    audit.equivalence entry per pair (where they differ, by how many ulps, who is
    closer), its `input` the point's margin (plot_x) and `rows` the widest gap's row and
    the two repro commands."""
    import itertools

    from audit.batch import Batch
    from audit.equivalence import _apart, entry
    from audit.softmax_family import RowCase, grade_blocks, plot_x, row_blocks
    from audit.subjects import get

    check = "grads" if quantity == "grad" else "values"
    outs = {}
    for name in names:
        s = get(name)
        outs[name] = grade_blocks(s, RowCase(name, check, dtype, device),
                                  row_blocks(s.family, check, dtype, deep), budget, deep)
    first = outs[names[0]]
    xs = {bi: plot_x(b) for bi, b in enumerate(first.blocks)}
    x = np.array([xs[int(bi)][int(r)] for bi, r, _ in first.where])
    pts = Batch.of(x, first.variables["y"])
    entries = []
    for a, b in itertools.combinations(names, 2):
        oa, ob = outs[a], outs[b]
        if oa.graded.code.size != ob.graded.code.size:
            continue  # a point left out as uncertain by one only: not comparable
        e = entry([a, b], oa.observed, ob.observed, oa.graded.ulp, ob.graded.ulp, pts,
                  oa.expected, dtype, device, quantity)
        e["family"] = get(a).family
        if e["n_differ"]:
            i = _apart(oa.observed, ob.observed, dtype)[2]
            bi, r, j = (int(v) for v in oa.where[i])
            blk = oa.blocks[bi]
            e["rows"] = {"pattern": str(blk.pattern[r]), "classes": blk.k,
                         "component": None if j < 0 else j,
                         "repro": [repro(n, dtype, device, blk, r, quantity == "grad")
                                   for n in (a, b)]}
        entries.append(e)
    return entries
