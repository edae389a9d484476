"""Cross-framework equivalence and the two-step `sigmoid_bce` breakdown.

- Pairwise: torch vs tf vs keras on the same inputs: where they differ, by how many
  ulps (ordinal distance between the two observations), and which is closer to truth.
- Executions: one subject eager vs compiled (or under autocast): the same measures.
- Breakdown: per framework, dtype and hard target, the smallest |logit| at which
  BCELoss(sigmoid(x)) has lost every bit (relative error >= 1), next to the fused loss.
"""

from __future__ import annotations

import itertools

import numpy as np

from audit import subjects
from audit.batch import Batch
from audit.checks import Case, point_set, reference_values, run_framework, subject_reference
from audit.grading import grade, ordinal_distances
from audit.records import _params, repro_command
from audit.regions import logit_grid, representable
from audit.results import to_json_value

FUSED = "bce_with_logits"
TWO_STEP = "sigmoid_bce"


def observe(subject: subjects.Subject, dtype: str, device: str, pts: Batch, quantity: str
            ) -> np.ndarray:
    check = "grads" if quantity == "grad" else "values"
    observed, _, _ = run_framework(subject, Case(subject.name, check, dtype, device), pts)
    return observed


def _exact(dtype: str, pts: Batch, quantity: str) -> tuple[np.ndarray, tuple]:
    return reference_values(FUSED, dtype, pts, quantity == "grad")


def pairwise(names: list[str], dtype: str, device: str, pts: Batch, quantity: str,
             budget: float) -> list[dict]:
    """One equivalence entry per pair of subjects (same op, different frameworks)."""
    expected, parts = _exact(dtype, pts, quantity)
    obs = {n: observe(subjects.get(n), dtype, device, pts, quantity) for n in names}
    ulp = {n: grade(obs[n], expected, *parts, dtype, budget).ulp for n in names}
    return [entry([a, b], obs[a], obs[b], ulp[a], ulp[b], pts, expected, dtype, device,
                  quantity) for a, b in itertools.combinations(names, 2)]


def entry(labels: list[str], oa: np.ndarray, ob: np.ndarray, ulp_a: np.ndarray,
          ulp_b: np.ndarray, pts: Batch, expected: np.ndarray, dtype: str, device: str,
          quantity: str) -> dict:
    """Where two observations of the same points differ, by how many ulps (ordinal
    distance between them), and which is closer to the truth."""
    same, between, i = _apart(oa, ob, dtype)
    ua, ub = np.nan_to_num(ulp_a, nan=np.inf), np.nan_to_num(ulp_b, nan=np.inf)
    return {
        "dtype": dtype, "device": device, "quantity": quantity, "subjects": labels,
        "n": int(oa.size), "n_differ": int((~same).sum()),
        "max_ulp_between": to_json_value(float(np.max(np.where(same, 0.0, between)))),
        "a_closer": int((ua < ub).sum()), "b_closer": int((ub < ua).sum()),
        "ties": int((ua == ub).sum()),
        "worst": {"input": to_json_value(float(np.ravel(pts.input[i])[0])),
                  "target": to_json_value(float(pts.target[i])),
                  "a_observed": to_json_value(float(oa[i])),
                  "b_observed": to_json_value(float(ob[i])),
                  "expected": to_json_value(float(expected[i])),
                  "a_ulp": to_json_value(float(ua[i])), "b_ulp": to_json_value(float(ub[i]))},
    }


def _apart(oa: np.ndarray, ob: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(same mask, ulps between the two observations, index of the widest gap)."""
    same = (oa == ob) | (np.isnan(oa) & np.isnan(ob))
    between = ordinal_distances(oa, ob, dtype)
    between = np.where(between < 0, np.inf, between)
    return same, between, int(np.argmax(np.where(same, -1.0, between)))


def executions(name: str, execution: str, dtype: str, device: str, quantity: str,
               budget: float) -> dict:
    """Eager vs `execution` (compiled, autocast) of one subject on its values / grads
    points: an equivalence entry with `executions` ["eager", execution], and the worst
    point's two repro commands."""
    s = subjects.get(name)
    check = "grads" if quantity == "grad" else "values"
    pts, _ = point_set(s, check, dtype)
    eager, _, _ = run_framework(s, Case(name, check, dtype, device), pts)
    other, _, _ = run_framework(s, Case(name, check, dtype, device, execution=execution), pts)
    expected, parts = subject_reference(s, dtype, pts, quantity == "grad")
    ua, ub = (grade(o, expected, *parts, dtype, budget).ulp for o in (eager, other))
    e = entry([name, name], eager, other, ua, ub, pts, expected, dtype, device, quantity)
    e["executions"] = ["eager", execution]
    if e["n_differ"]:
        i = _apart(eager, other, dtype)[2]
        params = _params(name, pts, i)
        e["worst"]["repro"] = [
            repro_command(name, dtype, device, float(pts.input[i]), float(pts.target[i]),
                          grad=quantity == "grad", params=params, execution=ex)
            for ex in ("eager", execution)]
    return e


def breakdown(framework: str, dtype: str, device: str, target: float) -> dict:
    """Smallest |logit| where the two-step pipeline has no correct bit left."""
    xs = logit_grid(dtype)
    xs = xs[np.isfinite(xs)]
    pts = Batch.of(xs, target)
    two = subjects.get(f"{framework}.{TWO_STEP}")
    observed = observe(two, dtype, device, pts, "loss")
    _, (hi, lo) = reference_values(FUSED, dtype, pts, False)
    exact = hi + lo
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(observed - exact) / np.abs(exact)
    broken = ~(rel < 1.0)  # NaN counts as broken
    logit = float(xs[broken][np.argmin(np.abs(xs[broken]))]) if broken.any() else None
    at = {}
    big = float(representable([1e10], dtype)[0])
    for quantity in ("loss", "grad"):
        p1 = Batch.of([big], target)
        o = observe(two, dtype, device, p1, quantity)
        expected, parts = _exact(dtype, p1, quantity)
        at[quantity] = float(grade(o, expected, *parts, dtype, 1.0).ulp[0])
    if logit is None:
        text = (f"{two.name} in {dtype} (target {target:g}) keeps at least one correct bit "
                f"on the whole logit grid")
    else:
        text = (f"{two.name} in {dtype} (target {target:g}) loses all precision from "
                f"x = {logit:.6g} on (relative error >= 1)")
    return {"framework": framework, "dtype": dtype, "device": device, "target": target,
            "logit": logit, "description": text,
            "value_ulp_at_1e10": to_json_value(at["loss"]),
            "grad_ulp_at_1e10": to_json_value(at["grad"])}
