"""PyTorch runner: tensors with real strided views, autograd through .backward()."""

from __future__ import annotations

import shutil
from types import ModuleType
from typing import Any

import numpy as np

from audit import layouts
from audit.runners import MIN_NORMAL32, TINY32, CallFn, Runner


class TorchRunner(Runner):
    name = "torch"
    modules = ("torch",)

    def load(self) -> ModuleType:
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return torch

    def device_reason(self, device: str) -> str | None:
        if device == "cpu":
            return None
        if not self.module.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        return None

    def versions(self) -> dict[str, Any]:
        torch = self.module
        return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                "torch_num_threads": torch.get_num_threads()}

    def ftz_products(self, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = self.module
        sub = torch.full((33,), TINY32, dtype=torch.float32, device=device)
        norm = torch.full((33,), MIN_NORMAL32, dtype=torch.float32, device=device)
        return tuple(t.cpu().numpy() for t in (sub * 1.0, sub * 2.0**24, norm * 0.5))

    def execution_reason(self, execution: str, device: str) -> str | None:
        reason = super().execution_reason(execution, device)
        if reason is None and execution == "compiled" and not any(
                shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "torch.compile (inductor) needs a C++ compiler: none on PATH"
        return reason

    def _execution(self, call: CallFn, execution: str, device: str, key: Any) -> CallFn:
        torch = self.module
        if execution == "compiled":  # dynamic shapes: one compile serves every batch size
            # every key recompiles the same subject function: past dynamo's recompile
            # limit (8) it would silently run eager instead; raise the limit and make
            # hitting it an error, never a quiet fallback
            dynamo = torch._dynamo.config
            dynamo.recompile_limit = max(dynamo.recompile_limit, 1024)
            dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4096)
            dynamo.fail_on_recompile_limit_hit = True
            return self.compiled(key, lambda: torch.compile(call, dynamic=True))
        if execution.startswith("autocast_"):
            amp = getattr(torch, execution.removeprefix("autocast_"))

            def under_autocast(*args: Any) -> Any:
                with torch.autocast(device_type=device, dtype=amp):
                    return call(*args)

            return under_autocast
        return call

    def evaluate(self, call: CallFn, dtype: str, device: str,
                 arrays: list[np.ndarray | None], reduction: str, grad: bool,
                 layout: str, execution: str = "eager", key: Any = None) -> np.ndarray:
        torch = self.module
        call = self._execution(call, execution, device, key)
        bases: list[Any] = []
        views: list[Any] = []
        for values in arrays:
            if values is None:
                bases.append(None)
                views.append(None)
                continue
            exact = layouts.exact_base(values, layout, dtype)
            host = exact.astype(np.float32) if dtype == "bfloat16" else exact
            base = torch.from_numpy(np.array(host)).to(device=device,
                                                       dtype=getattr(torch, dtype))
            bases.append(base)
            views.append(_view(base, layout))
        if grad:
            bases[0].requires_grad_(True)
            views[0] = _view(bases[0], layout)
        loss = call(*views, reduction)
        self.output_dtype = str(loss.dtype).removeprefix("torch.")
        if not grad:
            return layouts.result(_numpy(torch, loss), reduction)
        loss.backward(torch.ones_like(loss) if reduction == "none" else None)
        return layouts.unlayout(_numpy(torch, bases[0].grad), layout)


def _view(base: Any, layout: str) -> Any:
    if layout == "strided":
        return base[::2]
    if layout == "transposed":
        return base.transpose(0, 1)
    return base


def _numpy(torch: ModuleType, tensor: Any) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()  # exact; numpy has no native bfloat16
    return tensor.numpy().astype(np.float64)


RUNNER = TorchRunner()
