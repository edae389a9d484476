"""The life of a run folder (DESIGN.md section 8): made only when an audit test runs,
SIGTERM handled like Ctrl-C, a status derived from what was measured, the newest N runs
kept, `.records/` dropped once the report exists, a killed run rebuilt from its records,
`compare` against the right baseline, and results.json validated in a fraction of a second.

Most runs here are cheap: a tiny audit module in a temporary folder (its rootdir, so
its `reports/` is there too) adds a record through the `audit` fixture without starting
a framework. The SIGTERM tests run the real audit.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import compare as cmp
from audit import results, session
from audit.results import ResultsError, validate, write_results

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "harness" / "fixtures" / "sample_results.json"

FAKE_AUDIT = '''
import json, os, signal, time
from pathlib import Path

RECORD = json.loads(Path(os.environ["AUDIT_RECORD"]).read_text())


def test_measures(audit):
    audit.collector._meta_written = True  # no framework worker: versions are not the point
    audit.collector.add({**RECORD, "outcome": os.environ.get("OUTCOME", "passed")})
    action = os.environ.get("ACTION", "")
    if action.startswith("swallow-"):  # a library that eats the interrupt (a lazy import)
        try:
            os.kill(os.getpid(), getattr(signal, action.split("-")[1]))
            time.sleep(10)
        except KeyboardInterrupt:
            pass
    elif action == "hang":
        Path(os.environ["MARKER"]).write_text("measured")
        time.sleep(120)
'''

PLAIN_TEST = "def test_nothing_audited():\n    assert True\n"


@pytest.fixture(scope="module")
def sample() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture()
def project(tmp_path: Path, sample: dict) -> Path:
    """A folder with the fake audit module, a plain test, and one record to add."""
    record = copy.deepcopy(sample["records"][0])
    record["points"] = record["points"][:20]
    (tmp_path / "record.json").write_text(json.dumps(record))
    (tmp_path / "test_fake_audit.py").write_text(FAKE_AUDIT)
    (tmp_path / "test_plain.py").write_text(PLAIN_TEST)
    return tmp_path


def _env(project: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "AUDIT_RECORD": str(project / "record.json"),
            "ACTION": "", **extra}


def _pytest(project: Path, *args: str, timeout: float = 120, **env: str
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "--rootdir", str(project), *args],
                          cwd=project, env=_env(project, **env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _runs(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if results.is_run_id(p.name)) \
        if base.is_dir() else []


def _old_run(base: Path, name: str, doc: dict) -> Path:
    doc = copy.deepcopy(doc)
    doc["run"]["id"] = name
    return write_results(doc, base / name).parent


def _minimal(sample: dict, records: list | None = None, command: str = "pytest tests") -> dict:
    doc = {"schema_version": 2, "run": copy.deepcopy(sample["run"]),
           "records": copy.deepcopy(records or [])}
    doc["run"]["command"] = command
    return doc


# ---------------------------------------------------------------- no test, no folder


@pytest.mark.process
def test_help_collect_only_and_no_audit_test_leave_reports_alone(project: Path,
                                                                sample: dict) -> None:
    base = project / "reports"
    old = _old_run(base, "20260101T000000Z", _minimal(sample, sample["records"][:1]))
    results.point_latest(base, old)
    before = sorted(os.listdir(base))
    for args in (["--help"], ["--collect-only", "test_fake_audit.py"],
                 ["-k", "no_such_test", "test_fake_audit.py"], ["test_plain.py"],
                 ["-n", "2", "-k", "no_such_test", "test_fake_audit.py"]):
        done = _pytest(project, *args)
        assert done.returncode in (0, 5), (args, done.stdout[-2000:], done.stderr[-2000:])
        assert sorted(os.listdir(base)) == before, args
        assert (base / "latest").resolve() == old.resolve(), args
        assert "audit report:" not in done.stdout, args


# ---------------------------------------------------------------- status and signals


def test_status_comes_from_the_records_not_the_exit_code(project: Path) -> None:
    """The test passes (exit 0) but the record it measured failed: not "passed"."""
    done = _pytest(project, "test_fake_audit.py", "--report-dir", "out", OUTCOME="failed")
    assert done.returncode == 0, done.stdout[-2000:]
    assert results.load_results(project / "out")["run"]["status"] == "failed"
    assert session.run_status([{"outcome": "xpass_strict"}]) == "failed"
    assert session.run_status([{"outcome": "passed"}], testsfailed=1) == "failed"
    assert session.run_status([{"outcome": "failed"}], interrupted=True) == "interrupted"
    assert session.run_status([{"outcome": "xfailed"}], exitstatus=0) == "passed"


@pytest.mark.process
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_swallowed_interrupt_still_marks_the_run_interrupted(project: Path, sig: str) -> None:
    """The interrupt lands where something catches it (a lazy import): the run must
    not end as "passed" (and SIGTERM must not just kill the process)."""
    done = _pytest(project, "test_fake_audit.py", "--report-dir", "out",
                   ACTION=f"swallow-{sig}")
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    doc = results.load_results(project / "out")
    assert doc["run"]["status"] == "interrupted"
    assert len(doc["records"]) == 1


def _start(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "-p", "no:randomly", "--rootdir", str(project), *args],
                            cwd=project, env=_env(project, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(path: Path, proc: subprocess.Popen[str], limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} never appeared: {proc.communicate()[0][-3000:]}")
        time.sleep(0.1)


@pytest.mark.process
def test_sigterm_points_latest_at_a_complete_report(project: Path) -> None:
    marker = project / "measured"
    proc = _start(project, "test_fake_audit.py", ACTION="hang", MARKER=str(marker))
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)  # `kill PID`, as a scheduler or `timeout` does
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-3000:]
    latest = project / "reports" / "latest"
    doc = results.load_results(latest)
    assert doc["run"]["status"] == "interrupted" and len(doc["records"]) == 1
    assert (latest / "index.html").is_file()
    assert not (latest / ".records").exists(), ".records/ is removed once the report exists"


REAL_AUDIT = ["-p", "no:cacheprovider", "-p", "no:randomly", "-q", "--no-contracts",
              "--subjects", "torch.bce_with_logits,torch.bce,torch.sigmoid_bce",
              "--devices", "cpu"]


@pytest.mark.process
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_sigterm_on_the_real_audit_writes_an_interrupted_report(tmp_path: Path,
                                                                xdist: list[str]) -> None:
    """SIGTERM to the pytest process only (under xdist: the controller)."""
    out_dir = tmp_path / "report"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "tests/stability", *REAL_AUDIT,
                             *xdist, "--report-dir", str(out_dir)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not any('"kind": "record"' in Path(p).read_text()
                  for p in glob.glob(str(out_dir / ".records" / "*.jsonl"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no record was written in time: " + proc.communicate()[0][-3000:])
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 2, out[-3000:]
    doc = results.load_results(out_dir)
    assert doc["run"]["status"] == "interrupted"
    assert doc["records"], "records measured before SIGTERM must be kept"
    assert (out_dir / "index.html").is_file() and not (out_dir / ".records").exists()


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", ""])
def test_keep_reports_must_be_a_positive_whole_number(value: str) -> None:
    from audit.plugin import parse_keep

    with pytest.raises(pytest.UsageError, match="--keep-reports"):
        parse_keep(value)
    assert parse_keep("3") == 3


@pytest.mark.parametrize("value", ["0", "x"])
def test_a_bad_keep_reports_is_one_line_and_status_4(project: Path, value: str) -> None:
    done = _pytest(project, "test_plain.py", f"--keep-reports={value}", timeout=60)
    assert done.returncode == 4, (done.stdout[-2000:], done.stderr[-2000:])
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "--keep-reports" in errors[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_unusable_report_dir_is_a_usage_error(project: Path) -> None:
    (project / "a_file").write_text("x")
    for bad in ("a_file", "a_file/sub"):
        done = _pytest(project, "test_fake_audit.py", "--report-dir", bad, timeout=60)
        assert done.returncode == 4, (bad, done.stdout[-2000:], done.stderr[-2000:])
        assert "--report-dir" in done.stderr and "INTERNALERROR" not in done.stdout + done.stderr


# ---------------------------------------------------------------- retention


def test_reports_keep_the_newest_n_runs(project: Path, sample: dict) -> None:
    base = project / "reports"
    for day in range(1, 6):
        _old_run(base, f"2026010{day}T000000Z", _minimal(sample, sample["records"][:1]))
    (base / "notes").mkdir()  # not a run: never touched
    done = _pytest(project, "test_fake_audit.py", "--keep-reports", "3")
    assert done.returncode == 0, done.stdout[-2000:]
    runs = _runs(base)
    assert len(runs) == 3 and runs[:2] == ["20260104T000000Z", "20260105T000000Z"], runs
    assert (base / "notes").is_dir()
    assert (base / "latest").resolve().name == runs[-1]
    assert not (base / runs[-1] / ".records").exists()


def test_reports_keep_20_runs_by_default(project: Path, sample: dict) -> None:
    base = project / "reports"
    doc = _minimal(sample)
    for i in range(25):
        _old_run(base, f"202601{i + 1:02d}T000000Z", doc)
    done = _pytest(project, "test_fake_audit.py")
    assert done.returncode == 0, done.stdout[-2000:]
    runs = _runs(base)
    assert len(runs) == 20 and runs[0] == "20260107T000000Z", runs


def test_prune_spares_latest_and_a_run_being_written(tmp_path: Path, sample: dict) -> None:
    doc = _minimal(sample)
    runs = [_old_run(tmp_path, f"2026010{d}T000000Z", doc) for d in range(1, 6)]
    results.point_latest(tmp_path, runs[0])
    live = tmp_path / "20260100T000000Z"
    (live / ".records").mkdir(parents=True)
    (live / ".records" / "main.jsonl").write_text("")
    removed = results.prune_runs(tmp_path, 2)
    assert sorted(p.name for p in removed) == [r.name for r in runs[1:3]]
    assert runs[0].is_dir() and live.is_dir()


# ---------------------------------------------------------------- rebuild


@pytest.mark.process
def test_rebuild_a_run_killed_with_sigkill(project: Path) -> None:
    marker = project / "measured"
    proc = _start(project, "test_fake_audit.py", ACTION="hang", MARKER=str(marker),
                  OUTCOME="failed")
    _wait_for(marker, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    base = project / "reports"
    (run_dir,) = (base / name for name in _runs(base))
    assert (run_dir / ".records").is_dir() and not (run_dir / "results.json").exists()
    assert not (base / "latest").exists(), "latest only ever points at a complete report"
    index = session.rebuild(str(run_dir))
    assert index == run_dir / "index.html" and index.is_file()
    doc = results.load_results(run_dir)
    assert doc["run"]["status"] == "interrupted" and len(doc["records"]) == 1
    assert doc["run"]["command"].startswith("pytest ")
    assert not (run_dir / ".records").exists()
    assert (base / "latest").resolve() == run_dir.resolve()
    with pytest.raises(FileNotFoundError, match="nothing to rebuild"):
        session.rebuild(run_dir)  # done once


def test_rebuild_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileNotFoundError):
        session.rebuild(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        session.rebuild(tmp_path / "a_file")
    with pytest.raises(FileNotFoundError, match=r"\.records"):
        session.rebuild(tmp_path)


# ---------------------------------------------------------------- compare's baseline


@pytest.fixture()
def history(tmp_path: Path, sample: dict) -> dict[str, Path]:
    """reports/ with a pytest run, a sweep, a 0-record pytest run, then the newest run."""
    base = tmp_path / "reports"
    recs = [{**r, "points": []} for r in sample["records"]]
    sweep = [{**r, "mode": "exhaustive"} for r in recs[:2]]
    runs = {
        "audit": _old_run(base, "20260101T000000Z", _minimal(sample, recs)),
        "sweep": _old_run(base, "20260102T000000Z", _minimal(
            sample, sweep, "python -m audit sweep torch.bce --dtype float16 --exhaustive")),
        "empty": _old_run(base, "20260103T000000Z", _minimal(sample, [])),
        "new": _old_run(base, "20260104T000000Z", _minimal(sample, recs)),
        "sweep2": _old_run(base, "20260105T000000Z", _minimal(
            sample, sweep, "python -m audit merge runs/m runs/s1 runs/s2")),
    }
    results.point_latest(base, runs["new"])
    return runs


def test_baseline_is_the_newest_earlier_run_of_the_same_kind(history: dict) -> None:
    new = results.load_results(history["new"])
    assert results.find_previous(history["new"], like=new) == history["audit"]
    sweep2 = results.load_results(history["sweep2"])
    assert results.find_previous(history["sweep2"], like=sweep2) == history["sweep"]
    assert results.run_kind(new) == "pytest"
    assert results.run_kind(sweep2) == "sweep:exhaustive"


def test_the_report_compares_with_the_same_kind(history: dict) -> None:
    doc = results.load_results(history["new"])
    session.finish(history["new"], doc)
    assert doc["comparison"]["previous"] == history["audit"].name


def test_compare_defaults_to_the_baseline(history: dict, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    assert cmp.main([str(history["new"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["previous"] == history["audit"].name
    monkeypatch.chdir(history["new"].parent.parent)  # reports/latest is the new run
    assert cmp.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["previous"] == history["audit"].name
    assert cmp.main([]) == 0
    assert "20260101T000000Z" in capsys.readouterr().out


def test_compare_without_a_baseline_is_one_line(history: dict,
                                                capsys: pytest.CaptureFixture) -> None:
    assert cmp.main([str(history["audit"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m audit compare: error:") and "\n" not in err


# ---------------------------------------------------------------- fast validation


def _big(sample: dict, points: int) -> dict:
    doc = copy.deepcopy(sample)
    rows = [p for r in sample["records"] for p in r["points"]]
    per = points // len(doc["records"]) + 1
    for r in doc["records"]:
        r["points"] = [list(rows[i % len(rows)]) for i in range(per)]
    return doc


def test_a_full_report_validates_in_well_under_a_second(sample: dict) -> None:
    """A full run has some 130,000 points (~10 s with jsonschema on every point)."""
    doc = _big(sample, 130_000)
    validate(doc)  # warm: import jsonschema, build the validator
    start = time.perf_counter()
    validate(doc)
    assert time.perf_counter() - start < 2.0  # ~0.2 s; generous for a loaded machine


BAD_POINTS = [
    [1.0, 0.0, 0.5], [1.0, 0.0, 0.5, "ok", 1], (1.0, 0.0, 0.5, "ok"), [True, 0.0, 0.5, "ok"],
    [None, 0.0, 0.5, "ok"], ["NaN", 0.0, 0.5, "ok"], [1.0, "1", 0.5, "ok"],
    [1.0, 0.0, -0.5, "ok"], [1.0, 0.0, "-inf", "ok"], [1.0, 0.0, 0.5, "fine"],
    [1.0, 0.0, 0.5, None], [1.0, 0.0, [0.5], "ok"], {"x": 1}, "row", [],
    [float("inf"), 0.0, 0.5, "ok"], [1.0, 0.0, float("nan"), "ok"],
]
GOOD_POINTS = [[1, 0, 0, "ok"], ["inf", "-inf", "inf", "crash"], ["nan", 0.5, "nan", "error"],
               [-0.0, 1.0, 0.0, "spurious_zero"], [1e308, 5e-324, 1e300, "inaccurate"]]


@pytest.mark.parametrize("point", BAD_POINTS + GOOD_POINTS,
                         ids=[repr(p)[:40] for p in BAD_POINTS + GOOD_POINTS])
def test_fast_validation_agrees_with_the_schema(sample: dict, point: object) -> None:
    """The hand check of points only ever accepts what the schema accepts."""
    doc = copy.deepcopy(sample)
    doc["records"] = doc["records"][:3]
    for r in doc["records"]:
        r["points"] = r["points"][:5]
    doc["records"][1]["points"].insert(2, point)
    expected_ok = results._validator().is_valid(doc) and not results._nonfinite_paths(doc)
    try:
        validate(doc)
        ok = True
    except ResultsError as e:
        ok = False
        assert "records[1].points[2]" in str(e), str(e)
    assert ok is expected_ok
    assert ok is (point in GOOD_POINTS)


@pytest.mark.parametrize("hist, ok", [
    ({"edges": [0, 0.5, "inf"], "counts": [3, 0]}, True),
    ({"edges": [0, 1], "counts": [2.0]}, True),
    ({"edges": [0, 1], "counts": [-1]}, False),
    ({"edges": [0, 1], "counts": [1.5]}, False),
    ({"edges": [0, True], "counts": [1]}, False),
    ({"edges": [0, 1]}, False),
    ({"edges": [0, 1], "counts": [1], "extra": 1}, False),
])
def test_fast_histogram_check_agrees_with_the_schema(sample: dict, hist: dict, ok: bool) -> None:
    doc = copy.deepcopy(sample)
    doc["records"] = doc["records"][:2]
    doc["records"][0]["ulp_histogram"] = hist
    assert results._validator().is_valid(doc) is ok
    if ok:
        validate(doc)
    else:
        with pytest.raises(ResultsError, match="ulp_histogram"):
            validate(doc)


# ---------------------------------------------------------------- the browser test


FAKE_CHROMIUM = '''#!{python}
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

args = sys.argv[1:]
for a in args:
    if a.startswith("--screenshot="):
        Path(a.split("=", 1)[1]).write_bytes(b"\\x89PNG" + bytes(30_000))
if "--dump-dom" in args:
    print(Path(unquote(urlparse(args[-1]).path)).read_text())
'''


@pytest.mark.process
def test_the_browser_test_writes_no_screenshot_into_the_repository(tmp_path: Path) -> None:
    """Run it with a stand-in chromium: every file it writes stays in its tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "chromium"
    fake.write_text(FAKE_CHROMIUM.format(python=sys.executable))
    fake.chmod(0o755)
    shots = ROOT / "reports" / "screenshots"
    before = {p: p.stat().st_mtime_ns for p in shots.rglob("*")} if shots.exists() else {}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
         "tests/harness/test_report.py", "-k", "chromium", "--basetemp", str(tmp_path / "t")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                       "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]
    after = {p: p.stat().st_mtime_ns for p in shots.rglob("*")} if shots.exists() else {}
    assert after == before, "the browser test wrote into reports/screenshots"
    assert list((tmp_path / "t").rglob("report.png"))
