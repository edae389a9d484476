"""PyTorch row subjects (audit/softmax_family.py): torch.nn.functional.cross_entropy,
torch.log_softmax and torch.logsumexp. torch 2.13 CPU has float16, bfloat16, float32 and
float64 kernels for all three (measured), so no dtype is a skip."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import Subject, register_row


def _torch() -> Any:
    return runners.get("torch").module


def cross_entropy(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int,
                  labels: Any = None, label_smoothing: float = 0.0,
                  ignore_index: int | None = None) -> Any:
    """F.cross_entropy on rows of `classes` logits: class indices (`labels`) or class
    probabilities (`y`, the same shape as the logits)."""
    torch = _torch()
    target = torch.from_numpy(labels) if labels is not None else y.reshape(-1, classes)
    kw: dict[str, Any] = {"weight": w, "label_smoothing": label_smoothing,
                          "reduction": reduction}
    if ignore_index is not None:
        kw["ignore_index"] = ignore_index
    return torch.nn.functional.cross_entropy(x.reshape(-1, classes), target, **kw)


def log_softmax(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int) -> Any:
    return _torch().log_softmax(x.reshape(-1, classes), dim=-1)


def logsumexp(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int) -> Any:
    return _torch().logsumexp(x.reshape(-1, classes), dim=-1)


# reduction='mean' (measured, and LossNLL.cpp): class indices divide by the sum of the
# targets' class weights over the rows not ignored (1 each without weight=; the label
# smoothing part by the same sum), probabilities by N
REDUCTIONS = ("none", "mean", "sum")
DENOMINATORS = {"mean": {"label": "weights", "weighted": "weights", "probs": "count"}}


def _row(op: str, family: str, api: str, call: Any, notes: str, weight: bool = False
         ) -> Subject:
    return register_row(Subject(
        name=f"torch.{op}", framework="torch", family=family, api=api, dtypes=DTYPES,
        reductions=REDUCTIONS if weight else ("none",), weight=weight, pos_weight=False,
        notes=notes, call=call, weight_reason="" if weight else f"{api} takes no weight",
        pos_weight_reason="softmax losses have no pos_weight", requires=("torch",),
        module=__name__, label_smoothing=weight,
        denominators=DENOMINATORS if weight else {}))


_row("cross_entropy", "cross_entropy", "torch.nn.functional.cross_entropy", cross_entropy,
     "class indices or class probabilities; weight= per class, label_smoothing=, "
     "ignore_index= (default -100); reduction='mean' divides by the sum of the targets' "
     "class weights (rows not ignored) for class indices, by N for probabilities",
     weight=True)
_row("log_softmax", "log_softmax", "torch.log_softmax", log_softmax, "dim=-1")
_row("logsumexp", "logsumexp", "torch.logsumexp", logsumexp, "dim=-1")
