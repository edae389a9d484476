"""The subject registry: one frozen record per framework loss, in the spirit of OpInfo.

A subject is `<framework>.<op>` (DESIGN.md section 6). Each record says which API it
calls, what the reference is, which dtypes / reductions / arguments it accepts, and why
not where it does not. The record's `call` is a small function on framework tensors; all
the plumbing (exact casts, devices, memory layouts, autograd, back to float64) lives in
one runner per framework family, so adding an op is one table entry plus a few lines.

Frameworks are imported lazily (`audit.frameworks`): importing this module is cheap, and
`evaluate` is the first place a framework gets imported. Framework exceptions propagate
unchanged: the grader records them as status "error".

Measured facts the records rely on (torch 2.13 CPU, TF 2.21 CPU, Keras 3.15 / TF backend):
- every op has CPU kernels for float16, bfloat16, float32 and float64, so no dtype/device
  pair is declared unsupported; failures at run time are findings, not skips;
- `keras.ops.sigmoid` tags its output with `_keras_logits`, and Keras' probability BCE then
  silently uses the logits, so keras.sigmoid_bce is the fused loss in disguise;
  `tf.math.sigmoid` carries no such tag, so tf.sigmoid_bce really is two steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit import dtypes as _dtypes
from audit import frameworks

LAYOUTS: tuple[str, ...] = ("contiguous", "strided", "transposed")
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")
KERAS_REDUCTIONS: tuple[str, ...] = (*REDUCTIONS, "keras_default")

# Names a user may reasonably try that deliberately are not subjects, and why.
NOT_SUBJECTS: dict[str, str] = {
    "tf.bce": (
        "TensorFlow has no tf.nn loss on probabilities; TF's probability BCE is Keras' "
        "binary_crossentropy, audited as keras.bce (tf.sigmoid_bce uses it after tf.math.sigmoid)"
    ),
}

# A call function gets framework tensors already in the dtype, device and layout:
# call(x, y, weight, pos_weight, reduction) -> loss tensor (elementwise for "none").
CallFn = Callable[[Any, Any, Any, Any, str], Any]


@dataclass(frozen=True)
class Subject:
    """One audited framework loss: what it calls, what it supports, and why not."""

    name: str
    framework: str
    op: str
    reference_op: str
    api: str
    dtypes: tuple[str, ...]
    reductions: tuple[str, ...]
    weight: bool
    pos_weight: bool
    notes: str
    call: CallFn = field(repr=False, compare=False)
    weight_reason: str = ""  # why `weight` is unsupported; "" when supported
    pos_weight_reason: str = ""
    requires: tuple[str, ...] = ()  # frameworks needed to run (always includes `framework`)
    # (dtype, device, reason): measured missing kernels. Empty on the measured versions.
    unsupported: tuple[tuple[str, str, str], ...] = ()

    def skip_reason(
        self,
        dtype: str,
        device: str,
        *,
        weight: bool = False,
        pos_weight: bool = False,
        reduction: str = "none",
    ) -> str | None:
        """Why this subject cannot run here (framework, device, dtype, argument), or None."""
        if dtype not in self.dtypes:
            return f"{self.name} does not support dtype {dtype} (supports {', '.join(self.dtypes)})"
        for framework in self.requires:
            reason = frameworks.device_reason(framework, device)
            if reason is not None:
                return reason
        for bad_dtype, bad_device, reason in self.unsupported:
            if (bad_dtype, bad_device) == (dtype, device):
                return reason
        if reduction not in self.reductions:
            return f"{self.name} has no reduction {reduction!r} (has {', '.join(self.reductions)})"
        if weight and not self.weight:
            return self.weight_reason
        if pos_weight and not self.pos_weight:
            return self.pos_weight_reason
        return None

    def evaluate(
        self,
        dtype: str,
        device: str,
        inputs: np.ndarray,
        targets: np.ndarray,
        *,
        weight: np.ndarray | None = None,
        pos_weight: np.ndarray | None = None,
        reduction: str = "none",
        grad: bool = False,
        layout: str = "contiguous",
    ) -> np.ndarray:
        """Run the framework once on the whole batch; return float64 results in point order.

        Inputs are float64 arrays whose values are exact in `dtype` (they are cast exactly).
        Returns the n elementwise losses (reduction "none"), a 0-d reduced loss, or with
        `grad` the n elementwise derivatives d(loss)/d(input) of that loss. The input is the
        logit for bce_with_logits / sigmoid_bce and the probability for bce.
        """
        _dtypes.check_dtype(dtype)
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        reason = self.skip_reason(
            dtype,
            device,
            weight=weight is not None,
            pos_weight=pos_weight is not None,
            reduction=reduction,
        )
        if reason is not None:
            raise ValueError(f"{self.name} cannot run {dtype} on {device}: {reason}")
        arrays = _broadcast_1d(inputs, targets, weight, pos_weight)
        runner = _run_torch if self.framework == "torch" else _run_tf
        return runner(self, dtype, device, arrays, reduction, grad, layout)


# ---------------------------------------------------------------------------------------
# Layouts, shared by all frameworks. A layout says how the n points are laid out in the
# uploaded buffer ("base") and which view of it the kernel gets; results always come back
# in point order.


def _broadcast_1d(*arrays: np.ndarray | None) -> list[np.ndarray | None]:
    present = [np.asarray(a, dtype=np.float64) for a in arrays if a is not None]
    shaped = iter(np.broadcast_arrays(*present))
    out = [None if a is None else np.ascontiguousarray(next(shaped)) for a in arrays]
    if out[0] is None or out[0].ndim != 1:
        raise ValueError("inputs and targets must broadcast to a 1-D batch")
    return out


def _factor(n: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == n, rows the largest divisor <= sqrt(n)."""
    rows = max(d for d in range(1, int(n**0.5) + 1) if n % d == 0) if n else 1
    return rows, (n // rows if n else 0)


def _layout_base(values: np.ndarray, layout: str) -> np.ndarray:
    """The float64 buffer to upload; its layout view holds `values` in point order."""
    if layout == "contiguous":
        return values
    if layout == "strided":  # a stride-2 view; the gaps are NaN so a wrong stride shows
        base = np.full(2 * values.size, np.nan)
        base[::2] = values
        return base
    rows, cols = _factor(values.size)  # view (rows, cols) = transpose of base (cols, rows)
    return np.ascontiguousarray(values.reshape(rows, cols).T)


def _exact_base(values: np.ndarray, layout: str, dtype: str) -> np.ndarray:
    """The layout's buffer as an array of `dtype` (exact cast; raises if not exact)."""
    return _dtypes.as_dtype_array(_layout_base(values, layout), dtype)


def _unlayout_base(base: np.ndarray, layout: str) -> np.ndarray:
    """Points of a base-shaped array (e.g. the gradient w.r.t. the base) in point order."""
    if layout == "strided":
        return base[::2]
    if layout == "transposed":
        return base.T.reshape(-1)
    return base.reshape(-1)


def _result(values: np.ndarray, reduction: str) -> np.ndarray:
    return values.reshape(()) if reduction != "none" else values.reshape(-1)


# ---------------------------------------------------------------------------------------
# torch runner


def _run_torch(
    subject: Subject,
    dtype: str,
    device: str,
    arrays: list[np.ndarray | None],
    reduction: str,
    grad: bool,
    layout: str,
) -> np.ndarray:
    torch = frameworks.module("torch")
    bases: list[Any] = []
    views: list[Any] = []
    for values in arrays:
        if values is None:
            bases.append(None)
            views.append(None)
            continue
        exact = _exact_base(values, layout, dtype)
        host = exact.astype(np.float32) if dtype == "bfloat16" else exact
        base = torch.from_numpy(np.array(host)).to(device=device, dtype=getattr(torch, dtype))
        bases.append(base)
        views.append(_torch_view(base, layout))
    if grad:
        bases[0].requires_grad_(True)
        views[0] = _torch_view(bases[0], layout)
    loss = subject.call(*views, reduction)
    if not grad:
        return _result(_torch_numpy(loss), reduction)
    loss.backward(torch.ones_like(loss) if reduction == "none" else None)
    return _unlayout_base(_torch_numpy(bases[0].grad), layout)


def _torch_view(base: Any, layout: str) -> Any:
    if layout == "strided":
        return base[::2]
    if layout == "transposed":
        return base.transpose(0, 1)
    return base


def _torch_numpy(tensor: Any) -> np.ndarray:
    import torch  # already imported by the runner

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()  # exact; numpy has no native bfloat16
    return tensor.numpy().astype(np.float64)


def _torch_bce_with_logits(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    F = frameworks.module("torch").nn.functional
    return F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=p, reduction=reduction)


def _torch_bce(q: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    F = frameworks.module("torch").nn.functional
    return F.binary_cross_entropy(q, y, weight=w, reduction=reduction)


def _torch_sigmoid_bce(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    return _torch_bce(frameworks.module("torch").sigmoid(x), y, w, p, reduction)


# ---------------------------------------------------------------------------------------
# TensorFlow / Keras runner. TF tensors have no views: "strided" is a tf.strided_slice of a
# larger tensor and "transposed" a tf.transpose, so the kernels see fresh dense buffers and
# 2-D shapes; the layouts still exercise those producer ops and shapes.


def _run_tf(
    subject: Subject,
    dtype: str,
    device: str,
    arrays: list[np.ndarray | None],
    reduction: str,
    grad: bool,
    layout: str,
) -> np.ndarray:
    tf = frameworks.module("tf")
    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        bases = [None if v is None else tf.constant(_exact_base(v, layout, dtype)) for v in arrays]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            if grad:
                tape.watch(bases[0])
            views = [None if b is None else _tf_view(tf, b, layout) for b in bases]
            loss = subject.call(*views, reduction)
            total = tf.reduce_sum(loss) if reduction == "none" else loss
        if not grad:
            return _result(_dtypes.to_float64(loss.numpy()), reduction)
        gradient = tape.gradient(total, bases[0])
    if gradient is None:
        raise RuntimeError(f"{subject.name}: TensorFlow returned no gradient for the input")
    return _unlayout_base(_dtypes.to_float64(tf.convert_to_tensor(gradient).numpy()), layout)


def _tf_view(tf: Any, base: Any, layout: str) -> Any:
    if layout == "strided":
        return tf.strided_slice(base, [0], [base.shape[0]], [2])
    if layout == "transposed":
        return tf.transpose(base)
    return base


def _tf_reduce(loss: Any, reduction: str) -> Any:
    """What a TF user writes after a tf.nn loss: tf.reduce_mean / tf.reduce_sum."""
    tf = frameworks.module("tf")
    return {"none": lambda t: t, "mean": tf.reduce_mean, "sum": tf.reduce_sum}[reduction](loss)


def _tf_bce_with_logits(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    tf = frameworks.module("tf")
    if p is None:
        loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x)
    else:
        loss = tf.nn.weighted_cross_entropy_with_logits(labels=y, logits=x, pos_weight=p)
    return _tf_reduce(loss, reduction)


_KERAS_REDUCTION = {"none": None, "mean": "mean", "sum": "sum"}


def _keras_bce_on(to_prediction: Callable[[Any], Any], from_logits: bool) -> CallFn:
    """A Keras binary_crossentropy call on `to_prediction(input)`.

    Keras averages over the last axis, so every point gets a trailing axis of length 1
    (the mean over one value is exact). `to_prediction` runs after that reshape so a
    tensor it returns reaches Keras as is (keras.ops.sigmoid's `_keras_logits` tag included).
    Unweighted elementwise losses use the function form the docs name; weights and
    reductions use the class form, as users do (`sample_weight`, `reduction`).
    """

    def call(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
        keras = frameworks.module("keras")
        tf = frameworks.module("tf")
        prediction = to_prediction(tf.expand_dims(x, -1))
        target = tf.expand_dims(y, -1)
        if w is None and reduction == "none":
            return keras.losses.binary_crossentropy(target, prediction, from_logits=from_logits)
        kwargs = {} if reduction == "keras_default" else {"reduction": _KERAS_REDUCTION[reduction]}
        loss = keras.losses.BinaryCrossentropy(
            from_logits=from_logits, dtype=x.dtype.name, **kwargs
        )
        return loss(target, prediction, sample_weight=w)

    return call


def _identity(t: Any) -> Any:
    return t


def _tf_sigmoid(t: Any) -> Any:
    return frameworks.module("tf").math.sigmoid(t)


def _keras_sigmoid(t: Any) -> Any:
    return frameworks.module("keras").ops.sigmoid(t)


# ---------------------------------------------------------------------------------------
# The registry.

_NO_POS_WEIGHT_BCE = "a loss on probabilities has no pos_weight ({api} takes none)"


def _subject(
    name: str,
    api: str,
    call: CallFn,
    *,
    reductions: tuple[str, ...] = REDUCTIONS,
    weight_reason: str = "",
    pos_weight_reason: str = "",
    requires: tuple[str, ...] = (),
    notes: str = "",
) -> Subject:
    framework, op = name.split(".", 1)
    return Subject(
        name=name,
        framework=framework,
        op=op,
        reference_op="bce" if op == "bce" else "bce_with_logits",
        api=api,
        dtypes=_dtypes.DTYPES,
        reductions=reductions,
        weight=not weight_reason,
        pos_weight=not pos_weight_reason,
        notes=notes,
        call=call,
        weight_reason=weight_reason,
        pos_weight_reason=pos_weight_reason,
        requires=(framework, *(r for r in requires if r != framework)),
    )


_KERAS_NO_POS_WEIGHT = (
    "keras.losses.binary_crossentropy / BinaryCrossentropy have no pos_weight argument"
)
_KERAS_CLIP = (
    "probabilities are clipped to [epsilon, 1 - epsilon] (keras.backend.epsilon() = 1e-7, "
    "rounded to the dtype) before log, so the loss is capped near -log(1e-7) = 16.1"
)

_RECORDS: tuple[Subject, ...] = (
    _subject(
        "torch.bce_with_logits",
        "torch.nn.functional.binary_cross_entropy_with_logits",
        _torch_bce_with_logits,
        notes="same kernel as nn.BCEWithLogitsLoss; weight and pos_weight are tensor arguments",
    ),
    _subject(
        "torch.bce",
        "torch.nn.functional.binary_cross_entropy",
        _torch_bce,
        pos_weight_reason=_NO_POS_WEIGHT_BCE.format(api="torch.nn.functional.binary_cross_entropy"),
        notes="same kernel as nn.BCELoss; documented to clamp each log term at -100; "
        "raises for probabilities outside [0, 1]",
    ),
    _subject(
        "torch.sigmoid_bce",
        "torch.nn.functional.binary_cross_entropy(torch.sigmoid(x), y)",
        _torch_sigmoid_bce,
        pos_weight_reason=_NO_POS_WEIGHT_BCE.format(api="torch.nn.functional.binary_cross_entropy"),
        notes="two steps in the dtype: torch.sigmoid, then BCELoss (log clamped at -100)",
    ),
    _subject(
        "tf.bce_with_logits",
        "tf.nn.sigmoid_cross_entropy_with_logits "
        "(tf.nn.weighted_cross_entropy_with_logits when pos_weight is given)",
        _tf_bce_with_logits,
        weight_reason="tf.nn.sigmoid_cross_entropy_with_logits has no weight argument "
        "(users multiply the result); pos_weight goes to weighted_cross_entropy_with_logits",
        notes="elementwise op; mean/sum are tf.reduce_mean/tf.reduce_sum of it. "
        "There is no tf.bce: TF's loss on probabilities is Keras' (keras.bce)",
    ),
    _subject(
        "tf.sigmoid_bce",
        "tf.keras.losses.binary_crossentropy(y, tf.math.sigmoid(x))",
        _keras_bce_on(_tf_sigmoid, from_logits=False),
        pos_weight_reason=_KERAS_NO_POS_WEIGHT,
        requires=("keras",),
        notes="what a TF 2 user writes: tf.math.sigmoid, then tf.keras' probability BCE "
        "(tf.keras is Keras 3); weight via BinaryCrossentropy(sample_weight=...); " + _KERAS_CLIP,
    ),
    _subject(
        "keras.bce_with_logits",
        "keras.losses.binary_crossentropy(y, x, from_logits=True)",
        _keras_bce_on(_identity, from_logits=True),
        reductions=KERAS_REDUCTIONS,
        pos_weight_reason=_KERAS_NO_POS_WEIGHT,
        notes="on the TF backend this is tf.nn.sigmoid_cross_entropy_with_logits; weight via "
        "BinaryCrossentropy(sample_weight=...); keras_default = BinaryCrossentropy() "
        "reduction 'sum_over_batch_size'",
    ),
    _subject(
        "keras.bce",
        "keras.losses.binary_crossentropy(y, q)",
        _keras_bce_on(_identity, from_logits=False),
        reductions=KERAS_REDUCTIONS,
        pos_weight_reason=_KERAS_NO_POS_WEIGHT,
        notes=_KERAS_CLIP,
    ),
    _subject(
        "keras.sigmoid_bce",
        "keras.losses.binary_crossentropy(y, keras.ops.sigmoid(x))",
        _keras_bce_on(_keras_sigmoid, from_logits=False),
        reductions=KERAS_REDUCTIONS,
        pos_weight_reason=_KERAS_NO_POS_WEIGHT,
        notes="keras.ops.sigmoid tags its output with _keras_logits and binary_crossentropy "
        "then uses the logits (fused path), unlike tf.sigmoid_bce; eager mode",
    ),
)

SUBJECTS: dict[str, Subject] = {s.name: s for s in _RECORDS}


def get(name: str) -> Subject:
    """The subject called `name`; KeyError listing the valid names otherwise."""
    try:
        return SUBJECTS[name]
    except KeyError:
        why = f" ({NOT_SUBJECTS[name]})" if name in NOT_SUBJECTS else ""
        raise KeyError(
            f"unknown subject {name!r}{why}; valid subjects: {', '.join(SUBJECTS)}"
        ) from None


def _names(values: str | Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split(",")
    return [v.strip() for v in values if v.strip()]


def select(
    frameworks: str | Iterable[str] | None = None, subjects: str | Iterable[str] | None = None
) -> list[Subject]:
    """Subjects in registry order, filtered by framework and/or name (lists or "a,b" strings).

    Unknown subject names raise KeyError (via `get`); unknown frameworks raise ValueError,
    so a typo in a CLI/pytest option is an error rather than an empty run.
    """
    chosen = list(SUBJECTS.values())
    wanted_frameworks = _names(frameworks)
    if wanted_frameworks is not None:
        known = {s.framework for s in chosen}
        unknown = [f for f in wanted_frameworks if f not in known]
        if unknown:
            raise ValueError(f"unknown framework(s) {unknown}; expected some of {sorted(known)}")
        chosen = [s for s in chosen if s.framework in wanted_frameworks]
    wanted_names = _names(subjects)
    if wanted_names is not None:
        names = {get(n).name for n in wanted_names}
        chosen = [s for s in chosen if s.name in names]
    return chosen
