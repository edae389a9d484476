"""Throughput of the mpmath reference on random float32 inputs (points per second)."""

from __future__ import annotations

import time

import numpy as np
from mpmath import libmp

from . import losses
from .formats import round_to


def _inputs(n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    # bit patterns: every binade of float32 equally likely (finite values only)
    bits = rng.integers(0, 0x7F800000, size=n, dtype=np.uint32)
    signs = rng.integers(0, 2, size=n, dtype=np.uint32) << np.uint32(31)
    return (bits | signs).view(np.float32)


def _rate(n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def run(n: int = 20000) -> dict[str, float]:
    """Print and return points/s per case, single process (one core)."""
    xs = [float(v) for v in _inputs(n)]
    uniform = [float(v) for v in
               (np.random.default_rng(1).standard_normal(n) * 8).astype(np.float32)]
    cases = {
        "loss, bit-pattern logits, y=0": lambda: [round_to(losses.value(
            "bce_with_logits", False, x, 0.0), "float32") for x in xs],
        "loss, N(0,8) logits, y=1": lambda: [round_to(losses.value(
            "bce_with_logits", False, x, 1.0), "float32") for x in uniform],
        "grad, N(0,8) logits, y=0.3": lambda: [round_to(losses.value(
            "bce_with_logits", True, x, 0.3), "float32") for x in uniform],
    }
    print(f"mpmath backend: {libmp.BACKEND}; {n} float32 points per case, one core")
    rates = {}
    for name, fn in cases.items():
        rates[name] = _rate(n, fn)
        print(f"  {name:32s} {rates[name]:>10,.0f} points/s")
    return rates
