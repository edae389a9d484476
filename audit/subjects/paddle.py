"""PaddlePaddle subjects (paddlepaddle 3.3.1, CPU build). Measured: the CPU kernels of
sigmoid_cross_entropy_with_logits, bce_loss and sigmoid are registered for float32 and
float64 only; float16 / bfloat16 raise "(NotFound) The kernel with key (CPU, ..., float16)
of kernel `...` is not registered", so those dtypes are skips with that reason."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import REDUCTIONS, Subject, register

_NO_POS_WEIGHT = "paddle.nn.functional.binary_cross_entropy (a loss on probabilities) takes " \
                 "no pos_weight"


def _no_kernel(kernel: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((d, "cpu", f"paddle 3.3.1 has no CPU {d} kernel of `{kernel}` (measured: "
                            "'(NotFound) The kernel with key (CPU, Undefined(AnyLayout), "
                            f"{d}) of kernel `{kernel}` is not registered')")
                 for d in ("float16", "bfloat16"))


def _F() -> Any:
    return runners.get("paddle").module.nn.functional


def bce_with_logits(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    return _F().binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=p,
                                                 reduction=reduction)


def bce(q: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    return _F().binary_cross_entropy(q, y, weight=w, reduction=reduction)


def sigmoid_bce(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    return bce(_F().sigmoid(x), y, w, p, reduction)


def _paddle(op: str, api: str, call: Any, notes: str, kernel: str,
            pos_weight_reason: str = "") -> Subject:
    return register(Subject(
        name=f"paddle.{op}", framework="paddle", family=op, api=api, dtypes=DTYPES,
        reductions=REDUCTIONS, weight=True, pos_weight=not pos_weight_reason, notes=notes,
        call=call, pos_weight_reason=pos_weight_reason, requires=("paddle",),
        unsupported=_no_kernel(kernel), module=__name__))


_paddle("bce_with_logits", "paddle.nn.functional.binary_cross_entropy_with_logits",
        bce_with_logits, "weight and pos_weight are tensor arguments, as in torch",
        "sigmoid_cross_entropy_with_logits")
_paddle("bce", "paddle.nn.functional.binary_cross_entropy", bce,
        "the bce_loss kernel; probabilities outside [0, 1] are a kernel error", "bce_loss",
        _NO_POS_WEIGHT)
_paddle("sigmoid_bce",
        "paddle.nn.functional.binary_cross_entropy(paddle.nn.functional.sigmoid(x), y)",
        sigmoid_bce, "two steps in the dtype: F.sigmoid, then F.binary_cross_entropy",
        "sigmoid", _NO_POS_WEIGHT)
