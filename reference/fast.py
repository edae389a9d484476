"""Fast certified reference: vectorized float64 evaluation with a proven error bound.

The mpmath engine (engine.py) certifies ~45k points/s; the audit needs millions. Here
every point is evaluated in float64 numpy together with a rigorous bound E such that
the exact value V lies in [lo, hi] = [v - E, v + E]. Rounding to nearest-even is
monotone, so when lo and hi round to the SAME value of the target format (same bits,
sign of zero included), that value is round_to(V) -- certified, not estimated. Every
other point (interval straddling a rounding boundary or a tie, or inputs outside the
domain where the bound below is proven) is sent to the mpmath path
(`points.point`). The result is bit-identical to the pure mpmath reference by
construction. Only float16, bfloat16 and float32 targets take this path: float64 would
need about 2 x 53 correct bits, which float64 arithmetic cannot certify.

Routes, cheapest first: `_short` (unit weights: every loss with 0 <= y <= 1, gradients
with y in {0, 1}; ~15 numpy passes, certified from the float64 bits of the estimate),
`_general` (any point of the domain; interval [lo, hi] rounded at both ends), tier 2
(`bce_fast.logits_tier2`: exact dyadic part in double-double, for near-ties), then
mpmath. `python -m audit bench` prints the measured rates and the share of each route.

Two implementations of these routes. The numpy one (this driver and bce_fast.py's hooks,
~15-40 passes a chunk) is the reference implementation and the fallback. Where numba is
installed, bce_with_logits batches in float16/bfloat16/float32 take fast_numba.py's
fused, multi-threaded kernels instead: the same float64 operations and certification
tests point by point in one pass, short route, general interval and tier 2, with exp
and log1p of their own that are PROVEN to meet assumption (A) below (its docstring), and
the same mpmath fallback. Rounded results are bit-identical on both routes (by
construction, and tested on millions of points); the float64 estimates behind the
grading parts differ within the same bound. BCE_AUDIT_NO_NUMBA=1 forces the numpy
route, and so does a failed self-check of the compiled math (fast_numba.math_ok).

Families
--------
This module is the driver; it knows no loss formula. Each registered family
(families.py) carries a `FastPath` record of per-family hooks -- domain, interval
(`_general`'s kernel), special (exact values outside the domain), and optionally the
short route and tier 2 -- looked up ONCE per batch (`_fast_path`) and called once per
chunk. A family whose `fast` is None is refused here (ValueError "family X has no fast
path"; vectorized.rounded then certifies it with mpmath), never evaluated with another
family's formula. An optional bulk argument the family does not take (bce's
pos_weight) must be 1 at every point, else the batch goes to the mpmath path, which
raises. The bce kernels proven below are in bce_fast.py, the shared float64 machinery
(rounding, double-double, the constants) in fast_core.py; both re-exported here where
tests use them. Import order, no cycle: fast_core <- bce_fast <- families <- losses <-
points <- fast <- vectorized, and fast_core <- fast_numba <- fast (imported on first use,
so `import reference` does not pay numba's import).

Error model (the proof)
-----------------------
u = 2**-53. Basic operations (+ - * /) are IEEE correctly rounded: relative error <= u,
plus an absolute error <= 2**-1075 when the result is subnormal (gradual underflow).
In the logits domain (|x| <= 2**256, 0 <= y <= 1, 0 < w <= 2**200, 0 <= p <= 2**200)
nothing overflows, and every quantity that may underflow is afterwards multiplied by
at most 2**456 (w |x|) in total, over fewer than 16 operations: all underflow together
adds less than 2**-614 absolute, which the absolute term ERR_ABS = 2**-600 covers.
(The bce gradient keeps a relative-only domain: q >= 2**-300, w >= 2**-200.)

numpy's exp, log and log1p are not correctly rounded. ASSUMPTION (A): for float64
arguments, each returns a result with relative error <= LIBM_REL = 2**-45 (128 ulps)
whenever the exact result is a normal float64, and absolute error <= 2**-1060 when it
is below 2**-1022 (underflow). Documented maxima are far smaller: glibc's libm tables
list <= 1-2 ulps for exp/log/log1p on x86_64, numpy's own AVX512/SVML float64 kernels
are documented at <= 4 ulps. (A) is also checked at run time on first use
(`libm_ok`: 3 x 2048 arguments against mpmath, must be within 2**-49, i.e. 16 ulps);
if that check fails the fast path is disabled and everything goes to mpmath.
The test suite then compares every float16 and bfloat16 input exhaustively. (The numba
kernels call no libm: their exp and log1p are proven to within 2**-50.5, inside (A).)

bce_with_logits (a = |x|, e = exp(-a), k = 1 - y + p y, c = w k), as in bce_forms.py:
    loss:  V = D + T,  D = w a (1-y) [x >= 0] or w a p y [x < 0],  T = c log1p(e)
    grad:  V = D + T,  D = w (1-y) or -w p y,  T = -c s or +c s,  s = e / (1 + e)
  * e: relative error <= LIBM_REL (normal); e = 0 is used for a > 700 (absolute error
    < 2**-1009, times |c| <= 2**401 stays below 2**-608).
  * log1p(e_hat): error <= LIBM_REL + (propagated e error) * e / ((1+e) log1p(e)) <=
    2 LIBM_REL + u, since e / ((1+e) log1p(e)) <= 1.
  * s = e / (1 + e): <= 2 LIBM_REL + 2u (1 + e_hat carries at most LIBM_REL).
  * 1 - y, p y, k = (1-y) + p y (two non-negative terms), c, D, T: each a few more u.
  So both computed terms have relative error <= 2 LIBM_REL + 8u < TERM_REL = 2**-42,
  plus an absolute error < 2**-607 from a > 700 (|c| <= 2**401) and < 2**-614 from
  underflow.
  With v = fl(d + t): |v - V| <= 2**-42 (1 + 2**-41) (|d| + |t|) + u |v| + 2**-601.
  We use E = 2**-41 (|d| + |t|) + 2**-600: at least twice that, so the roundings of
  E, v - E and v + E themselves (each <= u |.|) cannot push lo above V or hi below V.
  Cancellation (soft-label gradients) needs no special case: E is relative to
  |d| + |t|, not to |v|, so a cancelled point simply gets a wide interval and falls back.
bce on probabilities, 0 < q < 1:
    loss:  V = w y (-log q) + w (1-y) (-log(1-q)),  both terms >= 0.
  log q = log1p(q - 1) for q >= 1/2 (q - 1 exact by Sterbenz), log(q) otherwise;
  log(1-q) = log(1 - q) for q > 1/2 (1 - q exact), log1p(-q) otherwise. Each term has
  relative error <= LIBM_REL + 3u, the same E as above applies.
    grad:  V = w (q - y) / (q (1 - q)), rational: five correctly rounded operations,
  relative error <= 5u + O(u^2) < 2**-50; E = 2**-48 |v| + 2**-600.
Known signs: where the exact value is known to be > 0 (losses, D = 0 with T > 0) lo is
clamped to +0.0, where < 0, hi to -0.0, so tiny underflowing values certify their signed
zero instead of straddling 0. Exact zeros (w = 0; y = 1 with p = 0; q = y in the bce
gradient) are set to +0.0 directly, NaN inputs to NaN, exactly as bce_forms.py does.
Anything else not covered (inf inputs, y outside [0, 1], negative or huge weights,
|x| > 2**256, q at 0 or 1, ...) falls back. At x = 0 the gradient is dyadic: an exact
float result certifies as usual, an exact tie or zero straddles and falls back.

`approx_parts` gives float64 values with a documented relative error (not a correct
float64 rounding); see its docstring.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from . import fast_core
from .bce_fast import (  # noqa: F401  (all but logits_interval re-exported)
    BIG,
    DIFF_MIN,
    QMIN,
    SMALL,
    XMAX,
    logits_interval,
)
from .bce_fast import logits_short as _short  # noqa: F401  (re-exported)
from .families import BULK_ARGUMENTS, DEFAULTS, Family, FastPath, get_family
from .fast_core import (  # noqa: F401  (re-exported: tests and audit/ use fast.<name>)
    ERR_ABS,
    ERR_REL,
    ERR_REL_RATIONAL,
    LIBM_CHECK,
    LIBM_REL,
    SHORT_ABS,
    SHORT_REL,
    SHORT_TINY,
    SHORT_ULPS,
    TERM_REL,
    _round_bits,
    round_array,
    round_dd,
)
from .formats import Format, get_format, round_to
from .points import _rounded_mpmath, exact_parts, point

FAST_DTYPES = ("float16", "bfloat16", "float32")

CHUNK = 1 << 14         # points per pass: keeps the temporaries in cache
MIN_FAST = 16           # vectorized.rounded uses this module from this many points on

_SIGN = np.uint64(1 << 63)

# how many points took which route since the last reset_stats()
# ("fast" includes "short", the points _short certified, and "tier2", the points the
# double-double tier certified)
STATS: dict[str, int] = {"points": 0, "fast": 0, "short": 0, "tier2": 0, "domain": 0,
                         "uncertain": 0}


def reset_stats() -> None:
    """Zero the route counters (bench and tests read STATS)."""
    for k in STATS:
        STATS[k] = 0


def fallback_share() -> float:
    """Share of points since reset_stats() that needed the mpmath path."""
    n = STATS["points"]
    return (STATS["domain"] + STATS["uncertain"]) / n if n else 0.0



# --------------------------------------------------------------------------- self-check


@lru_cache(maxsize=1)
def libm_ok() -> bool:
    """Check assumption (A) on this machine's numpy (once): exp, log, log1p against
    mpmath on the argument ranges used here, within LIBM_CHECK = 2**-49."""
    from mpmath import mp, mpf

    rng = np.random.default_rng(2024)
    n = 2048
    a = np.concatenate([rng.uniform(0, 40, n // 2), rng.uniform(0, 708, n // 2)])
    q = np.ldexp(rng.uniform(0.5, 1, n), -rng.integers(1, 300, n))  # (0, 1/2)
    t = np.concatenate([np.ldexp(rng.uniform(0.5, 1, n // 2), -rng.integers(0, 300, n // 2)),
                        -np.ldexp(rng.uniform(0.5, 1, n // 2), -rng.integers(1, 300, n // 2))])
    cases = ((np.exp(-a), a, lambda z: mp.exp(-z)), (np.log(q), q, mp.log),
             (np.log1p(t), t, mp.log1p))
    with mp.workprec(80):
        for got, args, fn in cases:
            for g, z in zip(got.tolist(), args.tolist(), strict=True):
                want = fn(mpf(z))
                if abs(mpf(g) - want) > LIBM_CHECK * abs(want):
                    return False
    return True


# --------------------------------------------------------------------------- driver


def _general(path: FastPath, grad: bool, fmt: Format | None, x: np.ndarray, y: Any, w: Any,
             p: Any, abs_tol: float = 0.0, rel_tol: float = 0.0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of any points of a family (its fast hooks `path`): (result, status, v,
    width). status 0 = certified (or exact), 1 = outside the fast domain, 2 = interval not
    inside one rounding cell. fmt None: no rounding, status 2 marks a relative bound
    worse than APPROX_REL (approx_parts). width = hi - lo of the certified interval (0 for
    exact special values, inf outside the domain)."""
    n = x.shape[0]
    with np.errstate(all="ignore"):
        ax = np.abs(x)
        dom = np.broadcast_to(path.domain(grad, x, ax, y, w, p), (n,))
        v, lo, hi = path.interval(grad, x, ax, y, w, p)
        if fmt is None:
            ok = (hi - lo) <= (rel_tol or APPROX_REL) * np.abs(v) + abs_tol
            out = v
        else:
            nonneg = not grad  # losses: lo >= +0.0 (garbage outside the domain is replaced)
            out = round_array(lo, fmt, nonneg)
            ok = out.view(np.uint64) == round_array(hi, fmt, nonneg).view(np.uint64)
            if fast_core._DISABLED:
                ok[:] = True
                out = round_array(v, fmt)
        status = ok.view(np.int8) ^ np.int8(1)
        status <<= 1  # 0 certified, 2 uncertain
        width = hi - lo
        rest = np.flatnonzero(~dom)
        status[rest] = 1
        width[rest] = np.inf
        if rest.size:
            sel = [a[rest] if np.ndim(a) else a for a in (x, y, w, p)]
            exact, value = path.special(grad, fmt, *sel)
            hit = rest[exact]
            out[hit] = value[exact]
            v[hit] = value[exact]
            status[hit] = 0
            width[hit] = 0.0
    return out, status, v, width


# --------------------------------------------------------------------------- public API


def _fast_path(op: str) -> tuple[Family, FastPath]:
    """The registered family `op` and its fast hooks; ValueError when it has none (never
    another family's formula)."""
    family = get_family(op)
    if family.fast is None:
        raise ValueError(f"family {family.name} has no fast path (reference.rounded "
                         f"certifies it with mpmath)")
    return family, family.fast


def _prepare(family: Family, input: Any, target: Any, weight: Any, pos_weight: Any,
             units: bool = True) -> tuple[tuple[int, ...], list[Any]] | None:
    """Broadcast shape and flat float64 arguments (size-1 ones as 0-d scalars), taken
    exactly like points._points does; None when the fast path does not apply. units:
    also turn weight arrays of ones into the scalar 1 (the numba kernels need not: they
    check each chunk as they go)."""
    arrays = [np.asarray(v) for v in (input, target, weight, pos_weight)]
    for a in arrays:
        if a.dtype.kind == "f" and a.dtype.itemsize > 8:
            raise ValueError("inputs wider than float64 are not supported in bulk")
        if a.dtype.kind not in "fiub" and a.dtype.name != "bfloat16":
            return None  # object arrays etc.: the mpmath path decides
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    for i, name in enumerate(BULK_ARGUMENTS):
        if name in DEFAULTS and name not in family.arguments and np.any(arrays[i] != 1):
            return None  # the mpmath path raises its "bce has no pos_weight" error
    flat: list[Any] = []
    for i, a in enumerate(arrays):
        a = a.astype(np.float64, copy=False)
        if a.size == 1 and i > 0:
            flat.append(np.float64(a.reshape(())))
        elif units and i > 1 and a.size and a.flat[0] == 1 and np.all(a == 1):
            flat.append(np.float64(1.0))  # unit weights as arrays: still _short's case
        else:
            flat.append(np.broadcast_to(a, shape).ravel())
    return shape, flat


def _run(path: FastPath, grad: bool, fmt: Format | None, shape: tuple[int, ...], flat: list[Any],
         abs_tol: float = 0.0, rel_tol: float = 0.0, parts: bool = True
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray,
                    np.ndarray | None]:
    """(result, status, v, width, indices of status != 0, indices _general computed) over
    all points, chunk by chunk. v and width only with parts (else None: a fresh array of
    every point costs page faults); width is set where _general computed; the last item
    is None when that is every point (_short never ran)."""
    x = flat[0]
    n = x.shape[0]
    out = np.empty(n)
    status = np.empty(n, dtype=np.int8)
    v = np.empty(n) if parts else None
    width = np.empty(n) if parts else None
    scratch = None if parts else np.empty(min(n, CHUNK))  # _short's working buffer
    short = path.short if fmt is not None and path.short is not None and \
        path.short.applies(flat) else None
    pending = []  # points _short left to _general, batched: its fixed cost is ~100 calls
    general = []  # chunks _general ran on, when _short ran on others
    for s in range(0, n, CHUNK):
        part = [a[s:s + CHUNK] if np.ndim(a) else a for a in flat]
        take, aux = short.labels(part[1], grad) if short else (False, None)
        if take:
            with np.errstate(all="ignore"):
                vs = scratch[:part[0].size] if v is None else v[s:s + CHUNK]
                ok = short.run(part[0], part[1], aux, grad, fmt, out[s:s + CHUNK], vs)
            status[s:s + CHUNK] = 0
            left = np.flatnonzero(~ok)
            STATS["short"] += ok.size - left.size
            pending.append(left + s)
            continue
        general.append(np.arange(s, min(s + CHUNK, n)))
        res = _general(path, grad, fmt, *part, abs_tol, rel_tol)
        out[s:s + CHUNK], status[s:s + CHUNK] = res[:2]
        if v is not None:
            v[s:s + CHUNK], width[s:s + CHUNK] = res[2:]
    rest = np.concatenate(pending) if pending else np.empty(0, dtype=np.intp)
    for s in range(0, rest.size, CHUNK):
        idx = rest[s:s + CHUNK]
        part = [a[idx] if np.ndim(a) else a for a in flat]
        res = _general(path, grad, fmt, *part)
        out[idx], status[idx] = res[:2]
        if v is not None:
            v[idx], width[idx] = res[2:]
    bad = _settle(path, grad, fmt, flat, out, status)
    gen = np.concatenate([*general, rest]) if pending else None
    return out, status, v, width, bad, gen


def _settle(path: FastPath, grad: bool, fmt: Format | None, flat: list[Any], out: np.ndarray,
            status: np.ndarray, bad: np.ndarray | None = None) -> np.ndarray:
    """Tier 2 on the uncertain points (status 2), in place, and the route counters;
    returns the indices still uncertified (status != 0), for mpmath. bad: those indices
    after tier 2, when the caller has already run it (the numba route)."""
    n = out.size
    tier2 = bad is None and fmt is not None and path.tier2 is not None
    if bad is None:
        bad = np.flatnonzero(status)
    if tier2 and bad.size:
        idx = bad[status[bad] == 2]
        if idx.size:
            part = [a[idx] if np.ndim(a) else a for a in flat]
            with np.errstate(all="ignore"):
                r, ok = path.tier2(grad, fmt, *part)
            if not fast_core._DISABLED:
                out[idx[ok]] = r[ok]
                status[idx[ok]] = 0
                bad = bad[status[bad] != 0]
            STATS["tier2"] += int(np.count_nonzero(ok))
    domain = int(np.count_nonzero(status[bad] == 1))
    STATS["points"] += n
    STATS["fast"] += n - bad.size
    STATS["domain"] += domain
    STATS["uncertain"] += bad.size - domain
    return bad


def _numba_route(path: FastPath) -> bool:
    """Whether this batch takes fast_numba's fused kernels: only bce_with_logits' own hooks
    have them (keyed on the interval hook, so a family never gets another's formula), and
    never with the detector switched off (a test-only numpy-route switch). Imported on
    first use: `import reference` stays free of numba's import time."""
    if path.interval is not logits_interval or fast_core._DISABLED:
        return False
    from . import fast_numba

    return fast_numba.enabled()


def _run_numba(path: FastPath, grad: bool, fmt: Format, flat: list[Any], parts: bool,
               rel_tol: float = 0.0, abs_tol: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """_run's work on the numba route: (result, v, indices whose parts must come from
    mpmath, indices still uncertified); v and those indices only with parts."""
    from . import fast_numba

    out, status, bad, v, loose, (short, tier2) = fast_numba.logits(flat, grad, fmt, parts,
                                                                   rel_tol, abs_tol)
    STATS["short"] += short
    STATS["tier2"] += tier2
    bad = _settle(path, grad, fmt, flat, out, status, bad)
    return out, v, loose, bad


def _args(flat: list[Any], i: int) -> tuple[float, float, float, float]:
    return tuple(float(a[i]) if np.ndim(a) else float(a) for a in flat)  # type: ignore[return-value]


def _round_fallbacks(op: str, grad: bool, fmt: Format, flat: list[Any], out: np.ndarray,
                     bad: np.ndarray) -> None:
    """Points the fast path could not certify: the mpmath reference, in place."""
    memo: dict[tuple[float, float, float, float], float] = {}  # fallbacks often repeat
    for i in bad.tolist():
        key = _args(flat, i)
        r = memo.get(key)
        if r is None:
            r = memo[key] = round_to(point(op, grad, *key), fmt)
        out[i] = r


def rounded(op: str, dtype: str, input: Any, target: Any, *, weight: Any = 1,
            pos_weight: Any = 1, grad: bool = False) -> np.ndarray:
    """Same contract as vectorized.rounded (DESIGN.md section 3), bit for bit.

    Certified float64 interval evaluation for float16/bfloat16/float32 (the numba
    kernels where they apply, else numpy); the points it cannot certify (and every
    float64 target) go through the mpmath path. A registered family without fast hooks
    raises ValueError (vectorized.rounded takes it to mpmath).
    """

    fmt = get_format(dtype)
    family, path = _fast_path(op)
    numba = fmt.name in FAST_DTYPES and _numba_route(path)
    prepared = _prepare(family, input, target, weight, pos_weight, units=not numba)
    if prepared is None or fmt.name not in FAST_DTYPES or not libm_ok():
        return _rounded_mpmath(op, fmt.name, input, target, weight=weight,
                               pos_weight=pos_weight, grad=grad)
    shape, flat = prepared
    if numba:
        out, _, _, bad = _run_numba(path, grad, fmt, flat, parts=False)
    else:
        out, _, _, _, bad, _ = _run(path, grad, fmt, shape, flat, parts=False)
    _round_fallbacks(op, grad, fmt, flat, out, bad)
    return out.reshape(shape)


# E = 2**-41 (|d| + |t|) makes hi - lo = 2**-40 |v| plus rounding: accept up to 2**-39,
# i.e. |v - V| <= (hi - lo) / 2 <= 2**-40 |v|.
APPROX_REL = 2.0 ** -39


def approx_parts(op: str, input: Any, target: Any, *, weight: Any = 1, pos_weight: Any = 1,
                 grad: bool = False, abs_tol: float = 0.0, rel_tol: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) with |hi + lo - V| <= 2**-40 |V| + abs_tol at every point: for the
    ulp measure. Grading a dtype passes abs_tol far below its smallest subnormal, so
    values that underflow it need no mpmath at all, and may trade relative accuracy
    for speed with rel_tol (|hi + lo - V| <= rel_tol/2 |V| + abs_tol): a gradient's
    moderate cancellation then stays on the fast path.

    NOT exact_parts' contract: hi is not certified to be the correctly rounded float64
    (that needs ~106 bits; float64 kernels give ~41). Enough to grade ulp error in
    float32 and narrower: the measured ulp error is off by at most 2**-16 ulp of
    float32 (2**-29 of float16), except that a value within 2**-40 of a power of two
    may get the neighbouring binade's ulp (a factor of 2 on an error that is then
    reported as ~0.5 ulp or less anyway). Statuses must come from `rounded`.
    Fast points: hi = the float64 estimate v, lo = 0, accepted only when the certified
    interval has hi - lo <= 2**-39 |v| + abs_tol, i.e. |v - V| <= 2**-40 |v| + abs_tol.
    Points with a
    wider bound (cancellation, underflow, outside the domain) come from
    vectorized.exact_parts (certified hi, lo). Exact zeros are 0, NaN stays NaN, and
    +-inf only where exact_parts gives it. A family without fast hooks: ValueError.
    """
    family, path = _fast_path(op)
    prepared = _prepare(family, input, target, weight, pos_weight)
    if prepared is None or not libm_ok():
        return exact_parts(op, input, target, weight=weight, pos_weight=pos_weight, grad=grad)
    shape, flat = prepared
    _, _, v, _, bad, _ = _run(path, grad, None, shape, flat, abs_tol, rel_tol)
    lo = _certified_parts(op, grad, flat, v, bad)
    return v.reshape(shape), lo.reshape(shape)


def _certified_parts(op: str, grad: bool, flat: list[Any], v: np.ndarray, idx: np.ndarray
                     ) -> np.ndarray:
    """lo parts (0 on the fast path); points in idx get mpmath's certified (hi, lo) in place."""
    lo = np.zeros_like(v)
    if idx.size:
        args = [a[idx] if np.ndim(a) else a for a in flat]
        h, low = exact_parts(op, *args[:2], weight=args[2], pos_weight=args[3], grad=grad)
        v[idx] = h
        lo[idx] = low
    return lo


def rounded_and_parts(op: str, dtype: str, input: Any, target: Any, *, weight: Any = 1,
                      pos_weight: Any = 1, grad: bool = False, abs_tol: float = 0.0,
                      rel_tol: float = APPROX_REL
                      ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """`rounded(...)` and `approx_parts(...)` (same guarantees) from ONE interval
    evaluation: grading needs both on every point. A family without fast hooks:
    ValueError."""

    fmt = get_format(dtype)
    family, path = _fast_path(op)
    numba = fmt.name in FAST_DTYPES and _numba_route(path)
    prepared = _prepare(family, input, target, weight, pos_weight, units=not numba)
    if prepared is None or fmt.name not in FAST_DTYPES or not libm_ok():
        kw = {"weight": weight, "pos_weight": pos_weight, "grad": grad}
        return (rounded(op, dtype, input, target, **kw),
                approx_parts(op, input, target, abs_tol=abs_tol, rel_tol=rel_tol, **kw))
    shape, flat = prepared
    if numba:  # the same rule for `loose`, decided in the kernel
        out, v, loose, bad = _run_numba(path, grad, fmt, flat, True, rel_tol, abs_tol)
        _round_fallbacks(op, grad, fmt, flat, out, bad)
        lo = _certified_parts(op, grad, flat, v, loose)
        return out.reshape(shape), (v.reshape(shape), lo.reshape(shape))
    out, _, v, width, bad, gen = _run(path, grad, fmt, shape, flat)
    _round_fallbacks(op, grad, fmt, flat, out, bad)
    with np.errstate(invalid="ignore"):
        if gen is None:
            loose = np.flatnonzero(~(width <= rel_tol * np.abs(v) + abs_tol))
        else:  # _short's points are within its bounds: usually only _general's are loose
            loose = gen[~(width[gen] <= rel_tol * np.abs(v[gen]) + abs_tol)]
            if rel_tol < 2 * SHORT_REL or abs_tol < SHORT_ABS:
                mask = np.ones(v.size, dtype=bool)
                mask[gen] = False
                if rel_tol >= 2 * SHORT_REL:
                    mask &= np.abs(v) < SHORT_TINY
                loose = np.union1d(loose, np.flatnonzero(mask))
    lo = _certified_parts(op, grad, flat, v, loose)
    return out.reshape(shape), (v.reshape(shape), lo.reshape(shape))
