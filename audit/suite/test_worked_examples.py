"""The 3x3 worked examples of the documents the project started from, graded.

Each document computes a mean BCE-with-logits of a 3x3 float32 tensor by hand (0.7194 and
0.8000147727101611). Every selected fused-loss subject that has a "mean" reduction
computes the same mean here; it is graded against the exact mean of the float32 values
(reference.reduce), and the record keeps the documents' hand values next to it, so the
report can show how far 4-decimal hand rounding drifts (further than float32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import reference
from audit import subjects, workers
from audit.batch import Batch
from audit.checks import Case, Outcome, error_text, grade_observed
from audit.contracts import judge
from audit.records import build_record, exact_string
from audit.results import to_json_value
from reference.vectorized import double_double

CHECK = "worked_examples"
DTYPE = "float32"  # the documents' tensors are float32
# (name, logits, targets, the document's hand-computed mean)
EXAMPLES = (
    ("mean of 3x3 logits, first document",
     [[-0.4089, -1.2471, 0.5907], [-0.4897, -0.8267, -0.7349], [0.5241, -0.1246, -0.4751]],
     [[0, 1, 1], [0, 0, 1], [1, 0, 1]], 0.7194),
    ("mean of 3x3 logits, second document",
     [[1.9072, 1.1079, 1.4906], [-0.6584, -0.0512, 0.7608], [-0.0614, 0.6583, 0.1095]],
     [[0, 1, 1], [1, 1, 1], [0, 0, 0]], 0.8000147727101611),
)


@dataclass(frozen=True)
class ExampleCase(Case):
    """A Case of the worked-examples check (a mean loss; not one of checks.CHECKS)."""

    @property
    def quantity(self) -> str:
        return "loss"


def _params(config: pytest.Config) -> list[tuple[str, str]]:
    opts = config.audit  # type: ignore[attr-defined]
    if DTYPE not in opts["dtypes"]:
        return []
    return [(s.name, device) for s in opts["subjects"]
            if s.family == "bce_with_logits" and "mean" in s.reductions
            for device in opts["devices"]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "example_case" in metafunc.fixturenames:
        params = _params(metafunc.config)
        metafunc.parametrize("example_case", params,
                             ids=[f"{n}[{DTYPE}-{dev}] worked examples" for n, dev in params])


def hand_rounded(logits: np.ndarray, targets: np.ndarray) -> float:
    """The mean as computed by hand with every sigmoid rounded to 4 decimals: how the
    documents' values drift (the second one is exactly this)."""
    p = np.round(1 / (1 + np.exp(-logits)), 4)
    return float(np.mean(-(targets * np.log(p) + (1 - targets) * np.log(1 - p))))


def grade_examples(name: str, device: str, budget: float) -> tuple[Outcome, list[dict]]:
    """Every example's mean by the subject, graded against the exact mean."""
    subject = subjects.get(name)
    xs = [np.array(x, np.float32).ravel().astype(np.float64) for _, x, _, _ in EXAMPLES]
    ys = [np.array(y, np.float64).ravel() for _, _, y, _ in EXAMPLES]
    k = len(EXAMPLES)
    observed, expected, hi, lo = (np.full(k, np.nan) for _ in range(4))
    errors: dict[int, str] = {}
    crashes: set[int] = set()
    exact = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        try:
            observed[i] = float(np.asarray(subject.evaluate(DTYPE, device, x, y,
                                                            reduction="mean")))
        except workers.WorkerUnavailable:
            raise
        except Exception as e:  # a finding, recorded as the example's status
            errors[i] = error_text(e)
            if isinstance(e, workers.WorkerCrash):
                crashes.add(i)
        value = reference.reduce(subject.reference_op, "mean", x, y)
        expected[i] = reference.round_to(value, DTYPE)
        hi[i], lo[i] = double_double(value._mpf_)
        exact.append(exact_string(hi[i], lo[i]))
    graded = grade_observed(observed, errors, frozenset(crashes), expected, (hi, lo), DTYPE,
                            budget)
    case = ExampleCase(name, CHECK, DTYPE, device, "mean")
    out = Outcome(case, Batch.of([x[0] for x in xs], [y[0] for y in ys]), observed,
                  expected, (hi, lo), graded, errors, "grid", subject.reference_op,
                  frozenset(crashes), (np.array(xs), np.array(ys)))
    rows = [{"name": label, "observed": None if i in errors else to_json_value(observed[i]),
             "expected": to_json_value(expected[i]), "exact": exact[i],
             "ulp": to_json_value(float(graded.ulp[i])), "status": str(graded.status[i]),
             "hand": hand, "hand_rounded": hand_rounded(xs[i], ys[i])}
            for i, (label, _, _, hand) in enumerate(EXAMPLES)]
    return out, rows


def test_worked_examples(example_case, audit, request: pytest.FixtureRequest) -> None:
    """The documents' means, computed by the framework: within budget of the exact mean."""
    name, device = example_case
    case = ExampleCase(name, CHECK, DTYPE, device, "mean")
    reason = subjects.get(name).skip_reason(DTYPE, device, reduction="mean")
    if reason is not None:
        audit.collector.skip(name, DTYPE, device, reason)
        pytest.skip(reason)
    try:
        out, rows = grade_examples(name, device, audit.budgets[DTYPE])
    except workers.WorkerUnavailable as e:
        audit.collector.skip(name, DTYPE, device, str(e))
        pytest.skip(str(e))
    verdict = judge(out.graded.status, out.points, audit.applicable(case), DTYPE,
                    ulp=out.graded.ulp)
    outcome = "failed" if not verdict.passed else ("xfailed" if verdict.matched else "passed")
    record = build_record(out, verdict, outcome, request.node.nodeid)
    record["examples"] = rows
    audit.collector.add(record)
    if not verdict.passed:
        bad = [r for r in rows if r["status"] != "ok"]
        pytest.fail(f"{case.id}: {bad}\nrepro: {record['worst']['repro']}", pytrace=False)
    if verdict.matched:
        pytest.xfail("known deviation: " + "; ".join(c.id for c in verdict.matched))
