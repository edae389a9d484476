"""Label smoothing end to end: which subjects take it, what the framework gets, what the
reference grades against (the exact y*(1-E)+E/2, E the dtype's value), and that probe,
sweep, records and repro commands carry it. The commands run in process (audit.cli.main,
one keras worker for the whole file): their process behaviour is tested elsewhere."""

from __future__ import annotations

import json
import shlex
from fractions import Fraction

import numpy as np
import pytest

import reference
from audit import subjects
from audit.checks import Case, point_set, run_case, subject_reference
from audit.cli import main
from audit.families import LABEL_SMOOTHING
from audit.records import build_record
from reference import smoothing
from reference.formats import round_to

TAKERS = ["keras.bce_with_logits", "keras.bce", "keras.sigmoid_bce",
          "keras.focal_with_logits", "keras.focal"]


def _audit(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _runnable(name: str, dtype: str = "float32") -> subjects.Subject:
    s = subjects.get(name)
    reason = s.skip_reason(dtype, "cpu", label_smoothing=True)
    if reason is not None:
        pytest.skip(reason)
    return s


def test_exactly_the_keras_losses_take_label_smoothing():
    assert [s.name for s in subjects.SUBJECTS.values() if s.label_smoothing] == TAKERS
    reason = subjects.get("torch.bce_with_logits").skip_reason("float32", "cpu",
                                                                label_smoothing=True)
    assert reason.startswith("torch.bce_with_logits takes no label smoothing")


def test_a_subject_without_it_refuses_the_parameter():
    s = subjects.get("torch.bce_with_logits")
    with pytest.raises(ValueError, match="takes no label smoothing"):
        s.evaluate("float32", "cpu", np.zeros(4), np.ones(4), params={LABEL_SMOOTHING: 0.1})


def test_the_framework_really_smooths():
    # keras at x = 0: loss log 2 whatever the target; gradient sigmoid(0) - t = 1/2 - t
    s = _runnable("keras.bce_with_logits")
    x, y = np.zeros(64), np.ones(64)
    e = round_to(0.25, "float32")
    g = s.evaluate("float32", "cpu", x, y, grad=True, params={LABEL_SMOOTHING: e})
    np.testing.assert_allclose(g, 0.5 - (1 - e / 2), rtol=2.0 ** -21)  # -0.375 (TF: 1 ulp)
    g0 = s.evaluate("float32", "cpu", x, y, grad=True, params={LABEL_SMOOTHING: 0.0})
    np.testing.assert_allclose(g0, -0.5, rtol=2.0 ** -21)  # E = 0: the call never sees it


@pytest.mark.parametrize("name", ["keras.bce_with_logits", "keras.focal"])
def test_the_smoothed_check_grades_against_the_exact_smoothed_target(name):
    s = _runnable(name, "bfloat16")
    pts, mode = point_set(s, "smoothed", "bfloat16", 0.1)
    e = round_to(0.1, "bfloat16")  # 0.10009765625
    assert mode == "grid" and np.all(pts.extra[LABEL_SMOOTHING] == e)
    expected, _ = subject_reference(s, "bfloat16", pts, False)
    op = s.family_record.reference_op({LABEL_SMOOTHING: e})
    assert op.startswith(f"smoothed:{reference.focal.format_number(reference.exact.to_tuple(e))}:")
    pick = np.arange(0, len(pts), max(1, len(pts) // 40))
    for i in pick:  # point by point against an exact target built here
        t = Fraction(float(pts.target[i])) * (1 - Fraction(e)) + Fraction(e) / 2
        base = s.family_record.reference_op()
        want = reference.round_to(reference.vectorized.point(
            smoothing.op_name(e, base), False, float(pts.input[i]), float(pts.target[i]), 1.0,
            1.0), "bfloat16")
        assert expected[i] == want or (np.isnan(want) and np.isnan(expected[i]))
        if float(t) == t and np.isfinite(pts.input[i]):  # t a float64: the plain op agrees
            plain = reference.rounded(base, "bfloat16", pts.input[i:i + 1], np.array([float(t)]))
            assert expected[i] == plain[0] or np.isnan(plain[0])


def test_records_and_repro_carry_the_smoothing(capsys):
    s = _runnable("keras.bce_with_logits")
    case = Case(s.name, "smoothed", "float32", "cpu", "none", 0.1)
    out = run_case(s, case, 1.0)
    record = build_record(out, None, "failed", case.id)
    assert record["label_smoothing"] == round_to(0.1, "float32")
    assert case.id.endswith("smoothed label_smoothing=0.1")
    argv = shlex.split(record["worst"]["repro"])
    assert argv[:4] == ["python", "-m", "audit", "probe"] and "--label-smoothing" in argv
    rc, out, err = _audit(capsys, *argv[3:])
    assert rc == 0, err
    probe = json.loads(out)
    assert probe["observed"] == record["worst"]["observed"]
    assert probe["expected"] == record["worst"]["expected"]
    assert probe["exact"] == record["worst"]["exact"]


def test_probe_rounds_e_to_the_dtype_and_refuses_subjects_without_it(capsys):
    _runnable("keras.bce")
    rc, out, err = _audit(capsys, "probe", "keras.bce", "--dtype", "float16", "--input", "0.25",
                          "--target", "1", "--label-smoothing", "0.1")
    assert rc == 0, err
    assert json.loads(out)["params"] == {LABEL_SMOOTHING: round_to(0.1, "float16")}
    for argv, message in (
            (["torch.bce", "--label-smoothing", "0.1"], "error: torch.bce takes no --label-"),
            (["keras.bce", "--label-smoothing", "1.5"], "error: --label-smoothing must be a "),
    ):
        rc, _, err = _audit(capsys, "probe", argv[0], "--dtype", "float32", "--input", "0.5",
                            "--target", "1", *argv[1:])
        assert rc == 2 and err.startswith(message), err
        assert len(err.strip().splitlines()) == 1


def test_sweep_carries_the_smoothing_and_merge_keeps_settings_apart(tmp_path, capsys):
    _runnable("keras.bce_with_logits", "float16")
    common = ["sweep", "keras.bce_with_logits", "--dtype", "float16", "--samples", "2000",
              "--quiet"]
    rc, _, err = _audit(capsys, *common, "--label-smoothing", "0.1", "--out", str(tmp_path / "a"))
    assert rc == 0, err
    doc = json.loads((tmp_path / "a" / "results.json").read_text())
    e = round_to(0.1, "float16")
    assert doc["run"]["sweep"]["params"] == {LABEL_SMOOTHING: e}
    for r in doc["records"]:
        assert r["test_id"].endswith(f"label_smoothing={e!r}")
        assert "--label-smoothing" in shlex.split(r["worst"]["repro"])
    rc, _, err = _audit(capsys, *common, "--out", str(tmp_path / "b"))
    assert rc == 0, err
    rc, _, err = _audit(capsys, "merge", str(tmp_path / "m"), str(tmp_path / "a"),
                        str(tmp_path / "b"))
    assert rc == 2 and "different parameters" in err, err
