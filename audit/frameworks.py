"""Facts about the frameworks on this machine, asked of their worker processes.

The grading process never imports a framework (audit.workers); this module is what the
harness asks instead: which frameworks have runners, their versions, flush-to-zero
state and usable devices. Only the frameworks a run selected are asked, so a torch-only
run never starts TensorFlow.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable
from typing import Any

from audit import runners, workers
from audit.subjects import device_reason

DEVICES = runners.DEVICES


def frameworks() -> tuple[str, ...]:
    """Every framework with a runner module."""
    return runners.names()


def single_threaded() -> None:
    """One intra-op thread per framework worker started from now on (sweep processes:
    one process per core beats several whose pools fight over the same cores)."""
    workers.configure(threads=1)
    try:  # and one thread per fused reference / grading kernel launch
        from reference import fast_numba
    except ImportError:  # numba missing: the numpy route has no threads of its own
        return
    fast_numba.configure(threads=1)


def devices_available(chosen: Iterable[str] | None = None) -> dict[str, str | None]:
    """Device -> None if usable here, else the reason; "cuda" is decided by the first
    chosen framework that could have it (torch by default)."""
    reasons: dict[str, str | None] = {"cpu": None}
    names = list(chosen) if chosen is not None else ["torch"]
    hint = runners.cuda_hint()
    if hint is not None or not names:
        reasons["cuda"] = hint or "no framework selected"
    else:
        reasons["cuda"] = device_reason(names[0], "cuda")
    return reasons


def versions(chosen: Iterable[str] | None = None) -> dict[str, Any]:
    """Versions of everything that decides the numbers; frameworks only where chosen."""
    import ml_dtypes
    import mpmath
    import numpy

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "machine": platform.machine(), "numpy": numpy.__version__,
        "ml_dtypes": ml_dtypes.__version__, "mpmath": mpmath.__version__,
    }
    for framework in (runners.names() if chosen is None else chosen):
        try:
            info.update(workers.query(framework, "versions"))
        except (workers.WorkerUnavailable, workers.WorkerCrash, workers.FrameworkError):
            info[framework] = None
    return info


def ftz_state(chosen: Iterable[str] | None = None
              ) -> dict[str, dict[str, dict[str, bool] | str]]:
    """Observed flush-to-zero / denormals-are-zero per framework and device, in float32
    (measured by each framework's own kernels; a reason string where it cannot run)."""
    state: dict[str, dict[str, dict[str, bool] | str]] = {}
    for framework in (runners.names() if chosen is None else chosen):
        state[framework] = {}
        for device in DEVICES:
            reason = device_reason(framework, device)
            if reason is None:
                try:
                    state[framework][device] = workers.query(framework, "ftz", device)
                except (workers.WorkerCrash, workers.FrameworkError) as e:
                    state[framework][device] = str(e)
            else:
                state[framework][device] = reason
    return state
