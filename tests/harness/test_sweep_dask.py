"""Sweeps on Dask (DESIGN.md section 11): a LocalCluster sweep equals the one-process
sweep count for count, says run.engine = "dask", and a scheduler that is not there is a
one-line usage error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit import subjects
from tests.harness.test_sweep import KEYS

pytest.importorskip("distributed", reason="dask.distributed is not installed")

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "torch.bce_with_logits"


def _sweep(out: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "audit", "sweep", SUBJECT, "--dtype",
                           "float16", "--exhaustive", "--targets", "0,1", "--quiet", "--out",
                           str(out), *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.mark.process
def test_a_local_cluster_sweep_equals_one_process(tmp_path: Path) -> None:
    if subjects.get(SUBJECT).skip_reason("float16", "cpu"):
        pytest.skip(subjects.get(SUBJECT).skip_reason("float16", "cpu"))
    one = _sweep(tmp_path / "one")
    dask = _sweep(tmp_path / "dask", "--workers", "2")
    assert one["run"]["engine"] == "process" and dask["run"]["engine"] == "dask"
    assert len(dask["run"]["sweep"]["parts"]) == 8  # 4 pieces per worker
    by = {r["quantity"]: r for r in one["records"]}
    assert sorted(by) == sorted(r["quantity"] for r in dask["records"]) == ["grad", "loss"]
    for r in dask["records"]:
        for k in KEYS:  # every count, histogram and worst point
            assert r[k] == by[r["quantity"]][k], (r["quantity"], k)
        assert r["test_id"] == by[r["quantity"]]["test_id"]


def test_an_unreachable_scheduler_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from audit import sweep_dask
    from audit.cli import main

    monkeypatch.setattr(sweep_dask, "CONNECT_TIMEOUT", "2s")  # nothing listens on port 9
    capsys.readouterr()
    rc = main(["sweep", SUBJECT, "--dtype", "float16", "--exhaustive", "--quiet",
               "--out", str(tmp_path / "x"), "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "Dask scheduler" in err


@pytest.mark.process
def test_a_failing_piece_is_reported_with_what_was_measured() -> None:
    """An exception in a Dask piece (here: every piece gets an impossible chunk) ends the
    sweep with SweepFailed naming it; nothing is silently dropped or retried forever."""
    from audit.sweep_dask import SweepFailed, sweep_dask

    parts: list[dict] = []
    with pytest.raises(SweepFailed, match=r"sweep piece \d+ of 4 failed: .*chunk") as e:
        sweep_dask(SUBJECT, "float16", workers=1, targets=[0.0, 1.0], budget=1.0,
                   chunk=0, progress=False, parts=parts)
    assert e.value.records == [] and len(e.value.parts) == 4 == len(parts)
    assert all(p["done"] == 0 and p["total"] > 0 for p in parts)
