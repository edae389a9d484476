"""Row families: softmax cross-entropy, log_softmax and logsumexp (DESIGN.md section 10),
and cross_entropy_probs: the categorical cross-entropy of rows of class probabilities
(from_logits=False; reference/softmax_probs.py), whose rows come from
audit/softmax_probs_rows.py (a Block's `logits` are then the input probabilities).

A point of these families is a row of K logits (plus a class index, or K class
probabilities), not one number, so they are graded by a suite of their own
(audit/suite/test_cross_entropy.py) on the shared machinery: Subject records (kept in
subjects.ROW_SUBJECTS, out of the scalar suites' way), the frameworks' workers and
runners (a block of n rows travels as n*K flat logits; the subject's call reshapes it
and gets the class indices as a keyword: a float16 tensor cannot hold the index 99999),
grading.grade, contracts.judge and results.json records.

One check = blocks of rows sharing K and the setting the framework takes once per call
(class weights, label smoothing, ignore index). Losses grade one value per row;
gradients and log_softmax one value per logit, component by component.
Expected values are reference.rounded_* (certified); the exact value that ulp errors
are measured against comes from the certified mpmath representative in float64 and,
in narrower dtypes, from a long double evaluation of the reference's cancellation-free
forms, kept only where its error bound is below 2**-12 ulp of the dtype and it rounds
to the certified value (else the point takes the mpmath representative too).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

import reference
from audit import softmax_probs_rows as pr
from audit import workers
from audit.dtypes import numpy_dtype
from audit.grading import Graded, grade, ulp_exponent
from audit.subjects import ROW_SUBJECTS, Subject
from reference import softmax, softmax_probs
from reference.engine import ReferenceUncertainError
from reference.fast_core import round_array
from reference.formats import get_format, round_to
from reference.points import double_double

IGNORE_INDEX = -100  # torch's and paddle's default ignore_index
# the `ci` profile's dtypes per target kind (every dtype under `audit`): class indices
# everywhere, probabilities where half precision and float32 differ most, the settings
# (class weights, smoothing, ignore index) in float32; log_softmax, logsumexp and the
# search in CI_ROW_DTYPES
CI_DTYPES = {"label": ("float16", "bfloat16", "float32", "float64"),
             "probs": ("float16", "float32"), "weighted": ("float32",),
             "smoothed": ("float32",), "ignored": ("float32",),
             "reduced": ("float16", "float32")}
CI_ROW_DTYPES = ("float16", "float32")
VOCAB = 100_000  # the vocabulary-sized row
CLASS_COUNTS = (2, 3, 10, 1000, VOCAB)
WEIGHT_CYCLE = (1.0, 0.5, 2.0, 0.0, 1000.0)  # class weights, cycled over the K classes
DEFAULT_SMOOTHING = 0.1


@dataclass(frozen=True)
class RowFamily:
    name: str
    targets: bool  # takes a class index / class probabilities
    per_class: bool  # the value itself is one per logit (log_softmax)
    checks: tuple[str, ...]


# check -> (quantity, target kind)
CHECKS: dict[str, tuple[str, str]] = {
    "values": ("loss", "label"), "grads": ("grad", "label"),
    "soft": ("loss", "probs"), "soft_grads": ("grad", "probs"),
    "weighted": ("loss", "weighted"), "weighted_grads": ("grad", "weighted"),
    "smoothed": ("loss", "smoothed"), "smoothed_grads": ("grad", "smoothed"),
    "ignored": ("loss", "ignored"), "ignored_grads": ("grad", "ignored"),
    # fixed batches of rows, each reduced by the framework (audit/softmax_reduced.py)
    "reduced": ("loss", "reduced"),
}

# cross_entropy_probs: rows of class probabilities, not logits (from_logits=False; its
# rows and ci scope: audit/softmax_probs_rows.py)
PROBS_FAMILY = "cross_entropy_probs"
FAMILIES: dict[str, RowFamily] = {f.name: f for f in (
    RowFamily("cross_entropy", True, False, tuple(CHECKS)),
    RowFamily("log_softmax", False, True, ("values",)),
    RowFamily("logsumexp", False, False, ("values",)),
    RowFamily(PROBS_FAMILY, True, False, ("values", "grads", "soft", "soft_grads")),
)}

# The target kinds a built-in subject does not take, and why (measured APIs).
NOT_TAKEN: dict[str, dict[str, str]] = {
    "tf.cross_entropy": {
        "weighted": "tf.nn.(sparse_)softmax_cross_entropy_with_logits take no class weights",
        "smoothed": "tf.nn.(sparse_)softmax_cross_entropy_with_logits take no label "
                    "smoothing (keras.cross_entropy's categorical_crossentropy does)",
        "ignored": "tf.nn.sparse_softmax_cross_entropy_with_logits has no ignore index",
        "reduced": "tf.nn.(sparse_)softmax_cross_entropy_with_logits return per-example "
                   "losses: no reduction argument (keras.cross_entropy's Loss classes "
                   "reduce)"},
    "keras.cross_entropy": {
        "weighted": "keras' (sparse_)categorical_crossentropy take no class weights "
                    "(class_weight is a Model.fit argument)"},
    "jax.cross_entropy": {
        "weighted": "optax.softmax_cross_entropy(_with_integer_labels) take no class weights",
        "smoothed": "optax's cross-entropies take no label smoothing (optax.smooth_labels "
                    "forms the smoothed target in the dtype first: another computation)",
        "ignored": "optax.softmax_cross_entropy_with_integer_labels has no ignore index",
        "reduced": "optax.softmax_cross_entropy(_with_integer_labels) return per-example "
                   "losses: no reduction argument"},
}


def row_subjects(names: Iterable[str] | None = None, frameworks: Iterable[str] | None = None
                 ) -> list[Subject]:
    """The row subjects in registry order, filtered by name and/or framework; None keeps
    all. Names of other subjects are ignored (the scalar suites take them)."""
    from audit import runners

    order = {f: i for i, f in enumerate(runners.names())}
    fams = list(FAMILIES)
    chosen = sorted(ROW_SUBJECTS.values(), key=lambda s: (
        order.get(s.framework, 99), fams.index(s.family) if s.family in fams else 9, s.name))
    if frameworks is not None:
        chosen = [s for s in chosen if s.framework in set(frameworks)]
    if names is not None:
        chosen = [s for s in chosen if s.name in set(names)]
    return chosen


def in_ci(family: str, check: str, dtype: str) -> bool:
    """Does the `ci` profile run this check in this dtype?"""
    if family == PROBS_FAMILY:
        return pr.in_ci(check, dtype)
    if family != "cross_entropy":
        return dtype in CI_ROW_DTYPES
    return dtype in CI_DTYPES[CHECKS[check][1]]


def not_taken(subject: Subject, check: str) -> str | None:
    """Why `subject` has no `check` (its family's or its API's limits), or None."""
    family = FAMILIES[subject.family]
    if check not in family.checks:
        return f"{subject.name} ({subject.family}) has no {check} check: " \
               f"{'only values are graded' if not family.targets else 'unknown check'}"
    kind = CHECKS[check][1]
    if subject.name in NOT_TAKEN and kind in NOT_TAKEN[subject.name]:
        return NOT_TAKEN[subject.name][kind]
    if subject.module and not subject.module.startswith("audit.subjects.") and \
            kind not in ("label", "probs"):
        return f"{subject.name} is a user's row subject: graded with labels and probabilities"
    if kind == "reduced" and set(subject.reductions) == {"none"}:
        return f"{subject.name} declares no reduction (reductions: none)"
    return None


# --------------------------------------------------------------------------- rows


@dataclass
class Block:
    """n rows of K logits and their targets, one framework call."""

    logits: np.ndarray  # (n, K) float64, exact in the dtype
    pattern: np.ndarray  # (n,) the row pattern's name (reports, repro context)
    labels: np.ndarray | None = None  # (n,) int64 class indices (IGNORE_INDEX: ignored)
    probs: np.ndarray | None = None  # (n, K) class probabilities, exact in the dtype
    weight: np.ndarray | None = None  # (K,) class weights, exact in the dtype
    smoothing: float = 0.0  # E, as the dtype value the framework gets
    ignore_index: int | None = None

    @property
    def k(self) -> int:
        return int(self.logits.shape[1])

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def take(self, idx: np.ndarray) -> Block:
        return replace(self, logits=self.logits[idx], pattern=self.pattern[idx],
                       labels=None if self.labels is None else self.labels[idx],
                       probs=None if self.probs is None else self.probs[idx])

    def target(self) -> np.ndarray | None:
        """What reference.rounded_cross_entropy takes: int indices or probabilities."""
        return self.labels if self.labels is not None else self.probs


def representable(values: Iterable[float] | np.ndarray, dtype: str) -> np.ndarray:
    """Each value rounded once to the dtype (float64 out). numpy casts round to nearest
    even and overflow to inf, as reference.round_to does; bfloat16 is rounded from
    float64 by round_array (through float32 it would round twice)."""
    a = np.asarray(values, dtype=np.float64)
    if dtype == "bfloat16":
        out = a.copy()
        fin = np.isfinite(a)
        out[fin] = round_array(a[fin], get_format(dtype))
        return out
    with np.errstate(over="ignore"):
        return a.astype(numpy_dtype(dtype)).astype(np.float64)


def _patterns(k: int, dtype: str, deep: bool) -> list[tuple[str, np.ndarray]]:
    """The row patterns of K classes: (name, logits) before rounding to the dtype."""
    fmt = get_format(dtype)
    big, tiny = fmt.max_finite, math.ldexp(1.0, fmt.quantum_exp)
    rng = np.random.default_rng(1000 + k)

    def dominant(v: float, rest: float = 0.0) -> np.ndarray:
        row = np.full(k, rest)
        row[0] = v
        return row

    if k == VOCAB:  # runs of equal values only: a repro command must stay short
        rows = [("equal 0", np.zeros(k)), ("dominant 1e4", dominant(1e4)),
                ("dominant 10", dominant(10.0)), ("dominant -1e4", dominant(-1e4)),
                ("mask all but one", dominant(0.0, -math.inf))]
        if deep:
            return rows
        # the ci profile: two rows, in float16 (where a sum of 10**5 overflows) and float32
        return rows[:2] if dtype in ("float16", "float32") else []
    rows = [("equal 0", np.zeros(k))]
    rows += [(f"equal {c:g}", np.full(k, c)) for c in (1e4, -1e4, big, -big)]
    levels = (1, 10, 30, 88, 100, 1e4, big) if deep or k < 1000 else (1, 30, 1e4, big)
    rows += [(f"dominant {s * v:g}", dominant(s * v)) for v in levels for s in (1, -1)]
    spreads = (tiny, 1e-3, 1, 10, 100, 1e4) if deep or k < 1000 else (1e-3, 10, 1e4)
    rows += [(f"spread {s:g}", np.linspace(-s, s, k)) for s in spreads]
    for scale in (1.0, 30.0):
        rows.append((f"normal {scale:g}", rng.normal(size=k) * scale))
    rows.append(("near equal", 1.0 + np.arange(k) * 2.0 ** (1 - fmt.precision)))
    masked = rng.normal(size=k)
    masked[0] = -math.inf
    rows.append(("mask one", masked))
    if k >= 3:
        many = rng.normal(size=k) * 10
        many[1::2] = -math.inf
        rows.append(("mask many", many))
    rows.append(("mask all but one", dominant(3.0, -math.inf)))
    rows.append(("mask all", np.full(k, -math.inf)))
    rows.append(("+inf", dominant(math.inf)))
    rows.append(("two +inf", np.where(np.arange(k) < 2, math.inf, 0.0)))
    # +inf next to a finite logit whose exp overflows (a max the +inf does not cancel)
    rows.append(("+inf and max", np.where(np.arange(k) == 1, big, dominant(math.inf))))
    if k >= 3:
        rows.append(("two +inf and max", np.where(np.arange(k) == 2, big, np.where(
            np.arange(k) < 2, math.inf, 0.0))))
    rows.append(("nan", dominant(math.nan)))
    return rows


def _labels(row: np.ndarray, k: int) -> list[int]:
    """Class indices worth grading on a row: every one for K <= 3; else the first two
    (class 0 is a dominant logit's own: confident right; class 1 confident wrong), and
    below the vocabulary size the row's argmax and argmin and the last class."""
    if k <= 3:
        return list(range(k))
    if k >= VOCAB:
        return [0, 1]
    with np.errstate(invalid="ignore"):
        finite = np.where(np.isnan(row), -np.inf, row)
    picks = [0, 1, int(np.argmax(finite)), int(np.argmin(finite)), k - 1]
    return list(dict.fromkeys(picks))


def row_sets(dtype: str, deep: bool = False, ks: Iterable[int] = CLASS_COUNTS
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(names, logits [n, K]) per class count: the patterns rounded to the dtype."""
    out = []
    for k in ks:
        pats = _patterns(k, dtype, deep)
        if not pats:
            continue
        out.append((np.array([n for n, _ in pats], dtype=object),
                    representable(np.stack([r for _, r in pats]), dtype)))
    return out


def _label_block(names: np.ndarray, rows: np.ndarray, **kw: object) -> Block:
    k = rows.shape[1]
    pick = [(i, c) for i in range(len(rows)) for c in _labels(rows[i], k)]
    idx = np.array([i for i, _ in pick])
    return Block(rows[idx], names[idx], labels=np.array([c for _, c in pick], np.int64), **kw)


def _prob_patterns(k: int, dtype: str, row: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Class probabilities for one row: uniform, one-hot, two-hot, nearly one-hot,
    Dirichlet, and the masking cases (no mass / some mass on the -inf logits)."""
    fmt = get_format(dtype)
    eps = math.ldexp(1.0, -fmt.precision)
    rng = np.random.default_rng(7 + k)
    out = [("uniform", np.full(k, 1.0 / k))]
    hot = np.zeros(k)
    hot[0] = 1.0
    out.append(("one-hot 0", hot))
    two = np.zeros(k)
    two[:2] = 0.5
    out.append(("two-hot", two))
    near = np.zeros(k)
    near[0], near[1] = 1.0 - eps, eps
    out.append(("nearly one-hot", near))
    out.append(("dirichlet", rng.dirichlet(np.ones(k))))
    if np.isneginf(row).any() and not np.isneginf(row).all():
        off = np.where(np.isneginf(row), 0.0, 1.0)
        out.append(("no mass on -inf", off / off.sum()))
        on = np.where(np.isneginf(row), 1.0, 0.0)
        out.append(("mass on -inf", on / on.sum()))
    return out


def blocks(check: str, dtype: str, deep: bool = False, smoothing: float = DEFAULT_SMOOTHING
           ) -> list[Block]:
    """The fixed blocks of a cross_entropy check (values for log_softmax / logsumexp take
    the rows of `values` with their labels dropped)."""
    quantity, kind = CHECKS[check]
    sets = row_sets(dtype, deep)
    if quantity == "grad" and not deep:  # 10**5 gradients per row: float32's one row
        sets = [(n[n == "dominant 1e4"], r[n == "dominant 1e4"])
                if r.shape[1] >= VOCAB else (n, r)
                for n, r in sets if r.shape[1] < VOCAB or dtype == "float32"]
    sets = [(n, r) for n, r in sets if len(r)]
    if kind == "label":
        return [_label_block(n, r) for n, r in sets]
    small = [(n, r) for n, r in sets if r.shape[1] <= (VOCAB if deep else 1000)]
    if kind == "probs":
        out = []
        for names, rows in (sets if quantity == "loss" or deep else small):
            k = rows.shape[1]
            keep = list(range(len(rows)))
            if k >= 1000:  # a few rows: the equal, spread and masked ones
                keep = [i for i, n in enumerate(names) if n.startswith(
                    ("equal 0", "spread 10", "mask"))]
            pick = [(i, name, p) for i in keep
                    for name, p in _prob_patterns(k, dtype, rows[i])
                    if k < VOCAB or deep or name == "uniform"]
            probs = representable(np.stack([p for *_, p in pick]), dtype)
            idx = np.array([i for i, *_ in pick])
            pats = np.array([f"{names[i]} / {name}" for i, name, _ in pick], dtype=object)
            out.append(Block(rows[idx], pats, probs=probs))
        return out
    out = []
    for names, rows in small:
        k = rows.shape[1]
        if k >= 1000 and not deep:
            keep = np.array([i for i, n in enumerate(names) if n.startswith(
                ("equal 0", "dominant", "mask all", "nan"))])
            names, rows = names[keep], rows[keep]
        b = _label_block(names, rows)
        if kind == "weighted":
            w = representable(np.resize(WEIGHT_CYCLE, k), dtype)
            out.append(replace(b, weight=w))
        elif kind == "smoothed":
            out.append(replace(b, smoothing=round_to(smoothing, dtype)))
        else:  # ignored: every third row's label is the ignore index
            labels = b.labels.copy()
            labels[::3] = IGNORE_INDEX
            out.append(replace(b, labels=labels, ignore_index=IGNORE_INDEX))
    return out


def prob_row_set(k: int, dtype: str, deep: bool) -> tuple[np.ndarray, np.ndarray]:
    """(names, rows [n, K]) of class probabilities for K classes (cross_entropy_probs):
    audit/softmax_probs_rows.py's patterns rounded to the dtype, each distinct row once
    (many softmax outputs round alike), fewer rows for K = 1000 under the ci profile."""
    pats = pr.patterns(k, dtype, _patterns(k, dtype, deep), representable)
    rows = representable(np.stack([r for _, r in pats]), dtype)
    _, first = np.unique(rows.view(np.uint64), axis=0, return_index=True)
    keep = np.sort(first)
    names, rows = np.array([n for n, _ in pats], dtype=object)[keep], rows[keep]
    if k >= 1000 and not deep:
        pick = np.array([str(n).startswith(pr.CI_BIG) for n in names])
        names, rows = names[pick], rows[pick]
    return names, rows


def prob_blocks(check: str, dtype: str, deep: bool = False) -> list[Block]:
    """The fixed blocks of a cross_entropy_probs check, one per K: class indices picked
    by _labels (the most and least probable among them), or pr.targets' probabilities."""
    kind = CHECKS[check][1]
    out = []
    for k in pr.CLASS_COUNTS:
        names, rows = prob_row_set(k, dtype, deep)
        if kind == "label":
            out.append(_label_block(names, rows))
            continue
        pick = [(i, name, t) for i in range(len(rows)) for name, t in pr.targets(k, rows[i])
                if k < 1000 or deep or name in pr.CI_TARGETS]
        probs = representable(np.stack([t for *_, t in pick]), dtype)
        idx = np.array([i for i, *_ in pick])
        pats = np.array([f"{names[i]} / {name}" for i, name, _ in pick], dtype=object)
        out.append(Block(rows[idx], pats, probs=probs))
    return out


def row_blocks(family: str, check: str, dtype: str, deep: bool = False,
               smoothing: float = DEFAULT_SMOOTHING) -> list[Block]:
    """The blocks a subject of `family` is graded on in `check`."""
    if family == PROBS_FAMILY:
        return prob_blocks(check, dtype, deep)
    bs = blocks(check, dtype, deep, smoothing)
    if family == "cross_entropy":
        return bs
    out = []
    for b in bs:  # one row per pattern (the label copies dropped)
        _, first = np.unique(b.pattern.astype(str), return_index=True)
        out.append(Block(b.logits[np.sort(first)], b.pattern[np.sort(first)]))
    return out


# --------------------------------------------------------------------------- evaluation


def _arrays_params(family: str, b: Block) -> tuple[list, dict]:
    arrays = [b.logits.reshape(-1), None if b.probs is None else b.probs.reshape(-1),
              b.weight, None]
    params: dict = {"classes": b.k}
    if FAMILIES[family].targets:
        if b.labels is not None:
            params["labels"] = b.labels
        if b.smoothing:
            params["label_smoothing"] = b.smoothing
        if b.ignore_index is not None:
            params["ignore_index"] = b.ignore_index
    return arrays, params


def _shape(family: str, b: Block, grad: bool) -> tuple[int, ...]:
    return (len(b), b.k) if grad or FAMILIES[family].per_class else (len(b),)


def padded_rows(n: int, k: int) -> int:
    """Rows a block of n is padded to (copies of its first row): the next power of two,
    at least 512 rows of up to 16 logits and 64 of up to 1024, so that checks share
    shapes (jax compiles every eager op once per shape: 1-3 s a case otherwise)."""
    m = max(1 << max(0, (n - 1).bit_length()), 512 if k <= 16 else 64 if k <= 1024 else 1)
    return m if m * k <= MAX_PADDED else n


MAX_PADDED = 1 << 22  # logits


def call(subject: Subject, dtype: str, device: str, b: Block, grad: bool) -> np.ndarray:
    """One framework call on a block (in the subject's worker): float64 values shaped
    [n] (a loss or logsumexp per row) or [n, K] (gradients, log_softmax)."""
    n = len(b)
    m = padded_rows(n, b.k)
    arrays, params = _arrays_params(subject.family, b.take(np.r_[np.arange(n),
                                                                np.zeros(m - n, int)]))
    values, _ = workers.evaluate(subject.name, subject.framework, dtype, device, arrays,
                                 "none", grad, "contiguous", params, "eager")
    shape = _shape(subject.family, b, grad)
    return np.asarray(values, dtype=np.float64).reshape((m, *shape[1:]))[:n]


def observe(subject: Subject, dtype: str, device: str, b: Block, grad: bool
            ) -> tuple[np.ndarray, dict[int, str], set[int]]:
    """(observed, errors by row, crashed rows). A block that raises is split until the
    raising rows are isolated; WorkerUnavailable propagates (a skip, not a finding)."""
    from audit.checks import error_text

    out = np.full(_shape(subject.family, b, grad), np.nan)
    errors: dict[int, str] = {}
    crashes: set[int] = set()
    stack = [np.arange(len(b))]
    while stack:
        idx = stack.pop()
        try:
            out[idx] = call(subject, dtype, device, b.take(idx), grad)
        except workers.WorkerUnavailable:
            raise
        except Exception as e:  # the framework raised, or its worker died: findings
            if idx.size == 1:
                errors[int(idx[0])] = error_text(e)
                if isinstance(e, workers.WorkerCrash):
                    crashes.add(int(idx[0]))
            else:
                stack += np.array_split(idx, 2)
    return out, errors, crashes


# --------------------------------------------------------------------------- reference


def _row_tuples(family: str, b: Block, grad: bool, i: int,
                cols: list[int] | None = None) -> list:
    """Certified representatives (mpmath tuples) of row i: its loss / logsumexp, or the
    gradient / log_softmax components `cols` (all when None)."""
    if family == PROBS_FAMILY:
        target = int(b.labels[i]) if b.labels is not None else b.probs[i]
        vals = softmax_probs.row_values(b.logits[i], target, weight=b.weight,
                                        label_smoothing=b.smoothing, grad=grad)
        return list(vals) if cols is None or not grad else [vals[j] for j in cols]
    ls = softmax.tuples(b.logits[i])
    if family == "logsumexp":
        return [softmax.logsumexp_value(ls)]
    if family == "log_softmax":
        return softmax.log_softmax_values(ls, cols)
    target = int(b.labels[i]) if b.labels is not None else b.probs[i]
    ls, tg = softmax.parse(b.logits[i], target, b.weight, b.smoothing, b.ignore_index)
    return softmax.grad_values(ls, tg, cols) if grad else [softmax.loss_value(ls, tg)]


def _rounded_block(family: str, dtype: str, b: Block, grad: bool) -> np.ndarray:
    if family == PROBS_FAMILY:
        return reference.rounded_cross_entropy_probs(dtype, b.logits, b.target(),
                                                     weight=b.weight,
                                                     label_smoothing=b.smoothing, grad=grad)
    if family == "logsumexp":
        return reference.rounded_logsumexp(dtype, b.logits)
    if family == "log_softmax":
        return reference.rounded_log_softmax(dtype, b.logits)
    return reference.rounded_cross_entropy(dtype, b.logits, b.target(), weight=b.weight,
                                           label_smoothing=b.smoothing,
                                           ignore_index=b.ignore_index, grad=grad)


def rounded(family: str, dtype: str, b: Block, grad: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the certified correctly rounded values of a block (reference.rounded_*), the
    points the reference could not certify: ReferenceUncertainError). Uncertain points
    are left out of grading; a block that has some is redone row by row, then value by
    value, so the others are still graded."""
    try:
        return _rounded_block(family, dtype, b, grad), np.zeros(_shape(family, b, grad), bool)
    except ReferenceUncertainError:
        pass
    shape = _shape(family, b, grad)
    out, unsure = np.full(shape, np.nan), np.zeros(shape, bool)
    for i in range(len(b)):
        try:
            out[i] = _rounded_block(family, dtype, b.take(np.array([i])), grad)[0]
            continue
        except ReferenceUncertainError:
            if len(shape) == 1:
                unsure[i] = True
                continue
        unsure[i] = True
        for j, t in _certain_tuples(family, b, grad, i, list(range(b.k))):
            out[i, j], unsure[i, j] = round_to(t, dtype), False
    return out, unsure


def _coefficients(b: Block) -> np.ndarray:
    """a = w p, p = (1-E) t + E/K, in long double ([n, K]; 0 on ignored rows)."""
    ld = np.longdouble
    n, k = b.logits.shape
    if b.labels is not None:
        t = np.zeros((n, k), dtype=ld)
        on = b.labels != IGNORE_INDEX if b.ignore_index is not None else np.ones(n, bool)
        t[np.flatnonzero(on), b.labels[on]] = 1
    else:
        t = b.probs.astype(ld)
    e = ld(b.smoothing)
    a = t * (1 - e) + e / k if b.smoothing else t
    if b.weight is not None:
        a = a * b.weight.astype(ld)[None, :]
    if b.ignore_index is not None and b.labels is not None:
        a[b.labels == b.ignore_index] = 0
    return a


def estimate(family: str, b: Block, grad: bool) -> tuple[np.ndarray, np.ndarray]:
    """(value, error bound) in long double from the reference's cancellation-free forms
    (reference/softmax.py); NaN where a row has +inf, NaN, no finite logit, or weight on
    a -inf logit (those values are limits: the certified value is exact)."""
    ld = np.longdouble
    x = b.logits.astype(ld)
    n, k = x.shape
    shape = _shape(family, b, grad)
    if family == PROBS_FAMILY:  # no estimate: the certified row values are cached
        return np.full(shape, np.nan, dtype=ld), np.full(shape, np.nan, dtype=ld)
    ninf = np.isneginf(b.logits)
    fin = np.isfinite(b.logits)
    ok = (fin | ninf).all(axis=1) & fin.any(axis=1)
    xs = np.where(fin, x, ld(0))
    m = np.where(fin, xs, ld(-np.inf)).max(axis=1)
    m = np.where(ok, m, 0)
    top = np.where(fin, xs, ld(-np.inf)).argmax(axis=1)
    d = np.where(fin, xs - m[:, None], ld(-np.inf))
    with np.errstate(under="ignore", over="ignore"):  # rows past `ok` are masked below
        e = np.exp(d)
    rows = np.arange(n)
    e[rows, top] = 0
    s = e.sum(axis=1)
    l1 = np.log1p(s)
    r = ld(4 * (k + 8)) * np.finfo(ld).eps
    with np.errstate(invalid="ignore", over="ignore"):
        if family == "logsumexp":
            v, parts = m + l1, abs(m) + l1
        elif family == "log_softmax":
            v, parts = d - l1[:, None], abs(d) + l1[:, None]
            ok = ok[:, None] & fin
        else:
            a = _coefficients(b)
            ok &= ~((a != 0) & ninf).any(axis=1)
            w = a.sum(axis=1)
            if not grad:
                dd = np.where(a == 0, 0, a * (m[:, None] - xs)).sum(axis=1)
                t = w * l1
                v, parts = dd + t, abs(dd) + abs(t)
            else:
                one_s = 1 + s
                t = w[:, None] * (e / one_s[:, None])
                dd = -a
                others = a.copy()
                others[rows, top] = 0
                gm = others.sum(axis=1)  # W - a_M without cancellation
                dd[rows, top] = gm
                t[rows, top] = -w * (s / one_s)
                v, parts = dd + t, abs(dd) + abs(t)
                ok = ok[:, None] & np.ones((1, k), bool)
    ok = np.broadcast_to(ok, shape)
    v = np.where(ok, v, np.nan).reshape(shape)
    return v, np.where(ok, r * parts + ld(2.0 ** -1100), np.nan).reshape(shape)


def exact_parts(family: str, dtype: str, b: Block, grad: bool, expected: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo): the exact values as double-double for the ulp measure (module doc)."""
    shape = expected.shape
    hi, lo = expected.copy(), np.zeros(shape)
    if dtype != "float64":
        v, bound = estimate(family, b, grad)
        h = v.astype(np.float64)
        low = (v - h.astype(np.longdouble)).astype(np.float64)
        good = np.isfinite(h) & np.isfinite(expected)
        hg = np.where(good, h, 0.0)
        spacing = np.ldexp(1.0, ulp_exponent(hg, dtype))
        good &= (bound.astype(np.float64) <= spacing * 2.0 ** -12)
        good &= round_array(hg, get_format(dtype)) == np.where(good, expected, 0.0)
        hi[good], lo[good] = h[good], low[good]
        todo = np.isfinite(expected) & ~good
    else:
        todo = np.ones(shape, bool)
    per_row = len(shape) == 2
    rows = np.flatnonzero(todo.any(axis=1)) if per_row else np.flatnonzero(todo)
    for i in rows:
        cols = np.flatnonzero(todo[i]).tolist() if per_row else None
        for j, t in _certain_tuples(family, b, grad, int(i), cols):
            at = i if j is None else (i, j)
            hi[at], lo[at] = double_double(t)
    return hi, lo


def _certain_tuples(family: str, b: Block, grad: bool, i: int, cols: list[int] | None
                    ) -> list[tuple[int | None, tuple]]:
    """[(component or None, representative)] of row i, in one evaluation of the row; if
    the reference cannot certify one of them, value by value without that one."""
    try:
        return list(zip(cols or [None], _row_tuples(family, b, grad, i, cols), strict=True))
    except ReferenceUncertainError:
        if cols is None:
            return []
    out = []
    for j in cols:  # an uncertain one is left out of grading (marked by the callers)
        with contextlib.suppress(ReferenceUncertainError):
            out.append((j, _row_tuples(family, b, grad, i, [j])[0]))
    return out


_CACHE: dict[tuple, tuple] = {}


def reference_values(family: str, dtype: str, b: Block, grad: bool, key: tuple | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(expected, hi, lo, uncertain) of a block; `key` caches them (the five frameworks
    share a check's blocks)."""
    if key is not None and key in _CACHE:
        return _CACHE[key]
    shape = _shape(family, b, grad)
    if dtype == "float64":  # one mpmath pass gives both the rounding and the parts
        hi, lo = np.full(shape, np.nan), np.zeros(shape)
        unsure = np.zeros(shape, bool)
        per_row = len(shape) == 2
        for i in range(len(b)):
            cols = list(range(b.k)) if per_row else None
            ts = _certain_tuples(family, b, grad, i, cols)
            if len(ts) < (b.k if per_row else 1):
                unsure[i] = True  # every component, then the certified ones back
            for j, t in ts:
                at = i if j is None else (i, j)
                hi[at], lo[at] = double_double(t)
                unsure[at] = False
        out = (hi.copy(), hi, lo, unsure)  # double_double's hi is round_to(t, "float64")
    else:
        expected, unsure = rounded(family, dtype, b, grad)
        out = (expected, *exact_parts(family, dtype, b, grad, expected), unsure)
    if key is not None:
        _CACHE[key] = out
    return out


# --------------------------------------------------------------------------- variables


def variables(b: Block, grad_or_per_class: bool) -> dict[str, np.ndarray]:
    """Region variables per graded point (contracts; batch.ROW_VARIABLES names them):
    k, x_max, x_min, x_spread (max - min over the finite logits; -inf masks excluded),
    masked (number of -inf logits), pinf (number of +inf), nans (number of NaN logits),
    y (class index; -1 for
    probabilities), xl (the label's logit), margin (xl - the largest other logit: the
    BCE logit of a two-class row), w (the label's class weight), e (smoothing); per
    component also j, xj, dj (xj - x_max), on_label (1 at the label's class), pj (its
    target probability). For rows of probabilities (cross_entropy_probs; meaningless on
    logits) the normalized q = x / psum: psum (the row's sum), zeros (exact zeros), ql
    (q at the label), q_min (the smallest q with target mass), q_max; per component qj."""
    x = b.logits
    n, k = x.shape
    fin = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        hi = np.where(fin, x, -np.inf).max(axis=1)
        lo = np.where(fin, x, np.inf).min(axis=1)
        spread = np.where(fin.any(axis=1), hi - lo, np.nan)
        hard = b.labels is not None
        lab = np.where(b.labels >= 0, b.labels, 0) if hard else np.zeros(n, np.int64)
        rows = np.arange(n)
        xl = x[rows, lab] if hard else np.full(n, np.nan)
        other = x.copy()
        if hard:
            other[rows, lab] = -np.inf
        other = np.where(np.isnan(other), -np.inf, other)
        margin = xl - other.max(axis=1) if k > 1 and hard else np.full(n, np.nan)
        w = b.weight[lab] if b.weight is not None and hard else np.ones(n)
    base = {"k": np.full(n, float(k)), "x_max": hi, "x_min": lo, "x_spread": spread,
            "masked": np.isneginf(x).sum(axis=1).astype(float),
            "nans": np.isnan(x).sum(axis=1).astype(float),
            "pinf": np.isposinf(x).sum(axis=1).astype(float),
            "y": b.labels.astype(float) if hard else np.full(n, -1.0),
            "xl": xl, "margin": margin, "w": w, "e": np.full(n, b.smoothing),
            "p": np.ones(n), **_prob_variables(b, lab)}
    if not grad_or_per_class:
        return base
    out = {name: np.repeat(v, k) for name, v in base.items()}
    j = np.tile(np.arange(k), n)
    out["j"] = j.astype(float)
    out["xj"] = x.reshape(-1)
    with np.errstate(invalid="ignore"):
        out["dj"] = out["xj"] - out["x_max"]
    out["on_label"] = (j == np.repeat(lab, k)).astype(float) if hard else np.zeros(n * k)
    if hard and b.ignore_index is not None:
        out["on_label"][np.repeat(b.labels == b.ignore_index, k)] = 0.0
    out["pj"] = b.probs.reshape(-1) if b.probs is not None else out["on_label"]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out["qj"] = (x / x.sum(axis=1, keepdims=True)).reshape(-1)
    return out


def _prob_variables(b: Block, lab: np.ndarray) -> dict[str, np.ndarray]:
    """psum, zeros, ql, q_min, q_max of rows of probabilities (variables())."""
    x = b.logits
    n = len(x)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = x.sum(axis=1)
        q = x / total[:, None]
        ql = qmin = np.full(n, np.nan)  # no target (log_softmax, logsumexp)
        if b.labels is not None:
            ql = qmin = q[np.arange(n), lab]
        elif b.probs is not None:
            qmin = np.where(b.probs > 0, q, np.inf).min(axis=1)
        return {"psum": total, "zeros": (x == 0).sum(axis=1).astype(float), "ql": ql,
                "q_min": qmin, "q_max": q.max(axis=1)}


def plot_x(b: Block) -> np.ndarray:
    """The scalar a point is plotted against: the margin for class indices (for K = 2
    the BCE logit), the spread of the row for probabilities."""
    v = variables(b, False)
    return v["margin"] if b.labels is not None else v["x_spread"]


# --------------------------------------------------------------------------- a case


@dataclass(frozen=True)
class RowCase:
    subject: str
    check: str
    dtype: str
    device: str = "cpu"
    label_smoothing: float = DEFAULT_SMOOTHING
    reduction: str = "none"  # the `reduced` check's (the framework's name for it)

    @property
    def quantity(self) -> str:
        return CHECKS[self.check][0]

    @property
    def id(self) -> str:
        red = "" if self.reduction == "none" else f" reduction={self.reduction}"
        return f"{self.subject}[{self.dtype}-{self.device}] {self.check}{red}"


@dataclass
class RowOutcome:
    """Every graded point of a case, flattened over its blocks (loss: one per row;
    gradients and log_softmax: one per logit)."""

    case: RowCase
    blocks: list[Block]
    observed: np.ndarray
    expected: np.ndarray
    exact: tuple[np.ndarray, np.ndarray]
    graded: Graded
    variables: dict[str, np.ndarray]
    where: np.ndarray  # (points, 3): block, row, component (-1 for a row value)
    errors: dict[int, str] = field(default_factory=dict)  # by point: the message
    mode: str = "grid"
    uncertain: int = 0  # points left out: the reference raised ReferenceUncertainError


def grade_blocks(subject: Subject, case: RowCase, bs: list[Block], budget: float,
                 deep: bool = False, cache: bool = True) -> RowOutcome:
    """Evaluate and grade a list of blocks (one framework call each). Points the
    reference cannot certify are left out (RowOutcome.uncertain counts them)."""
    grad = case.quantity == "grad"
    per = grad or FAMILIES[subject.family].per_class
    parts: dict[str, list] = {k: [] for k in ("obs", "exp", "hi", "lo", "where", "err",
                                              "crash", "keep")}
    var = []
    messages: dict[int, dict[int, str]] = {}
    for bi, b in enumerate(bs):
        o, errs, crashes = observe(subject, case.dtype, case.device, b, grad)
        key = (subject.family, case.check, case.dtype, deep, case.label_smoothing, bi) \
            if cache else None
        e, h, lo, unsure = reference_values(subject.family, case.dtype, b, grad, key)
        n, k = len(b), (b.k if per else 1)
        rows = np.repeat(np.arange(n), k)
        comps = np.tile(np.arange(k), n) if per else np.full(n, -1)
        parts["where"].append(np.stack([np.full(n * k, bi), rows, comps], axis=1))
        for name, a in (("obs", o), ("exp", e), ("hi", h), ("lo", lo)):
            parts[name].append(a.reshape(-1))
        parts["err"].append(np.isin(rows, list(errs)))
        parts["crash"].append(np.isin(rows, list(crashes)))
        parts["keep"].append(~unsure.reshape(-1))
        messages[bi] = errs
        var.append(variables(b, per))
    keep = np.concatenate(parts["keep"])
    flat = {name: np.concatenate(v)[keep] for name, v in parts.items() if name != "keep"}
    g = grade(flat["obs"], flat["exp"], flat["hi"], flat["lo"], case.dtype, budget)
    errors: dict[int, str] = {}
    for i in np.flatnonzero(flat["err"]):
        g.set_error(int(i), crash=bool(flat["crash"][i]))
        bi, r, _ = flat["where"][i]
        errors[int(i)] = messages[int(bi)][int(r)]
    merged = {n: np.concatenate([v[n] for v in var])[keep] for n in var[0]}
    return RowOutcome(case, bs, flat["obs"], flat["exp"], (flat["hi"], flat["lo"]), g,
                      merged, flat["where"], errors, uncertain=int((~keep).sum()))


def run_case(subject: Subject, case: RowCase, budget: float, deep: bool = False
             ) -> RowOutcome:
    bs = row_blocks(subject.family, case.check, case.dtype, deep, case.label_smoothing)
    return grade_blocks(subject, case, bs, budget, deep)
