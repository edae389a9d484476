"""PyTorch subjects (torch 2.13 CPU: every op has float16/bfloat16/float32/float64 kernels,
so no dtype is declared unsupported; failures at run time are findings, not skips)."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import NOT_SUBJECTS, REDUCTIONS, Subject, register

NOT_SUBJECTS["torch.focal_with_logits"] = (
    "torchvision.ops.sigmoid_focal_loss is not audited: the PyPI torchvision wheel does not "
    "work with the CPU torch wheel (its C extension fails: operator torchvision::nms does "
    "not exist)")

_NO_POS_WEIGHT = "a loss on probabilities has no pos_weight (torch.nn.functional." \
                 "binary_cross_entropy takes none)"


def _F() -> Any:
    return runners.get("torch").module.nn.functional


def bce_with_logits(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    return _F().binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=p,
                                                 reduction=reduction)


def bce(q: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    return _F().binary_cross_entropy(q, y, weight=w, reduction=reduction)


def sigmoid_bce(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    return bce(runners.get("torch").module.sigmoid(x), y, w, p, reduction)


def _torch(op: str, api: str, call: Any, notes: str, pos_weight_reason: str = "") -> Subject:
    return register(Subject(
        name=f"torch.{op}", framework="torch", family=op, api=api, dtypes=DTYPES,
        reductions=REDUCTIONS, weight=True, pos_weight=not pos_weight_reason, notes=notes,
        call=call, pos_weight_reason=pos_weight_reason, requires=("torch",),
        module=__name__))


_torch("bce_with_logits", "torch.nn.functional.binary_cross_entropy_with_logits",
       bce_with_logits,
       "same kernel as nn.BCEWithLogitsLoss; weight and pos_weight are tensor arguments")
_torch("bce", "torch.nn.functional.binary_cross_entropy", bce,
       "same kernel as nn.BCELoss; documented to clamp each log term at -100; raises for "
       "probabilities outside [0, 1]", _NO_POS_WEIGHT)
_torch("sigmoid_bce", "torch.nn.functional.binary_cross_entropy(torch.sigmoid(x), y)",
       sigmoid_bce, "two steps in the dtype: torch.sigmoid, then BCELoss (log clamped at -100)",
       _NO_POS_WEIGHT)
