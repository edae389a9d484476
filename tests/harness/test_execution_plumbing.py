"""Executions (DESIGN.md section 10): which frameworks have them and why not, that a
compiled call really runs compiled (never a quiet eager fallback), that probe, records
and repro commands carry the execution, the validation check's summary, and how
contracts apply to executions."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from audit import contracts, invalid_input, runners, subjects
from audit.checks import Case, mismatched_shapes, run_case, validation_points
from audit.cli import main
from audit.records import build_record


def _runnable(name: str, execution: str, dtype: str = "float32") -> subjects.Subject:
    s = subjects.get(name)
    reason = s.skip_reason(dtype, "cpu", execution=execution)
    if reason is not None:
        pytest.skip(reason)
    return s


def _audit(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_framework_says_which_executions_it_has():
    assert runners.EXECUTIONS == ("eager", "compiled", "autocast_bfloat16", "autocast_float16")
    for fw in runners.names():
        r = runners.get(fw)
        assert r.execution_reason("eager", "cpu") is None
        assert "unknown execution 'jit'" in r.execution_reason("jit", "cpu")
    for fw in ("tf", "keras", "jax"):  # no autocast for a loss call: said, not guessed
        reason = runners.get(fw).execution_reason("autocast_bfloat16", "cpu")
        assert reason and "autocast" in reason
    for fw in ("torch", "paddle"):
        assert runners.get(fw).execution_reason("autocast_float16", "cpu") is None
    reason = subjects.get("torch.bce").skip_reason("float16", "cpu", execution="autocast_float16")
    assert reason == "autocast_float16 lowers float32 inputs: graded from float32 only"


def test_compiled_torch_bce_accepts_what_eager_rejects_even_past_the_recompile_limit():
    """torch.compile's binary_cross_entropy has no range check (its decomposition cannot
    express one). Eager raises on a target of 1.5. After more compiled functions than
    dynamo's default recompile limit (8) of the same subject, the call must still be
    compiled: a quiet fallback to eager would raise here again."""
    s = _runnable("torch.bce", "compiled")
    q, y = np.full(64, 0.25), np.full(64, 1.5)
    with pytest.raises(Exception, match="between 0 and 1"):
        s.evaluate("float32", "cpu", q, y)
    for dtype in ("float32", "float64"):  # 10 keys of one subject function
        for reduction in ("none", "mean", "sum"):
            s.evaluate(dtype, "cpu", q[:8] * 0 + 0.5, np.ones(8), reduction=reduction,
                       execution="compiled")
        for weight in (np.ones(8), None):
            s.evaluate(dtype, "cpu", np.full(8, 0.5), np.ones(8), grad=True, weight=weight,
                       execution="compiled")
    out = s.evaluate("float32", "cpu", q, y, execution="compiled")
    want = -(1.5 * np.log(0.25) + (1 - 1.5) * np.log(0.75))  # the formula, unchecked
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_probe_record_and_repro_carry_the_execution(capsys):
    s = _runnable("tf.bce_with_logits", "compiled")
    # XLA's gradient at a tiny logit with a soft label underflows where eager's does not
    argv = ["probe", s.name, "--dtype", "float32", "--input=-0x1p-25", "--target", "0.5",
            "--grad"]
    rc, out, err = _audit(capsys, *argv, "--execution", "compiled")
    assert rc == 0, err
    compiled = json.loads(out)
    assert compiled["execution"] == "compiled" and compiled["status"] == "spurious_zero"
    rc, out, _ = _audit(capsys, *argv)
    eager = json.loads(out)
    assert eager["execution"] == "eager" and eager["observed"] != 0.0
    rc, _, err = _audit(capsys, *argv, "--execution", "jit")
    assert rc == 2 and "invalid choice: 'jit'" in err and len(err.strip().splitlines()) == 1
    case = Case(s.name, "grads", "float32", "cpu", execution="compiled")
    assert case.id == "tf.bce_with_logits[float32-cpu] grads execution=compiled"
    record = build_record(run_case(s, case, 4.0), None, "failed", case.id)
    assert record["execution"] == "compiled"
    repro = shlex.split(record["worst"]["repro"])
    assert repro[repro.index("--execution") + 1] == "compiled"
    rc, out, err = _audit(capsys, *repro[3:])
    assert rc == 0, err
    assert json.loads(out)["observed"] == record["worst"]["observed"]


def test_autocast_is_graded_in_the_dtype_it_returns(capsys):
    _runnable("torch.sigmoid_bce", "autocast_bfloat16")
    rc, out, err = _audit(capsys, "probe", "torch.sigmoid_bce", "--dtype", "float32",
                          "--input", "3", "--target", "1", "--execution", "autocast_bfloat16")
    assert rc == 0, err
    probe = json.loads(out)
    # measured: CPU autocast keeps sigmoid and binary_cross_entropy in float32
    assert probe["execution"] == "autocast_bfloat16" and "computed_dtype" not in probe


def test_the_validation_check_says_what_happens_to_invalid_input():
    s = _runnable("torch.bce", "eager")
    pts = validation_points(s, "float32")
    kinds = pts.extra["kind"]
    assert set(kinds.tolist()) == {0.0, 1.0, 2.0}  # target, probability, weight
    assert np.isnan(pts.target[kinds == 0]).any() and (pts.weight[kinds == 2] < 0).any()
    case = Case(s.name, "validation", "float32", "cpu")
    eager = build_record(run_case(s, case, 4.0), None, "xfailed", case.id)
    summary = eager["validation"]
    assert summary["target"]["rejected"] == summary["target"]["n"]
    assert "between 0 and 1" in summary["target"]["message"]
    assert summary["target"]["by_value"]["1.5"]["rejected"] == 3  # one per probability
    assert summary["weight"]["rejected"] == 0  # negative weights pass silently
    summary["shapes"] = mismatched_shapes(s, case)
    assert summary["shapes"].startswith("rejected: ")
    compiled = Case(s.name, "validation", "float32", "cpu", execution="compiled")
    record = build_record(run_case(s, compiled, 4.0), None, "xfailed", compiled.id)
    assert record["validation"]["target"]["rejected"] == 0  # compiled: no range check
    # the report's table: eager rejects y = 1.5, compiled returns the formula's (negative) loss
    table = invalid_input.rows({"records": [eager, record]})
    col = table["columns"].index("target 1.5")
    by_execution = {r["execution"]: r for r in table["rows"]}
    rejected = by_execution["eager"]["cells"][col]
    assert rejected["kind"] == "rejected" and "between 0 and 1" in rejected["title"]
    silent = by_execution["compiled"]["cells"][col]
    assert silent == {**silent, "text": "the formula's number", "kind": "silent"}
    example = record["validation"]["target"]["by_value"]["1.5"]["example"]
    assert example["observed"] < 0 and example["observed"] == pytest.approx(example["expected"])
    assert by_execution["eager"]["cells"][table["columns"].index("mismatched shapes")][
        "kind"] == "rejected"
    assert "weight −1" in table["columns"] and "pos_weight −1" not in table["columns"]


def test_contracts_apply_to_executions(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('''
[[contract]]
id = "a"
subjects = ["torch.bce"]
checks = ["values"]
dtypes = ["float32"]
status = ["inaccurate"]
region = "y == y"
reason = "measured in eager"

[[contract]]
id = "b"
subjects = ["torch.bce"]
checks = ["values"]
dtypes = ["float32"]
executions = ["compiled"]
status = ["inaccurate"]
region = "y == y"
reason = "measured compiled"

[[identical]]
subjects = ["torch.bce"]
executions = ["eager", "compiled"]
dtypes = ["float64"]
quantities = ["grad"]
reason = "test"
''')
    a, b = contracts.load([path])
    assert a.applies("torch.bce", "values", "float32", "cpu", "none", "eager")
    assert a.applies("torch.bce", "values", "float32", "cpu", "none", "autocast_bfloat16")
    assert not a.applies("torch.bce", "values", "float32", "cpu", "none", "compiled")
    assert b.applies("torch.bce", "values", "float32", "cpu", "none", "compiled")
    assert not b.applies("torch.bce", "values", "float32", "cpu", "none", "eager")
    assert contracts.identical_execution("torch.bce", "compiled", "float64", "cpu", "grad",
                                         [path])
    assert not contracts.identical_execution("torch.bce", "compiled", "float64", "cpu",
                                             "loss", [path])
