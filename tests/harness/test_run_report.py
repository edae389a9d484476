"""A real pytest run of the audit, in a subprocess: the report is written when the run
fails and when it is interrupted, results.json validates, and every repro command
reproduces its worst case bit for bit."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import results

ROOT = Path(__file__).resolve().parents[2]
SELECTION = ["tests/stability/test_checks.py", "-p", "no:cacheprovider", "-q",
             "--subjects", "torch.bce_with_logits", "--dtypes", "float32", "--devices", "cpu"]


def _pytest(args: list[str], report_dir: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pytest", *args, "--report-dir",
                             str(report_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("failed-run")
    proc = _pytest([*SELECTION, "--no-contracts", "-k", "values or grads"], out)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, stdout[-3000:]  # raw findings fail the run
    return out


def test_failed_run_writes_valid_report(failed_run: Path) -> None:
    doc = results.load_results(failed_run)  # validates against the JSON Schema
    assert doc["run"]["status"] == "failed"
    checks = {(r["check"], r["outcome"]) for r in doc["records"]}
    assert ("values", "failed") in checks and ("grads", "failed") in checks
    assert doc["run"]["ftz"]["torch"], "flush-to-zero state must be observed"
    html = (failed_run / "index.html").read_text()
    assert "torch.bce_with_logits" in html and "probe" in html


def test_worst_case_repro_is_bit_for_bit(failed_run: Path, capsys) -> None:
    from audit.cli import main

    doc = results.load_results(failed_run)
    for k, record in enumerate(doc["records"]):
        worst = record["worst"]
        argv = shlex.split(worst["repro"])
        assert argv[:4] == ["python", "-m", "audit", "probe"]
        if k == 0:  # the command exactly as printed, in a process of its own
            proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert proc.returncode == 0, proc.stderr
            out = proc.stdout
        else:  # the others in process (one torch worker for all of them)
            capsys.readouterr()
            assert main(argv[3:]) == 0
            out = capsys.readouterr().out
        probe = json.loads(out)
        assert probe["observed"] == worst["observed"], (worst["repro"], probe)
        assert probe["expected"] == worst["expected"]
        assert probe["status"] == worst["status"]


# long enough that the interrupt lands mid-run even on a loaded machine
LONG_SELECTION = ["tests/stability", "-p", "no:cacheprovider", "-q", "--subjects",
                  "torch.bce_with_logits,torch.bce,torch.sigmoid_bce", "--devices", "cpu"]


def _first_record(parts: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for the first measured record
        if parts.exists() and any('"kind": "record"' in p.read_text(errors="replace")
                                  for p in parts.glob("*.jsonl")):
            return
        if proc.poll() is not None:
            pytest.fail("the run ended before its first record: " + proc.communicate()[0][-3000:])
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no record was written in time")


@pytest.mark.process
def test_interrupted_run_still_writes_report(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) wherever it
    lands, even inside a lazy import that swallows it: the run is "interrupted"
    (remembered by the plugin's handler, not read off the exit status)."""
    proc = _pytest([*LONG_SELECTION, "--no-contracts", "-p", "no:randomly"], tmp_path,
                   start_new_session=True)
    _first_record(tmp_path / ".records", proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=240)
    doc = results.load_results(tmp_path)
    assert doc["run"]["status"] == "interrupted", out[-3000:]
    assert doc["records"], "records measured before the interrupt must be kept"
    assert (tmp_path / "index.html").exists()
    assert not (tmp_path / ".records").exists(), ".records/ is dropped once the report exists"
