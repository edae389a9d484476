"""Sweep, merge, table and bench against user mistakes, faults and interruption.

Every bad argument is one line on stderr starting with "error:", exit status 2, no
traceback, decided at once (the subprocess timeout is the time limit: a hang fails).
`merge` refuses shards it would count twice, shards of different sweeps, and an OUT that
would overwrite an input; a merge that misses inputs says so. A sweep writes its partial
results as it goes, and SIGINT / SIGTERM leave an "interrupted" results.json and report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import results, subjects

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "torch.bce_with_logits"
CHUNK = 262144
LONG_SWEEP = ["sweep", SUBJECT, "--dtype", "float32", "--samples", "50000000", "--chunk",
              str(CHUNK), "--quiet"]


def audit(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=_env())


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def assert_usage_error(proc: subprocess.CompletedProcess, needle: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def _skip_unless(dtype: str) -> None:
    reason = subjects.get(SUBJECT).skip_reason(dtype, "cpu")
    if reason:
        pytest.skip(reason)


# ------------------------------------------------------------------ bad arguments

F16 = ["sweep", SUBJECT, "--dtype", "float16", "--exhaustive"]
BAD = {
    "chunk 0": ([*F16, "--chunk", "0"], "--chunk"),
    "chunk negative": ([*F16, "--chunk", "-4"], "--chunk"),
    "samples 0": (["sweep", SUBJECT, "--dtype", "float16", "--samples", "0"], "--samples"),
    "samples negative": (["sweep", SUBJECT, "--dtype", "float16", "--samples", "-3"],
                         "--samples"),
    "workers 0": ([*F16, "--workers", "0"], "--workers"),
    "workers negative": ([*F16, "--workers", "-2"], "--workers"),
    "jobs (replaced)": ([*F16, "--jobs", "2"], "--workers"),
    "workers and scheduler": ([*F16, "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"],
                              "--scheduler"),
    "max-ulp negative": ([*F16, "--max-ulp", "-1"], "--max-ulp"),
    "max-ulp nan": ([*F16, "--max-ulp", "nan"], "--max-ulp"),
    "max-ulp inf": ([*F16, "--max-ulp", "inf"], "--max-ulp"),
    "targets above 1": ([*F16, "--targets", "5"], "--targets"),
    "targets below 0": ([*F16, "--targets", "0,-0.5"], "--targets"),
    "targets nan": ([*F16, "--targets", "nan"], "--targets"),
    "targets unparsable": ([*F16, "--targets", "0,abc"], "abc"),
    "targets empty item": ([*F16, "--targets", "0,,1"], "--targets"),
    "seed negative": ([*F16, "--seed", "-1"], "--seed"),
    "bench min-time nan": (["bench", "--min-time", "nan"], "--min-time"),
    "bench min-time negative": (["bench", "--min-time", "-1"], "--min-time"),
    "bench min-time inf": (["bench", "--min-time", "inf"], "--min-time"),
    "bench points 0": (["bench", "--points", "0"], "--points"),
    "bench rounds 0": (["bench", "--rounds", "0"], "--rounds"),
    "bench mpmath-points above points": (["bench", "--points", "100", "--mpmath-points",
                                          "200"], "--mpmath-points"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_argument_is_one_line(name, capsys):
    """In process: main() is what `python -m audit` runs (a few as processes below)."""
    from audit.cli import main

    args, needle = BAD[name]
    capsys.readouterr()
    code = main(list(args))
    err = capsys.readouterr().err
    line = assert_usage_error(subprocess.CompletedProcess(args, code, "", err), needle)
    if name.startswith("bench min-time"):
        assert "--points" not in line  # names the option that is wrong, not others


@pytest.mark.parametrize("name", ["chunk 0", "targets unparsable", "jobs (replaced)",
                                  "bench points 0"])
def test_the_process_says_the_bad_argument_in_one_line(name):
    args, needle = BAD[name]
    assert_usage_error(audit(*args), needle)


@pytest.fixture
def unusable(tmp_path) -> dict[str, str]:
    """--out values that cannot be a run directory, by kind."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    yield {"existing file": str(a_file), "folder under a file": str(a_file / "run"),
           "read-only folder": str(ro / "run"), "read-only system folder": "/sys/bce-audit-run"}
    ro.chmod(0o755)


def _writable(path: str) -> bool:
    probe = Path(path).parent
    try:
        (probe / ".probe").write_text("")
    except OSError:
        return False
    (probe / ".probe").unlink()
    return True


@pytest.mark.parametrize("kind", ["existing file", "folder under a file", "read-only folder",
                                  "read-only system folder"])
@pytest.mark.parametrize("verb", ["sweep", "merge"])
def test_unusable_out_is_refused_before_any_work(verb, kind, unusable, tmp_path):
    out = unusable[kind]
    if kind.startswith("read-only") and (not Path(out).parent.is_dir() or _writable(out)):
        pytest.skip("this user can write there (root) or there is no such folder")
    shard = tmp_path / "shard.json"  # never read: OUT is refused first
    args = ([*F16, "--out", out, "--quiet"] if verb == "sweep"
            else ["merge", out, str(shard)])
    start = time.monotonic()
    assert_usage_error(audit(*args), out if verb == "sweep" else "OUT")
    assert time.monotonic() - start < 20
    assert not Path(out).is_dir()


@pytest.mark.parametrize("content", [b"\xff\xfe{\x00", b"{not json", b"[" * 100000],
                         ids=["not utf-8", "not json", "nested too deeply"])
@pytest.mark.parametrize("verb", ["table", "merge"])
def test_unreadable_results_are_one_line(verb, content, tmp_path):
    bad = tmp_path / "run" / "results.json"
    bad.parent.mkdir()
    bad.write_bytes(content)
    args = ["table", str(bad)] if verb == "table" else ["merge", str(tmp_path / "m"), str(bad)]
    assert_usage_error(audit(*args), str(bad))


# ------------------------------------------------------------------ merge refusals


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """Three real float16 shards (targets 1), swept side by side; and shard 1 again with a
    budget of 0 ulp."""
    _skip_unless("float16")
    base = tmp_path_factory.mktemp("shards")
    runs = {f"s{i}": [f"--shard={i}/3"] for i in (1, 2, 3)}
    runs["zero"] = ["--shard=1/3", "--max-ulp", "0"]
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "audit", *F16, *extra, "--targets", "1", "--quiet", "--out",
         str(base / name)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for name, extra in runs.items()}
    for p in procs.values():
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert err == "", err  # a quiet torch-only sweep: no TensorFlow banner, nothing
    return {name: base / name for name in runs}


def _variant(shards: dict[str, Path], tmp_path: Path, change) -> Path:
    """A copy of shard 3 with `change(doc)` applied (still schema-valid)."""
    doc = results.load_results(shards["s3"])
    change(doc)
    out = tmp_path / "variant"
    results.write_results(doc, out)
    return out


def _set_everywhere(key: str, value: str):
    def change(doc: dict) -> None:
        doc["run"]["sweep"][key] = value
        for r in doc["records"]:
            r[key] = value
    return change


def test_merge_refuses_a_repeated_shard(shards, tmp_path):
    s1 = str(shards["s1"])
    assert_usage_error(audit("merge", str(tmp_path / "m"), s1, s1), "twice")
    assert_usage_error(audit("merge", str(tmp_path / "m"), s1,
                             str(shards["s1"] / "results.json")), "twice")
    copy = tmp_path / "copy"
    shutil.copytree(shards["s1"], copy)
    assert_usage_error(audit("merge", str(tmp_path / "m"), s1, str(shards["s2"]), str(copy)),
                       "overlap")
    assert not (tmp_path / "m").exists()


def test_merge_refuses_overlapping_shards(shards, tmp_path):
    m12 = tmp_path / "m12"
    proc = audit("merge", str(m12), str(shards["s1"]), str(shards["s2"]))
    assert proc.returncode == 0, proc.stderr
    assert_usage_error(audit("merge", str(tmp_path / "m"), str(m12), str(shards["s2"])),
                       "overlap")
    proc = audit("merge", str(tmp_path / "all"), str(m12), str(shards["s3"]))  # disjoint
    assert proc.returncode == 0, proc.stderr
    doc = results.load_results(tmp_path / "all")
    assert doc["run"]["sweep"]["complete"] is True


@pytest.mark.parametrize("what, change, needle", [
    ("subject", _set_everywhere("subject", "torch.sigmoid_bce"), "subject"),
    ("dtype", _set_everywhere("dtype", "bfloat16"), "dtype"),
    ("device", _set_everywhere("device", "cuda"), "device"),
    ("targets", lambda d: d["run"]["sweep"].update(targets=[0.0, 1.0]), "targets"),
    ("budget", lambda d: d["run"]["sweep"].update(max_ulp=2.0), "max_ulp"),
    ("version", lambda d: d["run"]["versions"].update(torch="0.0.1"), "torch version"),
])
def test_merge_refuses_shards_of_different_sweeps(shards, tmp_path, what, change, needle):
    other = _variant(shards, tmp_path, change)
    line = assert_usage_error(audit("merge", str(tmp_path / "m"), str(shards["s1"]),
                                    str(other)), needle)
    assert "different" in line
    assert not (tmp_path / "m").exists()


def test_merge_never_overwrites_an_input(shards, tmp_path):
    s1, s2 = shards["s1"], shards["s2"]
    before = (s1 / "results.json").read_bytes()
    for out, needle in ((s1, "overwrite"), (s1 / "sub", "overwrite"),
                        (s1.parent, "overwrite")):
        assert_usage_error(audit("merge", str(out), str(s1), str(s2)), needle)
    assert (s1 / "results.json").read_bytes() == before
    assert not (s1 / "sub").exists() and not (s1.parent / "results.json").exists()


def test_merge_of_some_shards_says_it_is_incomplete(shards, tmp_path):
    proc = audit("merge", str(tmp_path / "part"), str(shards["s1"]), str(shards["s3"]))
    assert proc.returncode == 0, proc.stderr
    part = results.load_results(tmp_path / "part")
    assert all("merged 2 of 3 shards" in r["test_id"] for r in part["records"])
    assert part["run"]["sweep"]["complete"] is False
    assert part["run"]["sweep"]["coverage"] == pytest.approx(2 / 3)
    assert "incomplete" in proc.stdout
    proc = audit("merge", str(tmp_path / "all"), *(str(shards[k]) for k in ("s3", "s1", "s2")))
    assert proc.returncode == 0, proc.stderr
    whole = results.load_results(tmp_path / "all")
    assert whole["run"]["sweep"]["complete"] is True
    assert whole["run"]["status"] == "failed"  # torch's float16 loss has non-ok points
    assert all(r["test_id"].endswith(f"merged 3 shards {r['quantity']}")
               for r in whole["records"])
    docs = [results.load_results(shards[k]) for k in ("s1", "s2", "s3")]
    for r in whole["records"]:
        assert r["n"] == sum(x["n"] for d in docs for x in d["records"]
                             if x["quantity"] == r["quantity"])


def test_max_ulp_zero_is_a_budget_of_zero(shards):
    zero, default = results.load_results(shards["zero"]), results.load_results(shards["s1"])
    assert zero["run"]["sweep"]["max_ulp"] == 0
    assert default["run"]["sweep"]["max_ulp"] == 1.0
    for z, d in zip(zero["records"], default["records"], strict=True):
        assert z["n"] == d["n"]
        assert z["counts"].get("inaccurate", 0) > d["counts"].get("inaccurate", 0)


# ------------------------------------------------------------------ interruption


def _start(out: Path, *extra: str, session: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "audit", *LONG_SWEEP, *extra, "--out",
                             str(out)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=session)


def _first_snapshot(proc: subprocess.Popen, path: Path, deadline: float) -> dict:
    """The first partial results.json the running sweep writes (polled)."""
    end = time.monotonic() + deadline
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "no partial results.json while the sweep runs"
        time.sleep(0.05)
    return json.loads(path.read_text(encoding="utf-8"))  # replaced atomically: whole


@pytest.mark.parametrize("sig, engine, group", [
    (signal.SIGINT, (), False), (signal.SIGTERM, (), False),
    (signal.SIGTERM, ("--workers", "2"), False), (signal.SIGINT, ("--workers", "2"), True)],
    ids=["SIGINT", "SIGTERM", "SIGTERM --workers 2", "Ctrl-C to the group --workers 2"])
@pytest.mark.process
def test_interrupted_sweep_keeps_what_it_measured(sig, engine, group, tmp_path):
    _skip_unless("float32")
    out = tmp_path / "run"
    proc = _start(out, *engine, session=group)
    try:
        snap = _first_snapshot(proc, out / "results.json", 60)
        assert snap["run"]["status"] == "interrupted" and snap["run"]["finished"] is None
        assert snap["run"]["sweep"]["finished"] is False
        if group:  # Ctrl-C at a terminal: every process of the group, Dask workers too
            os.killpg(proc.pid, sig)
        else:  # the parent only: it must pass the stop on to the Dask pieces
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {sig.name}"), err
    doc = results.load_results(out)  # schema-valid
    run = doc["run"]
    assert run["status"] == "interrupted" and run["finished"] is not None
    parts = run["sweep"]["parts"]
    assert len(parts) == (8 if engine else 1) and run["sweep"]["complete"] is False
    assert run["engine"] == ("dask" if engine else "process")
    done = sum(p["done"] for p in parts)
    # whole chunks only (a Dask piece may have finished before the stop)
    assert done > 0 and all(p["done"] % CHUNK == 0 or p["done"] == p["total"] for p in parts)
    for r in doc["records"]:
        # two targets per drawn input; NaN patterns (1 in 256 of float32's) are dropped
        assert r["n"] % 2 == 0 and 0.99 * done <= r["n"] // 2 <= done, (r["n"], done)
        assert sum(r["counts"].values()) == r["n"]
        assert "crash" not in r["counts"]  # stopping is not a finding
        assert "interrupted" in r["test_id"]
    assert (out / "index.html").is_file()
