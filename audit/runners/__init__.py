"""Frameworks as runners: one module each (`audit/runners/<framework>.py`, exporting RUNNER).

A runner knows how to import and configure its framework, which devices it has, its
versions and flush-to-zero state, how to turn an exact float64 batch into tensors of a
dtype, device and layout, and how to call a subject's function on them (loss, or the
gradient through the framework's own autograd). Runners are only ever used inside the
framework's worker process (audit.workers): the process that grades never imports a
framework. Adding a framework = a runner module here, a subjects module in
audit/subjects/, a contracts file in audit/contracts/ and a pin in requirements.txt.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import shutil
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

DEVICES: tuple[str, ...] = ("cpu", "cuda")
# DESIGN.md section 10: how the call runs. eager: as written; compiled: the framework's
# compiler (torch.compile, XLA, jax.jit, to_static); autocast_*: the framework's automatic
# mixed precision, graded in the dtype it really returns.
EXECUTIONS: tuple[str, ...] = ("eager", "compiled", "autocast_bfloat16", "autocast_float16")

# call(x, y, weight, pos_weight, reduction) -> loss tensor (elementwise for "none")
CallFn = Callable[[Any, Any, Any, Any, str], Any]

TINY32 = 2.0**-149  # smallest float32 subnormal
MIN_NORMAL32 = 2.0**-126  # smallest float32 normal


class Runner:
    """The protocol every framework runner implements (subclass and override)."""

    name: str = ""
    modules: tuple[str, ...] = ()  # import names that must be installed (cheap spec check)

    def __init__(self) -> None:
        self.threads: int | None = None  # intra-op threads; None = the framework's default
        self._module: ModuleType | None = None

    # -- in the worker process -----------------------------------------------------------
    def load(self) -> ModuleType:
        """Import and configure the framework (once per process)."""
        raise NotImplementedError

    @property
    def module(self) -> ModuleType:
        if self._module is None:
            self._module = self.load()
        return self._module

    def device_reason(self, device: str) -> str | None:
        """None if the framework can run on `device` in this process, else why not."""
        raise NotImplementedError

    def versions(self) -> dict[str, Any]:
        """Versions and settings that decide the numbers."""
        raise NotImplementedError

    def ftz_products(self, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 products 2^-149 * 1, 2^-149 * 2^24 and 2^-126 * 0.5, each over a vector
        long enough for the vectorised loop and its tail, computed by the framework."""
        raise NotImplementedError

    def evaluate(self, call: CallFn, dtype: str, device: str,
                 arrays: list[np.ndarray | None], reduction: str, grad: bool,
                 layout: str, execution: str = "eager", key: Any = None) -> np.ndarray:
        """call(...) on the exact tensors of `arrays` (input, target, weight, pos_weight);
        float64 out in point order: the loss (0-d when reduced) or d loss / d input.
        `execution` other than eager runs it compiled or under autocast (the runner's
        `execution_reason` says which it has); `key` identifies the call for the cache of
        compiled functions (subject, parameters, dtype, device, reduction, grad, layout).
        The dtype of the framework's result is left in `self.output_dtype`."""
        raise NotImplementedError

    # executions this runner has; the others' reasons (override per framework)
    execution_reasons: ClassVar[dict[str, str]] = {}

    def execution_reason(self, execution: str, device: str) -> str | None:
        """None if `execution` runs here, else why not (no framework import: static)."""
        if execution not in EXECUTIONS:
            return f"unknown execution {execution!r}; expected one of {', '.join(EXECUTIONS)}"
        if execution == "eager":
            return None
        return self.execution_reasons.get(f"{execution}@{device}",
                                          self.execution_reasons.get(execution))

    def compiled(self, key: Any, build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """The cached compiled function of `key` (built once per worker: compiling costs
        seconds, calling it microseconds)."""
        cache = self.__dict__.setdefault("_compiled", {})
        if key not in cache:
            cache[key] = build()
        return cache[key]

    # -- shared ---------------------------------------------------------------------------
    def missing(self) -> str | None:
        """Why the framework cannot be imported at all (not installed), cheaply: no import.
        Looked up once (every evaluation asks, through the subject's skip reason)."""
        if not hasattr(self, "_missing"):
            self._missing = next((f"{self.name} is not installed (no module {mod!r})"
                                  for mod in self.modules
                                  if importlib.util.find_spec(mod) is None), None)
        return self._missing

    def ftz(self, device: str) -> dict[str, bool]:
        """Observed flush-to-zero / denormals-are-zero, measured rather than read from flags
        (TensorFlow may set FTZ/DAZ inside its own op threads)."""
        sub_one, sub_big, norm_half = self.ftz_products(device)
        return {
            "subnormal_kept": bool((np.asarray(sub_one) == TINY32).all()),
            "daz": bool((np.asarray(sub_big) == 0).any()),  # 2^-125 is normal
            "ftz": bool((np.asarray(norm_half) == 0).any()),  # 2^-127 is subnormal
        }


def names() -> tuple[str, ...]:
    """Every framework with a runner module, in a stable order (the package's modules)."""
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    order = {"torch": 0, "tf": 1, "keras": 2}
    return tuple(sorted(found, key=lambda n: (order.get(n, 99), n)))


@cache
def get(name: str) -> Runner:
    """The runner of framework `name`; ValueError naming the known ones otherwise."""
    if name not in names():
        raise ValueError(f"no runner for framework {name!r}; runners: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}").RUNNER


def cuda_hint() -> str | None:
    """Why there is certainly no CUDA device here (no driver node, no nvidia-smi), or None
    when there may be one: then only the framework itself can tell."""
    if os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi"):
        return None
    return "no CUDA device on this machine (no /dev/nvidiactl, no nvidia-smi)"
