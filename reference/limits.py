"""Limits for infinite arguments, as a tiny extended-real algebra.

DESIGN.md: an infinite input takes the LIMIT of the exact function with the other
arguments fixed. Each factor of a loss formula is classified as

    Z  exactly zero (an argument that is 0 makes its whole term identically 0, even
       against an infinite factor: the function is 0 for every value of the other one)
    V  vanishing (tends to 0 but is never 0, e.g. softplus(-x) as x -> +inf)
    F  finite nonzero (sign known, exact value known or None for transcendental)
    I  infinite with a sign
    N  NaN: an indeterminate form (inf * vanishing, inf - inf), i.e. iterated limits
       that disagree when two or more arguments are infinite.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

from . import exact
from .exact import INF, NAN, NINF, ZERO, Tuple


class Ext(NamedTuple):
    kind: str  # "Z" | "V" | "F" | "I" | "N"
    sign: int = 0
    value: Tuple | Fraction | None = None


Z = Ext("Z")
N = Ext("N")


def num(t: Tuple) -> Ext:
    """Classify an exact number."""
    if t == NAN:
        return N
    if t == ZERO:
        return Z
    if exact.is_inf(t):
        return Ext("I", exact.sign(t))
    return Ext("F", exact.sign(t), t)


def const(sign: int, value: Tuple | None = None) -> Ext:
    return Ext("F", sign, value)


def vanishing(sign: int = 1) -> Ext:
    return Ext("V", sign)


def mul(a: Ext, b: Ext) -> Ext:
    kinds = {a.kind, b.kind}
    if "N" in kinds:
        return N
    if "Z" in kinds:
        return Z
    s = a.sign * b.sign
    if kinds == {"I", "V"}:
        return N
    if "I" in kinds:
        return Ext("I", s)
    if "V" in kinds:
        return Ext("V", s)
    value = None
    if a.value is not None and b.value is not None:
        value = exact.mul(a.value, b.value)
    return Ext("F", s, value)


def add(a: Ext, b: Ext) -> Ext:
    if "N" in (a.kind, b.kind):
        return N
    if a.kind == "Z" or (a.kind == "V" and b.kind in "FI"):
        return b
    if b.kind == "Z" or (b.kind == "V" and a.kind in "FI"):
        return a
    if a.kind == "I" or b.kind == "I":
        if a.kind == b.kind:
            return a if a.sign == b.sign else N
        return a if a.kind == "I" else b
    if a.kind == "V":  # both vanish
        return Ext("V", a.sign if a.sign == b.sign else 0)
    if a.value is None or b.value is None:
        raise ValueError("sum of two finite transcendental limits: not a limit case")
    total = exact.add(a.value, b.value)
    return num(total) if total != ZERO else Z


def neg(a: Ext) -> Ext:
    return a._replace(sign=-a.sign, value=None if a.value is None else exact.neg(a.value))


def result(a: Ext) -> Tuple:
    """The limit as an exact tuple (0 for vanishing; +-inf; NaN)."""
    if a.kind == "N":
        return NAN
    if a.kind in "ZV":
        return ZERO
    if a.kind == "I":
        return INF if a.sign > 0 else NINF
    if a.value is None:
        raise ValueError("finite transcendental limit must be evaluated, not classified")
    return a.value
