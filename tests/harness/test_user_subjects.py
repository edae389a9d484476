"""A user's own losses audited from a folder outside the repository (DESIGN.md section 9):
listed, probed, swept and audited by `pytest --pyargs audit.suite`, repro commands run as
printed, one subject that aborts its process on one input (status `crash` there, ordinary
statuses elsewhere), user contracts, entry-point discovery, and one-line usage errors."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "mylosses.py"

ABORTING = '''
import os

import torch

from audit import subject


@subject("mine.aborts", framework="torch", family="bce_with_logits",
         dtypes=("float16", "float32"))
def aborts(x, y):
    """The fused loss, except that the process aborts on the point x = 3, y = 1."""
    if bool(((x == 3) & (y == 1)).any()):
        os.abort()
    return torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
'''

CONTRACT = '''
[[contract]]
id = "mine.aborts crashes at x = 3, y = 1"
subjects = ["mine.aborts"]
checks = ["values", "grads"]
dtypes = ["float32"]
status = ["crash"]
region = "x == 3 and y == 1"
reason = "the test's subject calls os.abort() there"

[[contract]]
id = "mine.aborts inherits torch.bce_with_logits' findings elsewhere"
subjects = ["mine.aborts"]
checks = ["values", "grads"]
dtypes = ["float32"]
status = ["inaccurate", "spurious_zero", "spurious_nan", "wrong_sign"]
region = "not (x == 3 and y == 1)"
reason = "it calls torch's fused loss (see torch's own contracts)"
'''


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the repo holding the user's modules (and nothing of ours)."""
    d = tmp_path_factory.mktemp("user")
    (d / "mylosses.py").write_text(EXAMPLE.read_text())
    (d / "crashy.py").write_text(ABORTING)
    (d / "crash_contract.toml").write_text(CONTRACT)
    return d


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _audit(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "audit", *args], cwd, timeout)


def test_listed_and_probed(user_dir: Path) -> None:
    done = _audit(["subjects", "--subject-module", "mylosses,crashy"], user_dir)
    assert done.returncode == 0, done.stderr
    assert "mine.naive_bce" in done.stdout and "mine.aborts" in done.stdout
    assert "module=mylosses" in done.stdout
    # the naive form loses the small loss at x = 100, y = 1 (1 + exp(-100) rounds to 1)
    done = _audit(["probe", "mine.naive_bce", "--subject-module", "mylosses", "--dtype",
                   "float32", "--input", "100", "--target", "1"], user_dir)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "spurious_zero" and out["observed"] == 0.0
    assert out["expected"] == pytest.approx(3.720075976020836e-44)


@pytest.mark.process
def test_probe_of_an_aborting_point_is_a_crash(user_dir: Path) -> None:
    crash = _audit(["probe", "mine.aborts", "--subject-module", "crashy.py", "--dtype",
                    "float32", "--input", "3", "--target", "1"], user_dir)
    assert crash.returncode == 0, crash.stderr
    out = json.loads(crash.stdout)
    assert out["status"] == "crash" and out["observed"] is None
    assert "SIGABRT" in out["error"], out["error"]
    fine = _audit(["probe", "mine.aborts", "--subject-module", "crashy.py", "--dtype",
                   "float32", "--input", "3", "--target", "0"], user_dir)
    assert json.loads(fine.stdout)["status"] == "ok"


@pytest.mark.process
def test_sweep_isolates_the_crash(user_dir: Path) -> None:
    out = user_dir / "sweep"
    done = _audit(["sweep", "mine.aborts", "--subject-module", "crashy", "--dtype", "float16",
                   "--exhaustive", "--targets", "1", "--quiet", "--out", str(out)], user_dir)
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "results.json").read_text())
    assert (out / "index.html").is_file()
    for r in doc["records"]:
        assert r["counts"].get("crash") == 1, r["counts"]  # exactly x = 3 of 63,490 logits
        assert r["n"] == 63490 and r["worst"]["status"] == "crash"
        assert r["worst"]["input"] == 3.0 and "SIGABRT" in r["worst"]["error"]
        assert sum(r["counts"].values()) == r["n"]


@pytest.mark.process
def test_pytest_suite_from_outside_the_repo(user_dir: Path) -> None:
    report = user_dir / "report"
    report.mkdir()  # an existing folder outside the repo, given in the space form
    done = _run([sys.executable, "-m", "pytest", "--pyargs", "audit.suite", "-p",
                 "no:cacheprovider", "-q", "--subject-module", "mylosses,crashy",
                 "--subjects", "mine.naive_bce,mine.aborts", "--dtypes", "float32",
                 "--devices", "cpu", "--contracts", "crash_contract.toml",
                 # the values and grads grids carry every assertion below
                 "-k", "test_check and (values or grads)",
                 "--report-dir", str(report)], user_dir, timeout=900)
    # the naive loss has findings no contract declares: the run fails, the report is there
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    doc = json.loads((report / "results.json").read_text())
    assert (report / "index.html").is_file() and doc["run"]["status"] == "failed"
    by = {(r["subject"], r["check"], r["reduction"]): r for r in doc["records"]}
    for check in ("values", "grads"):
        crashed = by[("mine.aborts", check, "none")]
        assert crashed["counts"].get("crash") == 1, crashed["counts"]
        assert crashed["outcome"] == "xfailed"  # declared in the user's --contracts file
        assert crashed["counts"].get("ok", 0) > 1000  # ordinary statuses elsewhere
        naive = by[("mine.naive_bce", check, "none")]
        assert naive["outcome"] == "failed" and naive["counts"].get("ok", 0) < naive["n"]
    assert "torch" in doc["run"]["versions"] and "tf" not in doc["run"]["versions"]
    # a worst case's repro command works as printed, from the user's folder, for each
    # subject (every record's repro is checked bit for bit in test_run_report)
    for r in doc["records"]:
        if r["check"] != "values" or r["reduction"] != "none" or not r["worst"]:
            continue
        argv = shlex.split(r["worst"]["repro"])
        assert argv[:3] == ["python", "-m", "audit"] and "--subject-module" in argv
        probe = _run([sys.executable, *argv[1:]], user_dir)
        assert probe.returncode == 0, (r["worst"]["repro"], probe.stderr)
        got = json.loads(probe.stdout)
        assert got["status"] == r["worst"]["status"], (r["worst"]["repro"], got)


def test_entry_point_discovery(user_dir: Path, tmp_path: Path) -> None:
    """An installed package exposing `bce_audit.subjects` needs no --subject-module."""
    site = tmp_path / "site"
    dist = site / "mylosses_pkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mylosses-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bce_audit.subjects]\nmine = mylosses\n")
    (site / "mylosses.py").write_text(EXAMPLE.read_text())
    done = _audit(["subjects"], site)
    assert done.returncode == 0, done.stderr
    assert "mine.naive_bce" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["subjects", "--subject-module", "no_such_module_x"], "No module named"),
    (["probe", "mine.naive_bce", "--dtype", "float32", "--input", "1", "--target", "0"],
     "--subject-module"),
    (["subjects", "--subject-module", "broken"], "broken"),
    (["subjects", "--subject-module", "norunner"], "no runner for framework 'mxnet'"),
])
def test_bad_subject_modules_are_one_line(user_dir: Path, args: list[str], message: str
                                          ) -> None:
    (user_dir / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (user_dir / "norunner.py").write_text(
        "from audit import subject\n\n"
        "@subject('mine.x', framework='mxnet', family='bce')\ndef f(q, y):\n    return q\n")
    done = _audit(args, user_dir, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert "Traceback" not in done.stderr


def test_pytest_usage_error_for_a_bad_module(user_dir: Path) -> None:
    done = _run([sys.executable, "-m", "pytest", "--pyargs", "audit.suite", "-p",
                 "no:cacheprovider", "--subject-module", "no_such_module_x",
                 "--report-dir", str(user_dir / "r2")], user_dir, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "no_such_module_x" in done.stderr and "Traceback" not in done.stderr
