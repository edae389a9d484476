"""Softmax cross-entropy, log_softmax and logsumexp in every framework, graded against
the certified reference (reference/softmax.py) row by row: the loss per row, the
gradient and log_softmax per logit.

- test_row_check: fixed rows (audit/softmax_family.py: 2, 3, 10, 1000 and 10**5
  classes; dominant, equal, masked, spread, infinite rows), one test per subject x check
  x dtype x device, judged strictly against audit/contracts_data (a new finding fails,
  and so does a declared deviation that stopped happening); the `reduced` check, one
  test per reduction too, grades fixed batches of rows reduced by the framework, one
  value per batch (audit/softmax_reduced.py).
- the cross_entropy_probs family (keras.categorical, from_logits=False) takes rows of
  class probabilities instead (audit/softmax_probs_rows.py), graded against
  reference.cross_entropy_probs, in the same tests.
- test_row_search: Hypothesis rows steered towards large ulp error (non-strict); for
  rows of probabilities, the softmax of drawn logits, rounded to the dtype.
- the two-class identity: cross_entropy([0, x], 1) is bce_with_logits(x, 1), for the
  reference at every finite float16 x, and each framework's cross_entropy graded
  against the same truth as its bce_with_logits (their differences are recorded).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings, target
from hypothesis import strategies as st

import reference
from audit import equivalence, regions, softmax_reduced, workers
from audit import softmax_family as sf
from audit.batch import Batch
from audit.contracts import judge
from audit.grading import grade
from audit.softmax_records import build_row_record, pairwise, repro
from audit.subjects import Subject, get


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _deep(config: pytest.Config) -> bool:
    from audit.plugin import _profile_and_seed

    return _profile_and_seed(config)[0] == "audit"


def _selected(config: pytest.Config) -> list[Subject]:
    return sf.row_subjects(_csv(config.getoption("--subjects")),
                           _csv(config.getoption("--frameworks")))


def _chosen(config: pytest.Config) -> list[Subject]:
    """The row subjects graded eager (the only execution rows have: test_row_execution)."""
    opts = config.audit  # type: ignore[attr-defined]
    return _selected(config) if "eager" in opts["executions"] else []


# Why rows are graded eager only: a compiled function is specialised on what its call
# closes over, and a row block's class indices travel as a keyword of the call (a float16
# tensor cannot hold the index 99999), so each block would compile anew (torch's recompile
# limit is an error here, by design) or, cached by shape, reuse another block's labels.
ROWS_EAGER_ONLY = {
    "compiled": "the row families (cross_entropy, log_softmax, logsumexp, "
                "cross_entropy_probs) are graded eager "
                "only: the class indices are a keyword of the call, and a compiled function "
                "would be specialised on each block's indices",
    "autocast": "the row families (cross_entropy, log_softmax, logsumexp, "
                "cross_entropy_probs) are graded eager "
                "only: the row suite has no autocast execution yet",
}


def row_cases(config: pytest.Config) -> list[sf.RowCase]:
    """Subject x check x dtype x device (softmax_family.in_ci under the `ci` profile)."""
    opts = config.audit  # type: ignore[attr-defined]
    deep = _deep(config)
    e = opts["label_smoothing"] or sf.DEFAULT_SMOOTHING
    cases = []
    for s in _chosen(config):
        for check in sf.FAMILIES[s.family].checks:
            for dtype in opts["dtypes"]:
                if not deep and not sf.in_ci(s.family, check, dtype):
                    continue
                reductions = softmax_reduced.case_reductions(s) if check == "reduced" \
                    else ("none",)
                cases += [sf.RowCase(s.name, check, dtype, device, e, r)
                          for r in reductions for device in opts["devices"]]
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    if "row_case" in metafunc.fixturenames:
        cases = row_cases(config)
        metafunc.parametrize("row_case", cases, ids=[c.id for c in cases])
    if "row_search" in metafunc.fixturenames:
        opts = config.audit  # type: ignore[attr-defined]
        deep = _deep(config)  # ci: cross_entropy in float16 and float32
        params = [(s.name, q, d) for s in _chosen(config) for d in opts["dtypes"]
                  for q in (("loss", "grad") if sf.FAMILIES[s.family].targets else ("loss",))
                  if "cpu" in opts["devices"] and (deep or (
                      s.family == "cross_entropy" and d in sf.CI_ROW_DTYPES))]
        metafunc.parametrize("row_search", params, ids=[f"{n}[{d}] {q}" for n, q, d in params])
    if "row_pair" in metafunc.fixturenames:
        opts = config.audit  # type: ignore[attr-defined]
        params = [(d, q) for d in opts["dtypes"] for q in ("loss", "grad")
                  if "cpu" in opts["devices"]]
        metafunc.parametrize("row_pair", params, ids=[f"{d}-{q}" for d, q in params])
    if "row_execution" in metafunc.fixturenames:
        opts = config.audit  # type: ignore[attr-defined]
        params = [(s.name, e) for s in _selected(config) for e in opts["executions"]
                  if e != "eager"]
        metafunc.parametrize("row_execution", params, ids=[f"{n} {e}" for n, e in params])
    if "two_class" in metafunc.fixturenames:
        names = [s.name for s in _chosen(config) if s.family == "cross_entropy"]
        metafunc.parametrize("two_class", names, ids=names)


def _skip(audit, subject: Subject, dtype: str | None, device: str, reason: str) -> None:
    audit.collector.skip(subject.name, dtype, device, reason)
    pytest.skip(reason)


def _applicable(audit, case: sf.RowCase) -> list:
    return [c for c in audit.contracts
            if c.applies(case.subject, case.check, case.dtype, case.device, case.reduction)]


def _describe(out: sf.RowOutcome, verdict) -> str:
    lines = []
    idx = np.flatnonzero(verdict.unexplained)
    if idx.size:
        lines.append(f"{idx.size} unexplained finding(s) of {out.graded.code.size} points:")
        for status in np.unique(out.graded.status[idx].astype(str)):
            pick = idx[out.graded.status[idx] == status]
            i = int(pick[np.argmax(np.nan_to_num(out.graded.ulp[pick], posinf=1e308))])
            bi, r, j = (int(v) for v in out.where[i])
            b = out.blocks[bi]
            c = out.case
            lines.append(f"  {status}: {pick.size} points, e.g. {b.pattern[r]} (K={b.k}"
                         f"{'' if j < 0 else f', component {j}'}) observed="
                         f"{float(out.observed[i])!r} expected={float(out.expected[i])!r} "
                         f"ulp={out.graded.ulp[i]:.3g}\n    repro: "
                         f"{repro(c.subject, c.dtype, c.device, b, r, c.quantity == 'grad')}")
    for c in verdict.unobserved:
        lines.append(f"contract {c.id!r} no longer holds: no {'|'.join(c.status)} point in "
                     f"region `{c.region}` (the framework changed or the contract is wrong)")
    return "\n".join(lines)


def test_row_execution(row_execution: tuple[str, str], audit) -> None:
    """Compiled and autocast executions of a row subject: a recorded skip with the reason,
    one per subject and execution (never silently dropped)."""
    name, execution = row_execution
    subject = get(name)
    reason = subject.skip_reason("float32", "cpu", execution=execution) or \
        f"{execution}: {ROWS_EAGER_ONLY[execution.split('_')[0]]}"
    _skip(audit, subject, None, "cpu", reason)


def test_row_check(row_case: sf.RowCase, audit, request: pytest.FixtureRequest) -> None:
    case = row_case
    subject = get(case.subject)
    reduced = case.check == "reduced"
    reason = sf.not_taken(subject, case.check) or subject.skip_reason(
        case.dtype, case.device, reduction=case.reduction)
    if reason is not None:
        _skip(audit, subject, case.dtype, case.device, reason)
    run = softmax_reduced.run_case if reduced else sf.run_case
    try:
        out = run(subject, case, audit.budgets[case.dtype], _deep(request.config))
    except workers.WorkerUnavailable as e:
        _skip(audit, subject, case.dtype, case.device, str(e))
    verdict = judge(out.graded.status, out.variables, _applicable(audit, case), case.dtype,
                    ulp=out.graded.ulp)
    outcome = "failed" if not verdict.passed else ("xfailed" if verdict.matched else "passed")
    build = softmax_reduced.build_record if reduced else build_row_record
    audit.collector.add(build(out, verdict, outcome, request.node.nodeid))
    if not verdict.passed:
        text = softmax_reduced.describe(out, verdict) if reduced else _describe(out, verdict)
        pytest.fail(f"{case.id}: {text}", pytrace=False)
    if verdict.matched:
        pytest.xfail("known deviation: " + "; ".join(f"{c.id} ({c.reason})"
                                                     for c in verdict.matched))


# --------------------------------------------------------------------------- search


@st.composite
def rows(draw: st.DrawFn, dtype: str) -> tuple[np.ndarray, int]:
    """A row of 2..12 logits: a base level, a spread, a few logits pushed far out
    (dominant, -inf masks), every value rounded to the dtype; and a class index."""
    from audit.strategies import logits

    k = draw(st.integers(2, 12))
    base = draw(logits(dtype).filter(np.isfinite))
    spread = draw(st.sampled_from([0.0, 2.0**-20, 1e-3, 1.0, 10.0, 100.0, 1e4]))
    offsets = draw(st.lists(st.floats(-1, 1), min_size=k, max_size=k))
    row = base + spread * np.array(offsets)
    for _ in range(draw(st.integers(0, 2))):
        j = draw(st.integers(0, k - 1))
        row[j] = draw(st.sampled_from([-np.inf, 1e4, -1e4, 88.0, -88.0, 30.0, base + 1e4]))
    row = sf.representable(row, dtype)
    return row, draw(st.integers(0, k - 1))


@st.composite
def prob_rows(draw: st.DrawFn, dtype: str) -> tuple[np.ndarray, int]:
    """A row of class probabilities (cross_entropy_probs): the float64 softmax of a drawn
    row of logits (-inf masks give exact zeros), sometimes scaled off a sum of 1,
    rounded to the dtype; and a class index."""
    from audit.softmax_probs_rows import softmax

    logits, label = draw(rows(dtype))
    p = softmax(logits)
    p = np.full(logits.size, 1.0 / logits.size) if p is None else p
    scale = draw(st.sampled_from([1.0, 1.0, 0.5, 2.0, 1e-3]))
    return sf.representable(p * scale, dtype), label


@settings(suppress_health_check=[*settings().suppress_health_check,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_row_search(row_search, audit, data) -> None:
    """Findings no contract explains, on drawn rows, steered towards large ulp error."""
    name, quantity, dtype = row_search
    subject = get(name)
    reason = subject.skip_reason(dtype, "cpu")
    if reason is not None:
        pytest.skip(reason)
    draw_row = prob_rows if subject.family == sf.PROBS_FAMILY else rows
    drawn = data.draw(st.lists(draw_row(dtype), min_size=1, max_size=8))
    by_k: dict[int, list] = {}
    for row, label in drawn:
        by_k.setdefault(row.size, []).append((row, label))
    check = "grads" if quantity == "grad" else "values"
    case = sf.RowCase(name, check, dtype)
    bs = [sf.Block(np.stack([r for r, _ in v]), np.array(["drawn"] * len(v), dtype=object),
                   labels=np.array([c for _, c in v], np.int64)
                   if sf.FAMILIES[subject.family].targets else None)
          for v in by_k.values()]
    try:
        out = sf.grade_blocks(subject, case, bs, audit.budgets[dtype], cache=False)
    except workers.WorkerUnavailable as e:
        pytest.skip(str(e))
    out.mode = "sampled"
    finite = out.graded.ulp[np.isfinite(out.graded.ulp)]
    if finite.size:
        target(float(np.max(finite)), label="max finite ulp error")
    # a drawn point of a declared kind is known whatever its ulp: the declared bounds are
    # the fixed rows' worst, and drawn rows are steered past them on purpose
    verdict = judge(out.graded.status, out.variables, _applicable(audit, case), dtype,
                    strict=False)
    bad = np.flatnonzero(verdict.unexplained)
    if bad.size:
        note(_describe(out, verdict))
        raise AssertionError(f"{case.id}: {_describe(out, verdict)}")


# --------------------------------------------------------------------------- two classes


def test_two_class_identity_reference() -> None:
    """cross_entropy([0, x], 1) = softplus(-x) = bce_with_logits(x, 1) and its gradient
    in x, sigmoid(x) - 1: the certified references agree at every finite float16 x."""
    every = regions.all_values("float16")
    x = every[np.isfinite(every)]
    rows_ = np.stack([np.zeros_like(x), x], axis=1)
    labels = np.ones(x.size, np.int64)
    ce = reference.rounded_cross_entropy("float16", rows_, labels)
    bce = reference.rounded("bce_with_logits", "float16", x, 1.0)
    bad = np.flatnonzero(ce.view(np.uint64) != bce.view(np.uint64))
    assert not bad.size, f"{bad.size} logits differ, e.g. x={x[bad[:3]].tolist()}: " \
                         f"ce={ce[bad[:3]].tolist()} bce={bce[bad[:3]].tolist()}"
    ce_grad = reference.rounded_cross_entropy("float16", rows_, labels, grad=True)[:, 1]
    bce_grad = reference.rounded("bce_with_logits", "float16", x, 1.0, grad=True)
    bad = np.flatnonzero(ce_grad.view(np.uint64) != bce_grad.view(np.uint64))
    assert not bad.size, f"{bad.size} gradients differ, e.g. x={x[bad[:3]].tolist()}"


def test_two_class_matches_bce(two_class: str, audit) -> None:
    """Each framework's cross_entropy on [0, x] with label 1, every finite float16 x (and
    the float32 logit grid), graded against the same truth as its bce_with_logits(x, 1):
    the expected values must be identical; where the two losses' statuses differ is
    recorded (an equivalence entry with `two_class`), not asserted."""
    from audit import subjects as subjects_mod

    subject = get(two_class)
    bce_name = f"{subject.framework}.bce_with_logits"
    if bce_name not in subjects_mod.SUBJECTS:
        pytest.skip(f"no {bce_name} to compare with")
    bce = get(bce_name)
    done = 0
    for dtype in ("float16", "float32"):
        if dtype not in audit.options["dtypes"] or subject.skip_reason(dtype, "cpu") or \
                bce.skip_reason(dtype, "cpu"):
            continue
        x = regions.all_values(dtype) if dtype == "float16" else regions.logit_grid(dtype)
        x = np.unique(x[np.isfinite(x)])
        b = sf.Block(np.stack([np.zeros_like(x), x], axis=1),
                     np.array(["two classes"] * x.size, dtype=object),
                     labels=np.ones(x.size, np.int64))
        for quantity in ("loss", "grad"):
            grad = quantity == "grad"
            case = sf.RowCase(subject.name, "grads" if grad else "values", dtype)
            try:
                out = sf.grade_blocks(subject, case, [b], audit.budgets[dtype], cache=False)
                bce_obs = bce.evaluate(dtype, "cpu", x, np.ones_like(x), grad=grad)
            except workers.WorkerUnavailable as e:
                pytest.skip(str(e))
            pick = slice(None) if not grad else slice(1, None, 2)  # d/dx: component 1
            expected = reference.rounded("bce_with_logits", dtype, x, 1.0, grad=grad)
            assert out.uncertain == 0 and np.array_equal(
                out.expected[pick].view(np.uint64), expected.view(np.uint64)), \
                f"{dtype} {quantity}: the cross_entropy and bce_with_logits truths differ"
            parts = (out.exact[0][pick], out.exact[1][pick])
            bce_graded = grade(bce_obs, expected, *parts, dtype, audit.budgets[dtype])
            entry = two_class_entry([subject.name, bce_name], dtype, quantity, x,
                                    (out.observed[pick], bce_obs),
                                    (out.graded, bce_graded), pick, expected)
            audit.collector.equivalence(entry)
            done += 1
    if not done:
        pytest.skip(f"{subject.name} or {bce_name} runs in neither float16 nor float32 here")


def two_class_entry(names: list[str], dtype: str, quantity: str, x: np.ndarray,
                    observed: tuple, graded: tuple, pick: slice, expected: np.ndarray
                    ) -> dict:
    """An equivalence entry (results.json `equivalence`): cross_entropy([0, x], 1) vs
    bce_with_logits(x, 1) of one framework, on the same logits and truth; `two_class`
    counts where only one of them is off."""
    ce_status, bce_status = graded[0].status[pick], graded[1].status
    e = equivalence.entry(names, *observed, graded[0].ulp[pick], graded[1].ulp,
                          Batch.of(x, np.ones_like(x)), expected, dtype, "cpu", quantity)
    e["two_class"] = {"status_differ": int((ce_status != bce_status).sum()),
                      "only_cross_entropy_off": int(((ce_status != "ok") &
                                                     (bce_status == "ok")).sum()),
                      "only_bce_off": int(((ce_status == "ok") & (bce_status != "ok")).sum())}
    return e


# --------------------------------------------------------------------------- equivalence


def test_cross_entropy_frameworks_agree(row_pair: tuple[str, str], audit,
                                        pytestconfig: pytest.Config) -> None:
    """The five cross_entropy subjects on the same fixed rows, pair by pair: where they
    differ, by how many ulps, and which is closer to the certified truth (results.json
    `equivalence` entries with family cross_entropy). keras' losses call tf.nn's kernels:
    that pair must agree bit for bit; the others are recorded, not asserted."""
    dtype, quantity = row_pair
    names = [s.name for s in _chosen(pytestconfig) if s.family == "cross_entropy"
             and s.skip_reason(dtype, "cpu") is None]
    if len(names) < 2:
        pytest.skip(f"fewer than two cross_entropy subjects run {dtype} here ({names})")
    try:
        entries = pairwise(names, dtype, "cpu", quantity, audit.budgets[dtype])
    except workers.WorkerUnavailable as e:
        pytest.skip(str(e))
    for e in entries:
        audit.collector.equivalence(e)
    same = [e for e in entries if set(e["subjects"]) == {"tf.cross_entropy",
                                                        "keras.cross_entropy"}]
    for e in same:
        assert e["n_differ"] == 0, (f"keras.cross_entropy and tf.cross_entropy differ on "
                                    f"{e['n_differ']} of {e['n']} {dtype} points: {e['rows']}")
