"""Sweeps: every input of a dtype (or a uniform sample of bit patterns), streamed in
chunks with bounded memory, graded point by point, summarized into the same record
schema as the pytest run (mode "exhaustive" or "sampled"), shardable and mergeable.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from audit import families, subjects, verdicts
from audit.batch import Batch
from audit.checks import Case, grade_observed, reference_values
from audit.dtypes import numpy_dtype, to_float64
from audit.families import LABEL_SMOOTHING
from audit.grading import SEVERITY, STATUSES
from audit.records import number_arg, repro_command
from audit.results import to_json_value
from audit.target_map import TargetMap, merge_fields
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


def ulp_histogram(ulp: np.ndarray) -> np.ndarray:
    """Counts per HIST_EDGES bin ([0, 2**-4), [2**-4, 2**-3), ..., [2**63, inf]) of
    non-negative ulp errors, NaN-free. The bin is the float64 exponent field (the
    powers-of-two edges make it floor(log2)), so no sort: np.histogram sorted every
    chunk and cost more than the reference."""
    first = 1023 - 5  # exponent field of [2**-5, 2**-4): bin 0 and everything below it
    e = ulp.view(np.uint64) >> np.uint64(52)
    np.clip(e, first, first + HIST_EDGES.size - 2, out=e)
    return np.bincount(e.view(np.int64), minlength=first + HIST_EDGES.size - 1)[first:]


def pattern_range(dtype: str, family: str) -> tuple[int, int]:
    """[start, stop) of the bit patterns a sweep enumerates: the family's (all of them
    for logits; for probabilities only +0 .. 1.0, the patterns of [0, 1])."""
    return families.get(family).patterns(dtype)


def values_of(patterns: np.ndarray, dtype: str) -> np.ndarray:
    """Bit patterns -> float64 values of the dtype (NaN patterns dropped)."""
    fmt = get_format(dtype)
    vals = to_float64(patterns.astype(_UINT[fmt.width]).view(numpy_dtype(dtype)))
    return vals[~np.isnan(vals)]


@dataclass
class Accumulator:
    """Streaming summary of one (quantity, target set) sweep: bounded memory.

    Plot points are a sample spread over the whole sweep, not its first chunks: every
    non-ok point and a few random ok points per chunk get a random key, and the
    PLOT_CAP / 2 smallest keys of each kind are kept (a bottom-k sample)."""

    case: Case
    mode: str
    params: dict[str, float | None] | None = None  # a parametric setting / label smoothing
    n: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_EDGES.size - 1, np.int64))
    max_ulp: float = 0.0
    max_bits: float = 0.0
    correct: int = 0
    worst: tuple | None = None  # (severity, -ulp, x, y, observed, expected, ulp, ordinal,
    #                              status, error message or None)
    samples: dict = field(default_factory=dict)  # "bad" / "ok" -> (key, x, y, ulp, code) arrays
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    inf_codes: np.ndarray = field(default_factory=lambda: np.zeros(len(STATUSES), np.int64))
    stability: verdicts.SweepStability | None = None  # set in __post_init__
    target_map: TargetMap | None = None  # `--targets all`: the logit x target map

    def __post_init__(self) -> None:
        # verdicts are for the family's default setting without label smoothing
        family = subjects.get(self.case.subject).family_record
        plain = self.params is None or self.params == dict(family.default)
        if plain and self.case.check in verdicts.VERDICT_CHECKS:
            self.stability = verdicts.SweepStability(family)

    def add(self, x: np.ndarray, y: np.ndarray, observed: np.ndarray, expected: np.ndarray,
            g, errors: dict[int, str] | None = None) -> None:
        self.n += x.size
        if self.target_map is not None:
            self.target_map.add(x, y, g.code != OK, g.ulp)
        bad = np.flatnonzero(g.code != OK)
        codes = np.bincount(g.code[bad], minlength=len(STATUSES))
        codes[OK] = x.size - bad.size
        for code, c in enumerate(codes.tolist()):
            if c:
                self.counts[STATUSES[code]] = self.counts.get(STATUSES[code], 0) + c
        ulp = g.ulp
        if np.isnan(ulp).any():
            ulp = np.where(np.isnan(ulp), np.inf, ulp)
        self.hist += ulp_histogram(ulp)
        self.max_ulp = max(self.max_ulp, float(ulp.max()))
        self.max_bits = max(self.max_bits, g.max_bits())
        same = observed == expected
        self.correct += int(np.count_nonzero(same))
        if not same.all():  # NaN == NaN counts as correct
            self.correct += int(np.count_nonzero(np.isnan(observed) & np.isnan(expected)))
        worst_code = int(g.code[bad].min()) if bad.size else OK
        sel = np.arange(x.size) if worst_code == OK else bad[g.code[bad] == worst_code]
        sel = sel[ulp[sel] == ulp[sel].max()]
        sel = sel[x[sel] == x[sel].min()]  # ties: smallest input, then target, so that
        i = int(sel[np.argmin(y[sel])])   # shards and chunks cannot change the pick
        cand = (worst_code, -float(ulp[i]), float(x[i]), float(y[i]), float(observed[i]),
                float(expected[i]), float(ulp[i]), float(g.ordinal[i]), STATUSES[worst_code],
                (errors or {}).get(i))
        if self.worst is None or cand[:4] < self.worst[:4]:
            self.worst = cand
        pick = self.rng.integers(0, x.size, 16)
        self._sample("ok", pick[g.code[pick] == OK][:8], x, y, ulp, g.code)
        self._sample("bad", bad, x, y, ulp, g.code)
        inf = np.isinf(x)
        if inf.any():
            self.inf_codes += np.bincount(g.code[inf], minlength=len(STATUSES))
        if self.stability is not None:
            self.stability.add(x, y, g.code)

    def _sample(self, kind: str, idx: np.ndarray, x: np.ndarray, y: np.ndarray,
                ulp: np.ndarray, code: np.ndarray) -> None:
        if idx.size == 0:
            return
        new = (self.rng.random(idx.size), x[idx], y[idx], ulp[idx], code[idx])
        old = self.samples.get(kind)
        cols = new if old is None else tuple(np.concatenate(p) for p in zip(old, new,
                                                                             strict=True))
        if cols[0].size > PLOT_CAP // 2:
            keep = np.argpartition(cols[0], PLOT_CAP // 2)[: PLOT_CAP // 2]
            cols = tuple(c[keep] for c in cols)
        self.samples[kind] = cols

    @property
    def plot(self) -> list[list]:
        """The sampled points as report rows [x, y, ulp, status], in input order."""
        rows = [(float(x), float(y), float(u), STATUSES[int(c)])
                for cols in self.samples.values() for _, x, y, u, c in zip(*cols, strict=True)]
        rows.sort(key=lambda r: (r[0], r[1]))
        return [[to_json_value(x), to_json_value(y), to_json_value(u), st]
                for x, y, u, st in rows]

    def p99(self) -> float:
        return p99_bound(self.hist, self.n)

    def record(self, test_id: str) -> dict:
        c = self.case
        w = self.worst
        worst = None
        if w is not None:
            _, _, x, y, obs, exp, ulp, ordinal, status, error = w
            worst = {"input": to_json_value(x), "target": to_json_value(y), "weight": 1.0,
                     "pos_weight": 1.0, "input_hex": number_arg(x), "target_hex": number_arg(y),
                     "observed": to_json_value(obs), "expected": to_json_value(exp),
                     "exact": _exact_text(c, x, y, self.params), "ulp": to_json_value(ulp),
                     "ordinal": None if ordinal < 0 else int(ordinal), "status": status,
                     "error": error,
                     "repro": repro_command(c.subject, c.dtype, c.device, x, y,
                                            grad=c.quantity == "grad", params=self.params,
                                            execution=c.execution)}
        bad = sum(v for k, v in self.counts.items() if k != "ok")
        stability = None if self.stability is None else \
            self.stability.field(self.n, self.mode, c.dtype)
        return {
            "subject": c.subject, "family": subjects.get(c.subject).family, "check": c.check,
            "quantity": c.quantity, "dtype": c.dtype,
            "device": c.device, "reduction": "none", "execution": c.execution,
            "mode": self.mode, "test_id": test_id,
            "outcome": "failed" if bad else "passed", "n": self.n,
            "counts": {k: self.counts[k] for k in STATUSES if k in self.counts},
            "max_ulp": to_json_value(self.max_ulp), "p99_ulp": to_json_value(self.p99()),
            "max_bits": self.max_bits,
            "correctly_rounded": self.correct / self.n if self.n else 1.0,
            "worst": worst, "contract": None, "points": self.plot,
            "ulp_histogram": {"edges": [to_json_value(float(e)) for e in HIST_EDGES],
                              "counts": self.hist.tolist()},
            "inf_counts": {k: int(v) for k, v in zip(STATUSES, self.inf_codes.tolist(),
                                                      strict=True) if v},
            **({"stability": stability} if stability else {}),
            **({"target_map": self.target_map.field()} if self.target_map is not None
               else {}),
        }


def _exact_text(case: Case, x: float, y: float, params: dict | None = None) -> str:
    from reference.cli import exact_decimal
    from reference.vectorized import point

    op = subjects.get(case.subject).family_record.reference_op(params)
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


SNAPSHOT_EVERY = 10.0  # seconds between partial results (the first comes after chunk 1)


def shard_extent(subject_name: str, dtype: str, *, exhaustive: bool, samples: int,
                 shard: tuple[int, int]) -> tuple[int, int]:
    """(first pattern, number of inputs drawn) of shard i/n (0-based i): the patterns
    lo .. lo + total of an exhaustive sweep, or the sampled shard's share of `samples`."""
    i, n = shard
    if exhaustive:
        start, stop = pattern_range(dtype, subjects.get(subject_name).family)
        span = stop - start
        lo = start + span * i // n
        return lo, start + span * (i + 1) // n - lo
    return 0, samples // n + (1 if i < samples % n else 0)


def params_label(params: dict[str, float | None] | None) -> str:
    """' gamma=0.5 alpha=none label_smoothing=0.1' for a test id ('' for no parameters)."""
    return "".join(f" {k}={'none' if v is None else v if isinstance(v, str) else format(v, '.17g')}"
                   for k, v in (params or {}).items())


def shard_test_id(subject_name: str, dtype: str, device: str, mode: str, label: str,
                  quantity: str, done: int, total: int,
                  params: dict[str, float | None] | None = None) -> str:
    """A sweep record's test_id, e.g. `sweep S[float16-cpu] exhaustive shard 1/3 loss`;
    an unfinished one says how far it got: `... shard 1/3 loss (interrupted: 5 of 9 inputs)`.
    A parametric setting follows the quantity (`... loss gamma=0.5 alpha=none`)."""
    tid = f"sweep {subject_name}[{dtype}-{device}] {mode} {label} {quantity}" \
          f"{params_label(params)}"
    return tid if done >= total else f"{tid} (interrupted: {done:,} of {total:,} inputs)"


def sweep(subject_name: str, dtype: str, *, device: str = "cpu", targets: list[float],
          exhaustive: bool = True, samples: int = 0, shard: tuple[int, int] = (0, 1),
          chunk: int = 1 << 20, seed: int = 0, budget: float, progress: bool = True,
          on_chunk: Callable[[int, int], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          on_snapshot: Callable[[list[dict], list[dict]], None] | None = None,
          snapshot_every: float = SNAPSHOT_EVERY,
          parts: list[dict] | None = None,
          params: dict[str, float | None] | None = None,
          execution: str = "eager", target_map: bool = False) -> list[dict]:
    """Grade values and gradients of one subject over every input (or a sample).

    on_chunk(done, total) is called after every chunk (parallel progress). should_stop()
    is asked before every chunk: when true the sweep ends there, with the records of the
    chunks done. on_snapshot(records, parts) gets the records so far after the first chunk
    and then after a chunk whenever `snapshot_every` seconds have passed since the last
    one (never after the last chunk: the caller has the final records). `parts`, when
    given, receives this shard's progress {"index", "count" (1-based shard i/n), "done",
    "total" (inputs drawn, NaN patterns included)}. `params`: a parametric family's
    setting (gamma, alpha; the family's default otherwise) and a label smoothing E (the
    dtype's value) for a subject that takes it. `target_map`: each record gets the logit x
    target map (audit/target_map.py; for `--targets all`), and targets are graded many
    to a framework call (about `chunk` points each)."""
    subject = subjects.get(subject_name)
    family = subject.family_record
    params = {**family.default, **(params or {})} or None
    op = family.reference_op(params)
    reason = subject.skip_reason(dtype, device, label_smoothing=bool(
        params and params.get(LABEL_SMOOTHING)), execution=execution)
    if reason is not None:
        raise ValueError(f"{subject_name} cannot run {dtype} on {device}: {reason}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, not {chunk}")
    trim = _heap_trimmer()
    fmt = get_format(dtype)
    mode = "exhaustive" if exhaustive else "sampled"
    accs = {q: Accumulator(Case(subject_name, "values" if q == "loss" else "grads", dtype,
                                device, execution=execution), mode, params,
                           target_map=TargetMap(dtype) if target_map else None)
            for q in ("loss", "grad")}
    i, n = shard
    lo, total = shard_extent(subject_name, dtype, exhaustive=exhaustive, samples=samples,
                             shard=shard)
    if not exhaustive:
        rng = np.random.default_rng([seed, i])
    first, stop = pattern_range(dtype, subject.family)
    part = {"index": i + 1, "count": n, "done": 0, "total": total}
    if parts is not None:
        parts.append(part)

    def records(done: int) -> list[dict]:
        extra = params if execution == "eager" else {**(params or {}), "execution": execution}
        return [acc.record(shard_test_id(subject_name, dtype, device, mode,
                                         f"shard {i + 1}/{n}", q, done, total, extra))
                for q, acc in accs.items()]

    done = 0
    began = time.perf_counter()
    last_snapshot: float | None = None
    while done < total:
        if should_stop is not None and should_stop():
            break
        m = min(chunk, total - done)
        if exhaustive:
            patterns = np.arange(lo + done, lo + done + m, dtype=np.uint64)
        else:
            patterns = rng.integers(0, 1 << fmt.width, size=m, dtype=np.uint64)
            if (first, stop) != (0, 1 << fmt.width):
                patterns = np.uint64(first) + patterns % np.uint64(stop - first)
        trim()
        xs = values_of(patterns, dtype)
        per_call = max(1, chunk // max(xs.size, 1)) if target_map else 1
        groups = [targets[k:k + per_call] for k in range(0, len(targets), per_call)]
        for group in groups if xs.size else ():  # none: a chunk of NaN patterns only
            if per_call == 1:
                gx, y = xs, group[0]
            else:  # every logit of the chunk against each target of the group
                gx = np.tile(xs, len(group))
                y = np.repeat(np.asarray(group, dtype=np.float64), xs.size)
            pts = Batch.of(gx, y, **{k: np.full(gx.size, np.nan if v is None else float(v))
                                     for k, v in (params or {}).items()})  # the setting
            scalar = {"x": gx, "y": y, "w": 1.0, "p": 1.0}  # the fast reference broadcasts
            for q, acc in accs.items():
                observed, errors, crashes = _observe(subject, acc.case, pts)
                expected, ref_parts = reference_values(op, dtype, scalar, q == "grad")
                g = grade_observed(observed, errors, crashes, expected, ref_parts, dtype,
                                   budget)
                acc.add(pts.input, pts.target, observed, expected, g, errors)
        done += m
        part["done"] = done
        if on_chunk is not None:
            on_chunk(done, total)
        if progress:
            _progress(f"sweep {subject_name} {dtype} shard {i + 1}/{n}", done, total, began)
        if on_snapshot is not None and done < total and (
                last_snapshot is None
                or time.perf_counter() - last_snapshot >= snapshot_every):
            on_snapshot(records(done), [dict(part)])
            last_snapshot = time.perf_counter()  # after writing: a slow disk writes less
    if progress:
        print(file=sys.stderr)
    return records(done)


def _progress(label: str, done: int, total: int, began: float) -> None:
    rate = done / max(time.perf_counter() - began, 1e-9)
    print(f"\r{label}: {done:,}/{total:,} inputs ({100 * done / max(total, 1):5.1f}%, "
          f"{rate:,.0f} inputs/s)", end="", file=sys.stderr, flush=True)


def _rename(records: list[dict], subject_name: str, i: int, n: int,
            parts: list[dict]) -> list[dict]:
    """test_ids of merged piece records: the shard the pieces made up, and how far they got."""
    done, total = sum(p["done"] for p in parts), sum(p["total"] for p in parts)
    for r in records:
        r["test_id"] = shard_test_id(subject_name, r["dtype"], r["device"], r["mode"],
                                     f"shard {i + 1}/{n}", r["quantity"], done, total)
    return records


def _observe(subject: subjects.Subject, case: Case, pts: Batch
             ) -> tuple[np.ndarray, dict[int, str], frozenset[int]]:
    from audit.checks import run_framework

    return run_framework(subject, case, pts)


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
        base["correctly_rounded"] = (sum(r["correctly_rounded"] * r["n"] for r in rs)
                                     / base["n"] if base["n"] else 1.0)
        worsts = [r["worst"] for r in rs if r["worst"]]
        base["worst"] = min(worsts, key=lambda w: (  # the order Accumulator.add uses
            SEVERITY[w["status"]], -float(w["ulp"]), float(w["input"]), float(w["target"])),
            default=None)
        share = PLOT_CAP // len(rs)  # every shard is represented, not only the first
        base["points"] = [p for r in rs for p in r["points"][:share]]
        base["outcome"] = "failed" if any(r["outcome"] == "failed" for r in rs) else "passed"
        base["test_id"] = base["test_id"].split(" shard ")[0] + f" merged {len(rs)} shards"
        known = subjects.SUBJECTS.get(rs[0]["subject"])  # a user's subject may be unloaded
        stability = None if known is None else verdicts.merge_stability(
            rs, known.family_record)
        base.pop("stability", None)
        if stability is not None:
            base["stability"] = stability
        if all("target_map" in r for r in rs):
            base["target_map"] = merge_fields([r["target_map"] for r in rs])
        if all("inf_counts" in r for r in rs):
            inf: dict[str, int] = {}
            for r in rs:
                for k, v in r["inf_counts"].items():
                    inf[k] = inf.get(k, 0) + v
            base["inf_counts"] = {k: inf[k] for k in STATUSES if k in inf}
        out.append(base)
    return out
