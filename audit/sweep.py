"""Sweeps: every input of a dtype (or a uniform sample of bit patterns), streamed in
chunks with bounded memory, graded point by point, summarized into the same record
schema as the pytest run (mode "exhaustive" or "sampled"), shardable and mergeable.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from audit import subjects
from audit.checks import Case, reference_values
from audit.dtypes import numpy_dtype, to_float64
from audit.grading import SEVERITY, STATUSES, grade
from audit.records import number_arg, repro_command
from audit.results import to_json_value
from reference.formats import get_format

_UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}
# ulp histogram bin edges: 0, then powers of two from 2**-4 up, then inf
HIST_EDGES = np.concatenate([[0.0], 2.0 ** np.arange(-4, 64), [np.inf]])
PLOT_CAP = 2000
OK = STATUSES.index("ok")


def p99_bound(hist: np.ndarray, n: int) -> float:
    """Upper edge of the ulp-histogram bin holding the 99th percentile (conservative)."""
    if n == 0:
        return 0.0
    k = int(np.searchsorted(np.cumsum(hist), math.ceil(0.99 * n)))
    return float(HIST_EDGES[min(k + 1, HIST_EDGES.size - 1)])


def pattern_range(dtype: str, op: str) -> tuple[int, int]:
    """[start, stop) of the bit patterns a sweep enumerates (all of them for logits;
    for probabilities only +0 .. 1.0, the patterns of [0, 1])."""
    fmt = get_format(dtype)
    if op == "bce_with_logits":
        return 0, 1 << fmt.width
    one_pattern = int(np.array([1.0], dtype=numpy_dtype(dtype)).view(_UINT[fmt.width])[0])
    return 0, one_pattern + 1


def values_of(patterns: np.ndarray, dtype: str) -> np.ndarray:
    """Bit patterns -> float64 values of the dtype (NaN patterns dropped)."""
    fmt = get_format(dtype)
    vals = to_float64(patterns.astype(_UINT[fmt.width]).view(numpy_dtype(dtype)))
    return vals[~np.isnan(vals)]


@dataclass
class Accumulator:
    """Streaming summary of one (quantity, target set) sweep: bounded memory."""

    case: Case
    mode: str
    n: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_EDGES.size - 1, np.int64))
    max_ulp: float = 0.0
    max_bits: float = 0.0
    correct: int = 0
    worst: tuple | None = None  # (severity, -ulp, x, y, observed, expected, ulp, ordinal, status)
    plot: list = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))

    def add(self, x: np.ndarray, y: np.ndarray, observed: np.ndarray, expected: np.ndarray,
            g) -> None:
        self.n += x.size
        for code, c in enumerate(np.bincount(g.code, minlength=len(STATUSES)).tolist()):
            if c:
                self.counts[STATUSES[code]] = self.counts.get(STATUSES[code], 0) + c
        ulp = np.where(np.isnan(g.ulp), np.inf, g.ulp)
        self.hist += np.histogram(ulp, bins=HIST_EDGES)[0]
        self.hist[-1] += int(np.isinf(ulp).sum())  # histogram drops inf; count it last
        self.max_ulp = max(self.max_ulp, float(ulp.max()))
        self.max_bits = max(self.max_bits, g.max_bits())
        self.correct += int(np.count_nonzero(observed == expected)
                            + np.count_nonzero(np.isnan(observed) & np.isnan(expected)))
        worst_code = int(g.code.min())
        sel = np.flatnonzero(g.code == worst_code)
        i = int(sel[np.argmax(ulp[sel])])
        cand = (worst_code, -float(ulp[i]), float(x[i]), float(y[i]), float(observed[i]),
                float(expected[i]), float(ulp[i]), float(g.ordinal[i]), STATUSES[worst_code])
        if self.worst is None or cand[:2] < self.worst[:2]:
            self.worst = cand
        is_ok = g.code == OK
        bad = np.flatnonzero(~is_ok)
        keep = bad[: max(0, PLOT_CAP // 2 - len(self.plot))]
        ok = np.flatnonzero(is_ok)
        if ok.size:
            keep = np.concatenate([keep, self.rng.choice(ok, min(ok.size, 8), replace=False)])
        for j in keep:
            if len(self.plot) < PLOT_CAP:
                self.plot.append([to_json_value(float(x[j])), to_json_value(float(y[j])),
                                  to_json_value(float(ulp[j])), STATUSES[g.code[j]]])

    def p99(self) -> float:
        return p99_bound(self.hist, self.n)

    def record(self, test_id: str) -> dict:
        c = self.case
        w = self.worst
        worst = None
        if w is not None:
            _, _, x, y, obs, exp, ulp, ordinal, status = w
            worst = {"input": to_json_value(x), "target": to_json_value(y), "weight": 1.0,
                     "pos_weight": 1.0, "input_hex": number_arg(x), "target_hex": number_arg(y),
                     "observed": to_json_value(obs), "expected": to_json_value(exp),
                     "exact": _exact_text(c, x, y), "ulp": to_json_value(ulp),
                     "ordinal": None if ordinal < 0 else int(ordinal), "status": status,
                     "error": None,
                     "repro": repro_command(c.subject, c.dtype, c.device, x, y,
                                            grad=c.quantity == "grad")}
        bad = sum(v for k, v in self.counts.items() if k != "ok")
        return {
            "subject": c.subject, "check": c.check, "quantity": c.quantity, "dtype": c.dtype,
            "device": c.device, "reduction": "none", "mode": self.mode, "test_id": test_id,
            "outcome": "failed" if bad else "passed", "n": self.n,
            "counts": {k: self.counts[k] for k in STATUSES if k in self.counts},
            "max_ulp": to_json_value(self.max_ulp), "p99_ulp": to_json_value(self.p99()),
            "max_bits": self.max_bits,
            "correctly_rounded": self.correct / self.n if self.n else 1.0,
            "worst": worst, "contract": None, "points": self.plot,
            "ulp_histogram": {"edges": [to_json_value(float(e)) for e in HIST_EDGES],
                              "counts": self.hist.tolist()},
        }


def _exact_text(case: Case, x: float, y: float) -> str:
    from reference.cli import exact_decimal
    from reference.vectorized import point

    op = subjects.get(case.subject).reference_op
    return exact_decimal(point(op, case.quantity == "grad", x, y, 1.0, 1.0))


def _heap_trimmer():
    """A function returning freed heap to the OS (glibc), or a no-op elsewhere.

    Without it an exhaustive float32 sweep grew past 4 GiB: glibc keeps the freed chunk
    arrays in a fragmented heap. Trimming once per chunk keeps the sweep flat (~0.4 GiB)
    at a small cost; mmap-ing every array instead (M_MMAP_THRESHOLD) cost 2x in time.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):
        return lambda: None


def sweep(subject_name: str, dtype: str, *, device: str = "cpu", targets: list[float],
          exhaustive: bool = True, samples: int = 0, shard: tuple[int, int] = (0, 1),
          chunk: int = 1 << 20, seed: int = 0, budget: float, progress: bool = True
          ) -> list[dict]:
    """Grade values and gradients of one subject over every input (or a sample)."""
    subject = subjects.get(subject_name)
    reason = subject.skip_reason(dtype, device)
    if reason is not None:
        raise ValueError(f"{subject_name} cannot run {dtype} on {device}: {reason}")
    trim = _heap_trimmer()
    fmt = get_format(dtype)
    mode = "exhaustive" if exhaustive else "sampled"
    accs = {q: Accumulator(Case(subject_name, "values" if q == "loss" else "grads", dtype,
                                device), mode) for q in ("loss", "grad")}
    i, n = shard
    if exhaustive:
        start, stop = pattern_range(dtype, subject.reference_op)
        span = stop - start
        lo, hi = start + span * i // n, start + span * (i + 1) // n
        total = hi - lo
    else:
        total = samples // n + (1 if i < samples % n else 0)
        rng = np.random.default_rng([seed, i])
    done = 0
    began = time.perf_counter()
    while done < total:
        m = min(chunk, total - done)
        if exhaustive:
            patterns = np.arange(lo + done, lo + done + m, dtype=np.uint64)
        else:
            patterns = rng.integers(0, 1 << fmt.width, size=m, dtype=np.uint64)
            if subject.reference_op == "bce":
                patterns = patterns % np.uint64(pattern_range(dtype, "bce")[1])
        trim()
        xs = values_of(patterns, dtype)
        done += m
        if xs.size == 0:  # a chunk of NaN patterns only
            continue
        for y in targets:
            pts = {"x": xs, "y": np.full(xs.size, y), "w": np.ones(xs.size),
                   "p": np.ones(xs.size)}
            scalar = {"x": xs, "y": y, "w": 1.0, "p": 1.0}  # the fast reference broadcasts
            for q, acc in accs.items():
                observed = _observe(subject, acc.case, pts)
                expected, parts = reference_values(subject.reference_op, dtype, scalar,
                                                   q == "grad")
                g = grade(observed, expected, *parts, dtype, budget)
                acc.add(pts["x"], pts["y"], observed, expected, g)
        if progress:
            rate = done / max(time.perf_counter() - began, 1e-9)
            print(f"\rsweep {subject_name} {dtype} shard {i + 1}/{n}: {done:,}/{total:,} "
                  f"inputs ({100 * done / total:5.1f}%, {rate:,.0f} inputs/s)",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    tid = f"sweep {subject_name}[{dtype}-{device}] {mode} shard {i + 1}/{n}"
    return [acc.record(f"{tid} {q}") for q, acc in accs.items()]


def _observe(subject: subjects.Subject, case: Case, pts: dict) -> np.ndarray:
    from audit.checks import run_framework

    observed, _errors = run_framework(subject, case, pts)  # errors stay NaN -> graded
    return observed


def merge_records(records: list[dict]) -> list[dict]:
    """Combine shard records of the same (subject, check, dtype, device, mode)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["subject"], r["check"], r["quantity"], r["dtype"], r["device"],
               r["reduction"], r["mode"])
        groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        base = dict(rs[0])
        base["n"] = sum(r["n"] for r in rs)
        counts: dict[str, int] = {}
        for r in rs:
            for k, v in r["counts"].items():
                counts[k] = counts.get(k, 0) + v
        base["counts"] = {k: counts[k] for k in STATUSES if k in counts}
        hist = np.sum([r["ulp_histogram"]["counts"] for r in rs], axis=0)
        base["ulp_histogram"] = {"edges": rs[0]["ulp_histogram"]["edges"],
                                 "counts": hist.tolist()}
        ulps = [math.inf if r["max_ulp"] in ("inf", "nan") else r["max_ulp"] for r in rs]
        base["max_ulp"] = to_json_value(max(ulps))
        base["p99_ulp"] = to_json_value(p99_bound(hist, base["n"]))
        base["max_bits"] = max(r["max_bits"] for r in rs)
        base["correctly_rounded"] = sum(r["correctly_rounded"] * r["n"] for r in rs) / base["n"]
        worsts = [r["worst"] for r in rs if r["worst"]]
        base["worst"] = min(worsts, key=lambda w: (
            SEVERITY[w["status"]], -(math.inf if isinstance(w["ulp"], str) else w["ulp"])),
            default=None)
        base["points"] = [p for r in rs for p in r["points"]][:PLOT_CAP]
        base["outcome"] = "failed" if any(r["outcome"] == "failed" for r in rs) else "passed"
        base["test_id"] = base["test_id"].split(" shard ")[0] + f" merged {len(rs)} shards"
        out.append(base)
    return out
