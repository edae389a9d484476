"""PaddlePaddle runner (dynamic graph). Paddle must never share a process with
TensorFlow (importing paddle after tensorflow segfaults); workers guarantee it. Layouts
are producer ops, as for TF: "strided" slices a larger tensor with step 2 and
"transposed" is paddle.transpose of the base."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

from audit import dtypes as _dtypes
from audit import layouts
from audit.runners import MIN_NORMAL32, TINY32, CallFn, Runner


class PaddleRunner(Runner):
    name = "paddle"
    modules = ("paddle",)

    def load(self) -> ModuleType:
        if self.threads is not None:  # paddle's CPU kernels size their pools from OpenMP
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No ccache found" at import
            import paddle
        paddle.set_device("cpu")
        return paddle

    def device_reason(self, device: str) -> str | None:
        if device == "cpu":
            return None
        paddle = self.module
        if not paddle.device.is_compiled_with_cuda():
            return f"paddle {paddle.__version__} is a CPU build (not compiled with CUDA)"
        if paddle.device.cuda.device_count() == 0:
            return "no CUDA device visible to paddle"
        return None

    def versions(self) -> dict[str, Any]:
        paddle = self.module
        return {"paddle": paddle.__version__, "paddle_cuda": paddle.version.cuda()}

    def _to(self, values: np.ndarray, dtype: str, device: str) -> Any:
        paddle = self.module
        paddle.set_device("gpu" if device == "cuda" else "cpu")
        host = values.astype(np.float32) if dtype == "bfloat16" else values
        return paddle.to_tensor(np.array(host)).astype(dtype)

    def ftz_products(self, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sub = self._to(np.full(33, TINY32, np.float32), "float32", device)
        norm = self._to(np.full(33, MIN_NORMAL32, np.float32), "float32", device)
        return ((sub * 1.0).numpy(), (sub * 2.0**24).numpy(), (norm * 0.5).numpy())

    def evaluate(self, call: CallFn, dtype: str, device: str,
                 arrays: list[np.ndarray | None], reduction: str, grad: bool,
                 layout: str, execution: str = "eager", key: Any = None) -> np.ndarray:
        paddle = self.module
        if execution == "compiled":  # dygraph-to-static (measured to work on paddle 3.3.1)
            call = self.compiled(key, lambda c=call: paddle.jit.to_static(c, full_graph=True))
        elif execution.startswith("autocast_"):
            amp, plain = execution.removeprefix("autocast_"), call

            def call(*args: Any) -> Any:
                with paddle.amp.auto_cast(dtype=amp):
                    return plain(*args)
        bases = [None if v is None else self._to(layouts.exact_base(v, layout, dtype), dtype,
                                                  device) for v in arrays]
        if grad:
            bases[0].stop_gradient = False
        views = [None if b is None else _view(paddle, b, layout) for b in bases]
        loss = call(*views, reduction)
        self.output_dtype = str(loss.dtype).removeprefix("paddle.")
        if not grad:
            return layouts.result(_numpy(loss), reduction)
        loss.backward(paddle.ones_like(loss) if reduction == "none" else None)
        if bases[0].grad is None:
            raise RuntimeError("paddle returned no gradient for the input")
        return layouts.unlayout(_numpy(bases[0].grad), layout)


def _view(paddle: ModuleType, base: Any, layout: str) -> Any:
    if layout == "strided":
        return base[::2]
    if layout == "transposed":
        return paddle.transpose(base, [1, 0])
    return base


def _numpy(tensor: Any) -> np.ndarray:
    if str(tensor.dtype).endswith(("bfloat16", "float16")):
        tensor = tensor.astype("float32")  # exact widening
    return _dtypes.to_float64(tensor.detach().numpy())


RUNNER = PaddleRunner()
