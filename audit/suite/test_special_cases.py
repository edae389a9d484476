"""Special cases, one test each, with ids that read as condition -> result:

    tf.bce_with_logits[float32-cpu] loss x=1e+10 y=1 -> 0

The expected result is the certified reference rounded to the dtype. A case inside a
declared deviation (audit/contracts_data, check "values"/"grads") is an xfail that names
it; strictness is enforced on the full grids in test_checks.py.

The framework sees all of a subject's special points in one call (each point fills a
whole vector block of PAD values, so it takes the vector path as in the grids and
`probe`); a call that raises or crashes is repeated point by point, so every failure is
the failing point's own. On a device this machine lacks, one test per subject and dtype
says why (not one per point).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import reference
from audit import runners, subjects, workers
from audit.batch import Batch
from audit.checks import PAD, Case, error_text
from audit.contracts import judge
from audit.grading import CRASH, grade
from audit.records import repro_command


def _num(v: float) -> str:
    return "0" if v == 0 else f"{v:g}"


def special_points(subject: subjects.Subject, dtype: str) -> list[tuple[float, float]]:
    """The family's classic traps, rounded to the dtype, with hard and soft targets."""
    return [(x, y) for x in subject.family_record.special_inputs(dtype)
            for y in (0.0, 0.5, 1.0)]


def special_cases(config: pytest.Config) -> list[tuple[str, Case, int, float, float, float]]:
    opts = config.audit  # type: ignore[attr-defined]
    out = []
    for s in opts["subjects"]:
        for dtype in opts["dtypes"]:
            for device in opts["devices"]:
                if device != "cpu" and runners.cuda_hint() is not None:
                    out.append((f"{s.name}[{dtype}-{device}] specials",
                                Case(s.name, "values", dtype, device), -1, 0.0, 0.0, 0.0))
                    continue
                for quantity, check in (("loss", "values"), ("grad", "grads")):
                    for i, (x, y) in enumerate(special_points(s, dtype)):
                        exact = reference.rounded(s.reference_op, dtype, x, y,
                                                  grad=quantity == "grad")
                        want = float(exact)
                        var = s.family_record.variable
                        tid = f"{s.name}[{dtype}-{device}] {quantity} {var}={_num(x)} " \
                              f"y={_num(y)} -> {_num(want)}"
                        out.append((tid, Case(s.name, check, dtype, device), i, x, y, want))
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "special" in metafunc.fixturenames:
        cases = special_cases(metafunc.config)
        metafunc.parametrize("special", cases, ids=[c[0] for c in cases])


@functools.cache
def _all_at_once(name: str, dtype: str, device: str, grad: bool) -> np.ndarray | None:
    """The subject's observations of all its special points from one call (one value per
    point), or None when that call raises or crashes (then each point runs alone)."""
    subject = subjects.get(name)
    xs, ys = (np.repeat(np.array(c, dtype=np.float64), PAD)
              for c in zip(*special_points(subject, dtype), strict=True))
    try:
        out = subject.evaluate(dtype, device, xs, ys, grad=grad)
    except (workers.FrameworkError, workers.WorkerCrash):
        return None
    return np.asarray(out, dtype=np.float64)[::PAD]


def _observe(subject: subjects.Subject, case: Case, i: int, x: float, y: float
             ) -> tuple[np.ndarray | None, str | None, bool]:
    """(observed, error text, crashed) of one special point."""
    grad = case.quantity == "grad"
    together = _all_at_once(subject.name, case.dtype, case.device, grad)
    if together is not None:
        return together[i:i + 1], None, False
    try:  # the point fills a whole vector batch, as in the audit grids and `probe`
        out = subject.evaluate(case.dtype, case.device, np.full(PAD, x), np.full(PAD, y),
                               grad=grad)
        return np.asarray(out, dtype=np.float64)[:1], None, False
    except workers.WorkerUnavailable:
        raise
    except Exception as e:
        return None, error_text(e), isinstance(e, workers.WorkerCrash)


def test_special_case(special, audit) -> None:
    tid, case, i, x, y, want = special
    subject = subjects.get(case.subject)
    reason = subject.skip_reason(case.dtype, case.device)
    if reason is not None:
        pytest.skip(reason)
    grad = case.quantity == "grad"
    try:
        observed, error, crashed = _observe(subject, case, i, x, y)
    except workers.WorkerUnavailable as e:
        pytest.skip(str(e))
    hi, lo = reference.exact_parts(subject.reference_op, x, y, grad=grad)
    g = grade(observed, np.array([want]), np.atleast_1d(hi), np.atleast_1d(lo), case.dtype,
              audit.budgets[case.dtype])
    if crashed:
        g.code[0] = CRASH
    if g.status[0] == "ok":
        return
    pts = Batch.of([x], y)
    verdict = judge(g.status, pts, audit.applicable(case), case.dtype, strict=False,
                    ulp=g.ulp)
    got = error or f"observed {float(observed[0])!r}"
    if verdict.unexplained.any():
        pytest.fail(f"{tid}: {g.status[0]}, {got} (ulp {g.ulp[0]:.3g})\nrepro: "
                    f"{repro_command(case.subject, case.dtype, case.device, x, y, grad=grad)}",
                    pytrace=False)
    pytest.xfail(f"{g.status[0]}, {got}: known deviation {verdict.matched[0].id}")
