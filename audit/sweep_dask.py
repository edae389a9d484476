"""Sweeps on Dask (DESIGN.md section 11): `sweep --workers N` starts a local cluster on
this machine, `--scheduler ADDRESS` uses a running one (`dask scheduler` plus `dask
worker ADDRESS --nthreads 1` on each machine, this repository installed there).

Shards are the unit of work: shard i/n of the sweep is split into `pieces` sub-shards
(shards i*pieces + k of n*pieces, exactly as `sweep_jobs` splits it), each one task that
runs `audit.sweep.sweep` in a Dask worker process and returns its records; the records
are merged exactly as shards are (`merge_records`), so the result equals the
one-process sweep count for count. More pieces than workers keep every worker busy and
bound what a stop loses: a stop (Ctrl-C, SIGTERM) cancels the pieces not yet finished
and keeps the finished ones.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from audit import subjects

PIECES_PER_WORKER = 4


class SchedulerUnreachable(RuntimeError):
    """--scheduler names no Dask scheduler this machine can reach."""


def _piece(subject_name: str, dtype: str, kwargs: dict, modules: list[str]
           ) -> tuple[list[dict], dict]:
    """One sub-shard in a Dask worker: single-threaded frameworks, the user's modules."""
    from audit import frameworks
    from audit.sweep import sweep

    frameworks.single_threaded()
    subjects.load_modules(modules)
    parts: list[dict] = []
    records = sweep(subject_name, dtype, progress=False, parts=parts, **kwargs)
    return records, parts[0]


CONNECT_TIMEOUT = "20s"  # how long a --scheduler gets to answer before the usage error


def _client(workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    """(client, cluster or None): a LocalCluster of `workers` single-threaded processes,
    or a client of the scheduler at `scheduler`."""
    import dask
    from dask.distributed import Client, LocalCluster

    # framework workers are child processes of a Dask worker: it must not be daemonic
    dask.config.set({"distributed.worker.daemon": False})
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except (OSError, TimeoutError, ValueError) as e:
            raise SchedulerUnreachable(f"cannot use the Dask scheduler at {scheduler!r}: "
                                       f"{str(e).splitlines()[0] if str(e) else e!r}") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def sweep_dask(subject_name: str, dtype: str, *, workers: int | None = None,
               scheduler: str | None = None, shard: tuple[int, int] = (0, 1),
               pieces: int | None = None, progress: bool = True,
               should_stop: Callable[[], bool] | None = None,
               parts: list[dict] | None = None, **kwargs: Any) -> list[dict]:
    """`sweep` of shard i/n as Dask tasks; returns the merged records (as `sweep_jobs`).
    `parts` gets one progress entry per piece (done = 0 for a piece a stop cancelled)."""
    from dask.distributed import as_completed

    from audit.sweep import _progress, _rename, merge_records, shard_extent

    if (workers is None) == (scheduler is None):
        raise ValueError("give exactly one of workers (a local cluster) and scheduler")
    client, cluster = _client(workers, scheduler)
    try:
        count = workers or max(1, len(client.scheduler_info()["workers"]))
        k = pieces or PIECES_PER_WORKER * count
        i, n = shard
        subs = [(i * k + j, n * k) for j in range(k)]
        extent = {j: shard_extent(subject_name, dtype, exhaustive=kwargs.get("exhaustive", True),
                                  samples=kwargs.get("samples", 0), shard=s)[1]
                  for j, s in enumerate(subs)}
        modules = subjects.user_modules()
        futures = {client.submit(_piece, subject_name, dtype, {**kwargs, "shard": s}, modules,
                                 pure=False, key=f"sweep-{subject_name}-{dtype}-{s[0]}-{s[1]}"
                                 f"-{time.time_ns()}"): j for j, s in enumerate(subs)}
        done: dict[int, tuple[list[dict], dict]] = {}
        began = time.perf_counter()
        stream = as_completed(list(futures))
        for future in stream:
            done[futures[future]] = future.result()
            if progress:  # inputs of the finished pieces
                _progress(f"sweep {subject_name} {dtype} on dask ({len(done)}/{len(subs)} "
                          f"pieces)", sum(p["done"] for _, p in done.values()),
                          sum(extent.values()), began)
            if should_stop is not None and should_stop():
                for f in futures:
                    f.cancel()
                break
        if progress:
            print(file=sys.stderr)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    prog = [done[j][1] if j in done else
            {"index": s[0] + 1, "count": s[1], "done": 0, "total": extent[j]}
            for j, s in enumerate(subs)]
    if parts is not None:
        parts += prog
    recs = [r for j in sorted(done) for r in done[j][0]]
    return _rename(merge_records(recs) if recs else [], subject_name, i, n, prog)

