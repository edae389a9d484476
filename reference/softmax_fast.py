"""Bulk softmax cross-entropy, logsumexp and log_softmax: exactly round_to(<value>, dtype)
per row, with a vectorized float64 path that is certified, not estimated.

Rows go through `_fast` (float16, bfloat16, float32 targets) and whatever it cannot
certify through the mpmath path (softmax.py), output by output, so the result is
bit-identical to the mpmath path by construction. float64 targets would need about
2 x 53 correct bits: they take the mpmath path.

Why the bound holds (u = 2**-53, L = fast_core.LIBM_REL = 2**-45, assumption (A) of
fast.py for np.exp / np.log1p; checked at run time by fast.libm_ok, and by `log1p_ok`
for the arguments 1 <= S < 2**20 that fast.py never uses)
-----------------------------------------------------------------------------------------
Fast domain of a row (anything else falls back): K <= 2**20 finite logits, |l| <= 2**500;
weights 0 <= w <= 2**200; probabilities 0 <= t <= 2**100; smoothing 0 <= E <= 1 a float64.
The forms are softmax.py's (a = w p, W = sum a, d = l - m, M = argmax, S = sum_{k!=M} e^d):

- d^ = fl(l - m) = d (1 + delta), |delta| <= u (0 stays 0).
- e^ = np.exp(d^) for d^ >= -700 (a normal result): e^d (1 + theta) with
  |theta| <= L + 1.01 * 700.1 u < 2**-43 (the 700 u from delta: |d delta| <= 700.1 u);
  for d^ < -700, e^ = 0 with e^d < 2**-1009.
- S^, a sum of K-1 non-negative terms in any order: S (1 + sigma) + K 2**-1009 with
  |sigma| <= 2**-43 + 1.01 g_K  (g_n = n u / (1 - n u), the classic summation bound).
- p^ = fl(fl(1-E) t + fl(E/K)) = p (1 + 3.01u) (non-negative parts), a^ = fl(w p^): 4.01u;
  W^ and GM^ = sum_{k!=M} a^_k (= W - a_M, without cancellation): 4.01u + g_K.
- log1p(S^) = log1p(S) (1 + lambda), |lambda| <= |sigma| / (1-|sigma|) + L, since
  S / ((1+S) log1p S) <= 1; S^/(1+S^) and e^_j/(1+S^): |sigma| + |theta| + 3u likewise.
- D^ (sum of a^ fl(m - l), terms >= 0), D = m, D = d^_j, D = -a^_j: 4.01u + 2u + g_K at most.
So each computed part X^ of V = D + T has |X^ - X| <= t |X| with
t < 2 * 2**-43 + 2.01 g_K + 8u <= 2**-42 + (K + 4) 2**-51.9, plus an absolute error below
2**-550 from underflow (products of numbers >= 2**-1075 by at most 2**501, K <= 2**20,
clamped exponentials times W <= 2**300). The bound used is
    E = R (|D^| + |T^|) + ABS,   R = 2**-40 + (K + 4) 2**-50,   ABS = 2**-540,
at least twice that, so the roundings of E, v - E and v + E (v = fl(D^ + T^)) cannot
push lo above V or hi below V (the argument of fast.py). Rounding is monotone: where
lo and hi round to the same value (same bits, sign of zero included) that IS
round_to(V, dtype). Known signs clamp the ends (loss >= 0; log_softmax < 0 for K >= 2;
grad_j > 0 for j != M with a_j = 0 < W; grad_M < 0 when GM = 0 < W and K >= 2; lse >= 0
for m >= 0), so vanishing values (logits [1e10, 0], label 0) certify their signed zero.
Cancellation (soft-target gradients, lse near 0) needs no special case: E is relative to
|D| + |T|, not |V|; such outputs simply fall back.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from mpmath import libmp, mp, mpf

from . import exact, fast, softmax
from .fast_core import LIBM_CHECK, round_array
from .formats import Format, get_format, round_to

FAST_DTYPES = ("float16", "bfloat16", "float32")
CHUNK = 1 << 16          # logits per pass
KMAX = 1 << 20
LMAX = 2.0 ** 500
WMAX = 2.0 ** 200
TMAX = 2.0 ** 100
ABS = 2.0 ** -540

# outputs since the last reset_stats(): how many, and how many the fast path certified
STATS: dict[str, int] = {"outputs": 0, "fast": 0}


def reset_stats() -> None:
    for k in STATS:
        STATS[k] = 0


@lru_cache(maxsize=1)
def log1p_ok() -> bool:
    """Assumption (A) for np.log1p on [1, 2**20] (fast.libm_ok covers (-1, 1)), against
    mpmath within LIBM_CHECK."""
    rng = np.random.default_rng(2025)
    s = np.ldexp(rng.uniform(1, 2, 1024), rng.integers(0, 20, 1024))
    with mp.workprec(80):
        return all(abs(mpf(g) - mp.log1p(mpf(z))) <= LIBM_CHECK * mp.log1p(mpf(z))
                   for g, z in zip(np.log1p(s).tolist(), s.tolist(), strict=True))


def rel_bound(k: int) -> float:
    """R of the module docstring for K classes."""
    return 2.0 ** -40 + (k + 4) * 2.0 ** -50


# --------------------------------------------------------------------------- inputs


def _float64(a: Any) -> np.ndarray | None:
    """a as float64, exactly, or None when that is not possible (mpf, ints, longdouble)."""
    a = np.asarray(a)
    if a.dtype.kind in "fV" and a.dtype.itemsize <= 8:
        return a.astype(np.float64)
    return None


class _Batch:
    """Validated bulk inputs; `row(i)` is the parsed row for the mpmath path."""

    def __init__(self, logits: Any, target: Any, weight: Any, smoothing: Any,
                 ignore_index: Any) -> None:
        raw = np.asarray(logits)
        if raw.ndim != 2:
            raise ValueError(f"logits must be a 2-D array [N, K], got shape {raw.shape}")
        self.raw, (self.n, self.k) = raw, raw.shape
        self.x = _float64(raw)
        self.hard = None
        self.soft = None
        if target is not None:
            t = np.asarray(target)
            if t.dtype.kind in "iu":
                if t.shape != (self.n,):
                    raise ValueError(f"class indices must have shape ({self.n},), got {t.shape}")
                bad = ~((t >= 0) & (t < self.k))
                if ignore_index is not None:
                    bad &= t != ignore_index
                if bad.any():
                    raise ValueError(f"cross_entropy: class index {int(t[bad][0])} outside "
                                     f"[0, {self.k})")
                self.hard = t.astype(np.int64)
            else:
                if t.shape != (self.n, self.k):
                    raise ValueError(f"target probabilities must have shape "
                                     f"({self.n}, {self.k}), got {t.shape}")
                self.soft = t
        self.weight, self.smoothing, self.ignore = weight, smoothing, ignore_index
        if target is not None:  # the domain of weight and smoothing (one-line ValueErrors)
            softmax.parse([0.0] * self.k, 0, weight, smoothing)
        self.w = None if weight is None else _float64(weight)
        e = exact.to_tuple(smoothing)
        self.e = libmp.to_float(e) if libmp.from_float(libmp.to_float(e)) == e else None
        self.fast_ok = (self.x is not None and self.k <= KMAX and self.e is not None and
                        (weight is None or (self.w is not None and self.w.shape == (self.k,)
                                            and bool(np.all((self.w >= 0) & (self.w <= WMAX))))))
        if self.soft is not None:
            self.t = _float64(self.soft)
            self.fast_ok &= self.t is not None

    def row_logits(self, i: int) -> Any:
        return self.x[i] if self.x is not None else self.raw[i]

    def row(self, i: int) -> tuple[list, softmax.Target | None]:
        logits = self.row_logits(i)
        target = int(self.hard[i]) if self.hard is not None else self.soft[i]
        return softmax.parse(logits, target, self.weight, self.smoothing, self.ignore)


# --------------------------------------------------------------------------- fast kernel


def _exp_shifts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(m, M, d, e): row max, its first index, d = fl(x - m), e = exp(d) (0 below -700,
    and 0 at M), for finite rows."""
    m = x.max(axis=1)
    top = x.argmax(axis=1)
    d = x - m[:, None]
    e = np.exp(np.maximum(d, -700.0))
    e[d < -700.0] = 0.0
    e[np.arange(x.shape[0]), top] = 0.0
    return m, top, d, e


def _coefficients(b: _Batch, rows: np.ndarray) -> np.ndarray:
    """a^ = fl(w p^) for the given rows, [n, K]."""
    n, k = rows.size, b.k
    if b.hard is not None:
        p = np.zeros((n, k))
        c = b.hard[rows]
        if b.e:
            p[:] = b.e / k
            p[np.arange(n), c] = (1.0 - b.e) + b.e / k
        else:
            p[np.arange(n), c] = 1.0
    else:
        p = b.t[rows]
        if b.e:
            p = p * (1.0 - b.e) + b.e / k
    return p if b.w is None else p * b.w[None, :]


def _certified(v: np.ndarray, err: np.ndarray, fmt: Format, pos: Any = False, neg: Any = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """(rounded v, where lo = v - err and hi = v + err round alike)."""
    lo, hi = v - err, v + err
    np.copyto(lo, 0.0, where=pos & (lo <= 0))
    np.copyto(hi, -0.0, where=neg & (hi >= 0))
    good = np.isfinite(lo) & np.isfinite(hi)
    lo, hi = np.where(good, lo, 0.0), np.where(good, hi, 0.0)
    rl, rh = round_array(lo, fmt), round_array(hi, fmt)
    return rl, good & (rl.view(np.uint64) == rh.view(np.uint64))


def _fast(kind: str, b: _Batch, rows: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """(values, certified) for the given in-domain rows; [n] or [n, K]."""
    x = b.x[rows]
    n, k = x.shape
    r = rel_bound(k)
    m, top, d, e = _exp_shifts(x)
    s = e.sum(axis=1)
    if kind == "lse":
        t = np.log1p(s)
        return _certified(m + t, r * (np.abs(m) + t) + ABS, fmt, pos=m >= 0)
    if kind == "log_softmax":
        t = np.log1p(s)[:, None]
        return _certified(d - t, r * (np.abs(d) + t) + ABS, fmt, neg=k >= 2)
    a = _coefficients(b, rows)
    w = a.sum(axis=1)
    if kind == "loss":
        dd = (a * -d).sum(axis=1)
        t = w * np.log1p(s)
        return _certified(dd + t, r * (dd + t) + ABS, fmt, pos=True)
    idx = np.arange(n)
    a[idx, top] = 0.0
    gm = a.sum(axis=1)                       # W - a_M, without cancellation
    one_s = 1.0 + s
    dd = -a
    t = w[:, None] * (e / one_s[:, None])
    dd[idx, top] = gm
    t[idx, top] = -w * (s / one_s)
    pos = (a == 0) & (w > 0)[:, None]
    pos[idx, top] = False
    neg = np.zeros_like(pos)
    neg[idx, top] = (gm == 0) & (w > 0) & (k >= 2)  # S > 0 needs a second class
    return _certified(dd + t, r * (np.abs(dd) + np.abs(t)) + ABS, fmt, pos=pos, neg=neg)


def _in_domain(b: _Batch, rows: np.ndarray) -> np.ndarray:
    x = b.x[rows]
    ok = np.all(np.abs(x) <= LMAX, axis=1)  # NaN compares False
    if b.soft is not None:
        t = b.t[rows]
        ok &= np.all((t >= 0) & (t <= TMAX), axis=1)
    if b.hard is not None and b.ignore is not None:
        ok &= b.hard[rows] != b.ignore
    return ok


# --------------------------------------------------------------------------- driver

_Slow = Callable[[int, list[int] | None], list]


def _run(kind: str, dtype: str, b: _Batch, fast_path: bool, slow: _Slow) -> np.ndarray:
    fmt = get_format(dtype)
    per_row = kind in ("grad", "log_softmax")
    out = np.empty((b.n, b.k) if per_row else b.n)
    todo = np.ones(out.shape, dtype=bool)
    if fast_path and b.fast_ok and fmt.name in FAST_DTYPES and b.k and fast.libm_ok() and \
            log1p_ok():
        step = max(1, CHUNK // max(b.k, 1))
        for start in range(0, b.n, step):
            rows = np.arange(start, min(b.n, start + step))
            rows = rows[_in_domain(b, rows)]
            if rows.size:
                vals, ok = _fast(kind, b, rows, fmt)
                out[rows] = vals
                todo[rows] = ~ok
    STATS["outputs"] += out.size
    STATS["fast"] += out.size - int(todo.sum())
    for i in np.flatnonzero(todo.any(axis=1) if per_row else todo):
        if per_row:
            cols = np.flatnonzero(todo[i]).tolist()
            out[i, cols] = [round_to(t, fmt) for t in slow(int(i), cols)]
        else:
            out[i] = round_to(slow(int(i), None)[0], fmt)
    return out


def rounded_cross_entropy(dtype: str, logits: Any, target: Any, *, weight: Any = None,
                          label_smoothing: Any = 0, ignore_index: int | None = None,
                          grad: bool = False, fast_path: bool = True) -> np.ndarray:
    """Elementwise round_to(cross_entropy(row) or its gradient, dtype): logits [N, K], target
    int [N] (class indices) or float [N, K] (probabilities); float64 [N] or [N, K] out.
    fast_path=False certifies every row with mpmath (the same bits, slower)."""
    b = _Batch(logits, target, weight, label_smoothing, ignore_index)

    def slow(i: int, cols: list[int] | None) -> list:
        ls, tg = b.row(i)
        return softmax.grad_values(ls, tg, cols) if grad else [softmax.loss_value(ls, tg)]

    return _run("grad" if grad else "loss", dtype, b, fast_path, slow)


def rounded_logsumexp(dtype: str, logits: Any, *, fast_path: bool = True) -> np.ndarray:
    """Elementwise round_to(logsumexp(row), dtype) of logits [N, K]; float64 [N] out."""
    b = _Batch(logits, None, None, 0, None)
    return _run("lse", dtype, b, fast_path,
                lambda i, _: [softmax.logsumexp_value(softmax.tuples(b.row_logits(i)))])


def rounded_log_softmax(dtype: str, logits: Any, *, fast_path: bool = True) -> np.ndarray:
    """Elementwise round_to(log_softmax(row), dtype) of logits [N, K]; float64 [N, K] out."""
    b = _Batch(logits, None, None, 0, None)
    return _run("log_softmax", dtype, b, fast_path,
                lambda i, cols: softmax.log_softmax_values(softmax.tuples(b.row_logits(i)),
                                                           cols))

