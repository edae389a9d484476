"""Verdicts (DESIGN.md section 8): where each loss is safe, measured from every graded point.

For one subject, dtype, device, execution, quantity and hard target (0 or 1) the safe
interval is the largest interval of inputs around the family's centre (logit 0,
probability 0.5) in which every graded point is `ok`. Its ends are graded inputs; `below`
and `above` are the first failing inputs beyond them. A record carries the measurement in
its `stability` field; results.json's top-level `verdicts` is the summary of those.

Checks measure from their whole Outcome in one piece (`outcome_stability`); sweeps stream
chunks into `SweepStability`. The streaming form is exact when chunks come in input order
from the centre outwards (an exhaustive sweep's bit patterns do) and conservative otherwise:
a safe end is then always a graded ok input, possibly not the outermost one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.dtypes import DTYPES
from audit.families import LABEL_SMOOTHING, Family
from audit.grading import STATUSES
from audit.jsonnum import to_float, to_json_value
from reference.formats import get_format

HARD_TARGETS = (0.0, 1.0)
VERDICT_CHECKS = ("values", "grads")  # plain checks: reduction none, weight = pos_weight = 1
MAX_SEGMENTS = 40  # status runs kept per target for the stability map
OK = STATUSES.index("ok")


@dataclass
class Side:
    """One side of the centre, as inputs below it (the upper side is kept mirrored, -x).

    edge: the failing input nearest the centre (and its worst status code); outer: the
    outermost ok input inside it; near: the ok input nearest the centre, which stands in
    for `outer` when a later chunk moves the edge past it (streaming drops the points)."""

    edge: float | None = None
    code: int = OK
    outer: float = math.inf
    near: float = -math.inf

    def add(self, x: np.ndarray, code: np.ndarray, centre: float) -> None:
        bad = (code != OK) & (x < centre)
        if bad.any():
            xs = x[bad]
            self._fail(float(xs.max()), int(code[bad][xs == xs.max()].min()))
        okx = x[code == OK]
        inside = okx[okx <= centre]
        if inside.size:
            self.near = max(self.near, float(inside.max()))
        cand = okx if self.edge is None else okx[okx > self.edge]
        new = float(cand.min()) if cand.size else math.inf
        self.outer = self._still(self.outer, new)

    def _fail(self, edge: float, code: int) -> None:
        if self.edge is None or edge > self.edge:
            self.edge, self.code = edge, code
        elif edge == self.edge:
            self.code = min(self.code, code)

    def _still(self, old: float, new: float) -> float:
        """`old` (the outer end before the latest points) where it is still inside the edge."""
        if self.edge is None or old > self.edge:
            return min(old, new)
        return min(new, self.near if self.near > self.edge else math.inf)

    @classmethod
    def merge(cls, parts: list[Side]) -> Side:
        out = cls(near=max(p.near for p in parts))
        for p in parts:
            if p.edge is not None:
                out._fail(p.edge, p.code)
        if out.edge is None:  # nothing fails on this side: every part's outer end holds
            out.outer = min(p.outer for p in parts)
            return out
        edge = out.edge
        out.outer = min(p.outer if p.outer > edge else (p.near if p.near > edge else math.inf)
                        for p in parts)
        return out


@dataclass
class TargetStats:
    """What decides one hard target's safe interval, mergeable across chunks and shards."""

    target: float
    centre: float
    n: int = 0
    ok: int = 0
    centre_code: int = OK  # worst status of a failing point at the centre itself
    low: Side = field(default_factory=Side)
    high: Side = field(default_factory=Side)  # mirrored: its inputs are -x

    def add(self, x: np.ndarray, code: np.ndarray) -> None:
        """Fold in graded points of this target (inputs and status codes; NaN inputs ignored)."""
        real = ~np.isnan(x)
        x, code = x[real], code[real]
        self.n += int(x.size)
        self.ok += int(np.count_nonzero(code == OK))
        at = (code != OK) & (x == self.centre)
        if at.any():
            self.centre_code = min(self.centre_code, int(code[at].min()))
        self.low.add(x, code, self.centre)
        self.high.add(-x, code, -self.centre)

    def safe(self) -> tuple[float, float] | None:
        """[lo, hi] of the safe interval; None when the centre fails or no ok input is left."""
        lo, hi = self.low.outer, -self.high.outer
        return None if self.centre_code != OK or not lo <= hi else (lo, hi)

    def entry(self, basis: str) -> dict[str, Any]:
        """This target's part of a record's `stability` (JSON-ready)."""
        safe = self.safe()
        if self.centre_code != OK:
            below = above = {"input": to_json_value(self.centre),
                             "status": STATUSES[self.centre_code]}
        else:
            below = _side(self.low.edge, self.low.code, 1.0)
            above = _side(self.high.edge, self.high.code, -1.0)
        state = (self.low.outer, -self.high.outer, self.low.near, -self.high.near)
        return {"target": self.target, "n": self.n, "ok": self.ok,
                "safe": None if safe is None else [to_json_value(v) for v in safe],
                "basis": basis, "below": below, "above": above,
                "state": [to_json_value(v) for v in state],
                "centre_status": STATUSES[self.centre_code]}

    @classmethod
    def from_entry(cls, entry: dict[str, Any], centre: float) -> TargetStats:
        """The stats an `entry` was made from (to merge records)."""
        lo, hi, near_lo, near_hi = (to_float(v) for v in entry["state"])
        s = cls(float(entry["target"]), centre, int(entry["n"]), int(entry["ok"]),
                STATUSES.index(entry.get("centre_status", "ok")),
                Side(outer=lo, near=near_lo), Side(outer=-hi, near=-near_hi))
        if s.centre_code == OK:
            for side, sign, got in ((s.low, 1.0, entry.get("below")),
                                    (s.high, -1.0, entry.get("above"))):
                if got is not None:
                    side.edge, side.code = sign * to_float(got["input"]), \
                        STATUSES.index(got["status"])
        return s


def _side(edge: float | None, code: int, sign: float) -> dict[str, Any] | None:
    return None if edge is None else {"input": to_json_value(sign * edge),
                                      "status": STATUSES[code]}


def merge_stats(parts: list[TargetStats]) -> TargetStats:
    """One target's stats over several chunks or shards (in any order)."""
    first = parts[0]
    return TargetStats(first.target, first.centre, sum(p.n for p in parts),
                       sum(p.ok for p in parts), min(p.centre_code for p in parts),
                       Side.merge([p.low for p in parts]), Side.merge([p.high for p in parts]))


def segments(x: np.ndarray, code: np.ndarray, cap: int = MAX_SEGMENTS) -> list[list]:
    """Runs of equal status along the input axis, [lo, hi, status, n, n_ok] each.

    At most `cap` runs: runs shorter than m points that follow each other are folded into
    one mixed segment (its worst status, with its ok count), m doubling until they fit,
    so long stretches keep their exact ends and speckled ones read as mixed."""
    order = np.argsort(x, kind="stable")
    x, code = x[order], code[order]
    if x.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    sizes = np.diff(np.r_[starts, x.size])
    run_ok = np.where(code[starts] == OK, sizes, 0)
    m = 1
    while True:
        short = sizes < m
        new = np.r_[True, ~(short[1:] & short[:-1])]
        first = np.flatnonzero(new)
        if first.size <= cap:
            break
        m *= 2
    last = np.r_[first[1:], starts.size] - 1
    worst = np.minimum.reduceat(code[starts], first)
    n = np.add.reduceat(sizes, first)
    ok = np.add.reduceat(run_ok, first)
    ends = starts[last] + sizes[last] - 1
    return [[to_json_value(float(x[starts[f]])), to_json_value(float(x[e])), STATUSES[int(w)],
             int(k), int(g)] for f, e, w, k, g in zip(first, ends, worst, n, ok, strict=True)]


def default_setting(family: Family, extra: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Mask of the points at the family's default parameters and no label smoothing."""
    keep = np.ones(n, bool)
    for k, v in family.default.items():
        if k in extra:
            col = np.asarray(extra[k], np.float64)
            keep &= np.isnan(col) if v is None else col == float(v)
    if LABEL_SMOOTHING in extra:
        keep &= np.asarray(extra[LABEL_SMOOTHING], np.float64) == 0
    return keep


def outcome_stability(out: Any, family: Family) -> dict[str, Any] | None:
    """A check's `stability` field from its every graded point, or None where verdicts do
    not apply (other checks, reductions, vector inputs)."""
    case, pts = out.case, out.points
    if case.check not in VERDICT_CHECKS or case.reduction != "none" or \
            out.members is not None or pts.input.ndim != 1:
        return None
    keep = (pts.weight == 1) & (pts.pos_weight == 1) & \
        default_setting(family, dict(pts.extra), len(pts))
    basis = "exhaustive" if out.mode == "exhaustive" else "grid"
    targets = []
    for t in HARD_TARGETS:
        sel = keep & (pts.target == t)
        if sel.any():
            x, code = pts.input[sel], out.graded.code[sel]
            stats = TargetStats(t, family.centre)
            stats.add(x, code)
            targets.append({**stats.entry(basis), "segments": segments(x, code)})
    return {"n": len(pts), "centre": family.centre, "targets": targets} if targets else None


def inputs_total(dtype: str, family: Family) -> int:
    """How many non-NaN inputs a complete sweep of the family grades per target."""
    start, stop = family.patterns(dtype)
    fmt = get_format(dtype)
    w, p = fmt.width, fmt.precision
    inf_bits = ((1 << (w - p)) - 1) << (p - 1)
    sign = 1 << (w - 1)
    nans = 0
    for lo, hi in ((inf_bits + 1, sign), ((sign | inf_bits) + 1, 1 << w)):
        nans += max(0, min(hi, stop) - max(lo, start))
    return stop - start - nans


class SweepStability:
    """Streaming stability of a sweep (bounded memory: a few numbers per hard target)."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.stats = {t: TargetStats(t, family.centre) for t in HARD_TARGETS}

    def add(self, x: np.ndarray, y: np.ndarray, code: np.ndarray) -> None:
        for t, stats in self.stats.items():
            sel = y == t
            if sel.all():
                stats.add(x, code)
            elif sel.any():
                stats.add(x[sel], code[sel])

    def field(self, n: int, mode: str, dtype: str) -> dict[str, Any] | None:
        """The record's `stability`: basis exhaustive once every input of the dtype was
        graded for that target (a whole sweep, not one shard of it)."""
        total = inputs_total(dtype, self.family)
        targets = [s.entry("exhaustive" if mode == "exhaustive" and s.n == total else "grid")
                   for s in self.stats.values() if s.n]
        return {"n": n, "centre": self.family.centre, "targets": targets} if targets else None


def _current(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's stability if it describes the record as it is (a record whose points
    were merged without its stability would carry a stale one: ignored)."""
    st = record.get("stability")
    return st if isinstance(st, dict) and st.get("n") == record.get("n") else None


def merge_stability(records: list[dict[str, Any]], family: Family) -> dict[str, Any] | None:
    """The stability of records merged into one (sweep shards): for `merge_records`."""
    parts = [_current(r) for r in records]
    if not parts or any(p is None for p in parts):
        return None
    total = inputs_total(records[0]["dtype"], family)
    targets = []
    for t in HARD_TARGETS:
        got = [TargetStats.from_entry(e, family.centre) for p in parts for e in p["targets"]
               if float(e["target"]) == t]
        if got:
            merged = merge_stats(got)
            full = all(r.get("mode") == "exhaustive" for r in records) and merged.n == total
            targets.append(merged.entry("exhaustive" if full else "grid"))
    return {"n": sum(int(r["n"]) for r in records), "centre": family.centre,
            "targets": targets}


def document_verdicts(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """results.json's top-level `verdicts`: one per subject x dtype x device x execution x
    quantity x hard target, in DESIGN.md section 8's shape."""
    groups: dict[tuple, list[tuple[dict, float]]] = {}
    for r in records:
        st = _current(r)
        for e in (st or {}).get("targets", ()):
            key = (r["subject"], r["dtype"], r["device"], r.get("execution", "eager"),
                   r["quantity"], float(e["target"]))
            groups.setdefault(key, []).append((e, float(st.get("centre", 0.0))))
    order = {d: i for i, d in enumerate(DTYPES)}
    out = []
    for key in sorted(groups, key=lambda k: (k[0], order.get(k[1], 9), *k[2:])):
        items = groups[key]
        if len(items) == 1:
            e = items[0][0]
        else:  # the same case measured twice (unmerged shards): exhaustive only if one was
            centre = items[0][1]
            e = merge_stats([TargetStats.from_entry(i, centre) for i, _ in items]).entry(
                "exhaustive" if any(i["basis"] == "exhaustive" for i, _ in items) else "grid")
        subject, dtype, device, execution, quantity, target = key
        out.append({"subject": subject, "dtype": dtype, "device": device,
                    "execution": execution, "quantity": quantity, "target": target,
                    "safe": e["safe"], "basis": e["basis"], "below": e["below"],
                    "above": e["above"]})
    return out
