"""Sweeps, shards, merge and bench: streaming must not change a single count.

The reference for every sweep here is the one-shot grading of the same points
(run_framework + reference_values + grade over the whole batch): chunking, sharding,
merging and worker processes may only change how the work is cut, never the numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit import results, subjects
from audit.batch import Batch
from audit.checks import Case, reference_values, run_framework
from audit.grading import STATUSES, grade
from audit.sweep import (
    HIST_EDGES,
    PLOT_CAP,
    merge_records,
    pattern_range,
    sweep,
    ulp_histogram,
    values_of,
)

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "torch.bce_with_logits"
KEYS = ("n", "counts", "max_ulp", "max_bits", "ulp_histogram", "worst")


def _skip_unless(name: str, dtype: str) -> None:
    reason = subjects.get(name).skip_reason(dtype, "cpu")
    if reason:
        pytest.skip(reason)


def one_shot(name: str, dtype: str, targets: list[float], start: int, stop: int) -> dict:
    """Counts, max ulp, histogram and exact-match count of patterns [start, stop)."""
    s = subjects.get(name)
    xs = values_of(np.arange(start, stop, dtype=np.uint64), dtype)
    x = np.tile(xs, len(targets))
    y = np.repeat(np.array(targets, dtype=np.float64), xs.size)
    pts = Batch.of(x, y)
    out = {}
    for q, check in (("loss", "values"), ("grad", "grads")):
        observed, _, _ = run_framework(s, Case(name, check, dtype, "cpu"), pts)
        expected, parts = reference_values(s.reference_op, dtype, pts, q == "grad")
        g = grade(observed, expected, *parts, dtype, 1.0)
        ulp = np.where(np.isnan(g.ulp), np.inf, g.ulp)
        counts = np.bincount(g.code, minlength=len(STATUSES))
        out[q] = {"n": x.size, "counts": {STATUSES[i]: int(c) for i, c in enumerate(counts) if c},
                  "max_ulp": float(ulp.max()), "hist": ulp_histogram(ulp).tolist(),
                  "correct": int(np.count_nonzero((observed == expected)
                                                  | (np.isnan(observed) & np.isnan(expected))))}
    return out


def by_quantity(records: list[dict]) -> dict[str, dict]:
    return {r["quantity"]: r for r in records}


def test_ulp_histogram_matches_numpy():
    rng = np.random.default_rng(1)
    u = np.abs(rng.standard_normal(20000)) * 2.0 ** rng.integers(-1080, 70, 20000)
    u = np.concatenate([u, HIST_EDGES, np.nextafter(HIST_EDGES, np.inf),
                        np.nextafter(HIST_EDGES, 0), [0.0, 5e-324, np.inf, 2.0 ** 63]])
    u = u[~np.isnan(u)]
    got = ulp_histogram(u)
    assert got.sum() == u.size  # every value once (np.histogram + a manual inf count: twice)
    assert np.array_equal(got, np.histogram(u, bins=HIST_EDGES)[0])


def test_pattern_ranges():
    assert pattern_range("float16", "bce_with_logits") == (0, 1 << 16)
    assert pattern_range("float32", "bce_with_logits") == (0, 1 << 32)
    assert pattern_range("float16", "bce") == (0, 0x3C00 + 1)  # +0 .. 1.0
    assert pattern_range("bfloat16", "bce") == (0, 0x3F80 + 1)
    v = values_of(np.arange(0, 1 << 16, dtype=np.uint64), "float16")
    assert v.size == (1 << 16) - 2 * 1023 * 1  # NaN patterns (2 x 1023 payloads) dropped
    assert np.isinf(v).sum() == 2


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_exhaustive_sweep_equals_one_shot_grading(dtype):
    _skip_unless(SUBJECT, dtype)
    recs = by_quantity(sweep(SUBJECT, dtype, targets=[0.0, 1.0], budget=1.0, chunk=5000,
                             progress=False))
    want = one_shot(SUBJECT, dtype, [0.0, 1.0], 0, 1 << 16)
    for q in ("loss", "grad"):
        r, w = recs[q], want[q]
        assert r["mode"] == "exhaustive" and r["n"] == w["n"] == 2 * values_of(
            np.arange(1 << 16, dtype=np.uint64), dtype).size
        assert r["counts"] == w["counts"]
        assert sum(r["counts"].values()) == r["n"]
        assert (r["max_ulp"] == "inf") if math.isinf(w["max_ulp"]) else \
            r["max_ulp"] == w["max_ulp"]
        assert r["ulp_histogram"]["counts"] == w["hist"]
        assert round(r["correctly_rounded"] * r["n"]) == w["correct"]
        worst = r["worst"]
        assert worst is not None and worst["repro"].startswith("python -m audit probe")
        assert 0 < len(r["points"]) <= PLOT_CAP


def test_probability_subject_sweeps_only_the_unit_interval():
    name = "torch.bce"
    _skip_unless(name, "bfloat16")
    recs = by_quantity(sweep(name, "bfloat16", targets=[0.0, 1.0], budget=1.0,
                             progress=False))
    stop = pattern_range("bfloat16", "bce")[1]
    want = one_shot(name, "bfloat16", [0.0, 1.0], 0, stop)
    assert recs["loss"]["n"] == 2 * stop == want["loss"]["n"]
    assert recs["grad"]["counts"] == want["grad"]["counts"]


def test_shards_merge_to_the_whole():
    _skip_unless(SUBJECT, "float16")
    kw = {"targets": [0.0, 1.0], "budget": 1.0, "progress": False}
    whole = by_quantity(sweep(SUBJECT, "float16", **kw))
    shards = [r for i in range(3) for r in sweep(SUBJECT, "float16", shard=(i, 3), **kw)]
    assert sum(r["n"] for r in shards) == 2 * whole["loss"]["n"]
    merged = by_quantity(merge_records(shards))
    for q in ("loss", "grad"):
        for k in KEYS:
            assert merged[q][k] == whole[q][k], (q, k)
        assert merged[q]["test_id"].endswith("merged 3 shards")
        assert len(merged[q]["points"]) <= PLOT_CAP


def test_sampled_sweep_is_deterministic_and_counts_every_sample():
    _skip_unless(SUBJECT, "float32")
    kw = {"targets": [0.0, 1.0], "budget": 1.0, "progress": False, "exhaustive": False,
          "samples": 30000, "chunk": 7000}
    a, b = sweep(SUBJECT, "float32", seed=5, **kw), sweep(SUBJECT, "float32", seed=5, **kw)
    assert [r["counts"] for r in a] == [r["counts"] for r in b]
    assert a[0]["mode"] == "sampled"
    # NaN patterns are drawn and dropped: about 0.4% of all float32 patterns
    assert 0.99 * 60000 <= a[0]["n"] <= 60000
    c = sweep(SUBJECT, "float32", seed=6, **kw)
    assert [r["ulp_histogram"] for r in a] != [r["ulp_histogram"] for r in c]


def run_audit(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """`python -m audit ...` in cwd (runs write reports/ there, not in the checkout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize("args, needle", [
    (["sweep", "nope.bce", "--dtype", "float16", "--exhaustive"], "unknown subject"),
    (["sweep", SUBJECT, "--dtype", "float8", "--exhaustive"], "unknown dtype"),
    (["sweep", SUBJECT, "--dtype", "float16", "--exhaustive", "--workers", "0"], "--workers"),
    (["sweep", SUBJECT, "--dtype", "float16", "--exhaustive", "--jobs", "2"], "--workers"),
    (["sweep", SUBJECT, "--dtype", "float16", "--exhaustive", "--shard", "3/2"], "--shard"),
    (["sweep", SUBJECT, "--dtype", "float16", "--samples", "-5"], "--samples"),
    (["sweep", SUBJECT, "--dtype", "float16"], "--exhaustive"),
    (["sweep", SUBJECT, "--dtype", "float16", "--exhaustive", "--targets", "0,abc"], "abc"),
    (["merge", "out-dir", "/nonexistent/results.json"], "nonexistent"),
    (["bench", "--points", "0"], "--points"),
    (["table", "/nonexistent"], "nonexistent"),
])
def test_tool_usage_errors_are_one_line(args, needle, tmp_path, capsys, monkeypatch):
    """In process (main() is what `python -m audit` runs; whole processes:
    test_cli_errors.py and test_sweep_faults.py)."""
    from audit.cli import main

    monkeypatch.chdir(tmp_path)  # a run would write reports/ here, not in the checkout
    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert "Traceback" not in err


def test_sweep_and_merge_cli_write_valid_runs(tmp_path):
    _skip_unless(SUBJECT, "float16")
    from audit import tools

    proc = run_audit("sweep", SUBJECT, "--dtype", "float16", "--exhaustive", "--shard", "1/2",
                     "--quiet", "--out", str(tmp_path / "s1"))
    assert proc.returncode == 0, proc.stderr
    doc = results.load_results(tmp_path / "s1")  # schema-checked
    assert {r["mode"] for r in doc["records"]} == {"exhaustive"}
    assert f"{SUBJECT} float16 loss: n=" in proc.stdout
    parts: list[dict] = []
    other = sweep(SUBJECT, "float16", targets=[0.0, 1.0], budget=1.0, shard=(1, 2),
                  progress=False, parts=parts)  # the second shard in-process: one import less
    info = tools.sweep_info(SUBJECT, "float16", "cpu", exhaustive=True, targets=[0.0, 1.0],
                            budget=1.0, seed=0, samples=0, shards=[{"index": 2, "count": 2}],
                            parts=parts)
    tools._write(tools._doc(other, "test", "sweep", sweep=info), str(tmp_path / "s2"))
    proc = run_audit("merge", str(tmp_path / "m"), str(tmp_path / "s1"),
                     str(tmp_path / "s2" / "results.json"))
    assert proc.returncode == 0, proc.stderr
    doc = results.load_results(tmp_path / "m")
    assert sorted(r["quantity"] for r in doc["records"]) == ["grad", "loss"]
    assert doc["run"]["sweep"]["complete"] is True and doc["run"]["status"] == "failed"
    assert all(r["test_id"].endswith(f"merged 2 shards {r['quantity']}") for r in doc["records"])
    assert all(r["n"] == 2 * 63490 for r in doc["records"])  # 65,536 - 2,046 NaN patterns
    html = (tmp_path / "m" / "index.html").read_text()
    assert "exhaustive" in html and SUBJECT in html
    json.dumps(doc)  # plain JSON all the way down
    proc = run_audit("table", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| subject | quantity |") and len(lines) == 4
    assert all(f"| {SUBJECT} |" in row and "| exhaustive | 126,980 |" in row
               for row in lines[2:])


@pytest.mark.process
def test_bench_prints_side_by_side_ratios(tmp_path):
    _skip_unless(SUBJECT, "float32")
    # the every-subject sweep timings start every framework: `make bench` runs them
    proc = run_audit("bench", "--points", "4096", "--mpmath-points", "300", "--rounds", "1",
                     "--min-time", "0", "--sweeps", "torch", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("reference, mpmath", "reference, fast: rounded", "torch.bce_with_logits itself",
                   "grading pipeline, torch, 1 thread", "torch itself / grading pipeline",
                   "vs mpmath", "exhaustive float16 sweep"):
        assert needle in out, out
    assert "every subject with a fast reference" not in out


def test_bench_json_has_the_design_keys_measured_in_one_run(capsys):
    from audit.cli import main

    _skip_unless(SUBJECT, "float32")
    capsys.readouterr()
    assert main(["bench", "--points", "2048", "--mpmath-points", "100", "--rounds", "1",
                 "--min-time", "0", "--sweeps", "none", "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out.strip().splitlines()[-1])
    for key in ("mpmath_pts_per_s", "fast_pts_per_s", "fast_soft_grad_pts_per_s",
                "framework_pts_per_s", "pipeline_pts_per_s"):
        assert doc[key] > 0, key
    assert doc["fast_vs_framework"] == doc["fast_pts_per_s"] / doc["framework_pts_per_s"]
    assert doc["rates"]["reference, mpmath"] == doc["mpmath_pts_per_s"]
    rows = doc["cross_entropy_rows_per_s"]
    assert rows["classes"] == 10 and all(rows[k] > 0 for k in ("mpmath", "fast", "fast_grad"))
    assert " rows/s " in out
    assert "exhaustive" not in out  # --sweeps none


def test_bench_rows_are_float32_rows_with_class_indices():
    from audit.bench import ROW_K, softmax_rows

    rows, labels = softmax_rows(1000)
    assert rows.shape == (1000 // ROW_K, ROW_K) and labels.shape == (rows.shape[0],)
    assert np.array_equal(rows, rows.astype(np.float32).astype(np.float64))
    assert ((labels >= 0) & (labels < ROW_K)).all() and (np.abs(rows) == 30).any()


def test_interleaved_rates_are_best_rounds():
    from audit.bench import interleaved

    calls = []
    rates = interleaved({"a": (10, lambda: calls.append("a")),
                         "b": (20, lambda: calls.append("b"))}, rounds=3, min_time=0.0)
    assert calls == ["a", "b"] * 3  # interleaved, one call per round with min_time 0
    assert rates["a"] > 0 and rates["b"] > 0
