"""The stability audit: every subject x check x dtype x device x reduction, on fixed
deterministic inputs, graded against the certified reference. Declared deviations
(audit/contracts_data/*.toml, plus --contracts files) turn a check into a strict xfail:
an unexplained finding fails, and so does a contract that no longer happens."""

from __future__ import annotations

import numpy as np
import pytest

from audit import subjects, workers
from audit.checks import (
    CHECKS,
    Case,
    mismatched_shapes,
    run_case,
    run_reduced_case,
    validation_reason,
)
from audit.contracts import judge
from audit.records import build_record

AUDIT_CHECKS = tuple(CHECKS)
AUDIT_EXECUTIONS = True  # values and grads compiled / under autocast too


def _skip_reason(subject: subjects.Subject, case: Case) -> str | None:
    if case.check == "validation" and validation_reason(subject) is not None:
        return validation_reason(subject)
    weighted = case.check.startswith("weighted")
    if weighted and not (subject.weight or subject.pos_weight):
        return f"{subject.name} takes neither weight nor pos_weight: " \
               f"{subject.weight_reason}; {subject.pos_weight_reason}"
    return subject.skip_reason(case.dtype, case.device, reduction=case.reduction,
                               weight=weighted and subject.weight,
                               pos_weight=weighted and subject.pos_weight,
                               execution=case.execution)


def _describe(out, verdict) -> str:
    lines = []
    idx = np.flatnonzero(verdict.unexplained)
    if idx.size:
        lines.append(f"{idx.size} unexplained finding(s) of {out.graded.status.size} points:")
        for status in np.unique(out.graded.status[idx].astype(str)):
            pick = idx[out.graded.status[idx] == status]
            worst = pick[np.argmax(np.nan_to_num(out.graded.ulp[pick], posinf=1e308))]
            x, y = out.points.input[worst], out.points.target[worst]
            observed, expected = float(out.observed[worst]), float(out.expected[worst])
            lines.append(f"  {status}: {pick.size} points, e.g. x={x.tolist()!r} y={float(y)!r} "
                         f"observed={observed!r} expected={expected!r} "
                         f"ulp={out.graded.ulp[worst]:.3g}")
    for c in verdict.unobserved:
        lines.append(f"contract {c.id!r} no longer holds: no {'|'.join(c.status)} point in "
                     f"region `{c.region}` (the framework changed or the contract is wrong)")
    return "\n".join(lines)


def test_check(case: Case, audit, request: pytest.FixtureRequest) -> None:
    subject = subjects.get(case.subject)
    reason = _skip_reason(subject, case)
    if reason is not None:
        audit.collector.skip(case.subject, case.dtype, case.device, reason)
        pytest.skip(reason)
    budget = audit.budgets[case.dtype]
    run = run_reduced_case if case.check == "reduced" else run_case
    try:
        out = run(subject, case, budget)
    except workers.WorkerUnavailable as e:  # the framework cannot start here: a skip
        audit.collector.skip(case.subject, case.dtype, case.device, str(e))
        pytest.skip(str(e))
    verdict = judge(out.graded.status, out.points, audit.applicable(case), case.dtype,
                    ulp=out.graded.ulp)
    outcome = "failed" if not verdict.passed else ("xfailed" if verdict.matched else "passed")
    record = build_record(out, verdict, outcome, request.node.nodeid)
    if case.check == "validation":
        record["validation"]["shapes"] = mismatched_shapes(subject, case)
    audit.collector.add(record)
    if not verdict.passed:
        pytest.fail(f"{case.id}: {_describe(out, verdict)}\nworst repro: "
                    f"{record['worst']['repro']}", pytrace=False)
    if verdict.matched:
        pytest.xfail("known deviation: " + "; ".join(f"{c.id} ({c.reason})"
                                                     for c in verdict.matched))
