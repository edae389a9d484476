"""Sweeps on Dask (DESIGN.md section 11), the only parallel engine: `sweep --workers N`
starts a local cluster of N single-threaded worker processes on this machine,
`--scheduler ADDRESS` uses a running one (`dask scheduler` plus `dask worker ADDRESS
--nthreads 1` on each machine, this repository installed there).

Shards are the unit of work: shard i/n of the sweep is split into `pieces` sub-shards
(shards i*pieces + k of n*pieces), each one task that runs `audit.sweep.sweep` in a Dask
worker process and returns its records; the records are merged exactly as shards are
(`merge_records`), so the result equals the one-process sweep count for count. More
pieces than workers keep every worker busy.

While it runs, every piece reports its progress after each chunk and its partial records
every `snapshot_every` seconds through a Dask queue, so the caller can write merged
partial results as it goes. A stop (Ctrl-C, SIGTERM) sets a Dask event: each running
piece finishes its chunk and returns what it measured, pieces not started return at
once, and nothing measured is lost. A piece that fails (its worker died) ends the sweep
with `SweepFailed`, which holds the other pieces' records and its last snapshot.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from audit import subjects

PIECES_PER_WORKER = 4
CONNECT_TIMEOUT = "20s"  # how long a --scheduler gets to answer before the usage error
POLL = 0.2  # seconds between looks at the pieces, the queue and the stop flag


class SchedulerUnreachable(RuntimeError):
    """--scheduler names no Dask scheduler this machine can reach."""


class SweepFailed(RuntimeError):
    """A piece of the sweep failed; `records` and `parts` hold what was measured (the
    finished pieces, and the last partial results of the others)."""

    def __init__(self, message: str, records: list[dict], parts: list[dict]) -> None:
        super().__init__(message)
        self.records, self.parts = records, parts


def _piece(j: int, subject_name: str, dtype: str, kwargs: dict, modules: list[str],
           channel: str, stop_name: str, snapshot_every: float) -> tuple[list[dict], dict]:
    """Sub-shard j in a Dask worker: single-threaded frameworks, the user's modules;
    progress and snapshots go to the queue `channel`, the event `stop_name` stops it."""
    from distributed import Event, Queue

    from audit import frameworks
    from audit.sweep import sweep

    frameworks.single_threaded()
    subjects.load_modules(modules)
    queue, stop = Queue(channel), Event(stop_name)

    def count(done: int, total: int) -> None:
        queue.put(pickle.dumps(("count", j, done, total)))

    def snapshot(records: list[dict], parts: list[dict]) -> None:
        queue.put(pickle.dumps(("snapshot", j, records, parts[0])))

    parts: list[dict] = []
    records = sweep(subject_name, dtype, progress=False, parts=parts, on_chunk=count,
                    should_stop=stop.is_set, on_snapshot=snapshot,
                    snapshot_every=snapshot_every, **kwargs)
    return records, parts[0]


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C reaches the whole process group: local workers started meanwhile inherit
    SIGINT ignored, so only this process gets it and stops the pieces in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def _client(workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    """(client, cluster or None): a LocalCluster of `workers` single-threaded processes,
    or a client of the scheduler at `scheduler`."""
    import dask
    from dask.distributed import Client, LocalCluster

    # framework workers are child processes of a Dask worker: it must not be daemonic
    dask.config.set({"distributed.worker.daemon": False})
    # the nanny's default MALLOC_TRIM_THRESHOLD_=65536 gives every freed chunk back to
    # the kernel: each chunk's arrays then fault in again (measured: sys time 7x the
    # one-process sweep's, no faster on 2 workers than 1 process); glibc's own adaptive
    # threshold keeps them, and sweep() trims the heap itself
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ") or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except (OSError, TimeoutError, ValueError) as e:
            raise SchedulerUnreachable(f"cannot use the Dask scheduler at {scheduler!r}: "
                                       f"{str(e).splitlines()[0] if str(e) else e!r}") from None
    with _sigint_ignored():
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=40)  # any free port
    return Client(cluster), cluster


def sweep_dask(subject_name: str, dtype: str, *, workers: int | None = None,
               scheduler: str | None = None, shard: tuple[int, int] = (0, 1),
               pieces: int | None = None, progress: bool = True,
               should_stop: Callable[[], bool] | None = None,
               on_snapshot: Callable[[list[dict], list[dict]], None] | None = None,
               snapshot_every: float | None = None,
               parts: list[dict] | None = None, **kwargs: Any) -> list[dict]:
    """`sweep` of shard i/n as Dask tasks; returns the merged records, named like shard
    i/n's. should_stop, on_snapshot and parts as in `sweep`: a stop is passed on to every
    piece; snapshots merge the latest partial results of every piece; `parts` gets one
    entry per piece. Raises SweepFailed when a piece fails."""
    from distributed import Event, Queue

    from audit.sweep import SNAPSHOT_EVERY, _progress, _rename, merge_records, shard_extent

    if (workers is None) == (scheduler is None):
        raise ValueError("give exactly one of workers (a local cluster) and scheduler")
    every = SNAPSHOT_EVERY if snapshot_every is None else snapshot_every
    i, n = shard
    client, cluster = _client(workers, scheduler)
    latest: dict[int, tuple[list[dict], dict]] = {}  # piece -> its last records and part
    counted: dict[int, int] = {}
    failure: str | None = None
    try:
        count = workers or max(1, len(client.scheduler_info()["workers"]))
        k = pieces or PIECES_PER_WORKER * count
        subs = [(i * k + j, n * k) for j in range(k)]
        extent = {j: shard_extent(subject_name, dtype, exhaustive=kwargs.get("exhaustive", True),
                                  samples=kwargs.get("samples", 0), shard=s)[1]
                  for j, s in enumerate(subs)}
        run = f"sweep-{subject_name}-{dtype}-{i}-{n}-{time.time_ns()}"
        queue, stop = Queue(f"{run}-queue", client=client), Event(f"{run}-stop", client=client)
        modules = subjects.user_modules()
        futures = [client.submit(_piece, j, subject_name, dtype, {**kwargs, "shard": s},
                                 modules, f"{run}-queue", f"{run}-stop", every, pure=False,
                                 key=f"{run}-{s[0]}-{s[1]}") for j, s in enumerate(subs)]

        def combined() -> tuple[list[dict], list[dict]]:
            recs = [r for j in sorted(latest) for r in latest[j][0]]
            prog = [latest[j][1] if j in latest else
                    {"index": s[0] + 1, "count": s[1], "done": 0, "total": extent[j]}
                    for j, s in enumerate(subs)]
            return _rename(merge_records(recs) if recs else [], subject_name, i, n, prog), prog

        finished: set[int] = set()

        def drain() -> bool:
            got = False
            while queue.qsize():
                for item in queue.get(batch=True):
                    msg = pickle.loads(item)
                    if msg[0] == "count":
                        counted[msg[1]] = max(counted.get(msg[1], 0), msg[2])
                    elif msg[1] not in finished:
                        latest[msg[1]] = (msg[2], msg[3])
                        got = True
            return got

        began = time.perf_counter()
        last_snapshot = -math.inf  # the first comes with the first piece's first chunk
        stopping = False
        while len(finished) < len(futures):
            time.sleep(POLL)
            if not stopping and should_stop is not None and should_stop():
                stop.set()
                stopping = True
            snapped = drain()
            for j, f in enumerate(futures):
                if j in finished or not f.done():
                    continue
                finished.add(j)
                try:
                    latest[j] = f.result()
                except Exception as e:  # its worker died: keep its last partial results
                    failure = failure or f"sweep piece {j + 1} of {len(futures)} failed: " + (
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
                else:
                    counted[j] = latest[j][1]["done"]
                    snapped = True
            if snapped and on_snapshot is not None and len(finished) < len(futures) and \
                    time.perf_counter() - last_snapshot >= every:
                on_snapshot(*combined())
                last_snapshot = time.perf_counter()
            if progress:
                _progress(f"sweep {subject_name} {dtype} shard {i + 1}/{n} on dask "
                          f"({len(finished)}/{len(futures)} pieces)",
                          sum(counted.values()), sum(extent.values()), began)
        if progress:
            print(file=sys.stderr)
        merged, prog = combined()
    finally:
        with contextlib.suppress(Exception):  # a cluster that is going away: nothing left
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
    if parts is not None:
        parts += prog
    if failure is not None:
        raise SweepFailed(failure, merged, prog)
    return merged
