"""Every CLI verb answers a user mistake with one line naming it and exit status 2, fast:
no traceback, no hang (the limit is the subprocess timeout of this test, not a benchmark).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUGE = "1e999999999"
TINY = "1e-99999999"


def _files(tmp: Path) -> None:
    """A plain file, a results.json that is not UTF-8, an empty folder."""
    (tmp / "a_file").write_text("x")
    (tmp / "junk.json").write_bytes(b"\xff\xfe not utf-8 \x80")
    (tmp / "empty").mkdir(exist_ok=True)


def _bad_args(tmp: Path) -> list[list[str]]:
    a_file, junk, empty = tmp / "a_file", tmp / "junk.json", tmp / "empty"
    p = ["probe", "torch.bce_with_logits", "--dtype", "float32"]
    return [
        [],
        ["nosuchverb"],
        ["subjects", "--bogus"],
        ["subjects", "--subject-module"],
        ["subjects", "--subject-module", "no_such_module_for_sure"],
        [*p[:2], "--dtype", "float8", "--input", "1", "--target", "0"],
        [*p, "--input", "1", "--target", "0", "--device", "tpu"],
        [*p, "--input", "abc", "--target", "0"],
        [*p, "--input", "1", "--target", "0", "--max-ulp", "-1"],
        [*p, "--input", "1", "--target", "0", "--max-ulp", "nan"],
        [*p, "--input", "1,2", "--target", "0"],
        [*p, "--input", "1"],
        ["probe", "nosuch.subject", "--dtype", "float32", "--input", "1", "--target", "0"],
        ["probe", "tf.bce", "--dtype", "float32", "--input", "1", "--target", "0"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--chunk", "0"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--chunk", "-5"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--samples", "0"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--workers", "0"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--targets", "5"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--targets",
         "nan"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--max-ulp",
         "-1"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--shard", "4/3"],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--out",
         str(a_file)],
        ["sweep", "torch.bce_with_logits", "--dtype", "float16", "--exhaustive", "--out",
         str(a_file / "sub")],
        ["merge", str(tmp / "out"), str(tmp / "missing")],
        ["merge", str(tmp / "out"), str(junk)],
        ["merge", str(a_file), str(empty)],
        ["table", str(junk)],
        ["table", str(tmp / "missing")],
        ["compare", str(junk), str(junk)],
        ["compare", str(tmp / "missing")],
        ["bench", "--min-time", "nan"],
        ["bench", "--min-time", "-1"],
        ["bench", "--points", "0"],
        ["bench", "--rounds", "0"],
        ["draft-contracts", "--device", "tpu"],
        ["draft-contracts", "--subjects", ""],
        ["draft-contracts", "--dtypes", "float8"],
        ["rebuild", str(tmp / "missing")],
    ]


CASES = [(" ".join(a) or "(no arguments)", i) for i, a in enumerate(_bad_args(Path("TMP")))]


@pytest.mark.parametrize("label, index", CASES, ids=[c[0][:80] for c in CASES])
def test_audit_cli_usage_error_is_one_line(tmp_path: Path, label: str, index: int,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (main() is what `python -m audit` runs); the process itself below."""
    from audit.cli import main

    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = _bad_args(tmp_path)[index]
    capsys.readouterr()
    rc = main(list(args))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (label, rc, err[-2000:])
    assert "Traceback" not in err, err
    assert len(lines) == 1 and "error" in lines[0], (label, lines)


PROCESS_CASES = [0, 7, 14, 24]  # no arguments, a bad probe input, a bad sweep, a bad merge


@pytest.mark.parametrize("index", PROCESS_CASES, ids=[CASES[i][0][:80] for i in PROCESS_CASES])
def test_the_process_exits_2_with_one_line(tmp_path: Path, index: int) -> None:
    _files(tmp_path)
    args = _bad_args(tmp_path)[index]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "audit", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (args, done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and "error" in lines[0], (args, lines)


@pytest.mark.parametrize("args", [
    ["probe", "torch.bce", "--dtype", "float32", "--input", "0.5", "--target", HUGE],
    ["probe", "torch.bce_with_logits", "--dtype", "float32", "--input", TINY, "--target", "0"],
])
def test_absurd_exponents_are_rounded_not_expanded(args: list[str], capsys) -> None:
    """1e999999999 is inf and 1e-99999999 is 0 in every dtype: answered at once (in
    process: the usage-error tests above run whole processes)."""
    import json

    from audit.cli import main

    capsys.readouterr()
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    if HUGE in args:
        assert out["target"] == "inf", out
    else:
        assert out["input"] == 0.0 and out["status"] == "ok", out


def test_a_closed_pipe_is_not_an_error() -> None:
    """`python -m audit subjects | head -1`: the reader leaves early."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(f"{sys.executable} -m audit subjects --help | head -1; "
                          f"{sys.executable} -m audit subjects | head -1",
                          shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert "BrokenPipe" not in done.stderr and "Traceback" not in done.stderr, done.stderr
