"""Self-tests of run comparison: injected regressions and improvements, exit statuses."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from audit import compare as cmp
from audit.results import record_status, validate, write_results

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "harness" / "fixtures" / "sample_results.json"


@pytest.fixture(scope="module")
def base() -> dict:
    """The fixture without per-point data: comparison never looks at points."""
    doc = json.loads(FIXTURE.read_text())
    doc["records"] = [{**r, "points": []} for r in doc["records"]]
    return doc


def _find(doc: dict, **key: str) -> dict:
    return next(r for r in doc["records"] if all(r[k] == v for k, v in key.items()))


CLEAN = {"subject": "tf.bce_with_logits", "dtype": "float32", "check": "values"}
DIRTY = {"subject": "torch.bce_with_logits", "dtype": "float16", "check": "values"}


def _make_clean(record: dict) -> None:
    record.update(counts={"ok": record["n"]}, max_ulp=0.25, p99_ulp=0.2, outcome="passed")
    record["worst"]["status"] = "ok"


def test_identical_runs_have_no_changes(base: dict) -> None:
    result = cmp.compare(base, copy.deepcopy(base))
    assert result["regressions"] == result["improvements"] == []
    assert result["new"] == result["removed"] == []


def test_injected_regression_and_improvement(base: dict) -> None:
    new = copy.deepcopy(base)
    worse = _find(new, **CLEAN)
    worse["counts"]["spurious_nan"] = 3
    worse["outcome"] = "failed"
    better = _find(new, **DIRTY)
    _make_clean(better)
    result = cmp.compare(base, new)
    assert [(e["subject"], e["dtype"], e["check"]) for e in result["regressions"]] == \
        [(CLEAN["subject"], CLEAN["dtype"], CLEAN["check"])]
    reasons = " ".join(result["regressions"][0]["reasons"])
    assert "ok -> spurious_nan" in reasons and "passed -> failed" in reasons
    assert [(e["subject"], e["dtype"], e["check"]) for e in result["improvements"]] == \
        [(DIRTY["subject"], DIRTY["dtype"], DIRTY["check"])]
    # an improvement reads old -> new, like a regression (not "ok -> spurious_zero")
    was = record_status(_find(base, **DIRTY))
    why = " ".join(result["improvements"][0]["reasons"])
    assert f"status {was} -> ok" in why and "ok ->" not in why, why
    # and the reverse direction swaps them
    back = cmp.compare(new, base)
    assert len(back["regressions"]) == len(back["improvements"]) == 1
    assert back["regressions"][0]["subject"] == DIRTY["subject"]


@pytest.mark.parametrize("old_ulp, new_ulp, regressed", [
    (1.0, 9.0, True),       # > 2x and above the float32 budget of 4
    (1.0, 3.5, False),      # > 2x but within budget
    (5.0, 9.0, False),      # above budget but < 2x
    (5.0, "inf", True),
    (0.0, "nan", True),     # NaN max ulp counts as infinite
])
def test_ulp_growth_rule(base: dict, old_ulp: float, new_ulp: object, regressed: bool) -> None:
    old, new = copy.deepcopy(base), copy.deepcopy(base)
    _find(old, **CLEAN)["max_ulp"] = old_ulp
    _find(new, **CLEAN)["max_ulp"] = new_ulp
    result = cmp.compare(old, new)
    assert bool(result["regressions"]) is regressed
    assert bool(cmp.compare(new, old)["improvements"]) is regressed


def test_new_and_removed_records(base: dict) -> None:
    new = copy.deepcopy(base)
    gone = new["records"].pop(0)
    extra = copy.deepcopy(new["records"][0])
    extra["reduction"] = "keras_default"
    new["records"].append(extra)
    result = cmp.compare(base, new)
    assert [e["subject"] for e in result["removed"]] == [gone["subject"]]
    assert [e["reduction"] for e in result["new"]] == ["keras_default"]
    assert not result["regressions"]


def test_attach_comparison_keeps_the_doc_valid(base: dict) -> None:
    new = copy.deepcopy(base)
    _find(new, **CLEAN)["counts"]["wrong_sign"] = 1
    cmp.attach_comparison(new, base)
    validate(new)
    assert new["comparison"]["previous"] == base["run"]["id"]
    assert len(new["comparison"]["regressions"]) == 1
    cmp.attach_comparison(new, None)
    assert new["comparison"] is None


# ---------------------------------------------------------------- command line


@pytest.fixture()
def runs(base: dict, tmp_path: Path) -> dict[str, Path]:
    worse = copy.deepcopy(base)
    _find(worse, **CLEAN)["counts"]["spurious_inf"] = 2
    better = copy.deepcopy(base)
    _make_clean(_find(better, **DIRTY))
    out = {}
    for name, doc in (("base", base), ("worse", worse), ("better", better)):
        out[name] = write_results(doc, tmp_path / name).parent  # a run directory
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "invalid.json").write_text(json.dumps({**base, "schema_version": 7}))
    (tmp_path / "latin1.json").write_bytes(b'{"run": "caf\xe9"}')
    (tmp_path / "list.json").write_text("[]")
    out["junk"], out["invalid"] = tmp_path / "junk.json", tmp_path / "invalid.json"
    out["not_utf8"], out["not_an_object"] = tmp_path / "latin1.json", tmp_path / "list.json"
    out["missing"] = tmp_path / "nope" / "results.json"
    return out


def test_exit_status_0_without_regressions(runs: dict, capsys: pytest.CaptureFixture) -> None:
    assert cmp.main([str(runs["base"]), str(runs["better"] / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "improvement" in out and "0 regressions, 1 improvements" in out


def test_exit_status_1_with_regressions(runs: dict, capsys: pytest.CaptureFixture) -> None:
    assert cmp.main([str(runs["base"]), str(runs["worse"])]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and CLEAN["subject"] in out and "spurious_inf" in out
    assert cmp.main([str(runs["base"]), str(runs["worse"]), "--json"]) == 1
    assert len(json.loads(capsys.readouterr().out)["regressions"]) == 1


def test_improvement_table_reads_old_to_new(runs: dict, capsys: pytest.CaptureFixture) -> None:
    assert cmp.main([str(runs["base"]), str(runs["better"])]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("improvement"))
    assert "-> ok" in line and "ok ->" not in line, line


@pytest.mark.parametrize("bad", ["junk", "invalid", "missing", "not_utf8", "not_an_object",
                                 "no_baseline", "three_runs", "option"])
def test_exit_status_2_on_bad_input(runs: dict, bad: str, capsys: pytest.CaptureFixture) -> None:
    argv = {"no_baseline": [str(runs["base"])],  # no earlier run of its kind next to it
            "three_runs": [str(runs["base"])] * 3,
            "option": [str(runs["base"]), "--bogus"]}.get(bad) or \
        [str(runs["base"]), str(runs[bad])]
    assert cmp.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("python -m audit compare: error:") and "\n" not in err
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("bad", ["junk", "not_utf8"])
def test_module_entry_point_has_no_traceback(runs: dict, bad: str) -> None:
    for argv in (["-m", "audit.compare"], ["-m", "audit", "compare"]):
        proc = subprocess.run([sys.executable, *argv, str(runs["base"]), str(runs[bad])],
                              capture_output=True, text=True, cwd=ROOT, timeout=60,
                              check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "error:" in proc.stderr
