"""PaddlePaddle row subjects (audit/softmax_family.py): paddle.nn.functional.cross_entropy
(soft_label=True for probabilities), paddle.nn.functional.log_softmax and
paddle.logsumexp. Measured on paddle 3.3.1 CPU: their kernels (cross_entropy_with_softmax,
log_softmax, logsumexp) are registered for float32 and float64 only."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import Subject, register_row


def _paddle() -> Any:
    return runners.get("paddle").module


def cross_entropy(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int,
                  labels: Any = None, label_smoothing: float = 0.0,
                  ignore_index: int | None = None) -> Any:
    paddle = _paddle()
    logits = x.reshape([-1, classes])
    kw: dict[str, Any] = {"weight": w, "reduction": reduction,
                          "label_smoothing": label_smoothing}
    if ignore_index is not None:
        kw["ignore_index"] = ignore_index
    if labels is not None:
        return paddle.nn.functional.cross_entropy(logits, paddle.to_tensor(labels), **kw)
    return paddle.nn.functional.cross_entropy(logits, y.reshape([-1, classes]),
                                              soft_label=True, **kw)


def log_softmax(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int) -> Any:
    return _paddle().nn.functional.log_softmax(x.reshape([-1, classes]), axis=-1)


def logsumexp(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int) -> Any:
    return _paddle().logsumexp(x.reshape([-1, classes]), axis=-1)


def _no_kernel(kernel: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((d, "cpu", f"paddle 3.3.1 has no CPU {d} kernel of `{kernel}` (measured: "
                            "'(NotFound) The kernel with key (CPU, Undefined(AnyLayout), "
                            f"{d}) of kernel `{kernel}` is not registered')")
                 for d in ("float16", "bfloat16"))


# reduction='mean' (python/paddle/nn/functional/loss.py, measured on 3.3.1): with
# weight= the sum of the targets' class weights over the rows not ignored; without it
# mean_all, N, an ignored row included (the ignore-aware count is used only for
# ignore_index >= 0; the default -100 still zeroes the row's loss)
REDUCTIONS = ("none", "mean", "sum")
DENOMINATORS = {"mean": {"label": "count", "weighted": "weights", "probs": "count"}}


def _row(op: str, api: str, call: Any, notes: str, kernel: str, weight: bool = False
         ) -> Subject:
    return register_row(Subject(
        name=f"paddle.{op}", framework="paddle", family=op, api=api, dtypes=DTYPES,
        reductions=REDUCTIONS if weight else ("none",), weight=weight, pos_weight=False,
        notes=notes, call=call, weight_reason="" if weight else f"{api} takes no weight",
        pos_weight_reason="softmax losses have no pos_weight", requires=("paddle",),
        unsupported=_no_kernel(kernel), module=__name__, label_smoothing=weight,
        denominators=DENOMINATORS if weight else {}))


_row("cross_entropy", "paddle.nn.functional.cross_entropy (soft_label=True for "
     "probabilities)", cross_entropy, "weight= per class, label_smoothing=, ignore_index= "
     "(default -100); reduction='mean' divides by the sum of the targets' class weights "
     "with weight=, else by N (ignored rows included)", "cross_entropy_with_softmax",
     weight=True)
_row("log_softmax", "paddle.nn.functional.log_softmax", log_softmax, "axis=-1", "log_softmax")
_row("logsumexp", "paddle.logsumexp", logsumexp, "axis=-1", "logsumexp")
