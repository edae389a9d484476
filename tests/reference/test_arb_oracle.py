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
