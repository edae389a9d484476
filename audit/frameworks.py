"""Lazy, once-per-process access to the audited frameworks, and facts about this machine.

Importing TensorFlow costs seconds, so nothing here imports a framework at module import
time: `module(name)` imports on first use and caches the module or the failure. The
registry (`audit.subjects`) asks `available()` for skip reasons, so a machine without
TensorFlow still lists and runs the torch subjects.
"""

from __future__ import annotations

import os
import platform
import sys
from types import ModuleType
from typing import Any

FRAMEWORKS: tuple[str, ...] = ("torch", "tf", "keras")
DEVICES: tuple[str, ...] = ("cpu", "cuda")

_MODULES: dict[str, ModuleType] = {}
_FAILURES: dict[str, str] = {}

# TensorFlow otherwise sizes its pools to every core; pytest-xdist runs several workers.
_TF_INTRA_THREADS = max(1, min(4, os.cpu_count() or 1))
_TF_INTER_THREADS = 2
_SINGLE = False  # single_threaded() was called


def single_threaded() -> None:
    """One intra-op thread for every framework in this process (sweep workers: one process
    per core beats several processes whose pools fight over the same cores). Call before
    the first use of TensorFlow; torch is adjusted whenever."""
    global _TF_INTRA_THREADS, _TF_INTER_THREADS, _SINGLE
    _TF_INTRA_THREADS = _TF_INTER_THREADS = 1
    _SINGLE = True
    if "torch" in _MODULES:
        _MODULES["torch"].set_num_threads(1)


def _import_torch() -> ModuleType:
    import torch

    if _SINGLE:
        torch.set_num_threads(1)
    return torch


def _import_tf() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(_TF_INTRA_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(_TF_INTER_THREADS)
    except RuntimeError:
        pass  # the TF runtime was already initialised by someone else; keep its pools
    return tf


def _import_keras() -> ModuleType:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    module("tf")  # keras on the TF backend: configure TF (threads, logging) first
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            f"keras backend is {backend!r}; the keras subjects audit the TensorFlow backend "
            "(unset KERAS_BACKEND or set it to 'tensorflow')"
        )
    return keras


_IMPORTERS = {"torch": _import_torch, "tf": _import_tf, "keras": _import_keras}


def _check_framework(framework: str) -> None:
    if framework not in _IMPORTERS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")


def module(framework: str) -> ModuleType:
    """The imported framework module ("torch", "tf" -> tensorflow, "keras").

    Imports at most once per process; a failed import is remembered and re-raised as
    ImportError with the original reason, so it is not retried on every call.
    """
    _check_framework(framework)
    if framework in _MODULES:
        return _MODULES[framework]
    if framework in _FAILURES:
        raise ImportError(_FAILURES[framework])
    try:
        mod = _IMPORTERS[framework]()
    except Exception as exc:  # any import-time failure is a reason to skip, not to crash
        _FAILURES[framework] = f"{framework} is not importable: {type(exc).__name__}: {exc}"
        raise ImportError(_FAILURES[framework]) from exc
    _MODULES[framework] = mod
    return mod


def available(framework: str) -> str | None:
    """None if `framework` can be used in this process, else the reason it cannot."""
    try:
        module(framework)
    except ImportError as exc:
        return str(exc)
    return None


def device_reason(framework: str, device: str) -> str | None:
    """None if `framework` can run on `device` here, else why not (framework missing too)."""
    if device not in DEVICES:
        return f"unknown device {device!r}; expected one of {', '.join(DEVICES)}"
    reason = available(framework)
    if reason is not None or device == "cpu":
        return reason
    if framework == "torch":
        if not module("torch").cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        return None
    tf = module("tf")
    if not tf.config.list_physical_devices("GPU"):
        return f"no GPU visible to TensorFlow {tf.__version__} (tf.config has no 'GPU' device)"
    return None


def devices_available() -> dict[str, str | None]:
    """Device -> None if usable here, else the reason; "cuda" is decided by torch."""
    reasons: dict[str, str | None] = {"cpu": None}
    torch_reason = available("torch")
    if torch_reason is not None:
        reasons["cuda"] = f"cannot query CUDA: {torch_reason}"
    else:
        reasons["cuda"] = device_reason("torch", "cuda")
    return reasons


def versions() -> dict[str, Any]:
    """Versions of everything that decides the numbers (imports the frameworks)."""
    import ml_dtypes
    import mpmath
    import numpy

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numpy": numpy.__version__,
        "ml_dtypes": ml_dtypes.__version__,
        "mpmath": mpmath.__version__,
    }
    for framework in FRAMEWORKS:
        info[framework] = None if available(framework) else module(framework).__version__
    if available("torch") is None:
        torch = module("torch")
        info["torch_cuda"] = torch.version.cuda
        info["torch_num_threads"] = torch.get_num_threads()
    if available("tf") is None:
        info["tf_onednn_opts"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
        threading = module("tf").config.threading
        info["tf_intra_op_threads"] = threading.get_intra_op_parallelism_threads()
    if available("keras") is None:
        info["keras_backend"] = module("keras").backend.backend()
        info["keras_epsilon"] = module("keras").backend.epsilon()
    return info


_TINY = 2.0**-149  # smallest float32 subnormal
_MIN_NORMAL = 2.0**-126  # smallest float32 normal


def _ftz_torch(device: str) -> dict[str, bool]:
    torch = module("torch")
    n = 33  # long enough for the vectorised loop and its scalar tail
    sub = torch.full((n,), _TINY, dtype=torch.float32, device=device)
    norm = torch.full((n,), _MIN_NORMAL, dtype=torch.float32, device=device)
    return _ftz_flags(
        (sub * 1.0).cpu().numpy(), (sub * 2.0**24).cpu().numpy(), (norm * 0.5).cpu().numpy()
    )


def _ftz_tf(device: str, ops: Any) -> dict[str, bool]:
    tf = module("tf")
    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        sub = tf.fill([33], tf.constant(_TINY, tf.float32))
        norm = tf.fill([33], tf.constant(_MIN_NORMAL, tf.float32))
        one, big, half = (tf.constant(v, tf.float32) for v in (1.0, 2.0**24, 0.5))
        return _ftz_flags(
            ops.multiply(sub, one).numpy(),
            ops.multiply(sub, big).numpy(),
            ops.multiply(norm, half).numpy(),
        )


def _ftz_flags(sub_times_one: Any, sub_times_big: Any, normal_times_half: Any) -> dict[str, bool]:
    """Turn three observed float32 products into flags (True = that mode is active)."""
    return {
        "subnormal_kept": bool((sub_times_one == _TINY).all()),  # 2^-149 * 1
        "daz": bool((sub_times_big == 0).any()),  # 2^-149 * 2^24 = 2^-125 is normal
        "ftz": bool((normal_times_half == 0).any()),  # 2^-126 * 0.5 = 2^-127 is subnormal
    }


def ftz_state() -> dict[str, dict[str, dict[str, bool] | str]]:
    """Observed flush-to-zero / denormals-are-zero per framework and device, in float32.

    Measured, not read from flags: TensorFlow may set FTZ/DAZ inside its own op threads,
    which no Python-side query would show. A framework or device that is not usable
    gets its reason string instead of flags.
    """
    state: dict[str, dict[str, dict[str, bool] | str]] = {}
    for framework in FRAMEWORKS:
        state[framework] = {}
        for device in DEVICES:
            reason = device_reason(framework, device)
            if reason is not None:
                state[framework][device] = reason
            elif framework == "torch":
                state[framework][device] = _ftz_torch(device)
            elif framework == "tf":
                state[framework][device] = _ftz_tf(device, module("tf").math)
            else:
                state[framework][device] = _ftz_tf(device, module("keras").ops)
    return state
