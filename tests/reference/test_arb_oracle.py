"""A second oracle (issue 15, item 5): python-flint's arb balls against reference.rounded.

tests/reference/arb_oracle.py re-derives every family from its formula (DESIGN.md
sections 3 and 10, reference/focal_prob.py's docstring for the focal loss on
probabilities, reference/smoothing.py's exact smoothed target) and rounds arb balls
with its own integer code, importing nothing from reference/. Here both are compared
point for point, bit for bit (sign of zero included) on:

- bulk points: random bit patterns of the dtype (both signs, subnormal to huge), moderate
  and cross-dtype inputs, hard / soft / tiny / a-hair-from-0-or-1 targets (and targets
  outside [0, 1], negative weights, where the family's contract allows them), weights
  and pos_weights from exact 0 to overflow;
- constructed hard cases: the exact dyadic part of the value (w (1-y) x, K c**(g+1) a,
  w q, ...) exactly on a midpoint of the target format, the transcendental tail from
  about 2**-20 to 2**-(10**9) below it (its sign alone decides the rounding; where a
  ball can still reach the tail, arb's sticky decision is redone by brute force);
- searched hard cases: many candidates ranked by their distance to a midpoint (numpy
  float64 estimates, then arb balls), the closest kept;
- the limits at infinite and end-point inputs, against values derived by hand.

Every family (bce_with_logits, bce, focal_with_logits, focal on probabilities, label
smoothing over all four) x every dtype x loss and gradient. Sizes: the default (CI)
run is a few thousand points per family; BCE_AUDIT_DEEP=1 or --hypothesis-profile=audit
(audit.plugin._profile_and_seed, as the audit itself decides) runs 40,000 bulk points per
family, dtype and quantity: 320,000 per family. Points arb cannot decide below its
precision cap are counted and must stay below one in 10,000 (so far: none).

Softmax rows (arb_oracle.cross_entropy / logsumexp / log_softmax against
reference.rounded_cross_entropy, its grad=True, rounded_logsumexp, rounded_log_softmax,
every component bit for bit), in each dtype: K in {2, 3, 10, 100} and 1000; normal rows at
scales 1e-3 to 1e4, bit patterns, one dominant logit (confident right or wrong, margins 1
to 1e4 and up to the dtype's max), equal rows, ties at the top beside logits far below,
-inf masks; class indices and probabilities (Dirichlet, one-hot, sparse, the row's own
softmax, unnormalised) x class weights x label smoothing 0.1, and signed weights and
targets; constructed rows a vanishing tail from a midpoint (margins, gradients from
midpoint coefficients, a midpoint top logit for logsumexp), the overflow threshold, and
searched rows closest to a midpoint. Default about 3,000 rows (60,000 values), deep
about 33,000 rows (400,000 values). Counts (rows, values, escalated precisions,
excluded, routes) are printed: run with -s.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flint", reason="python-flint (the arb oracle) is not installed")

import reference
from reference import families, smoothing
from tests.reference import arb_oracle as A

DTYPES = ("float16", "bfloat16", "float32", "float64")
FOCAL = ((2, 0.25), (0.5, None), (1, 0.75), (5, None), (0, 0.25))  # (gamma, alpha)
WIDER = {"float16": "float32", "bfloat16": "float32", "float32": "float64",
         "float64": "float32"}  # cross-dtype inputs (float64 takes narrower ones)

# points per (family, dtype, loss|grad)
SIZES = {
    "default": {"bulk": 2_000, "hard": 100, "pool": 50_000, "pool64": 400, "keep": 20},
    "deep": {"bulk": 40_000, "hard": 1_500, "pool": 1_000_000, "pool64": 4_000,
             "keep": 150},
}
MAX_EXCLUDED = 1e-4  # share of points arb may leave undecided at its cap


@pytest.fixture(autouse=True, scope="module")
def _registry_restored() -> Iterator[None]:
    """Families registered here (focal and smoothed names) are removed afterwards: other
    tests pin the registry to the two bce families."""
    before = set(families.FAMILIES)
    yield
    for name in set(families.FAMILIES) - before:
        families.unregister_family(name)


@pytest.fixture(scope="module")
def profile(pytestconfig: pytest.Config) -> tuple[str, int]:
    """("deep" | "default", base seed): deep under BCE_AUDIT_DEEP=1 or the audit profile."""
    from audit.plugin import _profile_and_seed

    name, seed = _profile_and_seed(pytestconfig)
    deep = os.environ.get("BCE_AUDIT_DEEP") == "1" or name == "audit"
    return ("deep" if deep else "default"), seed or 0


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Variant:
    """One op of a family: its reference name and the arb oracle's function for it."""

    op: str
    base: str  # "bce_with_logits" | "bce" | "focal_with_logits" | "focal"
    gamma: float = 0.0
    alpha: float | None = None
    smoothing: float | None = None

    @property
    def logit(self) -> bool:
        return self.base in ("bce_with_logits", "focal_with_logits")

    @property
    def wide(self) -> bool:
        """Targets outside [0, 1] and negative weights are in the contract."""
        return self.base in ("bce_with_logits", "bce") and self.smoothing is None

    @property
    def pos_weight(self) -> bool:
        return self.base == "bce_with_logits"

    def arb(self, v: float, y: float, w: float, p: float, grad: bool, dtype: str,
            ball: int | None = None, sticky: bool = True) -> Any:
        kw = {"grad": grad, "dtype": dtype, "smoothing": self.smoothing, "ball": ball,
              "sticky": sticky}
        if self.base == "bce_with_logits":
            return A.bce_with_logits(v, y, w, p, **kw)
        if self.base == "bce":
            return A.bce(v, y, w, **kw)
        if self.base == "focal_with_logits":
            return A.focal_with_logits(v, y, self.gamma, self.alpha, w, **kw)
        return A.focal_probability(v, y, self.gamma, self.alpha, w, **kw)

    def reference(self, dtype: str, v: np.ndarray, y: np.ndarray, w: np.ndarray,
                  p: np.ndarray, grad: bool) -> np.ndarray:
        kw = {"pos_weight": p} if self.pos_weight else {}
        return reference.rounded(self.op, dtype, v, y, weight=w, grad=grad, **kw)


def _variants(family: str, dtype: str, hard: bool = False) -> list[Variant]:
    """Built inside the tests (registering names at collection would leak them). hard:
    label smoothing 1/2 (targets 1/4 and 3/4 from 0 and 1: dyadic parts can be
    midpoints), else 0.1 and 0.25 as the dtype's values."""
    if family in ("bce_with_logits", "bce"):
        return [Variant(family, family)]
    if family == "focal_with_logits":
        return [Variant(reference.focal_op(g, a), family, g, a) for g, a in FOCAL]
    if family == "focal":
        return [Variant(reference.focal_prob_op(g, a), family, g, a) for g, a in FOCAL]
    # label smoothing E as the dtype value it is (the audit rounds E to the dtype first)
    e1, e2 = (0.5, 0.5) if hard else (float(A.cast(e, dtype)[()]) for e in (0.1, 0.25))
    wrapped = [("bce_with_logits", "bce_with_logits", 0, None, e1), ("bce", "bce", 0, None, e2),
               (reference.focal_op(2, 0.25), "focal_with_logits", 2, 0.25, e1),
               (reference.focal_prob_op(0.5, None), "focal", 0.5, None, e2)]
    return [Variant(smoothing.op_name(e, op), base, g, a, e) for op, base, g, a, e in wrapped]


FAMILY_NAMES = ("bce_with_logits", "bce", "focal_with_logits", "focal", "smoothed")


# --------------------------------------------------------------------------- sampling


def _rng(*key: Any, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), seed])


def _bits(rng: np.random.Generator, n: int, dtype: str) -> np.ndarray:
    width = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}[dtype]
    raw = rng.integers(0, 1 << width, n, dtype=np.uint64) if width < 64 else \
        rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    v = A.from_bits(raw, dtype)
    v[~np.isfinite(v)] = 1.0
    return v


def _specials(dtype: str) -> np.ndarray:
    f = A.FORMATS[dtype]
    eps = 2.0 ** (1 - f.precision)
    big = math.ldexp(2 - eps, f.emax)  # the largest finite value
    v = [0.0, 2.0 ** f.qmin, 2.0 ** f.emin, 1.0, 0.5, eps, 1 - eps / 2, 20.0, 88.75, 700.0,
         1e4, big]
    return A.cast(v, dtype)


def _mix(rng: np.random.Generator, n: int, parts: list[tuple[float, Callable[[int], Any]]]
         ) -> np.ndarray:
    """n values, each drawn from one of the weighted generators."""
    shares = np.array([s for s, _ in parts], dtype=np.float64)
    pick = rng.choice(len(parts), n, p=shares / shares.sum())
    out = np.empty(n)
    for i, (_, gen) in enumerate(parts):
        idx = np.flatnonzero(pick == i)
        if idx.size:
            out[idx] = np.broadcast_to(np.asarray(gen(idx.size), dtype=np.float64), idx.shape)
    return out


def _logits(rng: np.random.Generator, n: int, dtype: str) -> np.ndarray:
    sp = _specials(dtype)
    return _mix(rng, n, [
        (0.35, lambda k: _bits(rng, k, dtype)),
        (0.30, lambda k: A.cast(rng.uniform(-40, 40, k), dtype)),
        (0.10, lambda k: A.cast(rng.uniform(-2, 2, k), dtype)),
        (0.10, lambda k: A.cast(rng.uniform(-60, 60, k), WIDER[dtype])),
        (0.15, lambda k: rng.choice(sp, k) * rng.choice([-1.0, 1.0], k)),
    ])


def _probabilities(rng: np.random.Generator, n: int, dtype: str) -> np.ndarray:
    sp = _specials(dtype)
    sp = sp[(sp > 0) & (sp < 1)]

    def tiny(k: int) -> np.ndarray:
        return np.abs(_bits(rng, k, dtype))

    q = _mix(rng, n, [
        (0.35, lambda k: A.cast(rng.uniform(0, 1, k), dtype)),
        (0.25, tiny),
        (0.15, lambda k: A.cast(1 - np.minimum(tiny(k), 0.5), dtype)),
        (0.10, lambda k: A.cast(rng.uniform(0, 1, k) ** 8, WIDER[dtype])),
        (0.15, lambda k: rng.choice(sp, k)),
    ])
    bad = ~((q > 0) & (q < 1))
    q[bad] = A.cast(rng.uniform(0.01, 0.99, int(bad.sum())), dtype)
    return q


def _targets(rng: np.random.Generator, n: int, dtype: str, wide: bool) -> np.ndarray:
    f = A.FORMATS[dtype]
    eps = 2.0 ** (1 - f.precision)
    hair = A.cast([2.0 ** f.qmin, 2.0 ** f.emin, eps / 2, 1 - eps / 2, 1 - eps, 0.5], dtype)
    y = _mix(rng, n, [
        (0.30, lambda k: rng.choice([0.0, 1.0], k)),
        (0.35, lambda k: A.cast(rng.uniform(0, 1, k), dtype)),
        (0.10, lambda k: np.abs(_bits(rng, k, dtype))),
        (0.10, lambda k: rng.choice(hair, k)),
        (0.15, lambda k: A.cast(np.where(rng.random(k) < 0.5, rng.uniform(-1, 2, k),
                                         rng.choice([1.5, -0.25, 2.0, -1.0], k)), dtype)
         if wide else A.cast(rng.uniform(0, 1, k), dtype)),
    ])
    if not wide:
        y[~((y >= 0) & (y <= 1))] = 0.5
    return y


def _weights(rng: np.random.Generator, n: int, dtype: str, wide: bool) -> np.ndarray:
    return _mix(rng, n, [
        (0.55, lambda k: 1.0),
        (0.25, lambda k: A.cast(rng.uniform(0, 4, k), dtype)),
        (0.10, lambda k: np.abs(_bits(rng, k, dtype))),
        (0.05, lambda k: 0.0),
        (0.05, lambda k: A.cast(rng.uniform(-3, 0, k) if wide else rng.uniform(0, 4, k),
                                dtype)),
    ])


def _pos_weights(rng: np.random.Generator, n: int, dtype: str) -> np.ndarray:
    return _mix(rng, n, [
        (0.60, lambda k: 1.0),
        (0.27, lambda k: A.cast(rng.uniform(0, 4, k), dtype)),
        (0.10, lambda k: np.abs(_bits(rng, k, dtype))),
        (0.03, lambda k: A.cast(rng.uniform(-2, 0, k), dtype)),
    ])


def _bulk(rng: np.random.Generator, n: int, dtype: str, v: Variant
          ) -> tuple[np.ndarray, ...]:
    x = _logits(rng, n, dtype) if v.logit else _probabilities(rng, n, dtype)
    y = _targets(rng, n, dtype, v.wide)
    w = _weights(rng, n, dtype, v.wide)
    p = _pos_weights(rng, n, dtype) if v.pos_weight else np.ones(n)
    for a in (x, y, w, p):
        assert np.isfinite(a).all()  # infinities: test_limits_match_hand_values
    return x, y, w, p


# --------------------------------------------------------------------------- comparison


@dataclass
class Tally:
    points: int = 0
    excluded: int = 0
    routes: Counter = field(default_factory=Counter)
    arb_s: float = 0.0
    ref_s: float = 0.0


def _shown(v: float) -> str:
    return float(v).hex() if math.isfinite(v) else repr(float(v))


def _compare(v: Variant, dtype: str, grad: bool, x: np.ndarray, y: np.ndarray,
             w: np.ndarray, p: np.ndarray, tally: Tally) -> list[str]:
    """Mismatches (one line per point) between arb and reference.rounded."""
    if not x.size:
        return []
    t0 = time.perf_counter()
    ours = [v.arb(*pt, grad, dtype) for pt in zip(x.tolist(), y.tolist(), w.tolist(),
                                                  p.tolist(), strict=True)]
    t1 = time.perf_counter()
    theirs = v.reference(dtype, x, y, w, p, grad).tolist()
    tally.ref_s += time.perf_counter() - t1
    tally.arb_s += t1 - t0
    tally.points += len(ours)
    bad = []
    for i, (r, ref) in enumerate(zip(ours, theirs, strict=True)):
        tally.routes[r.route] += 1
        if r.value is None:
            tally.excluded += 1  # undecided at arb_oracle.CAP bits: counted, asserted small
            continue
        if not A.same(r.value, ref):
            point = ", ".join(f"{k}={_shown(a[i])}" for k, a in
                              (("input", x), ("target", y), ("weight", w), ("pos_weight", p)))
            bad.append(f"{v.op} {dtype} grad={grad}: {point}: arb {r.value!r} ({r.route}, "
                       f"{r.prec} bits) != reference {ref!r}")
    return bad


def _check(tally: Tally, bad: list[str], what: str) -> None:
    print(f"\n{what}: {tally.points} points, {tally.excluded} excluded, routes "
          f"{dict(tally.routes)}, arb {tally.arb_s:.2f} s, reference {tally.ref_s:.2f} s")
    assert not bad, f"{len(bad)} disagreements between arb and the reference:\n" + \
        "\n".join(bad[:20])
    assert tally.excluded <= MAX_EXCLUDED * tally.points, \
        f"{tally.excluded} of {tally.points} points undecided at {A.CAP} bits"


# --------------------------------------------------------------------------- bulk


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_bulk_points_agree(family: str, dtype: str, profile: tuple[str, int]) -> None:
    size, seed = profile
    n = SIZES[size]["bulk"]
    variants = _variants(family, dtype)
    tally, bad = Tally(), []
    for grad in (False, True):
        for i, v in enumerate(variants):
            k = n // len(variants) + (i < n % len(variants))
            rng = _rng("bulk", v.op, dtype, grad, seed=seed)
            bad += _compare(v, dtype, grad, *_bulk(rng, k, dtype, v), tally)
    _check(tally, bad, f"bulk {family} {dtype}")


# --------------------------------------------------------------------------- constructed


def _thirds(rng: np.random.Generator, n: int, dtype: str, lo: int, hi: int) -> np.ndarray:
    """Values m 2**e of dtype, m odd with p bits and 3m < 2**(p+1), binade in [lo, hi):
    0.75 times one is exactly a midpoint of dtype (3m: p+1 bits, odd)."""
    f = A.FORMATS[dtype]
    p = f.precision
    lo, hi = max(lo, f.emin + 1), min(hi, f.emax)
    m = rng.integers(1 << (p - 1), -(-(1 << (p + 1)) // 3), n, dtype=np.int64) | 1
    e = rng.integers(lo, hi, n)
    return np.ldexp(m.astype(np.float64), (e - p + 1).astype(np.int64))


def _log_uniform(rng: np.random.Generator, n: int, lo: float, hi: float, dtype: str
                 ) -> np.ndarray:
    return A.cast(np.exp(rng.uniform(math.log(lo), math.log(hi), n)), dtype)


def _target(v: Variant, y: float) -> Fraction:
    e = v.smoothing
    return Fraction(y) if e is None else Fraction(y) * (1 - Fraction(e)) + Fraction(e) / 2


def _dyadic_part(v: Variant, grad: bool, x: float, y: float, w: float, p: float
                 ) -> Fraction | None:
    """The exact limit the value approaches as its tail vanishes (huge |x| for logits,
    tiny q with y = 0 for probabilities), when it is a dyadic; None otherwise. For the
    bce gradient (rational), the exact value itself."""
    t = _target(v, y)
    fx, fw, fp = Fraction(x), Fraction(w), Fraction(p)
    if v.base == "bce_with_logits":
        if grad:
            return fw * (1 - t) if x > 0 else -fw * fp * t
        return fw * (1 - t) * fx if x > 0 else fw * fp * t * -fx
    if v.base == "bce":
        if grad:
            return fw * (fx - t) / (fx * (1 - fx))
        return fw * fx if t == 0 else None  # -log1p(-q) = q + q**2/2 + ...
    alpha_t = Fraction(1) if v.alpha is None else \
        Fraction(v.alpha) * t + (1 - Fraction(v.alpha)) * (1 - t)
    k = fw * alpha_t
    g = Fraction(v.gamma)
    if v.base == "focal_with_logits":
        c = (1 - t) if x > 0 else t
        power = _dyadic_power(c, g + 1)
        if power is None:
            return None
        return k * power * (1 if grad else abs(fx)) * (-1 if grad and x < 0 else 1)
    if t != 0:
        return None
    # focal on q, y = 0: m = q, bce = q + ...: loss -> K q**(g+1), grad -> K (g+1) q**g
    power = _dyadic_power(fx, g if grad else g + 1)
    return None if power is None else k * power * ((g + 1) if grad else 1)


def _dyadic_power(c: Fraction, g: Fraction) -> Fraction | None:
    if c <= 0:
        return None
    r = A.exact_power(A.dy(c), A.dy(g))
    return None if r is None else A.d_fraction(r)


def _constructed(rng: np.random.Generator, n: int, dtype: str, v: Variant, grad: bool
                 ) -> tuple[np.ndarray, ...]:
    """Candidates whose dyadic part is built to be a midpoint of dtype: 3/4 (a factor
    from 1 - y, the weight, alpha_t or the smoothed target) times a `_thirds` value,
    with tails from about 2**-20 down to exp(-16384). `_dyadic_part` then keeps the
    candidates that really are midpoints (a weight the dtype cannot hold is rounded)."""
    f = A.FORMATS[dtype]
    one, sign = np.ones(n), rng.choice([-1.0, 1.0], n)
    scale = rng.choice([1.0, 0.75, 3.0, 1.5, 4.0 / 3.0], n)  # folds alpha_t and (g+1) in
    if v.logit:
        if grad:  # dyadic part w (1-y), -w p y, K c**(g+1): from the weight
            x = _log_uniform(rng, n, 14, 2.0 ** 14, dtype) * sign
            w = _thirds(rng, n, dtype, -3, 3)
        else:     # dyadic part w (1-y) x, w p y |x|, K c**(g+1) |x|: from x, mostly with
            # tails a ball can still resolve (|x| < 1024), some far below any precision
            x = np.where(rng.random(n) < 0.75, _thirds(rng, n, dtype, 4, 10),
                         _thirds(rng, n, dtype, 10, 30)) * sign
            w = one.copy()
        if v.smoothing is not None:  # E = 1/2: y = 0 -> t = 1/4, y = 1 -> t = 3/4
            y = np.where(x > 0, 0.0, 1.0)
        elif v.base == "bce_with_logits":
            y = np.where(x > 0, 0.25, 0.75)
        else:  # focal: hard labels, c = 1; the 3/4 comes from K = w alpha_t
            y = np.where(x > 0, 0.0, 1.0)
            w = w * scale
        return x, y, A.cast(w, dtype), one.copy()
    if v.base == "bce":
        if grad:  # exact ties of the rational: q = 1/2, 3/4 (0.5 - y) / (1/4)
            y = A.cast(rng.uniform(0, 1, n), dtype)
            return np.full(n, 0.5), y, np.full(n, 0.75), one.copy()
        lo = max(f.emin + 1, -60)
        q = _thirds(rng, n, dtype, lo, max(lo + 2, -20))  # loss -> 3/4 q, tail q/2
        return q, np.zeros(n), np.full(n, 0.75), one.copy()
    # focal on q, y = 0: loss -> K q**(g+1), grad -> K (g+1) q**g, q a power of 2
    q = np.ldexp(1.0, rng.integers(-60, -5, n))
    w = _thirds(rng, n, dtype, -3, 3) * scale
    return q, np.zeros(n), A.cast(w, dtype), one.copy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_hard_constructed_points_agree(family: str, dtype: str, profile: tuple[str, int]
                                       ) -> None:
    """Values within a vanishing tail of a midpoint: the tail's sign decides."""
    size, seed = profile
    n = SIZES[size]["hard"]
    tally, bad, kept, tails = Tally(), [], 0, []
    brute, brute_done = max(2, n // 20), 0
    for grad in (False, True):
        for v in _variants(family, dtype, hard=True):
            rng = _rng("hard", v.op, dtype, grad, seed=seed)
            x, y, w, p = _constructed(rng, 4 * n, dtype, v, grad)
            exact = [_dyadic_part(v, grad, *pt) for pt in
                     zip(x.tolist(), y.tolist(), w.tolist(), p.tolist(), strict=True)]
            on = np.array([d is not None and d.denominator & (d.denominator - 1) == 0 and
                           A.is_midpoint(A.dy(d), dtype) for d in exact], dtype=bool)
            idx = np.flatnonzero(on)[:n]
            kept += idx.size
            # the sticky argument by brute force, where a ball can still reach the tail
            for i in (idx[np.abs(x[idx]) < 600][:brute] if v.logit else idx[:0]).tolist():
                pt = (x[i], y[i], w[i], p[i], grad, dtype)
                r, slow = v.arb(*pt), v.arb(*pt, sticky=False)
                assert slow.route == "ball" and A.same(r.value, slow.value), (v.op, pt)
                brute_done += r.route == "sticky"
            # roughly log2 |tail / dyadic part|: exp(-|x|) for logits, q/2 for q
            if not (v.base == "bce" and grad):  # (exact ties there: no tail)
                tails += [(-abs(x[i]) / math.log(2) - math.log2(abs(exact[i]))) if v.logit
                          else math.log2(x[i] / 2) for i in idx.tolist()]
            bad += _compare(v, dtype, grad, x[idx], y[idx], w[idx], p[idx], tally)
    assert kept >= n, f"only {kept} constructed midpoint cases for {family} {dtype}"
    print(f"\nconstructed {family} {dtype}: tails 2**{max(tails):.0f} to 2**{min(tails):.0f} "
          f"relative from a midpoint; {brute_done} sticky decisions redone by brute force")
    _check(tally, bad, f"constructed {family} {dtype}")


# --------------------------------------------------------------------------- searched


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # no overflow on either side
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _estimate(v: Variant, grad: bool, x: np.ndarray, y: np.ndarray, w: np.ndarray,
              p: np.ndarray) -> np.ndarray:
    """float64 estimates (no guarantee: they only rank search candidates)."""
    t = y if v.smoothing is None else y * (1 - v.smoothing) + v.smoothing / 2
    g = v.gamma
    with np.errstate(all="ignore"):
        if v.logit:
            s1, s0 = _sigmoid(x), _sigmoid(-x)
            bce = t * np.logaddexp(0, -x) + (1 - t) * np.logaddexp(0, x)
            if v.base == "bce_with_logits":
                if grad:
                    return w * ((1 - t) * s1 - p * t * s0)
                return w * (p * t * np.logaddexp(0, -x) + (1 - t) * np.logaddexp(0, x))
            m, dm, db = s0 * t + s1 * (1 - t), (1 - 2 * t) * s1 * s0, s1 - t
        else:
            bce = -(t * np.log(x) + (1 - t) * np.log1p(-x))
            if v.base == "bce":
                return w * (x - t) / (x * (1 - x)) if grad else w * bce
            m, dm, db = t * (1 - x) + (1 - t) * x, 1 - 2 * t, (x - t) / (x * (1 - x))
        k = w * (1.0 if v.alpha is None else v.alpha * t + (1 - v.alpha) * (1 - t))
        if grad:
            return k * (g * m ** (g - 1) * dm * bce + m ** g * db)
        return k * m ** g * bce


def _np_distance(v: np.ndarray, dtype: str) -> np.ndarray:
    """|v - nearest midpoint of dtype| / |v| from float64 values (inf where useless)."""
    f = A.FORMATS[dtype]
    with np.errstate(all="ignore"):
        a = np.abs(v)
        top = np.floor(np.log2(a))
        ulp = np.maximum(top - f.precision + 1, f.qmin)
        units = np.ldexp(a, -np.nan_to_num(ulp, nan=0, posinf=0, neginf=0).astype(np.int64))
        d = np.abs(units - np.floor(units) - 0.5) / units
    ok = np.isfinite(d) & (a > 0) & (a < np.finfo(np.float64).max / 4)
    return np.where(ok, d, np.inf)


def _pool(rng: np.random.Generator, n: int, dtype: str, v: Variant) -> tuple[np.ndarray, ...]:
    """Moderate candidates: values well inside the format, where midpoints are dense."""
    if v.logit:
        x = A.cast(rng.uniform(-30, 30, n), dtype)
    else:
        x = A.cast(rng.uniform(0, 1, n) ** rng.choice([1, 4], n), dtype)
        x[~((x > 0) & (x < 1))] = 0.5
    y = _mix(rng, n, [(0.3, lambda k: rng.choice([0.0, 1.0], k)),
                      (0.7, lambda k: A.cast(rng.uniform(0, 1, k), dtype))])
    w = _mix(rng, n, [(0.5, lambda k: 1.0), (0.5, lambda k: A.cast(rng.uniform(0.1, 4, k),
                                                                    dtype))])
    p = _mix(rng, n, [(0.5, lambda k: 1.0), (0.5, lambda k: A.cast(rng.uniform(0.1, 4, k),
                                                                    dtype))]) \
        if v.pos_weight else np.ones(n)
    return x, y, w, p


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_hard_searched_points_agree(family: str, dtype: str, profile: tuple[str, int]
                                    ) -> None:
    """The candidates closest to a midpoint of dtype among many (ranked by arb balls)."""
    size, seed = profile
    sizes = SIZES[size]
    keep = sizes["keep"]
    tally, bad, closest = Tally(), [], 0.0
    for grad in (False, True):
        for v in _variants(family, dtype):
            rng = _rng("search", v.op, dtype, grad, seed=seed)
            if dtype == "float64":  # float64 estimates cannot rank float64 midpoints
                pts = _pool(rng, sizes["pool64"], dtype, v)
                pre = np.arange(pts[0].size)
            else:
                pts = _pool(rng, sizes["pool"], dtype, v)
                dist = _np_distance(_estimate(v, grad, *pts), dtype)
                pre = np.argsort(dist, kind="stable")[:4 * keep]
            cand = [tuple(a[i] for a in pts) for i in pre.tolist()]
            ranks = [A.midpoint_distance(v.arb(*c, grad, dtype, ball=4 * 53), dtype)
                     for c in cand]
            best = pre[np.argsort(np.array(ranks), kind="stable")[:keep]]
            closest = min([closest, *sorted(ranks)[:1]])
            bad += _compare(v, dtype, grad, *(a[best] for a in pts), tally)
    print(f"\nsearched {family} {dtype}: closest candidate 2**{closest:.1f} relative "
          f"from a midpoint")
    _check(tally, bad, f"searched {family} {dtype}")


# --------------------------------------------------------------------------- limits

INF, NAN = math.inf, math.nan
# (op, input, target, weight, pos_weight, grad, value): limits of the exact functions,
# derived by hand (DESIGN.md section 3, reference/focal.py and focal_prob.py docstrings)
LIMITS = [
    ("bce_with_logits", INF, 1.0, 1.0, 1.0, False, 0.0),       # (1-y) x + y softplus(-x)
    ("bce_with_logits", INF, 0.5, 1.0, 1.0, False, INF),
    ("bce_with_logits", INF, 1.5, 1.0, 1.0, False, -INF),      # (1-y) < 0
    ("bce_with_logits", -INF, 0.0, 1.0, 1.0, False, 0.0),
    ("bce_with_logits", -INF, 0.5, 1.0, 1.0, False, INF),
    ("bce_with_logits", INF, 0.5, 0.0, 1.0, False, 0.0),       # w = 0
    ("bce_with_logits", INF, 0.25, 2.0, 1.0, True, 1.5),       # w (1-y)
    ("bce_with_logits", -INF, 0.25, 1.0, 2.0, True, -0.5),     # -w p y
    ("bce_with_logits", NAN, 0.5, 1.0, 1.0, False, NAN),
    ("bce_with_logits", 1.0, NAN, 1.0, 1.0, True, NAN),
    ("bce", 0.0, 1.0, 1.0, 1.0, False, INF),                    # -log 0
    ("bce", 0.0, 0.0, 1.0, 1.0, False, 0.0),
    ("bce", 1.0, 1.0, 1.0, 1.0, False, 0.0),
    ("bce", 1.0, 0.5, 1.0, 1.0, False, INF),
    ("bce", 0.0, 0.0, 3.0, 1.0, True, 3.0),                     # d/dq -w log(1-q) at 0
    ("bce", 1.0, 1.0, 3.0, 1.0, True, -3.0),
    ("bce", 1.5, 0.5, 1.0, 1.0, False, NAN),                    # not a probability
    ("bce", -0.5, 0.5, 1.0, 1.0, True, NAN),
]
FOCAL_LIMITS = [  # (gamma, alpha, input, target, grad, value), weight 1
    ("logit", 2, None, INF, 1.0, False, 0.0),
    ("logit", 2, None, INF, 0.5, False, INF),
    ("logit", 2, None, INF, 0.5, True, 0.125),                 # K c**(g+1)
    ("logit", 2, None, -INF, 0.5, True, -0.125),               # -K y**(g+1)
    ("logit", 1, 0.25, -INF, 0.0, False, 0.0),
    ("logit", 1, 0.25, INF, 0.0, True, 0.75),                  # alpha_t = 3/4, c = 1
    ("prob", 2, None, 0.0, 0.0, False, 0.0),
    ("prob", 2, None, 0.0, 0.5, False, INF),
    ("prob", 2, None, 0.0, 0.5, True, -INF),
    ("prob", 2, None, 1.0, 1.0, False, 0.0),
    ("prob", 2, None, 1.0, 0.5, True, INF),
    ("prob", 2, None, 0.0, 0.0, True, 0.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_limits_match_hand_values(dtype: str) -> None:
    rows = [(op, *rest) for op, *rest in LIMITS]
    for kind, g, a, x, y, grad, value in FOCAL_LIMITS:
        op = reference.focal_op(g, a) if kind == "logit" else reference.focal_prob_op(g, a)
        rows.append((op, x, y, 1.0, 1.0, grad, value))
    bad = []
    for op, x, y, w, p, grad, value in rows:
        kw = {"pos_weight": np.array([p])} if op == "bce_with_logits" else {}
        got = reference.rounded(op, dtype, np.array([x]), np.array([y]),
                                weight=np.array([w]), grad=grad, **kw)[0]
        if not A.same(float(got), value):
            bad.append(f"{op} {dtype} grad={grad} x={x} y={y} w={w} p={p}: {got} != {value}")
    assert not bad, "\n".join(bad)


def test_pos_weight_is_irrelevant_at_zero_target() -> None:
    """p = inf with y = 0 multiplies nothing: the finite value (DESIGN.md section 3)."""
    x = np.array([-3.0, 0.5, 40.0])
    got = reference.rounded("bce_with_logits", "float32", x, np.zeros(3),
                            pos_weight=np.full(3, INF))
    ours = [A.bce_with_logits(v, 0.0, dtype="float32").value for v in x.tolist()]
    assert all(A.same(a, b) for a, b in zip(got.tolist(), ours, strict=True))


# --------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_oracle_rounding_matches_numpy_casts(dtype: str) -> None:
    """round_dyadic against numpy's float64 -> float16 / float32 and ml_dtypes' float32 ->
    bfloat16 casts (correctly rounded): random values around the whole range, from below
    the subnormals to overflow, and exact midpoints (ties to even)."""
    rng = _rng("round", dtype)
    f = A.FORMATS[dtype]
    src = "float32" if dtype == "bfloat16" else "float64"
    n = 20_000
    e = rng.integers(f.qmin - 3, f.emax + 3, n)
    v = rng.uniform(0.5, 1, n) * rng.choice([-1.0, 1.0], n) * np.ldexp(1.0, e)
    mids = (rng.integers(1 << f.precision, 1 << (f.precision + 1), n) | 1).astype(np.float64)
    v = np.concatenate([v, np.ldexp(mids, e - f.precision)])
    with np.errstate(over="ignore"):
        v = A.cast(v, src)
        v = v[np.isfinite(v)]
        want = A.cast(v, dtype)
    got = [A.round_dyadic(*A.dy(a), f) for a in v.tolist()]
    bad = [(a, g, w) for a, g, w in zip(v.tolist(), got, want.tolist(), strict=True)
           if not A.same(g, w)]
    assert not bad, bad[:5]


def test_oracle_ties_sticky_and_signs() -> None:
    f32 = A.FORMATS["float32"]
    # an exact midpoint goes to even; a tail of either sign decides it
    mid = (2 * (1 << 23) + 1, -24)  # 1 + 2**-24
    assert A.round_dyadic(*mid, f32) == 1.0
    assert A.round_dyadic(3 * (1 << 23) + 3, -24, f32) == 1.5 + 2.0 ** -22  # odd -> up
    assert A.is_midpoint(mid, "float32") and not A.is_midpoint((1, 0), "float32")
    # the sticky route: (1-y) x = 1 + 2**-24 exactly (a float32 midpoint), and the tail
    # softplus(-x) ~ 2**-2955 rounds it up; with p = -1 the dyadic part is -(1 + 2**-24)
    # and the positive tail rounds it towards zero
    x = float(2 ** 24 + 1) * 2.0 ** -13
    r = A.bce_with_logits(x, 1 - 2.0 ** -11, dtype="float32")
    assert (r.route, r.value) == ("sticky", 1 + 2.0 ** -23)
    r = A.bce_with_logits(-x, 2.0 ** -11, 1.0, -1.0, dtype="float32")  # p y |x| + k T
    assert (r.route, r.value) == ("sticky", -1.0)
    assert A.bce_with_logits(0.0, 0.5, grad=True).value == 0.0  # exact zero
    # signed zeros of underflow: a tiny negative gradient is -0.0
    r = A.focal_with_logits(1e30, 1.0, grad=True)
    assert r.value == 0.0 and math.copysign(1, r.value) == -1.0
    r = A.bce_with_logits(200.0, 1.0, grad=True, dtype="float16")
    assert r.value == 0.0 and math.copysign(1, r.value) == -1.0
    r = A.bce_with_logits(1e300, 1.0, dtype="float64")
    assert r.value == 0.0 and math.copysign(1, r.value) == 1.0
    # overflow at max + ulp/2
    top = (2 ** 25 - 1, 127 - 24)  # float32 max + half an ulp
    assert A.round_dyadic(*top, f32) == math.inf
    assert A.round_dyadic(top[0] - 1, top[1], f32) == float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- softmax rows
#
# cross_entropy (class indices and probabilities, class weights, label smoothing), its
# gradient (every component), logsumexp and log_softmax: arb_oracle's row forms against
# reference.rounded_cross_entropy / rounded_logsumexp / rounded_log_softmax, bit for bit.

ROW_QUANTITIES = ("loss", "grad", "lse", "log_softmax")
ROW_KS = (2, 3, 10, 100)
# rows per (dtype, K, target kind x weights x smoothing) case; K = 1000: rows per dtype
ROW_SIZES = {
    "default": {"rows": {2: 24, 3: 24, 10: 12, 100: 2}, "k1000": 1, "hard": 24,
                "pool": 20_000, "pool64": 150, "keep": 6},
    "deep": {"rows": {2: 240, 3: 240, 10: 100, 100: 12}, "k1000": 3, "hard": 300,
             "pool": 400_000, "pool64": 1_500, "keep": 40},
}


def _fmax(dtype: str) -> float:
    f = A.FORMATS[dtype]
    return math.ldexp(2 - 2.0 ** (1 - f.precision), f.emax)


def _clip_cast(v: np.ndarray, dtype: str) -> np.ndarray:
    """v rounded to dtype, finite values beyond its range clipped to +-max first."""
    big = _fmax(dtype)
    return A.cast(np.where(np.isfinite(v), np.clip(v, -big, big), v), dtype)


@dataclass
class RowCase:
    """Rows sharing one call of the reference: logits [N, K] (float64 values), a target
    (int [N] class indices or float [N, K] probabilities), class weights [K] or None and
    the label smoothing (0: none)."""

    dtype: str
    x: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None = None
    smoothing: float = 0.0
    what: tuple[str, ...] = ROW_QUANTITIES

    @property
    def index(self) -> bool:
        return self.target.dtype.kind in "iu"

    def row_target(self, i: int) -> Any:
        return int(self.target[i]) if self.index else self.target[i]

    def arb(self, q: str, i: int, ball: int | None = None, sticky: bool = True) -> Any:
        """arb_oracle's value(s) of quantity q on row i: Rounded or a tuple of them."""
        kw = {"dtype": self.dtype, "ball": ball, "sticky": sticky}
        if q in ("loss", "grad"):
            return A.cross_entropy(self.x[i], self.row_target(i), self.weight,
                                   smoothing=self.smoothing or None, grad=q == "grad", **kw)
        if q == "lse":
            return A.logsumexp(self.x[i], **kw)
        return A.log_softmax(self.x[i], **kw)

    def reference(self, q: str) -> np.ndarray:
        if q in ("loss", "grad"):
            return reference.rounded_cross_entropy(
                self.dtype, self.x, self.target, weight=self.weight,
                label_smoothing=self.smoothing, grad=q == "grad")
        if q == "lse":
            return reference.rounded_logsumexp(self.dtype, self.x)
        return reference.rounded_log_softmax(self.dtype, self.x)

    def show(self, i: int) -> str:
        def hexes(a: Any) -> str:
            a = np.asarray(a, dtype=np.float64).ravel().tolist()
            return "[" + ", ".join(_shown(v) for v in a) + "]"
        tgt = self.row_target(i)
        w = "None" if self.weight is None else hexes(self.weight)
        return (f"logits={hexes(self.x[i])} target={tgt if self.index else hexes(tgt)} "
                f"weight={w} smoothing={_shown(self.smoothing)}")


@dataclass
class RowTally:
    rows: int = 0
    values: int = 0
    excluded: int = 0
    escalated: int = 0  # decided above the starting precision (format + 40 bits)
    top_prec: int = 0
    routes: Counter = field(default_factory=Counter)
    arb_s: float = 0.0
    ref_s: float = 0.0


def _reference_rows(case: RowCase, q: str) -> tuple[np.ndarray, dict[int, Exception]]:
    """The reference's values of q on case, and the rows where it raised (a crash is a
    disagreement: those rows are retried one by one so each is reported)."""
    try:
        return case.reference(q), {}
    except Exception:  # a reference crash: find its rows
        pass
    out = np.full(case.x.shape if q in ("grad", "log_softmax") else case.x.shape[:1], np.nan)
    raised: dict[int, Exception] = {}
    for i in range(case.x.shape[0]):
        one = RowCase(case.dtype, case.x[i:i + 1], case.target[i:i + 1], case.weight,
                      case.smoothing)
        try:
            out[i] = one.reference(q)[0]
        except Exception as e:
            raised[i] = e
    return out, raised


def _compare_rows(case: RowCase, tally: RowTally) -> list[str]:
    """Mismatches between arb and the reference on every row and quantity of case."""
    n = case.x.shape[0]
    if not n:
        return []
    start = A.FORMATS[case.dtype].precision + 40
    t0 = time.perf_counter()
    theirs, raised, bad = {}, {}, []
    for q in case.what:
        theirs[q], raised[q] = _reference_rows(case, q)
        bad += [f"{q} {case.dtype}: {case.show(i)}: reference raised {e!r}"
                for i, e in raised[q].items()]
    t1 = time.perf_counter()
    for q in case.what:
        ref = theirs[q]
        for i in range(n):
            if i in raised[q]:
                continue
            ours = case.arb(q, i)
            ours = ours if isinstance(ours, tuple) else (ours,)
            refs = np.atleast_1d(ref[i]).tolist()
            for j, (r, v) in enumerate(zip(ours, refs, strict=True)):
                tally.values += 1
                tally.routes[r.route] += 1
                tally.escalated += r.prec > start
                tally.top_prec = max(tally.top_prec, r.prec)
                if r.value is None:
                    tally.excluded += 1  # undecided at arb_oracle.CAP: counted, asserted rare
                    continue
                if not A.same(r.value, v):
                    where = f"[{j}]" if len(ours) > 1 else ""
                    bad.append(f"{q}{where} {case.dtype}: {case.show(i)}: arb {r.value!r} "
                               f"({r.route}, {r.prec} bits) != reference {v!r}")
    tally.arb_s += time.perf_counter() - t1
    tally.ref_s += t1 - t0
    tally.rows += n
    return bad


def _check_rows(tally: RowTally, bad: list[str], what: str) -> None:
    print(f"\n{what}: {tally.rows} rows, {tally.values} values, {tally.escalated} escalated "
          f"(up to {tally.top_prec} bits), {tally.excluded} excluded, routes "
          f"{dict(tally.routes)}, arb {tally.arb_s:.2f} s, reference {tally.ref_s:.2f} s")
    assert not bad, f"{len(bad)} disagreements between arb and the reference:\n" + \
        "\n".join(bad[:20])
    assert tally.excluded <= MAX_EXCLUDED * tally.values, \
        f"{tally.excluded} of {tally.values} values undecided at {A.CAP} bits"


# --------------------------------------------------------------------------- row sampling


def _np_softmax(x: np.ndarray) -> np.ndarray:
    """float64 softmax of rows with -inf masks (all masked: uniform)."""
    with np.errstate(all="ignore"):
        m = np.max(x, axis=1, keepdims=True)
        e = np.exp(x - np.where(np.isfinite(m), m, 0.0))
        s = e / e.sum(axis=1, keepdims=True)
    return np.where(np.isfinite(s), s, 1.0 / x.shape[1])


def _row_logits(rng: np.random.Generator, n: int, k: int, dtype: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """n rows of k logits of dtype and a class index per row (right or wrong for the
    dominant rows, mostly unmasked for masked rows). Kinds: normal at scales 1e-3 to
    1e4, random bit patterns, one dominant logit (margins 1 to 1e4, and the dtype's
    max), equal rows, ties at the top beside logits far below, -inf masks."""
    big = _fmax(dtype)
    x = np.empty((n, k))
    c = rng.integers(0, k, n)
    kind = rng.choice(6, n, p=[0.25, 0.1, 0.25, 0.1, 0.12, 0.18])
    for i in range(n):
        if kind[i] == 0:  # normal
            x[i] = rng.normal(0, rng.choice([1e-3, 0.1, 1, 3, 10, 100, 1e4]), k)
        elif kind[i] == 1:  # bit patterns: subnormal to huge
            x[i] = _bits(rng, k, dtype)
        elif kind[i] == 2:  # one dominant logit, confident right (c = p) or wrong
            x[i] = rng.normal(0, rng.choice([0.1, 1, 3]), k)
            p = rng.integers(k)
            if rng.random() < 0.8:
                x[i, p] = x[i].max() + math.exp(rng.uniform(0, math.log(1e4)))
            else:  # up to the dtype's max, the others sometimes at -max
                x[i, p] = big * rng.choice([0.25, 0.5, 1.0])
                if rng.random() < 0.3:
                    x[i, np.arange(k) != p] = -big * rng.choice([0.5, 1.0])
            c[i] = p if rng.random() < 0.5 else rng.integers(k)
        elif kind[i] == 3:  # equal
            x[i] = rng.choice([0.0, rng.normal(0, 10), big, -big, 2.0 ** A.FORMATS[dtype].qmin,
                               1e4])
        elif kind[i] == 4:  # ties at the top, the others far below
            top = rng.normal(0, 10)
            x[i] = top - np.exp(rng.uniform(0, math.log(1e4), k)) * \
                (rng.choice([1.0, 1e6], k) if dtype != "float16" else 1.0)
            x[i, rng.choice(k, rng.integers(2, k + 1), replace=False)] = top
        else:  # -inf masks: each class with probability 1/2, sometimes all or all but one
            x[i] = rng.normal(0, 3, k)
            u = rng.random()
            mask = rng.random(k) < 0.5 if u < 0.9 else \
                (np.arange(k) != rng.integers(k) if u < 0.97 else np.ones(k, dtype=bool))
            x[i, mask] = -np.inf
            fin = np.flatnonzero(~mask)
            if fin.size and rng.random() < 0.9:
                c[i] = rng.choice(fin)
    return _clip_cast(x, dtype), c


def _row_probs(rng: np.random.Generator, x: np.ndarray, c: np.ndarray, dtype: str
               ) -> np.ndarray:
    """Probability targets rounded to dtype: Dirichlet, one-hot, sparse, the rows' own
    softmax (gradients that cancel), unnormalised; masked classes mostly get 0."""
    n, k = x.shape
    t = rng.dirichlet(np.ones(k), n)
    kind = rng.choice(5, n, p=[0.35, 0.15, 0.2, 0.2, 0.1])
    one_hot = np.zeros((n, k))
    one_hot[np.arange(n), c] = 1.0
    t = np.where((kind == 1)[:, None], one_hot, t)
    sparse = rng.random((n, k)) < 0.5
    sparse[np.arange(n), c] = True
    t = np.where((kind == 2)[:, None], np.where(sparse, t, 0.0), t)
    t = np.where((kind == 3)[:, None], _np_softmax(x), t)
    t = np.where((kind == 4)[:, None], rng.uniform(0, 1, (n, k)), t)
    masked = np.isinf(x) & (rng.random((n, 1)) < 0.9)
    t[masked] = 0.0
    return A.cast(t, dtype)


def _row_weights(rng: np.random.Generator, k: int, dtype: str) -> np.ndarray:
    w = rng.uniform(0.1, 4, k)
    w[rng.random(k) < 0.1] = 0.0
    return A.cast(w, dtype)


def _bulk_cases(rng: np.random.Generator, dtype: str, k: int, n: int) -> list[RowCase]:
    """Class indices and probabilities x class weights or none x smoothing 0 or 0.1, and
    one signed case."""
    e = float(A.cast(0.1, dtype)[()])
    cases = []
    for index in (True, False):
        for weighted in (False, True):
            for ls in (0.0, e):
                x, c = _row_logits(rng, n, k, dtype)
                target = c if index else _row_probs(rng, x, c, dtype)
                w = _row_weights(rng, k, dtype) if weighted else None
                cases.append(RowCase(dtype, x, target, w, ls))
    # signed: weights of both signs, targets outside [0, 1] (graded as given): the loss
    # and the gradient can cancel anywhere
    x, c = _row_logits(rng, n, k, dtype)
    t = A.cast(np.where(rng.random((n, k)) < 0.7, _row_probs(rng, x, c, dtype),
                        rng.uniform(-0.5, 1.5, (n, k))), dtype)
    w = A.cast(rng.uniform(-2, 3, k), dtype)
    cases.append(RowCase(dtype, x, t, w, e if rng.random() < 0.5 else 0.0))
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_rows_agree(dtype: str, profile: tuple[str, int]) -> None:
    """Every kind of row, K in {2, 3, 10, 100} and 1000, every target form."""
    size, seed = profile
    sizes = ROW_SIZES[size]
    tally, bad = RowTally(), []
    for k in ROW_KS:
        rng = _rng("rows", dtype, k, seed=seed)
        for case in _bulk_cases(rng, dtype, k, sizes["rows"][k]):
            bad += _compare_rows(case, tally)
    rng = _rng("rows", dtype, 1000, seed=seed)
    n = sizes["k1000"]
    x, c = _row_logits(rng, n, 1000, dtype)
    x[0] = A.cast(rng.normal(0, 3, 1000), dtype)  # one plain row, whatever the draw
    e = float(A.cast(0.1, dtype)[()])
    bad += _compare_rows(RowCase(dtype, x, c, _row_weights(rng, 1000, dtype), e), tally)
    bad += _compare_rows(RowCase(dtype, x, _row_probs(rng, x, c, dtype), what=("grad",)),
                         tally)
    _check_rows(tally, bad, f"softmax rows {dtype}")


# --------------------------------------------------------------------------- row hard cases


def _midpoints(rng: np.random.Generator, n: int, dtype: str, lo: int, hi: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(V, u): n midpoints V = (2q+1) 2**(u-1) of dtype (q with p bits), top binade of V
    in [lo, hi); as float64 values (exact while u - 1 >= -1074 and p + 1 <= 53)."""
    p = A.FORMATS[dtype].precision
    q = rng.integers(1 << (p - 1), 1 << p, n, dtype=np.int64)
    top = rng.integers(lo, hi, n)
    u = top - p + 1
    return np.ldexp((2 * q + 1).astype(np.float64), (u - 1).astype(np.int64)), u


def _shuffled(rng: np.random.Generator, x: np.ndarray, *more: np.ndarray
              ) -> tuple[np.ndarray, ...]:
    """x (and more, alike) with each row's classes in a random order, and where each
    row's class 1 went."""
    perm = np.argsort(rng.random(x.shape), axis=1)
    out = tuple(np.take_along_axis(a, perm, axis=1) for a in (x, *more))
    return (*out, np.argmax(perm == 1, axis=1))


def _assert_midpoints(values: list[Fraction], dtype: str, what: str) -> None:
    """The construction did what it says: every exact part is a midpoint of dtype."""
    off = [v for v in values if not (v and A.is_midpoint(A.dy(abs(v)), dtype))]
    assert not off, f"{what}: {len(off)} exact parts off a midpoint, e.g. {off[0]}"


def _margin_cases(rng: np.random.Generator, dtype: str, k: int, n: int) -> RowCase:
    """Class c exactly a midpoint V below the top: logits 2**(u-1) and -q 2**u (both of
    dtype, V = (2q+1) 2**(u-1)) and the others further down, so loss = V + log1p(...)
    and log_softmax_c = -V - log1p(...) lie a vanishing tail (about exp(-V)) beyond a
    midpoint; V from 16 to 2**40, and up to 2**1000 where the dtype allows."""
    f = A.FORMATS[dtype]
    top = np.where(rng.random(n) < 0.75, rng.integers(4, min(f.emax - 1, 12) + 1, n),
                   rng.integers(4, min(f.emax - 1, 1000) + 1, n))
    p = f.precision
    q = rng.integers(1 << (p - 1), 1 << p, n, dtype=np.int64).astype(np.float64)
    u = top - p + 1
    high, low = np.ldexp(1.0, u - 1), -np.ldexp(q, u)
    x = np.empty((n, k))
    x[:, 0], x[:, 1] = high, low
    if k > 2:
        x[:, 2:] = _clip_cast(low[:, None] * rng.uniform(1, 2, (n, k - 2)), dtype)
    assert np.array_equal(A.cast(x, dtype), x)
    _assert_midpoints([Fraction(a) - Fraction(b) for a, b in zip(high, low, strict=True)],
                      dtype, f"margins {dtype} K={k}")
    x, c = _shuffled(rng, x)
    return RowCase(dtype, x, c, what=("loss", "log_softmax", "grad", "lse"))


def _grad_cases(rng: np.random.Generator, dtype: str, k: int, n: int) -> RowCase:
    """Class weights 3/4 and a probability t_j of dtype (a `_thirds` value: 3/4 t_j is a
    midpoint) on a class j far below the top (margins 30 to 1e4, and the dtype's max),
    the top's target any, the others' 0: grad_j = -3/4 t_j + W softmax_j and
    grad_M = 3/4 t_j - W S/(1+S) lie a vanishing tail from a midpoint."""
    big = _fmax(dtype)
    m = A.cast(rng.normal(0, 3, n), dtype)
    margin = np.where(rng.random(n) < 0.85,
                      np.exp(rng.uniform(math.log(30), math.log(1e4), n)),
                      big * rng.choice([0.25, 1.0], n))
    x = np.empty((n, k))
    x[:, 0], x[:, 1] = m, m - margin
    if k > 2:
        with np.errstate(over="ignore"):
            x[:, 2:] = (m - margin)[:, None] - margin[:, None] * rng.uniform(0, 1, (n, k - 2))
    x = _clip_cast(np.maximum(x, -big), dtype)
    t = np.zeros((n, k))
    t[:, 1] = _thirds(rng, n, dtype, -3, 0)
    t[:, 0] = A.cast(rng.uniform(0, 1, n), dtype)
    on = np.array([A.is_midpoint(A.dy(Fraction(3, 4) * Fraction(v)), dtype)
                   for v in t[:, 1].tolist()])  # (_thirds' m | 1 can reach 3m = 2**(p+1)+1)
    assert on.sum() >= n // 2, f"gradients {dtype} K={k}: {on.sum()} midpoints"
    x, t, _ = _shuffled(rng, x[on], t[on])
    return RowCase(dtype, x, t, np.full(k, 0.75), what=("grad", "loss"))


def _lse_cases(rng: np.random.Generator, dtype: str, k: int, n: int) -> RowCase | None:
    """The top logit exactly a midpoint of dtype (logits of a wider dtype), the others
    30 to 1e4 below: logsumexp = m + a vanishing tail."""
    if dtype == "float64":
        return None
    wide = WIDER[dtype]
    f = A.FORMATS[dtype]
    v, _ = _midpoints(rng, n, dtype, max(f.emin + 1, -10), min(f.emax, 20))
    v *= rng.choice([-1.0, 1.0], n)
    x = np.empty((n, k))
    x[:, 0] = v
    x[:, 1:] = A.cast(v[:, None] - np.exp(rng.uniform(math.log(30), math.log(1e4),
                                                      (n, k - 1))), wide)
    assert np.array_equal(A.cast(x[:, 0], wide), x[:, 0])
    _assert_midpoints([Fraction(a) for a in v.tolist()], dtype, f"lse {dtype} K={k}")
    x, _ = _shuffled(rng, x)
    return RowCase(dtype, x, rng.integers(0, k, n), what=("lse", "log_softmax"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_hard_constructed_rows_agree(dtype: str, profile: tuple[str, int]) -> None:
    """Row values a vanishing tail from a midpoint of dtype: the tail's sign decides
    (the sticky route; redone by brute force where a ball can still reach the tail)."""
    size, seed = profile
    n = ROW_SIZES[size]["hard"]
    tally, bad, brute = RowTally(), [], 0
    for k in (2, 3, 10):
        rng = _rng("row-hard", dtype, k, seed=seed)
        for case in (_margin_cases(rng, dtype, k, n), _grad_cases(rng, dtype, k, n),
                     _lse_cases(rng, dtype, k, n)):
            if case is None:
                continue
            # the sticky argument by brute force, for rows a ball can still resolve
            order = np.sort(case.x, axis=1)
            near = np.flatnonzero(order[:, -1] - order[:, -2] < 400)
            for i in near[:3].tolist():
                for q in case.what:
                    fast, slow = case.arb(q, i), case.arb(q, i, sticky=False)
                    fast = fast if isinstance(fast, tuple) else (fast,)
                    slow = slow if isinstance(slow, tuple) else (slow,)
                    for r, s in zip(fast, slow, strict=True):
                        assert s.route in ("ball", "exact") and A.same(r.value, s.value), \
                            (q, case.show(i), r, s)
                        brute += r.route == "sticky"
            bad += _compare_rows(case, tally)
    assert tally.routes["sticky"] > 0
    print(f"\nconstructed rows {dtype}: {brute} sticky decisions redone by brute force")
    _check_rows(tally, bad, f"constructed rows {dtype}")


def _np_estimates(case: RowCase) -> dict[str, np.ndarray]:
    """float64 estimates of every quantity (no guarantee: they only rank candidates)."""
    x = case.x
    n, k = x.shape
    m = x.max(axis=1)
    d = x - m[:, None]
    e = np.exp(d)
    s = e.sum(axis=1)
    lse = m + np.log(s)
    t = np.zeros((n, k))
    if case.index:
        t[np.arange(n), case.target] = 1.0
    else:
        t = case.target
    a = (1 - case.smoothing) * t + case.smoothing / k
    if case.weight is not None:
        a = a * case.weight[None, :]
    w = a.sum(axis=1)
    return {"loss": (a * (lse[:, None] - x)).sum(axis=1),
            "grad": w[:, None] * e / s[:, None] - a,
            "lse": lse, "log_softmax": d - np.log(s)[:, None]}


def _ball_rank(case: RowCase, q: str, i: int) -> float:
    balls = case.arb(q, i, ball=4 * 53)
    balls = balls if isinstance(balls, tuple) else (balls,)
    return min(A.midpoint_distance(b, case.dtype) for b in balls)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_hard_searched_rows_agree(dtype: str, profile: tuple[str, int]) -> None:
    """The rows whose value (any component) is closest to a midpoint of dtype among many
    candidates (float64 estimates, then arb balls), per quantity."""
    size, seed = profile
    sizes = ROW_SIZES[size]
    keep, tally, bad, closest = sizes["keep"], RowTally(), [], 0.0
    e = float(A.cast(0.1, dtype)[()])
    for k in (2, 3, 10):
        for index in (True, False):
            rng = _rng("row-search", dtype, k, index, seed=seed)
            n = sizes["pool64"] if dtype == "float64" else sizes["pool"] // k
            x = A.cast(rng.normal(0, 3, (n, k)) * rng.choice([0.3, 1, 5], (n, 1)), dtype)
            c = rng.integers(0, k, n)
            pool = RowCase(dtype, x, c) if index else \
                RowCase(dtype, x, A.cast(rng.dirichlet(np.ones(k), n), dtype),
                        _row_weights(rng, k, dtype) + (1.0 if dtype == "float64" else 0.0),
                        e)
            est = _np_estimates(pool)
            for q in ROW_QUANTITIES:
                if dtype == "float64":  # float64 estimates cannot rank float64 midpoints
                    pre = np.arange(n)
                else:
                    dist = _np_distance(est[q], dtype)
                    dist = dist.min(axis=1) if dist.ndim == 2 else dist
                    pre = np.argsort(dist, kind="stable")[:4 * keep]
                ranks = np.array([_ball_rank(pool, q, i) for i in pre.tolist()])
                best = pre[np.argsort(ranks, kind="stable")[:keep]]
                closest = min(closest, float(ranks.min()))
                case = RowCase(dtype, pool.x[best], pool.target[best], pool.weight,
                               pool.smoothing, what=(q,))
                bad += _compare_rows(case, tally)
    print(f"\nsearched rows {dtype}: closest candidate 2**{closest:.1f} relative from a "
          f"midpoint")
    _check_rows(tally, bad, f"searched rows {dtype}")


# --------------------------------------------------------------------------- row oracle


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_oracle_two_class_identity(dtype: str) -> None:
    """The row forms against the scalar ones (two arb codes): logits [0, x] with target
    [1-y, y] and weights [w, w] give w bce_with_logits(x, y), gradient component 1 its
    d/dx and component 0 minus that; lse = softplus(x)."""
    rng = _rng("two-class", dtype)
    x = _logits(rng, 300, dtype)
    y = A.cast(rng.uniform(0, 1, 300), dtype)
    y[:60] = rng.choice([0.0, 1.0], 60)
    w = np.where(rng.random(300) < 0.5, 1.0, A.cast(rng.uniform(0, 4, 300), dtype))
    bad = []
    for xi, yi, wi in zip(x.tolist(), y.tolist(), w.tolist(), strict=True):
        row, tgt, ww = [0.0, xi], [1 - yi, yi], [wi, wi]  # 1 - y: exact in float64
        if dtype == "float64":
            tgt, yi = [1.0 - yi, 1.0 - (1.0 - yi)], 1.0 - (1.0 - yi)  # the pair sums to 1
        pairs = [(A.cross_entropy(row, tgt, ww, dtype=dtype),
                  A.bce_with_logits(xi, yi, wi, dtype=dtype)),
                 (A.cross_entropy(row, tgt, ww, grad=True, dtype=dtype)[1],
                  A.bce_with_logits(xi, yi, wi, grad=True, dtype=dtype)),
                 (A.logsumexp(row, dtype=dtype), A.bce_with_logits(xi, 0.0, dtype=dtype))]
        g0 = A.cross_entropy(row, tgt, ww, grad=True, dtype=dtype)[0]
        g1 = A.bce_with_logits(xi, yi, wi, grad=True, dtype=dtype)
        for r, s in pairs:
            if not A.same(r.value, s.value):
                bad.append((xi, yi, wi, r, s))
        if g1.value != 0 and g0.value != -g1.value:  # (signed zeros may differ)
            bad.append((xi, yi, wi, "grad0", g0, g1))
    assert not bad, bad[:5]


def test_softmax_oracle_limits_and_exact_values() -> None:
    """Hand values: masks, equal rows (exact softmax 1/K), ties beside logits far below,
    vanishing tails with their signed zeros."""
    inf = math.inf
    r = A.cross_entropy([-inf, -inf], 0)
    assert math.isnan(r.value) and A.logsumexp([-inf, -inf]).value == -inf
    assert A.cross_entropy([-inf, 1.0], 0).value == inf               # target masked
    assert A.cross_entropy([-inf, 1.0], 1).value == 0.0               # mask ignored
    assert A.cross_entropy([-inf, 1.0], 1, smoothing=0.5).value == inf  # E/K on it
    g = A.cross_entropy([-inf, 1.0, 1.0], 1, grad=True)
    assert [v.value for v in g] == [0.0, -0.5, 0.5] and {v.route for v in g} == {"exact"}
    assert [v.value for v in A.log_softmax([-inf, 3.0])] == [-inf, 0.0]
    g = A.cross_entropy([0.0, 0.0, 0.0], 1, grad=True, dtype="float64")
    assert [v.value for v in g] == [1 / 3, -2 / 3, 1 / 3]
    # ties at the top beside a logit far below: 1/2 - exp(-1e10)/4 rounds to 1/2
    g = A.cross_entropy([0.0, 0.0, -1e10], 2, grad=True, dtype="float16")
    assert [v.value for v in g] == [0.5, 0.5, -1.0]
    # [1e10, 0], label 0: loss log1p(exp(-1e10)) > 0 underflows to +0.0, grad_0 to -0.0
    r = A.cross_entropy([1e10, 0.0], 0, dtype="float64")
    assert r.value == 0.0 and math.copysign(1, r.value) == 1
    g = A.cross_entropy([1e10, 0.0], 0, grad=True, dtype="float64")
    assert g[0].value == 0.0 and math.copysign(1, g[0].value) == -1 and g[1].value == 0.0
    ls = A.log_softmax([1e10, 0.0], dtype="float32")
    assert math.copysign(1, ls[0].value) == -1 and ls[1].value == -1e10
    # a midpoint margin: float32 1024 + 2**-14, the tail log1p(exp(-1024)) rounds it up;
    # log_softmax of that class is its mirror image
    r = A.cross_entropy([2.0 ** -14, -1024.0], 1, dtype="float32")
    assert (r.route, r.value) == ("sticky", 1024 + 2.0 ** -13)
    r = A.log_softmax([2.0 ** -14, -1024.0], dtype="float32")[1]
    assert (r.route, r.value) == ("sticky", -1024 - 2.0 ** -13)
    r = A.cross_entropy([2.0 ** -14, -1024.0], 1, dtype="float32", sticky=False)
    assert (r.route, r.value) == ("ball", 1024 + 2.0 ** -13)


def test_softmax_huge_logit_rows_agree() -> None:
    """Rows with two or more logits of magnitude >= 2**1021 below the top (float64 inputs,
    any output format), in either order."""
    b = 2.0 ** 1022
    rows = [[0.0, -b, -1.5 * b], [0.0, -1.5 * b, -b], [0.0, -0.75 * b, -0.5 * b],
            [1.75 * 2.0 ** 1023, 1.5 * b, b], [1.75 * 2.0 ** 1023, b, 1.5 * b]]
    tally, bad = RowTally(), []
    for dtype in ("float64", "float16"):
        for row in rows:
            x = np.array([row])
            bad += _compare_rows(RowCase(dtype, x, np.array([1])), tally)
            bad += _compare_rows(RowCase(dtype, x, A.cast(np.array([[0.25, 0.5, 0.25]]),
                                                          dtype), what=("loss", "grad")),
                                 tally)
    _check_rows(tally, bad, "huge-logit rows")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_overflow_threshold_rows_agree(dtype: str) -> None:
    """Margins exactly at the overflow threshold max + ulp/2 (the tail decides: inf) and
    a quarter ulp below it (max), for the loss and log_softmax."""
    f = A.FORMATS[dtype]
    big, half = _fmax(dtype), math.ldexp(1.0, f.emax - f.precision)
    x = np.array([[half, -big], [half / 2, -big], [-big, half], [half, -big]])
    case = RowCase(dtype, x, np.array([1, 1, 0, 0]))
    assert A.cross_entropy(x[0], 1, dtype=dtype).value == math.inf
    assert A.cross_entropy(x[1], 1, dtype=dtype).value == big
    tally = RowTally()
    _check_rows(tally, _compare_rows(case, tally), f"overflow-threshold rows {dtype}")
