"""The certified focal loss on probabilities (reference/focal_prob.py, DESIGN.md section 10).

    focal(q, y, gamma, alpha, w) = w * alpha_t * (1 - p_t)**gamma * bce(q, y)

checked against an independent oracle written here: the textbook formula (p_t, 1 - p_t,
log q, log(1 - q), the chain-rule derivative with d p_t/dq = 2y - 1 and d bce/dq =
(1-y)/(1-q) - y/q, nothing simplified) evaluated by plain mpmath at 1200 bits plus twice
the binade span of the inputs (so that 1 - q, 1 - y and 1 - p_t are exact or nearly so
even for a subnormal q or y = 1 - 2**-30). Rounding on the oracle side is
reference_oracle.round_value (Fractions, not the reference's rounding); rounded values
are compared bit for bit, sign of zero included. The ends q = 0 and q = 1 are checked
against limits derived by hand, gamma = 0 against the "bce" family's own tuples.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from mpmath import mp, mpf

import reference
from reference import exact, families, fast, focal, focal_prob, losses, points
from reference.api import focal_probability as focal_loss
from reference.api import focal_probability_grad
from reference.engine import ReferenceUncertainError
from tests.reference.reference_oracle import (
    DTYPES,
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
TARGETS = (0.0, 0.25, 0.5, 1.0, 0.7, 2.0**-30, 2.0**-12, 1 - 2.0**-12, 1 - 2.0**-30)
SPECIAL_Q = (0.5, 2.0**-1074, 2.0**-1022, 2.0**-149, 1e-300, 2.0**-60, 1 - 2.0**-53,
             1 - 2.0**-24, 0.25, 0.75)


@pytest.fixture(autouse=True, scope="module")
def _registry_restored():
    """Families registered here (focal_prob_op, lazy names) are removed afterwards: other
    tests pin the registry to the two bce families."""
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


def _span(*values: Fraction) -> int:
    """The largest |binade| among the nonzero values."""
    out = 0
    for v in values:
        if v != 0:
            out = max(out, abs(v.numerator.bit_length() - v.denominator.bit_length()) + 2)
    return out


def _prec(fq: Fraction, fy: Fraction) -> int:
    return 1200 + 2 * _span(fq, 1 - fq, fy, 1 - fy)


def _textbook(mq, my, mg, mk, grad: bool):
    """The formula as written in the docs, for mpf arguments, at the precision in force."""
    pt = my * mq + (1 - my) * (1 - mq)
    focus = 1 - pt
    ce = -(my * mpmath.log(mq) + (1 - my) * mpmath.log(1 - mq))
    if not grad:
        return mk * focus ** mg * ce
    d_focus = -(my - (1 - my))                   # d(1 - p_t)/dq = -(2y - 1)
    d_ce = -(my / mq - (1 - my) / (1 - mq))
    d_power = 0 if mg == 0 else mg * focus ** (mg - 1) * d_focus
    return mk * (d_power * ce + focus ** mg * d_ce)


def oracle(q, y, gamma=2, alpha=None, w=1, grad=False) -> mpf:
    """0 < q < 1 (the ends have their own, hand-derived test)."""
    fq, fy, fg, fw = (to_fraction(v) for v in (q, y, gamma, w))
    assert 0 < fq < 1
    k = fw * _alpha_t(alpha, fy)
    with mp.workprec(_prec(fq, fy)):
        mq, my, mg, mk = (fraction_to_mpf(v) for v in (fq, fy, fg, k))
        return _textbook(mq, my, mg, mk, grad)


def ref(q, y, gamma=2, alpha=None, w=1, grad=False) -> mpf:
    return (focal_probability_grad if grad else focal_loss)(q, y, gamma, alpha, w)


def _check(q, y, gamma, alpha, w, grad, bits=105) -> list[str]:
    problems = mismatches(ref(q, y, gamma, alpha, w, grad), oracle(q, y, gamma, alpha, w, grad),
                          reference.round_to, bits=bits)
    return [f"q={q!r} y={y!r} gamma={gamma} alpha={alpha} w={w} grad={grad}: {p}"
            for p in problems]


def _prob_grid(rng: random.Random, n: int, lo: int = -60) -> list[float]:
    """n probabilities: half in the binades 2**lo .. 2**-1, half their mirror images
    next to 1 (1 - 2**e (1 + u), exact in float64 for e >= -52)."""
    out = []
    for i in range(n):
        e = rng.randint(lo, -2)
        t = math.ldexp(1 + rng.random(), e)
        out.append(t if i % 2 == 0 or e < -52 else 1 - t)
    return out


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_agrees_with_an_independent_high_precision_computation_in_every_format(gamma, alpha):
    """q over 2**-60 .. 1 - 2**-52 and the special values (subnormal, 1 - 2**-53, q = y),
    every target kind, loss and gradient: 105+ bits and the same rounding in
    float16/bfloat16/float32/float64."""
    rng = random.Random(f"{gamma}-{alpha}")
    problems = []
    count = 0
    for y in TARGETS:
        qs = [*_prob_grid(rng, 6), *rng.sample(SPECIAL_Q, 4)]
        if 0 < y < 1:
            qs.append(y)
        for q in qs:
            w = rng.choice((1.0, 0.5, 3.0))
            for grad in (False, True):
                problems += _check(q, y, gamma, alpha, w, grad)
                count += 1
    assert count >= len(TARGETS) * 10 * 2
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("gamma", [0.5, 2, 3.75])
def test_random_soft_labels_in_float32(gamma):
    """What Keras feeds it: float32 q and y, uniform and log-uniform, alpha 0.25."""
    rng = np.random.default_rng(int(gamma * 4))
    q = np.concatenate([rng.random(60), 2.0 ** -rng.uniform(1, 126, 30)]).astype(np.float32)
    y = np.concatenate([rng.random(60), rng.choice([0.1, 0.9, 0.5, 0.0, 1.0], 30)]
                       ).astype(np.float32)
    problems = []
    for a, b in zip(q.tolist(), y.tolist(), strict=True):
        if 0 < a < 1:
            for grad in (False, True):
                problems += _check(a, b, gamma, 0.25, 1.0, grad)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("q", SPECIAL_Q)
def test_the_special_probabilities_for_every_label_kind(q):
    """Each special q (subnormal, 1 - 2**-53, ...) against every target and gamma."""
    problems = []
    for y in (0.0, 0.5, 1.0, 0.3, 1 - 2.0**-30):
        for gamma in (0.5, 2, 5):
            for grad in (False, True):
                problems += _check(q, y, gamma, 0.25, 1.0, grad)
    assert not problems, "\n".join(problems[:20])


def test_soft_gradients_next_to_their_zero_escalate_and_stay_correct():
    """For y = 0.3, gamma = 2 the gradient changes sign at some q* < y: there the focus
    term g (1-2y) m bce > 0 balances m**2 (q-y)/(q(1-q)) < 0. At the float64 neighbours
    of q* the two cancel to ~53 bits, so the first precision cannot decide them; the
    values are still right (and the zero itself is never hit: Baker)."""
    y, gamma = 0.3, 2
    with mp.workprec(300):
        def g(t):
            return _textbook(t, mpf(y), mpf(gamma), mpf(1), True)
        assert g(mpf("0.05")) < 0 < g(mpf(y))
        star = mpmath.findroot(g, (mpf("0.05"), mpf(y)), solver="anderson")
    assert 0.05 < star < y
    qs = [float(star)]
    for _ in range(4):
        qs = [math.nextafter(qs[0], 0.0), *qs, math.nextafter(qs[-1], 1.0)]
    problems = []
    wps = []
    for q in qs:
        _, wp = focal_prob.evaluate_point(True, q, y, gamma, None, 1.0)
        wps.append(wp)
        problems += _check(q, y, gamma, None, 1.0, True)
    assert not problems, "\n".join(problems)
    assert max(wps) > focal.START_PRECISION, wps
    assert max(wps) <= 1024, wps


def test_a_tiny_gamma_puts_the_gradient_next_to_a_rational_and_is_still_decided():
    """gamma = 2**-100: the gradient is within ~2**-100 relative of K (q-y)/(q(1-q)),
    the dyadic 2 at q = 1/2, y = 0 (-2 at y = 1): Ziv needs a few more precisions."""
    problems = []
    for q, y in ((0.5, 0.0), (0.5, 1.0), (0.25, 0.0), (0.75, 0.3)):
        for grad in (False, True):
            problems += _check(q, y, 2.0**-100, None, 1.0, grad)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("q", [2.0**-1022, 2.0**-300, 2.0**-1074,
                               Fraction(1, 4) + Fraction(1, 2**300) * 12345678901234567,
                               Fraction(3, 4) - Fraction(1, 2**300) * 12345678901234567])
def test_logs_of_exact_numbers_next_to_one_quarter(q):
    """mpmath 1.3.0's mpf_log returns garbage for an x in [1/4, 1/2) within
    2**-(prec+20) of 1/4; m = 1 - p_t is such a number for y = 1/4 and a tiny q, and so
    are q and 1 - q themselves for long exact inputs. focal_prob._log_exact steps
    around it: the values agree with the oracle."""
    problems = []
    for y in (0.25, 0.0, 1.0):
        for gamma in (0.5, 2):
            for grad in (False, True):
                problems += _check(q, y, gamma, None, 1.0, grad)
    assert not problems, "\n".join(problems)


def test_the_gradient_matches_mpmath_diff_at_100_digits():
    """An independent derivative: mpmath.diff of the textbook loss at 100 digits."""
    problems = []
    for q in (2.0**-6, 0.3, 0.5, 0.77, 1 - 2.0**-10):
        for y in (0.0, 0.25, 0.5, 0.9, 1.0):
            for gamma in (0.5, 2, 5):
                alpha = 0.25
                got = ref(q, y, gamma, alpha, 1.5, grad=True)
                k = Fraction(3, 2) * _alpha_t(alpha, Fraction(y))
                with mp.workdps(100):
                    mg, mk, my = mpf(gamma), fraction_to_mpf(k), mpf(y)
                    want = mpmath.diff(lambda t, my=my, mg=mg, mk=mk:
                                       _textbook(t, my, mg, mk, False), mpf(q))
                if agree_bits(got, want) < 100:
                    problems.append(f"q={q} y={y} gamma={gamma}: {mpmath.nstr(got, 30)} vs "
                                    f"{mpmath.nstr(want, 30)}")
    assert not problems, "\n".join(problems)


def test_hand_checked_values():
    with mp.workprec(300):
        ln2 = mpmath.log(2)
        cases = [
            # q = 1/4, y = 1, gamma = 2: (1 - 1/4)**2 * (-log(1/4)) = 0.5625 * 2 log 2
            #   = 0.5625 * 1.3862943611198906 = 0.77979057812993847...
            ((0.25, 1.0, 2, None, 1), mpf(9) / 16 * 2 * ln2),
            # with alpha = 0.25: alpha_t = alpha = 1/4, so a quarter of that
            ((0.25, 1.0, 2, 0.25, 1), mpf(9) / 64 * 2 * ln2),
            # q = 1/2: 1 - p_t = 1/2 and bce = log 2 for every y: 2**-g log 2
            ((0.5, 1.0, 2, None, 1), ln2 / 4),
            ((0.5, 0.0, 0.5, None, 1), ln2 / mpmath.sqrt(2)),
            ((0.5, 0.5, 1, None, 3), 3 * ln2 / 2),
            # y = 1/2: 1 - p_t = 1/2 for every q, bce = -(log q + log(1-q))/2;
            #   q = 1/4, g = 2: (1/4) * (2 log 2 + 2 log 2 - log 3)/2 = (4 log 2 - log 3)/8
            ((0.25, 0.5, 2, None, 1), (4 * ln2 - mpmath.log(3)) / 8),
        ]
        grads = [
            # d/dq (1-q)**2 (-log q) = 2 (1-q) log q - (1-q)**2 / q; at 1/2: -log 2 - 1/2
            ((0.5, 1.0, 2, None, 1), -ln2 - mpf(1) / 2),
            # mirror: d/dq q**2 (-log(1-q)) at 1/2: log 2 + 1/2
            ((0.5, 0.0, 2, None, 1), ln2 + mpf(1) / 2),
            # y = 1/2: K 2**-g (q - 1/2)/(q (1-q)): g = 2, q = 1/4 gives -1/3 (rational)
            ((0.25, 0.5, 2, None, 1), -mpf(1) / 3),
            ((0.75, 0.5, 2, None, 1), mpf(1) / 3),
            ((0.25, 0.5, 0.5, None, 1), -mpf(4) / 3 / mpmath.sqrt(2)),
        ]
    for args, want in cases:
        assert agree_bits(ref(*args), want) >= 108, args
    for args, want in grads:
        assert agree_bits(ref(*args, grad=True), want) >= 108, args
    # y = 1/2, integer gamma: K 2**-g (q - 1/2)/(q (1-q)) is rational, and can be dyadic:
    # K = 3 (1/4 * 1/2 + 3/4 * 1/2) = 3/2, q = 1/4, g = 5: 3/2 * 1/32 * (-4/3) = -1/16
    assert focal_prob.evaluate_point(True, 0.25, 0.5, 5, 0.25, 3.0) == \
        (exact.to_tuple(-1 / 16), 0)
    # the rational gradient rounds like the rational (its representative is no tie)
    third = ref(0.25, 0.5, 2, None, 1, grad=True)
    for dtype in DTYPES:
        with mp.workprec(2000):
            assert same_float(reference.round_to(third, dtype), round_value(-mpf(1) / 3, dtype))


@pytest.mark.parametrize("gamma", [0.5, 1, 2, 5])
def test_the_gradient_is_exactly_zero_at_q_equals_y_equals_one_half(gamma):
    for alpha, w in ((None, 1), (0.25, 3.0), (2.0, 0.5)):
        assert focal_prob.evaluate_point(True, 0.5, 0.5, gamma, alpha, w) == (exact.ZERO, 0)
        assert ref(0.5, 0.5, gamma, alpha, w, grad=True) == 0
        # and nowhere else on the line y = 1/2: a nonzero rational (times 2**(1-g))
        for q in (0.5 - 2.0**-53, 0.5 + 2.0**-53, 0.25):
            assert ref(q, 0.5, gamma, alpha, w, grad=True) != 0


# --------------------------------------------------------------------------- identities


def _float16_probabilities(step: int = 1) -> list[float]:
    bits = np.arange(0, 0x3C01, step, dtype=np.uint16)  # 0 .. 1.0
    return [*bits.view(np.float16).astype(np.float64).tolist(), 1.0]


@pytest.mark.parametrize("y", [0.0, 0.5, 1.0, 0.3])
def test_gamma_zero_is_bce_exactly(y):
    """gamma = 0: the focus factor is exactly 1, so with alpha None the tuple is bce's own
    (q = 0 and 1, where bce has its limits, included) on every other float16 probability
    and the hard cases (tiny, 1 - 2**-53, outside [0, 1], NaN)."""
    qs = [*_float16_probabilities(2), 2.0**-1074, 1e-300, 1 - 2.0**-53, 1 - 2.0**-30,
          -0.0, 1.5, -1e-300, math.inf, math.nan]
    bad = []
    for q in qs:
        for grad in (False, True):
            got = focal_prob.value(grad, q, y, 0, None, 1)
            want = losses.value("bce", grad, q, y)
            if got != want:
                bad.append((q, grad))
    assert not bad, bad[:10]


def test_gamma_zero_with_alpha_is_bce_with_the_weight_alpha_t_times_w():
    rng = random.Random(3)
    for q in [*_prob_grid(rng, 30), 0.0, 1.0, 0.5, 2.0**-1074, 1 - 2.0**-53]:
        for y in (0.0, 0.3, 1.0, 0.5):
            for alpha, w in ((0.25, 1.0), (0.9, 3.0), (2.0, 0.5)):
                k = _alpha_t(alpha, Fraction(y)) * Fraction(w)  # exact (a dyadic Fraction)
                for grad in (False, True):
                    got = focal_prob.value(grad, q, y, 0.0, alpha, w)
                    assert got == losses.value("bce", grad, q, y, k), (q, y, alpha, w, grad)


def test_alpha_t_scales_the_value():
    """focal(alpha) = alpha_t * focal(None): to 105 bits; alpha_t = 0 is an exact 0 (even at
    the ends); a negative alpha_t (alpha outside [0, 1]) flips the sign."""
    rng = random.Random(5)
    for q in [*_prob_grid(rng, 10), 0.5]:
        for y in (0.0, 0.25, 0.5, 1.0):
            for gamma in (0.5, 2):
                for grad in (False, True):
                    base = ref(q, y, gamma, None, 1.0, grad)
                    for alpha in (0.25, 0.75, 2.0, -1.0):
                        at = _alpha_t(alpha, Fraction(y))
                        got = ref(q, y, gamma, alpha, 1.0, grad)
                        if at == 0 or base == 0:
                            assert got == 0
                            continue
                        with mp.workprec(400):
                            want = base * fraction_to_mpf(at)
                        assert agree_bits(got, want) >= 105, (q, y, gamma, alpha, grad)
    for q in (0.0, 0.3, 1.0):
        for grad in (False, True):
            assert ref(q, 0.0, 2, 1.0, 1.0, grad) == 0    # alpha_t = 1 - alpha = 0
            assert ref(q, 1.0, 2, 0.0, 1.0, grad) == 0    # alpha_t = alpha = 0
            assert ref(q, 0.5, 2, 0.25, 0.0, grad) == 0   # w = 0


def test_symmetry_q_to_1_minus_q_with_y_to_1_minus_y_and_alpha_to_1_minus_alpha():
    """focal(q, y, alpha) = focal(1-q, 1-y, 1-alpha) (p_t and alpha_t unchanged), the
    gradient negated: the same rounding in every format (1-q, 1-y taken exactly)."""
    rng = random.Random(11)
    for q in [*_prob_grid(rng, 16, -80), 0.5, 2.0**-1074, 1 - 2.0**-53, 0.0, 1.0]:
        q2 = Fraction(1) - Fraction(q)  # exact, even where 1 - q is no float64
        for y in (0.0, 0.25, 0.5, 1.0, 2.0**-60, 0.1):
            y2 = Fraction(1) - Fraction(y)
            for gamma in (0.5, 2):
                for alpha in (None, 0.25):
                    alpha2 = None if alpha is None else 1 - alpha
                    for grad in (False, True):
                        a = ref(q, y, gamma, alpha, 2.0, grad)
                        b = ref(q2, y2, gamma, alpha2, 2.0, grad)
                        if grad:
                            b = negate_exact(b) if mpmath.isfinite(b) else -b
                        for dtype in DTYPES:
                            ra, rb = reference.round_to(a, dtype), reference.round_to(b, dtype)
                            assert same_float(ra, rb) or (ra == rb == 0), \
                                (q, y, gamma, alpha, grad, dtype, ra, rb)


# --------------------------------------------------------------------------- the ends


def _end_limit(q: float, y: Fraction, gamma, k: Fraction, grad: bool):
    """The limits derived by hand (q -> 0+ or 1-, the other arguments fixed).

    At q -> 0 (m = 1 - p_t -> y, bce = -y log q - (1-y) log(1-q)):
      y = 0: m = q, bce = -log(1-q) = q + O(q**2): loss ~ K q**(g+1) -> 0;
             grad ~ K (g+1) q**g: 0 for g > 0, K for g = 0 (d/dq -log(1-q) at 0);
      y > 0: loss ~ -K y**(g+1) log q -> sign(K) inf; the term m**g d bce/dq ~
             -K y**(g+1)/q beats the focus term's log q: grad -> -sign(K) inf.
    q -> 1 is the mirror image (y -> 1 - y, the gradient negated)."""
    s = (k > 0) - (k < 0)
    label = y if q == 0 else 1 - y
    flip = -1 if q == 1 else 1
    if label == 0:
        if not grad:
            return 0.0
        return 0.0 if gamma != 0 else float(flip * k)
    if not grad:
        return s * math.inf
    return -flip * s * math.inf


@pytest.mark.parametrize("gamma", GAMMAS)
def test_the_ends_match_the_hand_derived_limits(gamma):
    for y in (0.0, 0.5, 1.0, 0.3):
        for alpha, w in ((None, 1.0), (0.25, 2.0), (2.0, 1.0), (-1.0, 0.5)):
            k = Fraction(w) * _alpha_t(alpha, Fraction(y))
            for q in (0.0, 1.0):
                for grad in (False, True):
                    got = ref(q, y, gamma, alpha, w, grad)
                    want = _end_limit(q, Fraction(y), gamma, k, grad)
                    if k == 0:
                        want = 0.0
                    assert got == want, (q, y, gamma, alpha, w, grad, got, want)
                    if gamma and (k == 0 or want == 0):
                        assert focal_prob.evaluate_point(grad, q, y, gamma, alpha, w) == \
                            (exact.ZERO, 0)


@pytest.mark.parametrize("gamma", [0.5, 1, 2, 5])
def test_the_ends_are_the_limits_of_the_finite_values(gamma):
    """Next to q = 0 (and, mirrored, q = 1): y = 0 gives loss ~ K q**(g+1), grad ~
    K (g+1) q**g; y > 0 gives grad ~ -K y**(g+1) / q, loss ~ -K y**(g+1) log q."""
    t = 2.0**-40
    for y in (0.0, 0.5, 1.0, 0.3):
        for alpha, w in ((None, 1.0), (2.0, 1.0)):
            k = fraction_to_mpf(Fraction(w) * _alpha_t(alpha, Fraction(y)))
            for side in (0, 1):
                q = t if side == 0 else 1 - t
                sgn = 1 if side == 0 else -1  # the mirror negates the gradient
                loss, grad = ref(q, y, gamma, alpha, w), ref(q, y, gamma, alpha, w, True)
                with mp.workprec(300):
                    label = mpf(y) if side == 0 else 1 - mpf(y)
                    if label == 0:
                        want_loss = k * mpf(t) ** (gamma + 1)
                        want_grad = sgn * k * (gamma + 1) * mpf(t) ** gamma
                    else:
                        want_loss = -k * label ** (gamma + 1) * mpmath.log(t)
                        want_grad = -sgn * k * label ** (gamma + 1) / t
                assert agree_bits(grad, want_grad) >= 25, (gamma, y, alpha, side)
                assert agree_bits(loss, want_loss) >= 25, (gamma, y, alpha, side)


# --------------------------------------------------------------------------- NaN, domain


def test_nan_and_q_outside_0_1_give_nan():
    for args in ((math.nan, 0.5, 1.0), (0.5, math.nan, 1.0), (0.5, 0.5, math.nan),
                 (math.nan, 2.0, 1.0), (math.inf, math.nan, 1.0)):
        for gamma in (0, 2):
            for grad in (False, True):
                assert focal_prob.value(grad, args[0], args[1], gamma, 0.25, args[2]) == \
                    exact.NAN
    # not a probability: NaN, as the "bce" family (even where alpha_t w = 0)
    for q in (-0.5, -2.0**-1074, 1 + 2.0**-52, 2.0, math.inf, -math.inf):
        for gamma in (0, 0.5, 2):
            for grad in (False, True):
                for alpha, w in ((None, 1.0), (0.25, 0.0)):
                    assert focal_prob.value(grad, q, 0.5, gamma, alpha, w) == exact.NAN
                assert losses.value("bce", grad, q, 0.5) == exact.NAN
    op = reference.focal_prob_op(2, 0.25)
    got = reference.rounded(op, "float32", np.array([math.nan, 0.5, 0.5, 1.5, -1.0]),
                            np.array([0.5, math.nan, 0.5, 0.5, 0.0]),
                            weight=np.array([1.0, 1.0, math.nan, 1.0, 1.0]))
    assert np.isnan(got).all()
    assert mpmath.isnan(focal_loss(math.nan, 1.0))


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
    args = {"q": 0.25, "y": 0.5, "gamma": 2, "alpha": 0.25, "weight": 1.0} | kwargs
    for fn in (focal_loss, focal_probability_grad):
        with pytest.raises(ValueError, match=r"^focal: " + message) as info:
            fn(**args)
        assert "\n" not in str(info.value)
    if "gamma" in kwargs or "alpha" in kwargs:
        with pytest.raises(ValueError, match=r"^focal: " + message):
            reference.focal_prob_op(args["gamma"], args["alpha"])
    else:
        op = reference.focal_prob_op(2, 0.25)
        with pytest.raises(ValueError, match=message):
            reference.rounded(op, "float32", np.full(3, args["q"]), args["y"],
                              weight=args["weight"])


def test_an_uncertain_value_raises_rather_than_guesses(monkeypatch):
    monkeypatch.setattr(focal, "MAX_PRECISION", 64)  # below the first working precision
    with pytest.raises(ReferenceUncertainError, match=r"^focal: not certified"):
        focal_prob.value(False, 0.25, 0.5, 2, None, 1)


# --------------------------------------------------------------------------- bulk path


def test_op_names_are_canonical_and_registered_on_first_use():
    assert reference.focal_prob_op() == "focal:gamma=2:alpha=none"
    assert reference.focal_prob_op(2.0, 0.25) == "focal:gamma=2:alpha=0.25"
    assert focal_prob.op_name(np.float32(0.1), -1.5) == \
        f"focal:gamma={float(np.float32(0.1))!r}:alpha=-1.5"
    with mp.workprec(100):
        odd = mpf(1) / 3  # a 100-bit value: no float64, spelled MANpEXP
    name = focal_prob.op_name(odd)
    assert name == f"focal:gamma={odd._mpf_[1]}p{odd._mpf_[2]}:alpha=none"
    assert focal_prob.parse_op(name) == (odd._mpf_, None)
    family = families.get_family("focal:gamma=2:alpha=0.25")
    assert family.name in families.FAMILIES
    assert family.fast is None and family.opaque and family.input_kind == "probability"
    assert family.arguments == ("input", "target", "weight")
    assert "p_t = q*y + (1-q)*(1-y)" in family.formula and "d/dq" in family.formula
    # the logits family of the same parameters is another family
    assert families.get_family(reference.focal_op(2, 0.25)).input_kind == "logit"
    lazy = "focal:gamma=3:alpha=0.5"
    assert lazy not in families.FAMILIES
    assert reference.rounded(lazy, "float64", np.array([0.3]), 0.0)[0] == \
        reference.round_to(ref(0.3, 0.0, 3, 0.5), "float64")
    assert lazy in losses.OPS
    for bad, match in (("focal:gamma=2.0:alpha=none", "non-canonical"),
                       ("focal:gamma=2", "malformed"),
                       ("focal:gamma=x:alpha=none", "malformed"),
                       ("focal:gamma=-1:alpha=none", r"^focal: gamma must be finite"),
                       ("focal:gamma=2:alpha=nan", r"^focal: alpha must be finite")):
        with pytest.raises(ValueError, match=match):
            families.get_family(bad)
    with pytest.raises(ValueError, match="unknown op 'focal'"):
        families.get_family("focal")


def test_rounded_on_arrays_equals_the_scalar_path_and_the_oracle():
    op = "focal:gamma=2:alpha=none"
    rng = np.random.default_rng(1)
    q = np.concatenate([rng.random(40), [0.0, 1.0, 0.5, 2.0**-1074, 1 - 2.0**-53, 1e-300,
                                         2.0**-149, 0.25, 0.75, 1.5, -0.25]])
    y = rng.choice([0.0, 1.0, 0.5, 0.3, 2.0**-20], q.size)
    y[42] = 0.5     # q = y = 1/2: the gradient's exact zero
    y[-4:-2] = 0.5  # q = 1/4, 3/4 on y = 1/2: a rational gradient
    w = rng.choice([1.0, 0.5, 0.0, 2.0], q.size)
    for grad in (False, True):
        reps = [focal_prob.value(grad, a, b, 2, None, c) for a, b, c in zip(q, y, w, strict=True)]
        for dtype in DTYPES:
            fast.reset_stats()
            got = reference.rounded(op, dtype, q, y, weight=w, grad=grad)
            assert fast.STATS["points"] == 0  # the mpmath path: no float64 kernel
            want = np.array([reference.round_to(t, dtype) for t in reps])
            assert np.array_equal(got.view(np.uint64), want.view(np.uint64)), (dtype, grad)
            for i in range(0, q.size, 5):
                if 0 < q[i] < 1:
                    orc = round_value(oracle(float(q[i]), float(y[i]), 2, None, float(w[i]),
                                             grad), dtype)
                    assert same_float(got[i], orc) or (got[i] == 0 and orc == 0), \
                        (i, dtype, grad)
        hi, lo = reference.exact_parts(op, q, y, weight=w, grad=grad)
        pairs = [points.double_double(t) for t in reps]
        assert np.array_equal(hi, [p[0] for p in pairs], equal_nan=True)
        assert np.array_equal(lo, [p[1] for p in pairs], equal_nan=True)
    scalar = reference.rounded(op, "float32", 0.3, 0.25, weight=2.0, grad=True)
    want = reference.round_to(focal_probability_grad(0.3, 0.25, 2, None, 2.0), "float32")
    assert scalar.shape == () and scalar == want


def test_the_bulk_path_refuses_pos_weight_fast_and_reductions():
    op = reference.focal_prob_op(5, None)
    with pytest.raises(ValueError, match=rf"^{op} has no pos_weight$"):
        reference.rounded(op, "float32", np.full(4, 0.5), 1.0, pos_weight=2.0)
    with pytest.raises(ValueError, match=f"family {op} has no fast path"):
        fast.rounded(op, "float32", np.full(64, 0.5), 1.0)
    with pytest.raises(ValueError, match="reductions are not supported"):
        reference.reduce(op, "mean", [0.25, 0.5], [0.0, 1.0])
    assert reference.rounded(op, "float64", np.full(2, 0.5), 1.0, pos_weight=1.0)[0] == \
        reference.round_to(focal_loss(0.5, 1.0, 5), "float64")
