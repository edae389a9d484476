"""Throughput of the mpmath reference and of reference.fast on the same float32 inputs.

The mpmath column times `losses.value` + `round_to` per point (no cache) on the first
n points of each case; the fast column times `fast.rounded` on those same n points and
on the whole FAST_POINTS stream they start (best of 3, each with a cold point cache, so
its mpmath fallbacks are paid for). Disagreements are counted bit for bit on the n shared points.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from mpmath import libmp

from . import fast, losses, vectorized
from .formats import round_to

FAST_POINTS = 1 << 20


def _inputs(n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    # bit patterns: every binade of float32 equally likely (finite values only)
    bits = rng.integers(0, 0x7F800000, size=n, dtype=np.uint32)
    signs = rng.integers(0, 2, size=n, dtype=np.uint32) << np.uint32(31)
    return (bits | signs).view(np.float32)


def _normal(n: int) -> np.ndarray:
    return (np.random.default_rng(1).standard_normal(n) * 8).astype(np.float32)


def _timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _rate(points: int, seconds: float) -> float:
    """points/s; inf for a run too short for the clock (never a ZeroDivisionError)."""
    return points / seconds if seconds > 0 else math.inf


def run(n: int = 20000) -> dict[str, dict[str, float]]:
    """Print and return, per case: points/s of mpmath and fast, ratio, fallback share,
    disagreements. Single process (one core). n: a positive int."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"bench needs a positive integer number of points, got {n!r}")
    big = max(n, FAST_POINTS)
    bits, normal = _inputs(big).astype(np.float64), _normal(big).astype(np.float64)
    cases = {
        "loss, bit-pattern logits, y=0": ("bce_with_logits", False, bits, 0.0),
        "loss, bit-pattern logits, y=0.3": ("bce_with_logits", False, bits, 0.3),
        "loss, N(0,8) logits, y=1": ("bce_with_logits", False, normal, 1.0),
        "grad, N(0,8) logits, y=0.3": ("bce_with_logits", True, normal, 0.3),
        "loss, sigmoid(N(0,8)) probs, y=1": ("bce", False,
                                             1 / (1 + np.exp(-normal)), 1.0),
    }
    print(f"mpmath backend: {libmp.BACKEND}; float32 target, one core; mpmath on {n} points, "
          f"fast on the same {n} and on {big}")
    print(f"  {'case':34s} {'mpmath/s':>10s} {'fast/s (n)':>12s} {'fast/s (big)':>13s} "
          f"{'ratio':>7s} {'fallback':>9s} {'disagree':>8s}")
    results = {}
    fast.libm_ok()  # one-time self-check, not part of the timings
    for name, (op, grad, xs, y) in cases.items():
        x = xs[:n].astype(np.float32).astype(np.float64)
        x_big = xs.astype(np.float32).astype(np.float64)
        t_mp, want = _timed(lambda op=op, grad=grad, x=x, y=y: np.array(
            [round_to(losses.value(op, grad, a, y), "float32") for a in x.tolist()]))
        vectorized.point.cache_clear()
        t_fast, got = _timed(lambda op=op, grad=grad, x=x, y=y: fast.rounded(
            op, "float32", x, y, grad=grad))
        t_big = math.inf
        for _ in range(3):  # best of 3, each with a cold point cache
            vectorized.point.cache_clear()
            fast.reset_stats()
            t, _ = _timed(lambda op=op, grad=grad, x=x_big, y=y: fast.rounded(
                op, "float32", x, y, grad=grad))
            t_big = min(t_big, t)
        share = fast.fallback_share()
        bad = int(np.count_nonzero(got.view(np.uint64) != want.view(np.uint64)))
        r = {"mpmath": _rate(n, t_mp), "fast": _rate(n, t_fast),
             "fast_big": _rate(x_big.size, t_big), "fallback_share": share,
             "disagreements": bad}
        r["ratio"] = r["fast_big"] / r["mpmath"] if math.isfinite(r["mpmath"]) else math.nan
        results[name] = r
        print(f"  {name:34s} {r['mpmath']:>10,.0f} {r['fast']:>12,.0f} {r['fast_big']:>13,.0f} "
              f"{r['ratio']:>6,.0f}x {share:>9.2e} {bad:>8d}")
    return results
