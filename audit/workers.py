"""Framework worker processes: every framework is evaluated in a process of its own.

Importing paddle after TensorFlow segfaults, and a kernel that aborts must not end the
audit, so the grading process never imports a framework. `evaluate` sends the batch to
the framework's worker (spawned on first use, reused across calls) through one shared
memory block per worker: the arrays are written once by the parent and read in place by
the worker (no pickling of data), which writes its float64 result back into the block.

Failures come back as exceptions the harness turns into findings:
- FrameworkError: the framework raised (status "error"; the worker lives on);
- WorkerCrash: the worker died (signal, abort, os._exit, out of memory) or outlived the
  call timeout and was killed (status "crash"); the next call starts a fresh worker;
- WorkerUnavailable: the framework cannot start here (a skip reason, not a finding).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing import shared_memory
from typing import Any

import numpy as np

START_TIMEOUT = 300.0  # importing a framework on a loaded 2-core machine
_SETTINGS: dict[str, Any] = {"threads": None}
# What a worker loads before serving: the subject registry module (injected by it, so
# this module imports no registry) and the users' subject modules, in load order.
REGISTRY: dict[str, Any] = {"module": None, "user_modules": []}


class FrameworkError(Exception):
    """The framework raised inside its worker; str() is 'TypeName: message'."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class WorkerCrash(Exception):
    """The worker process died or hung while evaluating this call."""


class WorkerUnavailable(Exception):
    """The framework's worker could not start (framework not importable here)."""


def configure(*, threads: int | None = None) -> None:
    """Intra-op threads per worker started from now on (sweep processes use 1)."""
    if threads is not None:
        _SETTINGS["threads"] = threads


def call_timeout() -> float:
    """Seconds a call may take before its worker counts as hung: BCE_AUDIT_TIMEOUT, 600."""
    return float(os.environ.get("BCE_AUDIT_TIMEOUT", "600"))


def describe_signal(exitcode: int | None) -> str:
    if exitcode is None:
        return "is gone"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class Worker:
    """One framework's process, its pipe and its shared memory block."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.proc: Any = None
        self.conn: Any = None
        self.shm: shared_memory.SharedMemory | None = None
        self.log: str | None = None
        self.lock = threading.RLock()  # one request at a time (the pipe and block are shared)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        import tempfile

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        # the worker's stderr (C++ logging, oneDNN / absl banners, abort messages) goes to
        # a file of its own: quiet output, and a crash report can quote its last line
        fd, self.log = tempfile.mkstemp(prefix=f"bce-audit-{self.framework}-", suffix=".log")
        os.close(fd)
        settings = {"threads": _SETTINGS["threads"], "registry": REGISTRY["module"],
                    "modules": list(REGISTRY["user_modules"]), "log": self.log}
        self.proc = ctx.Process(target=_main, args=(child, self.framework, settings),
                                name=f"bce-audit-{self.framework}", daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        reply = self._receive(START_TIMEOUT, "starting")
        if reply[0] != "ready":
            self.stop()
            raise WorkerUnavailable(reply[1])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            if kill or not self.alive():
                self.proc.kill()
            else:
                try:
                    self.conn.send(("stop",))
                except (OSError, BrokenPipeError):
                    self.proc.kill()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        if self.shm is not None:
            self.shm.close()
            self.shm.unlink()
        if self.log:
            with contextlib.suppress(OSError):
                os.unlink(self.log)
        self.proc = self.conn = self.shm = self.log = None

    # -- calls --------------------------------------------------------------------------
    def _receive(self, timeout: float, what: str) -> tuple:
        deadline = time.monotonic() + timeout
        while True:
            if self.conn.poll(0.05):
                try:
                    return self.conn.recv()
                except (EOFError, OSError):
                    pass  # the worker died mid-message: reported below
            if not self.proc.is_alive() or self.conn.closed:
                self.proc.join(1)
                code = self.proc.exitcode
                said = self.last_words()
                self.stop(kill=True)
                raise WorkerCrash(f"the {self.framework} worker {describe_signal(code)} "
                                  f"while {what}" + (f" (its last stderr line: {said})"
                                                     if said else ""))
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise WorkerCrash(f"the {self.framework} worker hung while {what} "
                                  f"(killed after {timeout:g} s)")

    def last_words(self) -> str:
        """The last non-empty line the worker wrote to stderr (200 characters at most)."""
        if not self.log:
            return ""
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log) - 4096))
                lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
        except OSError:
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1][:200] if lines else ""

    def _block(self, nbytes: int) -> shared_memory.SharedMemory:
        if self.shm is None or self.shm.size < nbytes:
            if self.shm is not None:
                self.shm.close()
                self.shm.unlink()
            self.shm = shared_memory.SharedMemory(create=True, size=max(nbytes, 1 << 16))
        return self.shm

    def request(self, message: tuple, what: str) -> Any:
        with self.lock:
            with contextlib.suppress(OSError):  # a dead worker: _receive reports it
                self.conn.send(message)
            reply = self._receive(call_timeout(), what)
        if reply[0] == "error":
            raise FrameworkError(reply[1], reply[2])
        return reply[1]

    def evaluate(self, subject: str, dtype: str, device: str,
                 arrays: list[np.ndarray | None], reduction: str, grad: bool,
                 layout: str, params: dict[str, Any] | None = None,
                 execution: str = "eager") -> tuple[np.ndarray, str]:
        """(values, the dtype the framework returned them in)."""
        with self.lock:
            return self._evaluate(subject, dtype, device, arrays, reduction, grad, layout,
                                  params, execution)

    def _evaluate(self, subject: str, dtype: str, device: str,
                  arrays: list[np.ndarray | None], reduction: str, grad: bool,
                  layout: str, params: dict[str, Any] | None,
                  execution: str) -> tuple[np.ndarray, str]:
        n = arrays[0].size
        n_out = 1 if reduction != "none" and not grad else n
        specs: list[tuple[int, int] | None] = []
        offset = 0
        for a in arrays:
            specs.append(None if a is None else (offset, a.size))
            offset += 0 if a is None else a.size * 8
        shm = self._block(offset + n_out * 8)
        for a, spec in zip(arrays, specs, strict=True):
            if spec is not None:
                np.ndarray(a.size, np.float64, shm.buf, spec[0])[:] = a
        shape, returned = self.request(("evaluate", subject, dtype, device, reduction, grad,
                                        layout, shm.name, specs, offset, params or {},
                                        execution), f"evaluating {subject} {dtype}")
        size = int(np.prod(shape))
        return np.ndarray(size, np.float64, shm.buf, offset).copy().reshape(shape), returned


_WORKERS: dict[str, Worker] = {}
_FAILED: dict[str, str] = {}
_START_LOCK = threading.Lock()


def worker(framework: str) -> Worker:
    """The running worker of `framework` (started, or restarted after a crash)."""
    with _START_LOCK:
        return _running(framework)


def _running(framework: str) -> Worker:
    if framework in _FAILED:
        raise WorkerUnavailable(_FAILED[framework])
    w = _WORKERS.get(framework)
    if w is None or not w.alive():
        if w is not None:
            w.stop(kill=True)
        w = _WORKERS[framework] = Worker(framework)
        try:
            w.start()
        except WorkerUnavailable as e:
            _FAILED[framework] = str(e)
            del _WORKERS[framework]
            raise
        except WorkerCrash as e:
            del _WORKERS[framework]
            _FAILED[framework] = f"{framework} could not start: {e}"
            raise WorkerUnavailable(_FAILED[framework]) from None
    return w


def start_failure(framework: str) -> str | None:
    """Why the framework's worker failed to start in this process, if it did."""
    return _FAILED.get(framework)


def evaluate(subject: str, framework: str, dtype: str, device: str,
             arrays: list[np.ndarray | None], reduction: str, grad: bool,
             layout: str, params: dict[str, Any] | None = None,
             execution: str = "eager") -> tuple[np.ndarray, str]:
    """Evaluate a registered subject in its framework's worker (see the module doc):
    (values, the dtype the framework returned). `params` (a parametric family's setting,
    e.g. gamma and alpha) go to its call as keywords; `execution` (runners.EXECUTIONS)
    says how the worker runs it (compiled functions are cached there)."""
    return worker(framework).evaluate(subject, dtype, device, arrays, reduction, grad, layout,
                                      params, execution)


def query(framework: str, what: str, *args: Any) -> Any:
    """A small question to the worker: "device_reason" device, "ftz" device, "versions"."""
    return worker(framework).request((what, *args), f"answering {what}")


def shutdown() -> None:
    for w in list(_WORKERS.values()):
        with contextlib.suppress(Exception):  # exiting anyway: never mask the run's outcome
            w.stop()
    _WORKERS.clear()


atexit.register(shutdown)


# ------------------------------------------------------------------- the worker process


def _attach(name: str, cache: dict) -> shared_memory.SharedMemory:
    if cache.get("name") != name:
        if cache.get("shm") is not None:
            cache["shm"].close()
        # a spawned worker shares the parent's resource tracker, whose registry is a set:
        # attaching registers the name again (a no-op) and the parent's unlink clears it
        cache.update(name=name, shm=shared_memory.SharedMemory(name=name))
    return cache["shm"]


def _main(conn: Any, framework: str, settings: dict[str, Any]) -> None:
    """Worker loop: import the framework once, then answer requests until told to stop."""
    # Ctrl-C is the parent's to handle (it finishes the chunk, then stops its workers). A
    # SIGTERM (the process group's, or multiprocessing's own at the parent's exit) ends an
    # idle worker at once and a busy one right after its reply: never mid-batch, which
    # the parent would misread as a crash of the points in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if settings.get("log"):
        log = os.open(settings["log"], os.O_WRONLY | os.O_APPEND)
        os.dup2(log, 2)
        os.close(log)
    state = {"busy": False, "stop": False}

    def on_term(signum: int, frame: Any) -> None:
        if not state["busy"]:
            raise SystemExit(0)
        state["stop"] = True

    signal.signal(signal.SIGTERM, on_term)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import importlib

        from audit import runners

        runner = runners.get(framework)
        runner.threads = settings["threads"]
        _quiet_import(runner)
        subjects = importlib.import_module(settings["registry"])
        subjects.load_modules(settings["modules"])
    except BaseException as e:  # any import-time failure is a skip reason
        conn.send(("fatal", f"{framework} is not importable: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}"))
        return
    conn.send(("ready", {}))
    cache: dict[str, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        state["busy"] = True
        try:
            if msg[0] == "evaluate":
                reply: Any = _evaluate(runner, subjects, msg, cache)
            elif msg[0] == "device_reason":
                reply = runner.device_reason(msg[1])
            elif msg[0] == "ftz":
                reply = runner.ftz(msg[1])
            elif msg[0] == "versions":
                reply = runner.versions()
            else:
                raise ValueError(f"unknown request {msg[0]!r}")
            conn.send(("ok", _plain(reply)))
        except Exception as e:  # a framework error is a finding, never the worker's end
            text = str(e).splitlines()[0][:300] if str(e) else ""
            conn.send(("error", type(e).__name__, text))
        state["busy"] = False
        if state["stop"]:
            return


def _plain(obj: Any) -> Any:
    """Builtin types only: unpickling a framework's own type (torch's TorchVersion is a
    str subclass) would import the framework into the parent."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj) if type(obj) in (list, tuple) else \
            [_plain(v) for v in obj]
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    for kind in (bool, int, float, str):
        if isinstance(obj, kind):
            return kind(obj)
    return str(obj)


def _quiet_import(runner: Any) -> None:
    """Import the framework with fd 2 sent to a scratch file: TensorFlow's absl / oneDNN
    banners are written by C++ before any Python logging setting applies. What was
    written is shown again only if the import fails."""
    import tempfile

    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            runner.module  # noqa: B018 -- import and configure now, not on the first batch
        except BaseException:
            os.dup2(saved, 2)
            scratch.seek(0)
            os.write(2, scratch.read()[-4000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _evaluate(runner: Any, subjects: Any, msg: tuple, cache: dict) -> tuple[int, ...]:
    (_, name, dtype, device, reduction, grad, layout, shm_name, specs, out_offset, params,
     execution) = msg
    shm = _attach(shm_name, cache)
    arrays = [None if s is None else np.ndarray(s[1], np.float64, shm.buf, s[0])
              for s in specs]
    subject = subjects.get(name)
    call = functools.partial(subject.call, **params) if params else subject.call
    # what a compiled function is specialised on (sizes excepted: compilers generalise)
    key = (name, tuple(sorted(params.items())), dtype, device, reduction, grad, layout,
           tuple(s is None for s in specs))
    runner.output_dtype = dtype
    out = np.asarray(runner.evaluate(call, dtype, device, arrays, reduction, grad, layout,
                                     execution=execution, key=key), dtype=np.float64)
    np.ndarray(out.size, np.float64, shm.buf, out_offset)[:] = out.reshape(-1)
    del arrays
    return out.shape, runner.output_dtype
