"""JAX runner (optax losses on jax.numpy arrays). float64 needs `jax_enable_x64`, set in
the jax worker only. Arrays are immutable: "strided" is a step-2 slice of a larger array
and "transposed" its .T (XLA ops, like TF's). Gradients: jax.vjp with a cotangent of
ones (elementwise losses) or 1 (reduced), i.e. what jax.grad of the sum gives."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from audit import dtypes as _dtypes
from audit import layouts
from audit.runners import MIN_NORMAL32, TINY32, CallFn, Runner


def jax_cache_dir() -> str | None:
    """XLA's persistent compilation cache for the jax workers: BCE_AUDIT_JAX_CACHE (a
    folder, or "off"), else $XDG_CACHE_HOME/bce-stability-audit/jax (~/.cache/...). Eager
    jax compiles each op for each shape; the audit's workers (one per pytest-xdist worker,
    and every later run) then load the same executables instead of compiling them again:
    3-4x faster jax checks when warm (measured on the row checks). Entries are keyed by
    jax itself (version, flags, backend, program), so they never change a result."""
    chosen = os.environ.get("BCE_AUDIT_JAX_CACHE")
    if chosen == "off":
        return None
    if chosen:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "bce-stability-audit", "jax")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:  # a read-only home: compile every time, as without the cache
        return None
    return path


class JaxRunner(Runner):
    name = "jax"
    modules = ("jax", "optax")

    def load(self) -> ModuleType:
        if self.threads == 1:
            os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                               "intra_op_parallelism_threads=1")
        import jax

        jax.config.update("jax_enable_x64", True)
        cache = jax_cache_dir()
        if cache:  # eager jax compiles every op per shape: share them across processes
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        return jax

    def device_reason(self, device: str) -> str | None:
        if device == "cpu":
            return None
        jax = self.module
        if not any(d.platform == "gpu" for d in jax.devices()):
            return f"no GPU visible to jax {jax.__version__} (jax.devices(): " \
                   f"{', '.join(sorted({d.platform for d in jax.devices()}))})"
        return None

    def versions(self) -> dict[str, Any]:
        import jaxlib
        import optax

        jax = self.module
        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "optax": optax.__version__, "jax_x64": bool(jax.config.jax_enable_x64)}

    def _device(self, device: str) -> Any:
        jax = self.module
        return jax.devices("gpu" if device == "cuda" else "cpu")[0]

    def ftz_products(self, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        jax = self.module
        jnp = jax.numpy
        dev = self._device(device)
        sub = jax.device_put(np.full(33, TINY32, np.float32), dev)
        norm = jax.device_put(np.full(33, MIN_NORMAL32, np.float32), dev)
        return tuple(np.asarray(jnp.multiply(a, jnp.float32(b)))
                     for a, b in ((sub, 1.0), (sub, 2.0**24), (norm, 0.5)))

    execution_reasons: ClassVar[dict[str, str]] = {
        "autocast_bfloat16": "jax has no autocast: mixed precision in JAX is explicit casting "
                             "(e.g. the jmp library's policies)",
        "autocast_float16": "jax has no autocast: mixed precision in JAX is explicit casting "
                            "(e.g. the jmp library's policies)",
    }

    def evaluate(self, call: CallFn, dtype: str, device: str,
                 arrays: list[np.ndarray | None], reduction: str, grad: bool,
                 layout: str, execution: str = "eager", key: Any = None) -> np.ndarray:
        jax = self.module
        dev = self._device(device)
        bases = [None if v is None else jax.device_put(layouts.exact_base(v, layout, dtype),
                                                       dev) for v in arrays]

        def run(*given: Any) -> Any:
            def loss_of(first: Any) -> Any:
                views = [None if b is None else _view(b, layout) for b in (first, *given[1:])]
                return call(*views, reduction)

            if not grad:
                return loss_of(given[0])
            out, vjp = jax.vjp(loss_of, given[0])
            return vjp(jax.numpy.ones_like(out))[0]

        if execution == "compiled":  # one jit per call and argument pattern (shapes: XLA's)
            run = self.compiled(key, lambda r=run: jax.jit(r))
        out = run(*bases)
        self.output_dtype = str(out.dtype)
        values = _dtypes.to_float64(np.asarray(out))
        return layouts.unlayout(values, layout) if grad else layouts.result(values, reduction)


def _view(base: Any, layout: str) -> Any:
    if layout == "strided":
        return base[::2]
    if layout == "transposed":
        return base.T
    return base


RUNNER = JaxRunner()
