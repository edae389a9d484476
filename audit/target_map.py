"""The logit x target map of a `--targets all` sweep (every target value of the dtype in
[0, 1] against every logit): per cell, how many points, how many are not ok, and the
largest ulp error. A record's `target_map` field; shards and Dask pieces merge cell by cell.

Logits are binned by sign and binade (0, subnormals as one binade each, +-inf apart).
Targets are binned by their distance to the nearer hard label: 0, binades of y below 1/2,
[1/2, 1) by binades of 1 - y (a soft label a hair from 1 is where BCE is hardest), 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from audit.jsonnum import from_json_value, to_json_value
from reference.formats import get_format


def all_targets(dtype: str) -> np.ndarray:
    """Every value of the dtype in [0, 1], ascending, as float64 (-0.0 left out)."""
    from audit.regions import all_values

    v = all_values(dtype)
    v = v[np.isfinite(v) & (v >= 0) & (v <= 1) & ~((v == 0) & np.signbit(v))]
    return np.unique(v)


def _values_by_pattern(dtype: str) -> np.ndarray:
    bits = np.arange(1 << 16, dtype=np.uint32)
    if dtype == "float16":
        return bits.astype(np.uint16).view(np.float16).astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN patterns
        return (bits << 16).view(np.float32).astype(np.float64)  # bfloat16: float32's top


def _patterns(a: np.ndarray, dtype: str) -> np.ndarray:
    """The 16-bit patterns of values of the dtype (exact casts)."""
    if dtype == "float16":
        return a.astype(np.float16).view(np.uint16)
    return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _exponents(a: np.ndarray) -> np.ndarray:
    return np.frexp(a)[1].astype(np.int64) - 1  # a in [2**e, 2**(e+1))


DTYPES = ("float16", "bfloat16")  # every target x every logit: about 1e9 points each


class TargetMap:
    """Streaming cell counts of one (subject, quantity, dtype) sweep over every target."""

    def __init__(self, dtype: str) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"a target map is for {' and '.join(DTYPES)}, not {dtype}")
        fmt = get_format(dtype)
        self.dtype = dtype
        self.emin = fmt.quantum_exp  # the smallest subnormal's binade
        self.emax = math.frexp(fmt.max_finite)[1] - 1
        self.tmin = fmt.quantum_exp  # the smallest positive target's binade
        self.nxb = self.emax - self.emin + 1  # binades per sign
        self.nx = 2 * self.nxb + 3  # -inf, negative binades, 0, positive binades, +inf
        self.ny = 1 - 2 * self.tmin  # 0, binades of y < 1/2, binades of 1 - y <= 1/2, 1
        # cell indices by 16-bit pattern: two table lookups per point, not binade maths
        every = _values_by_pattern(dtype)
        with np.errstate(invalid="ignore"):
            self._x_table = self.x_index(every)
            self._y_table = np.where((every >= 0) & (every <= 1), self.y_index(
                np.clip(np.nan_to_num(every), 0, 1)), 0)
        self.n = np.zeros((self.nx, self.ny), np.int64)
        self.bad = np.zeros((self.nx, self.ny), np.int64)
        self.max_ulp = np.full((self.nx, self.ny), -1.0)  # -1: no finite ulp seen yet

    def x_index(self, x: np.ndarray) -> np.ndarray:
        ax = np.abs(x)
        binade = np.clip(_exponents(np.where(ax > 0, ax, 1.0)), self.emin, self.emax) \
            - self.emin
        mid = self.nxb + 1
        idx = np.where(x > 0, mid + 1 + binade, mid - 1 - binade)
        idx = np.where(x == 0, mid, idx)
        return np.where(np.isinf(x), np.where(x > 0, self.nx - 1, 0), idx)

    def y_index(self, y: np.ndarray) -> np.ndarray:
        low = np.clip(_exponents(np.where(y > 0, y, 1.0)), self.tmin, -2) - self.tmin + 1
        d = 1.0 - y  # exact for a 16- or 32-bit y
        high = self.ny - 2 - (np.clip(_exponents(np.where(d > 0, d, 1.0)), self.tmin, -1)
                              - self.tmin)
        idx = np.where(y < 0.5, low, high)
        idx = np.where(y == 0, 0, idx)
        return np.where(y == 1, self.ny - 1, idx)

    def add(self, x: np.ndarray, y: np.ndarray, not_ok: np.ndarray, ulp: np.ndarray) -> None:
        keep = ~np.isnan(x)
        if not keep.all():
            x, y, not_ok, ulp = x[keep], y[keep], not_ok[keep], ulp[keep]
        y = np.broadcast_to(y, x.shape)
        cell = self._x_table[_patterns(x, self.dtype)] * self.ny + \
            self._y_table[_patterns(y, self.dtype)]
        size = self.nx * self.ny
        self.n += np.bincount(cell, minlength=size).reshape(self.n.shape)
        self.bad += np.bincount(cell[not_ok], minlength=size).reshape(self.n.shape)
        u = np.where(np.isnan(ulp), np.inf, ulp)
        flat = self.max_ulp.reshape(-1)
        np.maximum.at(flat, cell, u)

    def labels(self) -> tuple[list[str], list[str]]:
        neg = [f"-2^{e}" for e in range(self.emax, self.emin - 1, -1)]
        pos = [f"2^{e}" for e in range(self.emin, self.emax + 1)]
        xs = ["-inf", *neg, "0", *pos, "inf"]
        low = [f"2^{e}" for e in range(self.tmin, -1)]
        high = [f"1-2^{e}" for e in range(-1, self.tmin - 1, -1)]
        return xs, ["0", *low, *high, "1"]

    def field(self) -> dict[str, Any]:
        xs, ys = self.labels()
        return {"x_bins": xs, "y_bins": ys, "n": self.n.tolist(), "bad": self.bad.tolist(),
                "max_ulp": [[None if v < 0 else to_json_value(v) for v in row]
                            for row in self.max_ulp.tolist()]}


def merge_fields(fields: list[dict[str, Any]]) -> dict[str, Any]:
    """Cell-by-cell sum of counts and maximum of ulps (shards of one sweep)."""
    out = {"x_bins": fields[0]["x_bins"], "y_bins": fields[0]["y_bins"]}
    for key in ("n", "bad"):
        out[key] = np.sum([f[key] for f in fields], axis=0).tolist()
    ulps = np.array([[[-1.0 if v is None else float(from_json_value(v)) for v in row]
                      for row in f["max_ulp"]] for f in fields])
    best = ulps.max(axis=0)
    out["max_ulp"] = [[None if v < 0 else to_json_value(v) for v in row] for row in
                      best.tolist()]
    return out
