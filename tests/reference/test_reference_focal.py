"""The certified focal loss on logits (reference/focal.py, DESIGN.md section 10).

    focal(x, y, gamma, alpha, w) = w * alpha_t * (1 - p_t)**gamma * bce_with_logits(x, y)

checked against an independent oracle written here: the textbook formula (sigmoid,
log(1 + exp(t)), 1 - p_t, the chain-rule derivative) evaluated by plain mpmath at
600 + 1.5 |x| bits, and, for huge |x|, the exactly known dyadic limit part with the sign
of its vanishing tail derived by hand (a `Split` of the bce oracle). Rounding on the
oracle side is reference_oracle.round_value (Fractions, not the reference's rounding);
rounded values are compared bit for bit, sign of zero included.
"""

from __future__ import annotations

import math
import os
import random
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from mpmath import mp, mpf

import reference
from reference import exact, families, fast, focal, losses, points
from reference.engine import ReferenceUncertainError
from tests.reference.reference_oracle import (
    DTYPES,
    Split,
    agree_bits,
    fraction_to_mpf,
    mismatches,
    negate_exact,
    round_value,
    same_float,
    to_fraction,
)

GAMMAS = (0, 0.5, 1, 2, 5)
ALPHAS = (None, 0.25)
TARGETS = (0.0, 0.25, 0.5, 1.0, 2.0**-30, 2.0**-12, 1 - 2.0**-12, 1 - 2.0**-30)
HUGE = 3000.0  # above this |x| the oracle uses the exact limit part (a Split)


@pytest.fixture(autouse=True, scope="module")
def _registry_restored():
    """Focal families registered here (focal_op, lazy names) are removed afterwards:
    other tests pin the registry to the two bce families."""
    before = set(families.FAMILIES)
    yield
    for name in set(families.FAMILIES) - before:
        families.unregister_family(name)


# --------------------------------------------------------------------------- the oracle


def _alpha_t(alpha, fy: Fraction) -> Fraction:
    if alpha is None:
        return Fraction(1)
    fa = to_fraction(alpha)
    return fa * fy + (1 - fa) * (1 - fy)


def _prec(fx: Fraction) -> int:
    return int(700 + 1.5 * float(abs(fx)))


def _naive(x, y, gamma, alpha, w, grad: bool):
    """The textbook formula (finite x, |x| <= HUGE) at 700 + 1.5|x| bits."""
    fx, fy, fg, fw = (to_fraction(v) for v in (x, y, gamma, w))
    k = fw * _alpha_t(alpha, fy)
    with mp.workprec(_prec(fx)):
        mx, my, mg, mk = (fraction_to_mpf(v) for v in (fx, fy, fg, k))
        s = 1 / (1 + mpmath.exp(-mx))                      # sigmoid(x)
        sm = 1 / (1 + mpmath.exp(mx))                      # sigmoid(-x)
        one_minus_pt = 1 - (s * my + sm * (1 - my))
        bce = my * mpmath.log(1 + mpmath.exp(-mx)) + (1 - my) * mpmath.log(1 + mpmath.exp(mx))
        if not grad:
            return mk * one_minus_pt ** mg * bce
        # d/dx: d(1-p_t)/dx = (1-2y) s sm, d bce/dx = (1-y) s - y sm
        d_focus = 0 if mg == 0 else mg * one_minus_pt ** (mg - 1) * (1 - 2 * my) * s * sm
        return mk * (d_focus * bce + one_minus_pt ** mg * ((1 - my) * s - my * sm))


def _numeric_grad(x, y, gamma, alpha, w) -> mpf:
    """Central difference of the textbook loss at 1400+ bits, h = 2**-400."""
    fx, fy, fg, fw = (to_fraction(v) for v in (x, y, gamma, w))
    k = fw * _alpha_t(alpha, fy)
    with mp.workprec(_prec(fx) + 1400):
        mx, my, mg, mk = (fraction_to_mpf(v) for v in (fx, fy, fg, k))
        h = mpmath.ldexp(mpf(1), -400)

        def loss(t):
            s = 1 / (1 + mpmath.exp(-t))
            one_minus_pt = 1 - (s * my + (1 - s) * (1 - my))
            bce = my * mpmath.log(1 + mpmath.exp(-t)) + (1 - my) * mpmath.log(1 + mpmath.exp(t))
            return mk * one_minus_pt ** mg * bce

        return (loss(mx + h) - loss(mx - h)) / (2 * h)


def _sign(q: Fraction) -> int:
    return (q > 0) - (q < 0)


def _huge(x, y, gamma, alpha, w, grad: bool):
    """|x| > HUGE: the limit part plus the sign of the tail, derived by hand.

    For x = a > 0, c = 1 - y, K = w alpha_t, e = exp(-a) (mirror x -> -x, y -> 1-y,
    alpha_t unchanged, gradient negated):
      loss = K c**g c a + K c**g e [g (2y-1) a + 1] + O(e**2 a):  tail sign
             sign(K) sign(2y-1) where g (2y-1) != 0, else sign(K);
      grad = K c**(g+1) + K c**g e [g (1-2y) a - ...]:  tail sign(K) sign(1-2y) where
             g (1-2y) != 0, else -sign(K) (the -s- term);
      c = 0: only a tail, K e**(g+1) (loss > 0 for K > 0, grad < 0).
    Returns a Split when c**g is rational, else an mpf of the limit part (irrational,
    so the tail cannot matter)."""
    fx, fy, fg, fw = (to_fraction(v) for v in (x, y, gamma, w))
    k = fw * _alpha_t(alpha, fy)
    flip = fx < 0
    a, yy = (-fx, 1 - fy) if flip else (fx, fy)
    c = 1 - yy
    sk = _sign(k)
    if k == 0:
        return Split(Fraction(0), 0)
    if c == 0:
        tail = sk if not grad else -sk
        return Split(Fraction(0), -tail if grad and flip else tail)
    if grad:
        s = _sign(fg * (1 - 2 * yy))
        tail = sk * s if s else -sk
    else:
        s = _sign(fg * (2 * yy - 1))
        tail = sk * s if s else sk
    scale = a if not grad else Fraction(1)
    power = _rational_power(c, fg)
    if power is not None:
        dyadic = k * power * c * scale
    else:
        with mp.workprec(400):
            value = fraction_to_mpf(k) * fraction_to_mpf(c) ** (fraction_to_mpf(fg) + 1) * \
                fraction_to_mpf(scale)
            return -value if grad and flip else value
    if grad and flip:
        return Split(-dyadic, -tail)
    return Split(dyadic, tail)


def _rational_power(c: Fraction, g: Fraction) -> Fraction | None:
    """c**g when it is rational, for c = 1, g an integer or a half-integer (else None)."""
    if c == 1:
        return Fraction(1)
    if g.denominator == 1:
        return c ** int(g)
    if g.denominator == 2:
        rn, rd = math.isqrt(c.numerator), math.isqrt(c.denominator)
        if rn * rn == c.numerator and rd * rd == c.denominator:
            return Fraction(rn, rd) ** g.numerator
    return None


def oracle(x, y, gamma=2, alpha=None, w=1, grad=False):
    if abs(to_fraction(x)) > HUGE:
        return _huge(x, y, gamma, alpha, w, grad)
    return _naive(x, y, gamma, alpha, w, grad)


def ref(x, y, gamma=2, alpha=None, w=1, grad=False) -> mpf:
    fn = reference.focal_with_logits_grad if grad else reference.focal_with_logits
    return fn(x, y, gamma, alpha, w)


def _check(x, y, gamma, alpha, w, grad, bits=105) -> list[str]:
    problems = mismatches(ref(x, y, gamma, alpha, w, grad), oracle(x, y, gamma, alpha, w, grad),
                          reference.round_to, bits=bits)
    return [f"x={x!r} y={y!r} gamma={gamma} alpha={alpha} w={w} grad={grad}: {p}"
            for p in problems]


def _logit_grid(rng: random.Random, n: int, lo: int = -30, hi: int = 9) -> list[float]:
    """n logits over the binades 2**lo .. 2**hi, both signs, random mantissas."""
    out = []
    for _ in range(n):
        e = rng.randint(lo, hi)
        out.append(rng.choice((-1, 1)) * math.ldexp(1 + rng.random(), e))
    return out


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_agrees_with_an_independent_high_precision_computation_in_every_format(gamma, alpha):
    """x over the binades 2**-30 .. 2**9 (both signs, and 0), every target kind, loss
    and gradient: 105+ bits and the same rounding in float16/bfloat16/float32/float64."""
    rng = random.Random(f"{gamma}-{alpha}")
    problems = []
    count = 0
    for y in TARGETS:
        for x in [0.0, *_logit_grid(rng, 5)]:
            w = rng.choice((1.0, 0.5, 3.0))
            for grad in (False, True):
                problems += _check(x, y, gamma, alpha, w, grad)
                count += 1
    assert count == len(TARGETS) * 6 * 2
    assert not problems, "\n".join(problems[:20])


def test_agrees_with_the_textbook_formula_for_large_logits():
    """44 <= |x| <= 700: where the limit part D plus a tail T is used for c**g dyadic (the
    textbook formula at 1700+ bits still resolves exp(-|x|) there)."""
    rng = random.Random(7)
    problems = []
    for _ in range(120):
        x = rng.choice((-1, 1)) * rng.choice((rng.uniform(40, 700), float(rng.randint(44, 700))))
        y = rng.choice((0.0, 0.25, 0.5, 1.0, 0.75, 2.0**-20, 1 - 2.0**-20, 7 / 16))
        gamma = rng.choice((0.5, 1, 2, 5, 0.25))
        alpha = rng.choice((None, 0.25, 2.0))
        for grad in (False, True):
            problems += _check(x, y, gamma, alpha, 1.0, grad)
    assert not problems, "\n".join(problems[:20])


def test_the_gradient_matches_a_high_precision_central_difference():
    problems = []
    for x in (2.0**-6, -0.3, 1.0, -3.5, 12.0, -30.0):
        for y in (0.0, 0.25, 0.5, 0.9, 1.0):
            for gamma in (0.5, 2, 5):
                for alpha in (None, 0.25):
                    got = ref(x, y, gamma, alpha, 1.5, grad=True)
                    want = _numeric_grad(x, y, gamma, alpha, 1.5)
                    if agree_bits(got, want) < 100:
                        problems.append(f"x={x} y={y} gamma={gamma} alpha={alpha}: "
                                        f"{mpmath.nstr(got, 30)} vs {mpmath.nstr(want, 30)}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- identities


def _float16_logits() -> list[float]:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    return bits.view(np.float16).astype(np.float64).tolist()


@pytest.mark.parametrize("y", [0.0, 0.5, 1.0])
def test_gamma_zero_is_bce_with_logits_exactly_on_every_float16_logit(y):
    """gamma = 0: the factor is exactly 1 and the focus term exactly 0, so with alpha None
    the tuple is bce_with_logits' own (infinities and NaN included). By default each
    target takes a third of the bit patterns (pattern mod 3 = its index; the three cover
    every float16 logit once, plus 0, +-inf, NaN and the extremes for each);
    BCE_AUDIT_DEEP=1 checks every logit for every target."""
    every = _float16_logits()
    if os.environ.get("BCE_AUDIT_DEEP") != "1":
        i = [0.0, 0.5, 1.0].index(y)
        every = [*every[i::3], 0.0, -0.0, math.inf, -math.inf, math.nan, 65504.0,
                 -65504.0, 2.0**-24, -(2.0**-24)]
    bad = []
    for x in every:
        for grad in (False, True):
            got = focal.value(grad, x, y, 0, None, 1)
            want = losses.value("bce_with_logits", grad, x, y)
            if got != want:
                bad.append((x, grad))
    assert not bad, bad[:10]


def test_gamma_zero_with_alpha_is_bce_with_the_weight_alpha_t_times_w():
    rng = random.Random(3)
    for x in [*_logit_grid(rng, 40, -20, 12), 0.0, math.inf, -math.inf, 1e300]:
        for y in (0.0, 0.3, 1.0):
            for alpha, w in ((0.25, 1.0), (0.9, 3.0), (2.0, 0.5)):
                k = _alpha_t(alpha, Fraction(y)) * Fraction(w)  # exact (a dyadic Fraction)
                for grad in (False, True):
                    got = focal.value(grad, x, y, 0.0, alpha, w)
                    assert got == losses.value("bce_with_logits", grad, x, y, k), (x, y, alpha)


def test_alpha_t_scales_the_value():
    """focal(alpha) = alpha_t * focal(None): to 105 bits; alpha_t = 0 is an exact 0 (even at
    infinite x); a negative alpha_t (alpha outside [0, 1]) flips the sign."""
    rng = random.Random(5)
    for x in [*_logit_grid(rng, 12, -8, 6), 1e10, -1e10]:
        for y in (0.0, 0.25, 0.5, 1.0):
            for gamma in (0.5, 2):
                for grad in (False, True):
                    base = ref(x, y, gamma, None, 1.0, grad)
                    for alpha in (0.25, 0.75, 2.0, -1.0):
                        at = _alpha_t(alpha, Fraction(y))
                        got = ref(x, y, gamma, alpha, 1.0, grad)
                        if at == 0:
                            assert got == 0
                            continue
                        with mp.workprec(400):
                            want = base * fraction_to_mpf(at)
                        if base == 0:
                            assert got == 0
                        else:
                            assert agree_bits(got, want) >= 105, (x, y, gamma, alpha, grad)
    for x in (0.0, 3.0, math.inf, -math.inf):
        for grad in (False, True):
            assert ref(x, 0.0, 2, 1.0, 1.0, grad) == 0    # alpha_t = 1 - alpha = 0
            assert ref(x, 1.0, 2, 0.0, 1.0, grad) == 0    # alpha_t = alpha = 0
            assert ref(x, 0.5, 2, 0.25, 0.0, grad) == 0   # w = 0


def test_symmetry_x_to_minus_x_with_y_to_1_minus_y_and_alpha_to_1_minus_alpha():
    rng = random.Random(11)
    for x in [*_logit_grid(rng, 30, -20, 10), 0.0, 1e10, math.inf]:
        for y in (0.0, 0.25, 0.5, 1.0, 2.0**-60, 0.1):
            y2 = Fraction(1) - Fraction(y)  # exact, even where 1 - y is no float64
            for gamma in (0.5, 2, 5):
                for alpha in (None, 0.25):
                    alpha2 = None if alpha is None else 1 - alpha
                    for grad in (False, True):
                        a = ref(x, y, gamma, alpha, 2.0, grad)
                        b = ref(-x, y2, gamma, alpha2, 2.0, grad)
                        if grad:
                            b = negate_exact(b) if mpmath.isfinite(b) else -b
                        for dtype in DTYPES:
                            ra, rb = reference.round_to(a, dtype), reference.round_to(b, dtype)
                            assert same_float(ra, rb) or (ra == rb == 0), \
                                (x, y, gamma, alpha, grad, dtype, ra, rb)


def test_hand_checked_values():
    with mp.workprec(300):
        ln2 = mpmath.log(2)
        cases = [
            # x = 0: sigmoid = 1/2, 1 - p_t = 1/2 for every y, bce = log 2
            ((0.0, 1.0, 2, None, 1), ln2 / 4),
            ((0.0, 0.0, 2, None, 1), ln2 / 4),
            ((0.0, 0.5, 1, None, 1), ln2 / 2),
            ((0.0, 1.0, 2, 0.25, 1), ln2 / 16),
            ((0.0, 0.0, 2, 0.25, 2), ln2 * 3 / 8),
            ((0.0, 1.0, 0.5, None, 1), ln2 / mpmath.sqrt(2)),
        ]
        # the gradient at 0: K 2**-g (1/2 - y) (1 + g log 2)
        grads = [((0.0, y, g, None, 1), mpf(2) ** -g * (mpf(0.5) - y) * (1 + g * ln2))
                 for y in (0.0, 1.0, 0.25) for g in (1, 2, 0.5)]
        # x = 2, y = 1, gamma = 2: sigmoid(-2)**2 log1p(exp(-2))
        s = 1 / (1 + mpmath.exp(2))
        cases.append(((2.0, 1.0, 2, None, 1), s ** 2 * mpmath.log1p(mpmath.exp(-2))))
    for args, want in cases:
        assert agree_bits(ref(*args), want) >= 108, args
    for args, want in grads:
        assert agree_bits(ref(*args, grad=True), want) >= 108, args
    for gamma in (0.5, 1, 2, 5):
        for alpha, w in ((None, 1), (0.25, 3.0)):
            assert ref(0.0, 0.5, gamma, alpha, w, grad=True) == 0  # exactly
            assert focal.evaluate_point(True, 0.0, 0.5, gamma, alpha, w) == (exact.ZERO, 0)


# --------------------------------------------------------------------------- huge logits

HUGE_LOGITS = (1e10, 1e300, np.finfo(np.float64).max, 2.0**40 + 3 * 2.0**16)


@pytest.mark.parametrize("x", [*HUGE_LOGITS, *(-v for v in HUGE_LOGITS)])
def test_huge_logits_round_correctly_at_the_first_precision(x):
    """The value is a dyadic limit part plus a tail below 2**-1e10 relative: certified with
    the sticky tail (or directly, when the limit part is irrational) at the starting
    working precision, never by escalation. 2**40 + 3*2**16 is a float32 tie, so only
    the tail's sign decides its float32 rounding."""
    problems = []
    for y in (0.0, 0.25, 0.5, 1.0, 7 / 16, 1 - 2.0**-12):
        for gamma in (0.5, 1, 2, 5):
            for alpha in (None, 0.25):
                for grad in (False, True):
                    _, wp = focal.evaluate_point(grad, x, y, gamma, alpha, 1.0)
                    assert wp <= focal.START_PRECISION, (x, y, gamma, alpha, grad, wp)
                    problems += _check(x, y, gamma, alpha, 1.0, grad)
    assert not problems, "\n".join(problems[:20])


def test_a_dyadic_limit_on_a_tie_is_decided_by_the_tail():
    """w = 1 + 2**-11 is a float16 tie; the gradient at x = 1e10, y = 0 is w (1 + tiny):
    it rounds up (the tie alone would round to even, 1.0). The loss at x = 2**40 + 3*2**16
    is x (1 - tiny): below the float32 tie, so down."""
    w = 1 + 2.0**-11
    g = ref(1e10, 0.0, 2, None, w, grad=True)
    assert reference.round_to(g, "float16") == 1 + 2.0**-10
    assert reference.round_to(w, "float16") == 1.0
    x = 2.0**40 + 3 * 2.0**16
    assert reference.round_to(ref(x, 0.0, 2, None, 1.0), "float32") == 2.0**40 + 2.0**17
    assert reference.round_to(x, "float32") == 2.0**40 + 2.0**18
    # the mirror image: y = 1 at -x, the gradient is -w (1 + tiny)
    assert reference.round_to(ref(-1e10, 1.0, 2, None, w, grad=True), "float16") == \
        -(1 + 2.0**-10)


def test_exact_power():
    t = exact.to_tuple
    assert focal.exact_power(t(9 / 16), t(0.5)) == t(0.75)
    assert focal.exact_power(t(0.25), t(0.5)) == t(0.5)
    assert focal.exact_power(t(0.75), t(3)) == t(27 / 64)
    assert focal.exact_power(t(0.75), t(0.5)) is None       # irrational
    assert focal.exact_power(t(0.5), t(0.5)) is None        # 2**-1/2
    assert focal.exact_power(t(0.5), t(1e300)) == (0, 1, -int(1e300), 1)
    assert focal.exact_power(t(0.75), t(1e6)) is None       # too many bits to matter
    assert focal.exact_power(t(0.3), t(0.0)) == exact.ONE


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("gamma", [0, 0.5, 2, 5])
def test_limits_at_infinity_match_the_finite_formula_at_large_logits(gamma):
    """x -> +inf: loss 0 for y = 1, else sign(K) inf; grad K (1-y)**(g+1).
    x -> -inf: loss 0 for y = 0, else sign(K) inf; grad -K y**(g+1). Checked against
    the finite values at +-50 (the tail still shows after about 60 bits) and +-500 (to
    the 105 bits of the contract: there the reference itself is the limit part plus a
    sticky bit)."""
    for y in (0.0, 0.25, 0.5, 1.0, 0.75):
        for alpha, w in ((None, 1.0), (0.25, 2.0), (2.0, 1.0)):
            k = Fraction(w) * _alpha_t(alpha, Fraction(y))
            for side in (1, -1):
                c = (1 - Fraction(y)) if side > 0 else Fraction(y)
                x = side * math.inf
                loss, grad = ref(x, y, gamma, alpha, w), ref(x, y, gamma, alpha, w, True)
                with mp.workprec(400):
                    slope_lim = fraction_to_mpf(k) * fraction_to_mpf(c) ** (gamma + 1)
                    lim = side * slope_lim
                if c == 0:
                    assert loss == 0 and grad == 0
                else:
                    assert loss == _sign(k) * mpmath.inf
                    assert agree_bits(grad, lim) >= 105, (gamma, y, alpha, side)
                for a, need in ((50.0, 50), (500.0, 105)):
                    f_loss = ref(side * a, y, gamma, alpha, w)
                    f_grad = ref(side * a, y, gamma, alpha, w, True)
                    if c == 0:
                        assert 0 < abs(f_loss) < mpf(2) ** (-a * 1.4) and \
                            abs(f_grad) < mpf(2) ** (-a * 1.4)
                        continue
                    assert agree_bits(f_grad, lim) >= need, (gamma, y, alpha, side, a)
                    # the loss grows like K c**(g+1) |x|
                    with mp.workprec(400):
                        slope = f_loss / a
                    assert agree_bits(slope, slope_lim) >= need - 12, (gamma, y, alpha, side)


# --------------------------------------------------------------------------- NaN, domain


def test_nan_in_nan_out():
    for args in ((math.nan, 0.5, 1.0), (1.0, math.nan, 1.0), (1.0, 0.5, math.nan),
                 (math.nan, 2.0, 1.0), (math.inf, math.nan, 1.0)):
        for gamma in (0, 2):
            for grad in (False, True):
                assert focal.value(grad, args[0], args[1], gamma, 0.25, args[2]) == exact.NAN
    op = reference.focal_op(2, 0.25)
    got = reference.rounded(op, "float32", np.array([math.nan, 1.0, 1.0]),
                            np.array([0.5, math.nan, 0.5]), weight=np.array([1.0, 1.0, math.nan]))
    assert np.isnan(got).all()
    assert mpmath.isnan(reference.focal_with_logits(math.nan, 1.0))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gamma": -1.0}, r"gamma must be finite and >= 0, got -1.0"),
    ({"gamma": math.nan}, r"gamma must be finite and >= 0"),
    ({"gamma": math.inf}, r"gamma must be finite and >= 0"),
    ({"alpha": math.nan}, r"alpha must be finite \(or None\)"),
    ({"alpha": -math.inf}, r"alpha must be finite \(or None\)"),
    ({"y": 1.5}, r"target must be in \[0, 1\], got 1.5"),
    ({"y": -2.0**-60}, r"target must be in \[0, 1\]"),
    ({"y": math.inf}, r"target must be in \[0, 1\], got inf"),
    ({"weight": -1.0}, r"weight must be finite and >= 0, got -1"),
    ({"weight": math.inf}, r"weight must be finite and >= 0, got inf"),
    ({"gamma": "two"}, r"gamma must be a number"),
])
def test_domain_errors_are_one_line_value_errors(kwargs, message):
    args = {"x": 1.0, "y": 0.5, "gamma": 2, "alpha": 0.25, "weight": 1.0} | kwargs
    for fn in (reference.focal_with_logits, reference.focal_with_logits_grad):
        with pytest.raises(ValueError, match=r"^focal_with_logits: " + message) as info:
            fn(**args)
        assert "\n" not in str(info.value)
    if "gamma" in kwargs or "alpha" in kwargs:
        with pytest.raises(ValueError, match=message):
            reference.focal_op(args["gamma"], args["alpha"])
    else:
        op = reference.focal_op(2, 0.25)
        with pytest.raises(ValueError, match=message):
            reference.rounded(op, "float32", np.full(3, args["x"]), args["y"],
                              weight=args["weight"])


def test_an_uncertain_value_raises_rather_than_guesses(monkeypatch):
    monkeypatch.setattr(focal, "MAX_PRECISION", 64)  # below the first working precision
    with pytest.raises(ReferenceUncertainError, match="not certified"):
        focal.value(False, 1.0, 0.5, 2, None, 1)


# --------------------------------------------------------------------------- bulk path


def test_op_names_are_canonical_and_registered_on_first_use():
    assert reference.focal_op() == "focal_with_logits:gamma=2:alpha=none"
    assert reference.focal_op(2.0, 0.25) == "focal_with_logits:gamma=2:alpha=0.25"
    assert reference.focal_op(np.float32(0.1), -1.5) == \
        f"focal_with_logits:gamma={float(np.float32(0.1))!r}:alpha=-1.5"
    with mp.workprec(100):
        odd = mpf(1) / 3  # a 100-bit value: no float64, spelled MANpEXP
    name = reference.focal_op(odd)
    man, e = odd._mpf_[1], odd._mpf_[2]
    assert name == f"focal_with_logits:gamma={man}p{e}:alpha=none"
    assert focal.parse_op(name) == (odd._mpf_, None)
    assert reference.focal_op(2, 0.25) in families.FAMILIES
    family = families.get_family(reference.focal_op(2, 0.25))
    assert family.fast is None and family.opaque and family.arguments == \
        ("input", "target", "weight")
    # a canonical name works without focal_op (another process, say): built on first use
    lazy = "focal_with_logits:gamma=3:alpha=0.5"
    assert lazy not in families.FAMILIES
    assert reference.rounded(lazy, "float64", np.array([1.0]), 0.0)[0] == \
        reference.round_to(ref(1.0, 0.0, 3, 0.5), "float64")
    assert lazy in losses.OPS
    for bad, match in (("focal_with_logits:gamma=2.0:alpha=none", "non-canonical"),
                       ("focal_with_logits:gamma=2", "malformed"),
                       ("focal_with_logits:gamma=x:alpha=none", "malformed"),
                       ("focal_with_logits:gamma=-1:alpha=none", "gamma must be finite"),
                       ("focal_with_logits:gamma=2:alpha=nan", "alpha must be finite")):
        with pytest.raises(ValueError, match=match):
            families.get_family(bad)
    with pytest.raises(ValueError, match="unknown op 'focal'"):
        families.get_family("focal")


def test_the_bulk_path_equals_the_scalar_path():
    op = reference.focal_op(2, 0.25)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(60) * 6, [0.0, -0.0, 50.0, -700.0, 1e10, -1e300,
                                                    np.inf, -np.inf]])
    y = rng.choice([0.0, 1.0, 0.5, 0.3, 2.0**-20], x.size)
    w = rng.choice([1.0, 0.5, 0.0, 2.0], x.size)
    for grad in (False, True):
        reps = [focal.value(grad, a, b, 2, 0.25, c) for a, b, c in zip(x, y, w, strict=True)]
        for dtype in DTYPES:
            fast.reset_stats()
            got = reference.rounded(op, dtype, x, y, weight=w, grad=grad)
            assert fast.STATS["points"] == 0  # no float64 kernel touched it
            want = np.array([reference.round_to(t, dtype) for t in reps])
            assert np.array_equal(got.view(np.uint64), want.view(np.uint64)), (dtype, grad)
            # and it is the oracle's rounding, point by point
            for i in range(0, x.size, 7):
                if np.isfinite(x[i]):
                    orc = oracle(float(x[i]), float(y[i]), 2, 0.25, float(w[i]), grad)
                    assert same_float(got[i], round_value(orc, dtype)) or \
                        (got[i] == 0 and round_value(orc, dtype) == 0), (i, dtype, grad)
        hi, lo = reference.exact_parts(op, x, y, weight=w, grad=grad)
        pairs = [points.double_double(t) for t in reps]
        assert np.array_equal(hi, [p[0] for p in pairs], equal_nan=True)
        assert np.array_equal(lo, [p[1] for p in pairs], equal_nan=True)
    scalar = reference.rounded(op, "float32", 1.5, 0.25, weight=2.0, grad=True)
    assert scalar.shape == () and scalar == reference.round_to(
        reference.focal_with_logits_grad(1.5, 0.25, 2, 0.25, 2.0), "float32")


def test_the_bulk_path_refuses_pos_weight_fast_and_reductions():
    op = reference.focal_op(5, None)
    with pytest.raises(ValueError, match=rf"^{op} has no pos_weight$"):
        reference.rounded(op, "float32", np.zeros(4), 1.0, pos_weight=2.0)
    with pytest.raises(ValueError, match=f"family {op} has no fast path"):
        fast.rounded(op, "float32", np.zeros(64), 1.0)
    with pytest.raises(ValueError, match="reductions are not supported"):
        reference.reduce(op, "mean", [1.0, 2.0], [0.0, 1.0])
    # pos_weight at its default 1 is fine
    assert reference.rounded(op, "float64", np.zeros(2), 1.0, pos_weight=1.0)[0] == \
        reference.round_to(reference.focal_with_logits(0.0, 1.0, 5), "float64")
