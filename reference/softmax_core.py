"""The certified evaluation behind softmax.py: exact row coefficients, the interval of
S = sum_{k != M} exp(d_k) and Ziv's loop over "exact part + transcendental tail".

Certification (as focal.py): at working precision wp (128, 256, ... up to
engine.MAX_PRECISION) the tail is an interval that provably holds it (libmp directed
roundings; each exp and log result widened by 4 units of its precision, so the bound
does not rest on mpmath's last bit). S is summed in exact fixed point from the floor and
ceiling of each widened term; terms that are below 2**-(p+4) S / K each are only bounded,
by exp(d) < 2**(1.4414 d), never evaluated (exp(-1e10) costs nothing). The value
interval is accepted when engine._decided holds for it (inside one rounding cell of
float64, hence of every format); else wp doubles; past the cap ReferenceUncertainError.

Sticky tail: where the exact part D is dyadic and the whole tail lies below the rounding
grid around D (logits [1e10, 0] with label 1: 1e10 + about exp(-1e10)), the value rounds
like D + sign(tail) 2**(k-1) (engine._sticky_exponent): certified at the first
precision, whatever the exponent. A rational D (label smoothing) is never a boundary:
finite precision decides it. The tail is never 0 when some d_k < 0: by
Lindemann-Weierstrass log1p(S), S/(1+S) and exp(d)/(1+S) are then transcendental, so the
loop ends. Equal finite logits (S an integer) leave exact values except for log1p(S).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from mpmath import libmp

from . import exact
from .engine import (
    MAX_PRECISION,
    ReferenceUncertainError,
    _decided,
    _sticky_exponent,
    as_dyadic,
    rational_representative,
)
from .exact import ONE, ZERO, Tuple
from .focal import Interval, _idiv_pos, _ilog, _imul, _iscale, _slack

Number = Tuple | Fraction
START_PRECISION = 128
LOG2E_LOWER = libmp.from_man_exp(369, -8)  # 1.44140625 < log2(e)

_F = libmp.round_floor
_C = libmp.round_ceiling
_N = libmp.round_nearest
_add = libmp.mpf_add
_msb = exact.msb


# --------------------------------------------------------------------------- exact parts


def sign(n: Number) -> int:
    if isinstance(n, Fraction):
        return (n > 0) - (n < 0)
    return exact.sign(n)


def frac(n: Number) -> Fraction:
    return n if isinstance(n, Fraction) else exact.to_fraction(n)


def exact_sum(ts: Any) -> Tuple:
    """Exact sum of finite tuples, in one integer addition per term."""
    terms = [(-man if s else man, e) for s, man, e, _ in ts if man]
    if not terms:
        return ZERO
    low = min(e for _, e in terms)
    return libmp.from_man_exp(sum(m << (e - low) for m, e in terms), low)


def represent(n: Number) -> Tuple:
    """A tuple rounding like the exact number n in every format (n itself when dyadic)."""
    n = as_dyadic(n)
    return rational_representative(n) if isinstance(n, Fraction) else n


class Target:
    """The coefficients a_k = w_k p_k, p = (1-E) t + E/K, of one row, kept exact as
    a_k = (1-E) b_k + (E/K) w_k with dyadic b_k = w_k t_k (stored sparsely)."""

    def __init__(self, k: int, b: dict[int, Tuple], w: list[Tuple] | None, e: Tuple) -> None:
        self.k, self.b, self.w, self.e = k, b, w, exact.to_fraction(e)

    def weight(self, j: int) -> Tuple:
        return ONE if self.w is None else self.w[j]

    def _mix(self, bx: Tuple, wx: Callable[[], Tuple]) -> Number:
        if self.e == 0:
            return bx
        return as_dyadic((1 - self.e) * exact.to_fraction(bx) +
                         self.e * exact.to_fraction(wx()) / self.k)

    def a(self, j: int) -> Number:
        return self._mix(self.b.get(j, ZERO), lambda: self.weight(j))

    def combo(self, xs: dict[int, Tuple]) -> Number:
        """sum_k a_k x_k over the classes k of xs, exactly."""
        bx = exact_sum(exact.mul(b, xs[j]) for j, b in self.b.items() if j in xs)
        return self._mix(bx, lambda: exact_sum(exact.mul(self.weight(j), x)
                                                for j, x in xs.items()))

    def total(self) -> Number:
        """W = sum_k a_k."""
        return self._mix(exact_sum(self.b.values()), lambda: libmp.from_int(self.k)
                         if self.w is None else exact_sum(self.w))


# --------------------------------------------------------------------------- certification


def _num_interval(n: Number, p: int) -> Interval:
    if isinstance(n, Fraction):
        return (libmp.from_rational(n.numerator, n.denominator, p, _F),
                libmp.from_rational(n.numerator, n.denominator, p, _C))
    return n, n


def certify(d: Number, tail: Callable[[int], Interval], margin: int,
            what: Callable[[], str]) -> Tuple:
    """Representative of V = d + T, d exact, tail(q) an interval holding T (Ziv's loop)."""
    d = as_dyadic(d)
    wp = START_PRECISION
    while wp <= MAX_PRECISION:
        q = wp + margin
        tl, th = tail(q)
        if isinstance(d, Fraction):
            dl, dh = _num_interval(d, q + 8)
            lo, hi = _add(dl, tl, q, _F), _add(dh, th, q, _C)
        elif d != ZERO:
            if tl != ZERO and th != ZERO and tl[0] == th[0]:
                k = _sticky_exponent(d)
                if max(_msb(tl), _msb(th)) <= k - 2:  # |T| < 2**(k-1): a sticky bit
                    return exact.add(d, (tl[0], 1, k - 1, 1))
            lo, hi = _add(d, tl, q, _F), _add(d, th, q, _C)
        else:
            lo, hi = tl, th
        if lo != ZERO and hi != ZERO and lo[0] == hi[0]:
            hair = (0, 1, min(_msb(lo), _msb(hi)) - q - 8, 1)  # V in the OPEN interval
            lo, hi = exact.sub(lo, hair), exact.add(hi, hair)
            if _decided(lo, hi):
                return libmp.mpf_shift(exact.add(lo, hi), -1)
        wp *= 2
    raise ReferenceUncertainError(f"softmax: not certified at {MAX_PRECISION} bits: {what()}")


class Finite:
    """The finite classes of a row: exact shifts d_k = l_k - m <= 0, and intervals of
    S = sum_{k != M} exp(d_k) and of the functions of it that the forms use."""

    def __init__(self, logits: dict[int, Tuple]) -> None:
        guess = {j: _approx(v) for j, v in logits.items()}  # monotone float64 guesses
        big = max(guess.values())
        self.m = _max_tuple([v for j, v in logits.items() if guess[j] >= big])
        self.top = next(j for j, v in logits.items() if v == self.m)  # M
        self.d = {j: exact.sub(v, self.m) for j, v in logits.items()}
        self.ones = sum(1 for j, v in self.d.items() if v == ZERO and j != self.top)
        self.negs = [v for v in self.d.values() if v != ZERO]
        below = [j for j, v in self.d.items() if v != ZERO]
        # the largest d_k < 0, by exact comparison among the largest guesses (guesses
        # saturate to -inf past 2**1021: a wrong pick would make the summation cut huge)
        top_guess = max((guess[j] for j in below), default=0.0)
        self.near = _max_tuple([self.d[j] for j in below if guess[j] >= top_guess]) \
            if below else ZERO
        self.margin = 20 + len(logits).bit_length()
        self._s: dict[int, Interval] = {}
        self._one_s: dict[int, Interval] = {}
        self._log1p: dict[int, Interval] = {}
        self._exps: dict[tuple[int, Tuple], Tuple] = {}  # (p, d) -> exp(d) to p bits

    @property
    def exact(self) -> bool:
        """S = 0 (a single finite class): every value is exact."""
        return not self.ones and not self.negs

    def certify(self, d: Number, tail: Callable[[int], Interval], what: Callable[[], str]
                ) -> Tuple:
        return certify(d, tail, self.margin, what)

    def _exp(self, v: Tuple, p: int) -> Tuple:
        key = (p, v)
        r = self._exps.get(key)
        if r is None:
            r = self._exps[key] = libmp.mpf_exp(v, p, _N)
        return r

    def s(self, q: int) -> Interval:
        if q not in self._s:
            self._s[q] = self._sum(q + 8)
        return self._s[q]

    def _sum(self, p: int) -> Interval:
        if not self.negs:
            s = libmp.from_int(self.ones)
            return s, s
        n = len(self.negs) + self.ones
        # any term bounds S from below (near: about the largest)
        s_msb = 0 if self.ones else _msb(libmp.mpf_exp(self.near, 64, _F)) - 1
        cut = p + 4 + n.bit_length() - s_msb  # terms below 2**-cut are only bounded
        thr = libmp.mpf_div(libmp.from_int(-cut), LOG2E_LOWER, 64, _F)
        fix = cut + 2  # fixed point in units of 2**-fix: at most 2n units lost
        lo = hi = self.ones << fix
        small = 0
        for v in self.negs:
            if libmp.mpf_le(v, thr):  # exp(v) < 2**(1.4414 v) <= 2**-cut
                small += 1
                continue
            _, man, e, bc = self._exp(v, p)
            sh = e + fix
            if sh >= 0:
                f = c = man << sh
            else:
                f = man >> -sh
                c = f + 1
            sl = e + bc - 1 - p + 3 + fix  # 4 units in the last place of the p-bit result
            slack = 1 << sl if sl >= 0 else 1
            lo += f - slack
            hi += c + slack
        hi += small << (fix - cut)
        return libmp.from_man_exp(max(lo, 0), -fix), libmp.from_man_exp(hi, -fix)

    def e(self, j: int, q: int) -> Interval:
        """exp(d_j)."""
        v = self.d[j]
        if v == ZERO:
            return ONE, ONE
        p = q + 8
        r = self._exp(v, p)
        sl = _slack(r, p)
        return exact.sub(r, sl), exact.add(r, sl)

    def log1p_s(self, q: int) -> Interval:
        if q not in self._log1p:
            self._log1p[q] = self._log1p_s(q + 8, *self.s(q))
        return self._log1p[q]

    @staticmethod
    def _log1p_s(p: int, lo: Tuple, hi: Tuple) -> Interval:
        if _msb(hi) < -(p + 4):  # S - S**2/2 <= log1p(S) <= S, and that narrow
            sq = libmp.mpf_shift(libmp.mpf_mul(lo, lo, p, _C), -1)
            return _add(lo, exact.neg(sq), p, _F), hi
        pp = p + max(0, -_msb(lo))  # 1 + S to within 2**-p S
        return _ilog((_add(ONE, lo, pp, _F), _add(ONE, hi, pp, _C)), p)

    def one_plus_s(self, q: int) -> Interval:
        """1 + S to q + 8 relative bits (no cancellation: only divisions use it)."""
        if q not in self._one_s:
            lo, hi = self.s(q)
            self._one_s[q] = _add(ONE, lo, q + 8, _F), _add(ONE, hi, q + 8, _C)
        return self._one_s[q]

    def s_ratio(self, q: int) -> Interval:
        """S / (1 + S), increasing in S."""
        p = q + 8
        (lo, hi), (olo, ohi) = self.s(q), self.one_plus_s(q)
        return libmp.mpf_div(lo, ohi, p, _F), libmp.mpf_div(hi, olo, p, _C)

    def tied_excess(self, q: int) -> Interval:
        """delta / ((1 + n)(1 + n + delta)), delta = sum_k exp(d_k) over d_k < 0 and n the
        other classes tied at the top (S = n + delta), every term evaluated: the amount by
        which S/(1+S) exceeds, and a tied class's softmax falls short of, the rational
        n/(1+n) and 1/(1+n). Only used when every d_k < 0 lies below the summation cut,
        where the ordinary forms see S = n exactly."""
        p = q + 8
        lo = hi = ZERO
        for v in self.negs:
            r = self._exp(v, p)
            sl = _slack(r, p)
            lo = _add(lo, exact.sub(r, sl), p, _F)
            hi = _add(hi, exact.add(r, sl), p, _C)
        one = libmp.from_int(1 + self.ones)
        den = (libmp.mpf_mul(one, _add(one, lo, p, _F), p, _F),
               libmp.mpf_mul(one, _add(one, hi, p, _C), p, _C))
        return libmp.mpf_div(lo, den[1], p, _F), libmp.mpf_div(hi, den[0], p, _C)

    def softmax(self, j: int, q: int) -> Interval:
        """exp(d_j) / (1 + S)."""
        if j == self.top:
            olo, ohi = self.one_plus_s(q)
            return libmp.mpf_div(ONE, ohi, q + 8, _F), libmp.mpf_div(ONE, olo, q + 8, _C)
        return _idiv_pos(self.e(j, q), self.one_plus_s(q), q + 8)


def _approx(v: Tuple) -> float:
    """A float64 rounding of a finite tuple (monotone; +-inf beyond the range)."""
    if _msb(v) > 1020:
        return -np.inf if v[0] else np.inf
    return libmp.to_float(v) if _msb(v) > -1100 else 0.0


def _max_tuple(values: list[Tuple]) -> Tuple:
    """The largest of finite tuples, by exact comparisons."""
    best = values[0]
    for v in values[1:]:
        if libmp.mpf_gt(v, best):
            best = v
    return best


def scaled(w: Number, x: Interval, p: int) -> Interval:
    """w * x for an exact w."""
    if w == ONE:
        return x
    if isinstance(w, Fraction):
        return _imul(_num_interval(w, p), x, p)
    return _iscale(x, w, p)


