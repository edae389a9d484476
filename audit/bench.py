"""`python -m audit bench`: throughput measured side by side, on the same inputs, in one run.

The batch is the sweeps' chunk (2**20 points) by default: that is the size the grading
pipeline runs at in practice, and on small batches fresh arrays cost page faults that a
long-running sweep does not pay (numpy backs arrays of 4 MiB and more with huge pages).

Every candidate runs in rounds, interleaved (a, b, c, a, b, c, ...), each round for at
least --min-time seconds; its rate is the best round. On a shared machine a slow spell
then hits every candidate alike instead of whichever ran during it, and the ratios are
measured, not computed from runs made at different times.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from audit import runners, subjects
from audit.batch import Batch
from audit.checks import Case, reference_values, run_framework
from audit.grading import grade

OP = "bce_with_logits"
ROW_K = 10  # classes per row of the cross-entropy figures


def interleaved(cands: dict[str, tuple[int, Callable[[], object]]], rounds: int,
                min_time: float) -> dict[str, float]:
    """Points per second of each candidate (points, fn): best of `rounds` interleaved rounds."""
    best = dict.fromkeys(cands, 0.0)
    for _ in range(rounds):
        for name, (n, fn) in cands.items():
            reps, start = 0, time.perf_counter()
            while True:
                fn()
                reps += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            best[name] = max(best[name], n * reps / elapsed)
    return best


def inputs(n: int, seed: int = 2026) -> Batch:
    """n float32 bit patterns (finite, both signs, uniform over patterns) as float64
    logits with hard targets 0/1, unit weights."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 0x7F800000, size=n, dtype=np.uint32)
    bits |= rng.integers(0, 2, size=n, dtype=np.uint32) << np.uint32(31)
    x = bits.view(np.float32).astype(np.float64)
    y = rng.integers(0, 2, size=n).astype(np.float64)
    return Batch.of(x, y)


class Pipeline:
    """The grading pipeline of the audit (framework, fast reference, grade) over a batch,
    the batch split into `workers` contiguous parts graded in threads (numpy and the
    frameworks release the GIL in their kernels)."""

    def __init__(self, subject: subjects.Subject, pts: Batch, workers: int):
        self.subject, self.pts, self.workers = subject, pts, workers
        self.case = Case(subject.name, "values", "float32", "cpu")
        cut = np.linspace(0, len(pts), workers + 1).astype(int)
        self.parts = [pts.take(slice(a, b)) for a, b in itertools.pairwise(cut)]
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def _one(self, pts: Batch) -> object:
        observed, _, _ = run_framework(self.subject, self.case, pts)
        expected, parts = reference_values(self.subject.reference_op, "float32", pts, False)
        return grade(observed, expected, *parts, "float32", 4.0)

    def __call__(self) -> list:
        if self.pool is None:
            return [self._one(self.pts)]
        return list(self.pool.map(self._one, self.parts))


def _sweep_16bit_all() -> tuple[float, int]:
    """Wall time of exhaustive float16 + bfloat16 sweeps of every runnable subject whose
    reference has a fast path."""
    from audit.sweep import sweep
    from reference.families import get_family

    start, done = time.perf_counter(), 0
    for s in subjects.SUBJECTS.values():
        if get_family(s.reference_op).fast is None:
            continue  # a certified-by-mpmath family (focal) is no measure of the fast path
        for dt in ("float16", "bfloat16"):
            if s.skip_reason(dt, "cpu") is None:
                sweep(s.name, dt, targets=[0.0, 1.0], budget=1.0, progress=False)
                done += 1
    return time.perf_counter() - start, done


def softmax_rows(points: int, seed: int = 2027) -> tuple[np.ndarray, np.ndarray]:
    """points / ROW_K float32 rows of ROW_K logits (spread N(0, 4), one logit in eight
    pushed to +-30, a class index each): the cross-entropy bench's input."""
    rng = np.random.default_rng(seed)
    n = max(1, points // ROW_K)
    rows = rng.normal(0, 4, (n, ROW_K))
    far = rng.random((n, ROW_K)) < 1 / 8
    rows[far] = rng.choice([-30.0, 30.0], far.sum())
    return rows.astype(np.float32).astype(np.float64), rng.integers(0, ROW_K, n)


def figures(rates: dict[str, float], points: int, rounds: int, workers: int) -> dict:
    """DESIGN.md section 11's JSON object: the side-by-side rates of one run and their
    ratios (pipeline: the best of its thread counts)."""
    pipeline = max((v for k, v in rates.items() if k.startswith("grading pipeline")),
                   default=None)
    out = {"mpmath_pts_per_s": rates["reference, mpmath"],
           "fast_pts_per_s": rates["reference, fast: rounded"],
           "fast_soft_grad_pts_per_s": rates["reference, fast: rounded, soft-label grads"],
           "framework_pts_per_s": rates.get("torch.bce_with_logits itself"),
           "pipeline_pts_per_s": pipeline}
    fw = out["framework_pts_per_s"]
    out.update({
        "fast_vs_framework": out["fast_pts_per_s"] / fw if fw else None,
        "framework_vs_pipeline": fw / pipeline if fw and pipeline else None,
        "soft_grad_vs_mpmath": out["fast_soft_grad_pts_per_s"] / out["mpmath_pts_per_s"],
        "cross_entropy_rows_per_s": {
            "classes": ROW_K, "mpmath": rates.get(f"cross_entropy rows of {ROW_K}, mpmath"),
            "fast": rates.get(f"cross_entropy rows of {ROW_K}, fast"),
            "fast_grad": rates.get(f"cross_entropy rows of {ROW_K}, fast, gradients")},
        "points": points, "rounds": rounds, "cores": workers,
        "rates": dict(rates)})
    return out


def run(points: int, mpmath_points: int, rounds: int, min_time: float,
        sweeps: str = "all", as_json: bool = False) -> None:
    """Print the table (and with `as_json`, DESIGN.md section 11's object as the last line)."""
    import reference
    from reference import fast, losses, rounded_cross_entropy, vectorized
    from reference.formats import round_to

    pts = inputs(points)
    x, y = pts.input, pts.target
    soft = np.random.default_rng(1).random(points).astype(np.float32).astype(np.float64)
    m = mpmath_points
    fast.libm_ok()  # the one-time self-check of numpy's libm is not throughput
    workers = os.cpu_count() or 1
    cands: dict[str, tuple[int, Callable[[], object]]] = {
        "reference, mpmath": (m, lambda: [round_to(losses.value(
            OP, False, float(a), float(b), 1.0, 1.0), "float32")
            for a, b in zip(x[:m], y[:m], strict=True)]),
        "reference, fast: rounded": (points, lambda: fast.rounded(OP, "float32", x, y)),
        "reference, fast: rounded + parts": (points, lambda: reference_values(
            OP, "float32", pts, False)),
        "reference, fast: rounded, soft labels": (points, lambda: fast.rounded(
            OP, "float32", x, soft)),
        "reference, fast: rounded, soft-label grads": (points, lambda: fast.rounded(
            OP, "float32", x, soft, grad=True)),
    }
    rows, labels = softmax_rows(points)
    mr = max(1, m // ROW_K)  # the same mpmath time budget in logits as the BCE one
    cands.update({
        f"cross_entropy rows of {ROW_K}, mpmath": (mr, lambda: [round_to(
            reference.cross_entropy(r.tolist(), int(c)), "float32")
            for r, c in zip(rows[:mr], labels[:mr], strict=True)]),
        f"cross_entropy rows of {ROW_K}, fast": (len(rows), lambda: rounded_cross_entropy(
            "float32", rows, labels)),
        f"cross_entropy rows of {ROW_K}, fast, gradients": (len(rows), lambda:
            rounded_cross_entropy("float32", rows, labels, grad=True)),
    })
    torch_s = None
    for fw in runners.names():
        if f"{fw}.{OP}" not in subjects.SUBJECTS:
            continue
        s = subjects.get(f"{fw}.{OP}")
        if s.skip_reason("float32", "cpu"):
            print(f"  ({s.name} skipped: {s.skip_reason('float32', 'cpu')})")
            continue
        s.evaluate("float32", "cpu", x[:64], y[:64])  # warm-up (imports, kernels)
        cands[f"{fw}.bce_with_logits itself"] = (
            points, lambda s=s: s.evaluate("float32", "cpu", x, y))
        torch_s = torch_s or (s if fw == "torch" else None)
    if torch_s is not None:
        cands["grading pipeline, torch, 1 thread"] = (points, Pipeline(torch_s, pts, 1))
        if workers > 1:
            cands[f"grading pipeline, torch, {workers} threads"] = (
                points, Pipeline(torch_s, pts, workers))
    vectorized.point.cache_clear()
    rates = interleaved(cands, rounds, min_time)
    routes = {}
    for label, (t, g) in {"hard labels": (y, False), "soft labels": (soft, False),
                          "hard-label gradients": (y, True),
                          "soft-label gradients": (soft, True)}.items():
        fast.reset_stats()
        fast.rounded(OP, "float32", x, t, grad=g)
        routes[label] = (fast.STATS["short"] / points, fast.fallback_share())

    print(f"points/s on {points:,} random float32 bit-pattern logits (finite, both signs), "
          f"hard targets 0/1 unless noted; mpmath on the first {m:,}; best of {rounds} "
          f"interleaved rounds of >= {min_time:g} s; {workers} cores; frameworks with their "
          "own thread pools:")
    row_base = rates[f"cross_entropy rows of {ROW_K}, mpmath"]
    for k, v in rates.items():
        rows_ = k.startswith("cross_entropy rows")  # rows/s, against mpmath's rows/s
        base = row_base if rows_ else rates["reference, mpmath"]
        print(f"  {k:44s} {v:>14,.0f}{' rows/s' if rows_ else ''}   x{v / base:>9,.1f} "
              f"vs mpmath")
    print("  fast reference routes (share certified by the short path / sent to mpmath): "
          + "; ".join(f"{k} {a:.2%} / {b:.4%}" for k, (a, b) in routes.items()))
    if torch_s is not None:
        own = rates["torch.bce_with_logits itself"]
        for k, v in rates.items():
            if k.startswith("grading pipeline"):
                print(f"  torch itself / {k}: {own / v:,.1f}x")
    sweep_times: dict[str, float] = {}
    if sweeps != "none":
        sweep_times = _sweep_times(sweeps)
    if as_json:
        print(json.dumps({**figures(rates, points, rounds, workers),
                          "sweep_seconds": sweep_times}))


def _sweep_times(sweeps: str) -> dict[str, float]:
    from audit.sweep import sweep
    from reference import vectorized

    times = {}
    vectorized.point.cache_clear()
    start = time.perf_counter()
    sweep("torch.bce_with_logits", "float16", targets=[0.0, 1.0], budget=1.0, progress=False)
    times["torch.bce_with_logits float16"] = time.perf_counter() - start
    print(f"exhaustive float16 sweep of torch.bce_with_logits (65,536 logits x {{0,1}}, "
          f"values and gradients): {times['torch.bce_with_logits float16']:.2f} s")
    if sweeps != "all":
        return times
    wall, count = _sweep_16bit_all()
    times[f"all {count} 16-bit sweeps"] = wall
    print(f"exhaustive float16 + bfloat16 sweeps of every subject with a fast reference "
          f"({count} sweeps, values and gradients, targets {{0,1}}): {wall:.2f} s")
    return times
