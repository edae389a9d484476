"""`python -m audit sweep | merge | table | bench` (the long-running tools, outside pytest).

Every user mistake is decided before any long work starts: one line, exit status 2
(UsageError), including an `--out` that cannot be written. A sweep replaces its
results.json as it goes (atomically: a reader sees one snapshot or the next, never half a
file) with run.status "interrupted" until it ends, so a killed sweep leaves an honest
partial file. SIGINT / SIGTERM finish the current chunk, write results.json and index.html
with run.status "interrupted", print one line and exit 130 / 143.

`run.sweep` says, machine-readably, what a sweep's file covers (see `sweep_info`); `merge`
checks shards against it: no shard twice, no overlap, one subject, dtype, device, target
set, budget and framework version, and a merge that misses inputs says so.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import signal
import sys
import tempfile
import threading
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from audit import results, subjects
from audit.dtypes import ulp_budget
from reference.cli import UsageError, attach_values, parse_number

MAX_CHUNK = 1 << 24  # inputs per chunk: ~2 GiB of arrays at the top; the default is 2**20
MAX_BENCH_POINTS = 1 << 24
MAX_MIN_TIME = 3600.0  # bench: seconds per round


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(message)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def measured_status(records: list[dict]) -> str:
    """run.status from what was measured: "failed" when any record has a non-ok point."""
    bad = any(r.get("outcome") == "failed" or results.record_status(r) != "ok"
              for r in records)
    return "failed" if bad else "passed"


def _doc(records: list[dict], command: str, profile: str, started: str | None = None, *,
         status: str | None = None, sweep: dict | None = None) -> dict:
    from audit import frameworks

    known = [subjects.SUBJECTS[r["subject"]] for r in records if r["subject"] in subjects.SUBJECTS]
    chosen = subjects.frameworks_of(known)
    now = _now()
    run = {"id": "", "started": started or now, "finished": now,
           "status": status or measured_status(records), "profile": profile, "seed": None,
           "command": command,
           "versions": {"python": platform.python_version(), **frameworks.versions(chosen)},
           "platform": {"system": platform.system(), "machine": platform.machine(),
                        "processor": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count()},
           "ftz": {}, "devices": frameworks.devices_available(chosen), "skipped": []}
    if sweep is not None:
        run["sweep"] = sweep
    return {"schema_version": results.SCHEMA_VERSION, "run": run, "records": records,
            "equivalence": [], "breakdown": [], "comparison": None}


def _write(doc: dict, out: str | os.PathLike[str] | None, *, report: bool = True) -> Path:
    run_dir = Path(out) if out else results.new_run_dir(Path("reports"))
    run_dir.mkdir(parents=True, exist_ok=True)
    doc["run"]["id"] = run_dir.name
    results.write_results(doc, run_dir)
    if report:
        from audit import report as html

        html.write_report(doc, run_dir)
        if not out:  # the default reports/ keeps the newest runs only
            results.prune_runs(Path("reports"), results.KEEP_REPORTS)
    return run_dir


# ---------------------------------------------------------------------- argument checks


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes i/n (e.g. 1/4), not {text!r}") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text}: need 1 <= i <= n")
    return i - 1, n


def _count(option: str, value: int, *, low: int = 1, high: int | None = None) -> int:
    if value < low:
        raise UsageError(f"{option} must be at least {low}, not {value}")
    if high is not None and value > high:
        raise UsageError(f"{option} must be at most {high:,}, not {value:,}")
    return value


def _budget(value: float | None, dtype: str) -> float:
    """--max-ulp: 0 is a budget of 0 (only correctly rounded values pass), not the default."""
    if value is None:
        return ulp_budget(dtype)
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--max-ulp must be a finite number of ulps >= 0, not {value:g}")
    return value


def _targets(text: str, dtype: str) -> list[float]:
    """--targets: labels in [0, 1] (rounded to the dtype), each once; `all`: every value
    of the dtype in [0, 1] (the logit x target map of audit/target_map.py)."""
    if text.strip() == "all":
        from audit.target_map import DTYPES, all_targets

        if dtype not in DTYPES:
            raise UsageError(f"--targets all is for {' and '.join(DTYPES)} (every target "
                             f"against every logit), not {dtype}")
        return all_targets(dtype).tolist()
    values: list[float] = []
    for t in text.split(","):
        try:
            y = parse_number(t, dtype)
        except UsageError as e:
            raise UsageError(f"--targets: {e}") from None
        if math.isnan(y) or not 0.0 <= y <= 1.0:
            raise UsageError(f"--targets: {t.strip()!r} is not a target in [0, 1]")
        if y in values:
            raise UsageError(f"--targets: {y:g} is given twice")
        values.append(y)
    return values


def _check_out(text: str, what: str) -> Path:
    """Refuse, before any work, a run directory that cannot be written: an existing file,
    a path under a file, a broken link, a folder without write permission. Creates
    nothing (the probe file is unnamed and gone when closed)."""
    if not text.strip():
        raise UsageError(f"{what} is empty")
    path = Path(text)
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise UsageError(f"{what} {text}: {probe} is a broken link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == path else f": {probe}"
        raise UsageError(f"{what} {text}{where} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UsageError(f"{what} {text}: cannot write in {probe} ({e.strerror or e})") from None
    return path


def _make_run_dir(out: str | None) -> Path:
    try:
        if out is None:
            return results.new_run_dir(Path("reports"))
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    except (OSError, results.ResultsError) as e:
        raise UsageError(f"cannot create the run directory {out or 'reports/'}: "
                         f"{getattr(e, 'strerror', None) or e}") from None


def _load(path_or_dir: str | os.PathLike[str]) -> dict:
    """load_results, every failure one line (UsageError)."""
    try:
        return results.load_results(path_or_dir)
    except results.ResultsError as e:
        raise UsageError(str(e)) from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{results.resolve_results_path(path_or_dir)}: not UTF-8 text "
                         f"(byte {e.start})") from None
    except RecursionError:
        raise UsageError(f"{results.resolve_results_path(path_or_dir)}: not a results file "
                         "(nested too deeply)") from None


# ---------------------------------------------------------------------------- sweep


def _coverage(parts: list[dict]) -> Fraction:
    """Share of the whole sweep's inputs that `parts` (shards i/n, done of total) hold."""
    return sum((Fraction(p["done"], p["total"]) if p["total"] else Fraction(1)) /
               p["count"] for p in parts) if parts else Fraction(0)


def sweep_info(subject: str, dtype: str, device: str, *, exhaustive: bool,
               targets: list[float], budget: float, seed: int, samples: int,
               shards: list[dict], parts: list[dict],
               params: dict[str, float | None] | None = None,
               execution: str = "eager") -> dict:
    """run.sweep: what a sweep's results.json covers. `shards` are the --shard i/n (1-based)
    it was run as; `parts` the pieces actually swept (one per Dask piece:
    {"index", "count", "done", "total"}, inputs drawn, NaN patterns included);
    `coverage` the share of the whole sweep held, `complete` whether that is all of it."""
    from audit.results import to_json_value

    cov = _coverage(parts)
    return {"subject": subject, "family": subjects.get(subject).family, "dtype": dtype,
            "device": device, "mode": "exhaustive" if exhaustive else "sampled",
            "targets": [to_json_value(t) for t in targets], "max_ulp": budget,
            "seed": None if exhaustive else seed, "samples": None if exhaustive else samples,
            "shards": shards, "parts": parts,
            "finished": all(p["done"] >= p["total"] for p in parts),
            "coverage": float(cov), "complete": cov == 1,
            **({"params": params} if params else {}),
            **({"execution": execution} if execution != "eager" else {})}


class _Interrupts:
    """SIGINT / SIGTERM during a sweep: the first asks it to stop after the current chunk
    (a true call); a second one ends the process at once, the last snapshot kept."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.saved: dict[int, Any] = {}
        self.where = ""

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            kept = (f"{self.where} holds the results up to the last snapshot" if self.where
                    else "nothing was written")
            print(f"\n{signal.Signals(signum).name} again: stopping now; {kept}",
                  file=sys.stderr, flush=True)
            raise SystemExit(128 + signum)
        self.signum = signum

    def __call__(self) -> bool:
        return self.signum is not None


class _Snapshots:
    """Partial results of a running sweep, written over results.json as it goes."""

    def __init__(self, run_dir: Path, command: str, started: str, info: dict) -> None:
        self.run_dir, self.command, self.started, self.info = run_dir, command, started, info
        self.base: dict | None = None  # the run block, computed once (versions: a query)
        self.warned = False

    def doc(self, records: list[dict], parts: list[dict], status: str | None,
            finished: str | None) -> dict:
        if self.base is None:
            self.base = _doc(records, self.command, "sweep", self.started)["run"]
        run = {**self.base, "id": self.run_dir.name, "finished": finished,
               "status": status or measured_status(records),
               "sweep": sweep_info(**self.info, parts=parts)}
        return {"schema_version": results.SCHEMA_VERSION, "run": run, "records": records,
                "equivalence": [], "breakdown": [], "comparison": None}

    def __call__(self, records: list[dict], parts: list[dict]) -> None:
        try:  # mid-run: "interrupted" until it ends, so a killed sweep is not "passed"
            results.write_results(self.doc(records, parts, "interrupted", None), self.run_dir)
        except OSError as e:
            if not self.warned:
                print(f"\nwarning: cannot write partial results to {self.run_dir}: "
                      f"{e.strerror or e}", file=sys.stderr)
                self.warned = True


def cmd_sweep(argv: list[str]) -> int:
    from audit.cli_params import add_param_options, check_dtype_device, family_params
    from audit.sweep import sweep

    p = _Parser(prog="python -m audit sweep")
    p.add_argument("subject")
    p.add_argument("--dtype", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--exhaustive", action="store_true")
    g.add_argument("--samples", type=int)
    p.add_argument("--targets", default="0,1",
                   help="comma list of targets (default 0,1), or `all`: every value of the "
                        "dtype in [0, 1], with the logit x target map in each record")
    p.add_argument("--shard", default="1/1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=1 << 20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-ulp", type=float, default=None)
    p.add_argument("--out", default=None, help="run directory (default reports/<timestamp>)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--jobs", default=None, help=argparse.SUPPRESS)  # replaced by --workers
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=int, default=None,
                        help="run the shard on a local Dask cluster of N single-threaded "
                             "worker processes (default: this process alone)")
    engine.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the shard on the Dask cluster whose scheduler is at "
                             "ADDRESS (e.g. tcp://10.0.0.5:8786)")
    add_param_options(p)
    args = p.parse_args(attach_values(argv, p))
    cores = os.cpu_count() or 1
    if args.jobs is not None:
        raise UsageError("--jobs is gone: sweeps run on Dask, --workers N starts a local "
                         "cluster of N processes (or --scheduler ADDRESS uses a running one)")
    if args.workers is not None:
        _count("--workers", args.workers, high=max(4 * cores, 4))
    dask_engine = args.workers is not None or args.scheduler is not None
    check_dtype_device(args.dtype, args.device)
    try:
        subject = subjects.get(args.subject)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    params = family_params(subject, args)
    if args.samples is not None:
        _count("--samples", args.samples)
    _count("--chunk", args.chunk, high=MAX_CHUNK)
    _count("--seed", args.seed, low=0)
    budget = _budget(args.max_ulp, args.dtype)
    targets = _targets(args.targets, args.dtype)
    shard = _shard(args.shard)
    _check_out(args.out if args.out is not None else "reports",
               "--out" if args.out is not None else "the reports folder")
    command = "python -m audit sweep " + " ".join(argv)
    with _Interrupts() as stop:
        reason = subject.skip_reason(args.dtype, args.device,
                                     execution=args.execution)  # imports
        if reason is not None:
            raise UsageError(f"{args.subject} cannot run {args.dtype} on {args.device}: "
                             f"{reason}")
        started = _now()
        run_dir = _make_run_dir(args.out)
        stop.where = str(run_dir / results.RESULTS_NAME)
        info = {"subject": args.subject, "dtype": args.dtype, "device": args.device,
                "exhaustive": args.exhaustive, "targets": targets, "budget": budget,
                "seed": args.seed, "samples": args.samples or 0,
                "shards": [{"index": shard[0] + 1, "count": shard[1]}],
                **({"params": params} if params else {}),
                **({"execution": args.execution} if args.execution != "eager" else {})}
        snapshots = _Snapshots(run_dir, command, started, info)
        parts: list[dict] = []
        failure = None
        common = dict(device=args.device, targets=targets, exhaustive=args.exhaustive,
                      samples=args.samples or 0, shard=shard, chunk=args.chunk,
                      seed=args.seed, budget=budget, progress=not args.quiet,
                      should_stop=stop, parts=parts, params=params,
                      execution=args.execution, target_map=args.targets.strip() == "all")
        if dask_engine:
            from audit.sweep_dask import SchedulerUnreachable, SweepFailed, sweep_dask

            try:
                records = sweep_dask(args.subject, args.dtype, workers=args.workers,
                                     scheduler=args.scheduler, on_snapshot=snapshots,
                                     **common)
            except SchedulerUnreachable as e:
                raise UsageError(str(e)) from None
            except SweepFailed as e:
                records, parts, failure = e.records, e.parts, str(e)
        else:
            records = sweep(args.subject, args.dtype, on_snapshot=snapshots, **common)
        finished = all(p["done"] >= p["total"] for p in parts)
        doc = snapshots.doc(records, parts, None if finished else "interrupted", _now())
        doc["run"]["engine"] = "dask" if dask_engine else "process"
        try:
            _write(doc, run_dir)
        except OSError as e:
            print(f"error: cannot write the results to {run_dir}: {e.strerror or e}",
                  file=sys.stderr)
            return 1
    path = run_dir / results.RESULTS_NAME
    done, total = sum(q["done"] for q in parts), sum(q["total"] for q in parts)
    if failure is not None:
        print(f"error: {failure}; {done:,} of {total:,} inputs swept, partial results in "
              f"{path}", file=sys.stderr)
        return 1
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        print(f"interrupted by {name}: {done:,} of {total:,} inputs swept, "
              f"{'partial ' if not finished else ''}results in {path}", file=sys.stderr)
        return 128 + stop.signum
    for r in records:
        print(f"{r['subject']} {r['dtype']} {r['quantity']}: n={r['n']:,} "
              f"max_ulp={r['max_ulp']} p99<={r['p99_ulp']} counts={r['counts']}")
    print(f"results: {path}")
    return 0


# ---------------------------------------------------------------------------- merge

_LEGACY_ID = re.compile(r"sweep (?P<subject>\S+)\[(?P<dtype>[a-z0-9]+)-(?P<device>[a-z]+)\] "
                        r"(?P<mode>exhaustive|sampled) shard (?P<i>\d+)/(?P<n>\d+) "
                        r"(?P<quantity>loss|grad)")
# versions that do not decide a framework's numbers (the interpreter, the machine, threads)
_NEUTRAL_VERSIONS = ("python", "platform", "machine")


def _shard_of(label: str, doc: dict) -> dict:
    """What a results.json covers, from run.sweep (or, for a file written before run.sweep
    existed, from its records' test_ids); UsageError when it is not one sweep's."""
    records = doc["records"]
    if not records:
        raise UsageError(f"{label} has no records")
    info = (doc["run"] or {}).get("sweep")
    if info is None:  # a shard written before run.sweep: its test_ids say which one
        m = _LEGACY_ID.fullmatch(records[0]["test_id"])
        if m is None:
            raise UsageError(f"{label} is not the results of one `python -m audit sweep` "
                             "(no run.sweep)")
        finished = doc["run"]["status"] != "interrupted"
        n = records[0]["n"]
        info = {key: m.group(key) for key in ("subject", "dtype", "device", "mode")}
        known = subjects.SUBJECTS.get(info["subject"])
        info["family"] = known.family if known is not None else None
        info.update(targets=None, max_ulp=None, seed=None, samples=None,
                    shards=[{"index": int(m.group("i")), "count": int(m.group("n"))}],
                    parts=[{"index": int(m.group("i")), "count": int(m.group("n")),
                            "done": n if finished else 0, "total": n}])
    for r in records:
        if "ulp_histogram" not in r:
            raise UsageError(f"{label}: record {r['test_id']!r} is not a sweep record "
                             "(no ulp_histogram)")
        for key in ("subject", "dtype", "device", "mode"):
            if r[key] != info.get(key):
                raise UsageError(f"{label}: record {r['test_id']!r} has {key} {r[key]!r}, "
                                 f"not the sweep's {info.get(key)!r}")
    versions = {k: v for k, v in (doc["run"].get("versions") or {}).items()
                if k not in _NEUTRAL_VERSIONS and not k.endswith("_num_threads")}
    return {**info, "label": label, "versions": versions, "doc": doc}


def _check_compatible(shards: list[dict]) -> None:
    first = shards[0]
    for s in shards[1:]:
        for key in ("subject", "dtype", "device", "mode", "targets", "max_ulp", "seed",
                    "samples"):
            if s[key] != first[key]:
                raise UsageError(f"cannot merge {first['label']} and {s['label']}: different "
                                 f"{key} ({_shown(first[key])} vs {_shown(s[key])})")
        if s.get("params") != first.get("params") or \
                s.get("execution", "eager") != first.get("execution", "eager"):
            raise UsageError(f"cannot merge {first['label']} and {s['label']}: different "
                             f"parameters ({first.get('params')} vs {s.get('params')})")
        for key in sorted(set(first["versions"]) | set(s["versions"])):
            a, b = first["versions"].get(key), s["versions"].get(key)
            if a != b:
                raise UsageError(f"cannot merge {first['label']} and {s['label']}: different "
                                 f"{key} version ({_shown(a)} vs {_shown(b)})")


def _shown(v: object) -> str:
    if v is None:
        return "unknown"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def _check_disjoint(shards: list[dict]) -> None:
    """No input twice: the parts' intervals [(i-1)/n, i/n) of the sweep may not overlap.
    Sampled shards draw per part (seeded by its index), so they must be split alike."""
    pieces = [(Fraction(p["index"] - 1, p["count"]), Fraction(p["index"], p["count"]), s)
              for s in shards for p in s["parts"]]
    if first := next((s for s in shards if s["mode"] == "sampled"), None):
        counts = {p["count"] for s in shards for p in s["parts"]}
        if len(counts) > 1:
            raise UsageError(f"cannot merge {first['label']} and the others: sampled shards "
                             f"split {' and '.join(map(str, sorted(counts)))} ways draw "
                             "overlapping samples; merge shards of the same --shard i/n "
                             "and --workers")
    pieces.sort(key=lambda t: (t[0], t[1]))
    end, a = Fraction(0), None
    for start, stop, b in pieces:
        if a is not None and start < end:
            what = "is given twice" if a is b else f"and {b['label']} overlap"
            raise UsageError(f"{a['label']} ({_names(a)}) {what}"
                             + ("" if a is b else f" ({_names(b)})")
                             + ": every input may be merged once")
        if stop > end:
            end, a = stop, b


def _names(shard: dict) -> str:
    return ", ".join(f"shard {s['index']}/{s['count']}" for s in shard["shards"])


def _merge_label(shards: list[dict], parts: list[dict]) -> str:
    nominal = [x for s in shards for x in s["shards"]]
    cov = _coverage(parts)
    if cov == 1:
        return f"merged {len(nominal)} shards"
    counts = {x["count"] for x in nominal}
    if all(p["done"] >= p["total"] for p in parts) and len(counts) == 1:
        return f"merged {len(nominal)} of {counts.pop()} shards"
    return f"merged {len(nominal)} shards, {float(cov):.2%} of the inputs"


def cmd_merge(argv: list[str]) -> int:
    from audit.sweep import merge_records

    p = _Parser(prog="python -m audit merge")
    p.add_argument("out", help="run directory to write")
    p.add_argument("shards", nargs="+", help="results.json files or run dirs of the shards")
    args = p.parse_args(argv)
    out = _check_out(args.out, "OUT")
    out_real = Path(os.path.realpath(out))
    seen: dict[str, str] = {}
    for s in args.shards:
        real = os.path.realpath(results.resolve_results_path(s))
        if real in seen:
            raise UsageError(f"{s} is given twice ({seen[real]} and {s}): every shard is "
                             "merged once")
        seen[real] = s
        folder = Path(real).parent
        run_dir = Path(real).name == results.RESULTS_NAME  # a run's folder: keep it whole
        if out_real == folder or (run_dir and (folder in out_real.parents
                                               or out_real in folder.parents)):
            how = ("is" if out_real == folder else "is inside" if folder in out_real.parents
                   else "contains")
            raise UsageError(f"OUT {args.out} {how} the folder of the input {s}: the merge "
                             "would overwrite it; choose a new OUT")
    shards = [_shard_of(s, _load(s)) for s in args.shards]
    _check_compatible(shards)
    _check_disjoint(shards)
    records = [r for s in shards for r in s["doc"]["records"]]
    merged = merge_records(records)
    parts = [x for s in shards for x in s["parts"]]
    label = _merge_label(shards, parts)
    first = shards[0]
    for r in merged:
        r["test_id"] = (f"sweep {r['subject']}[{r['dtype']}-{r['device']}] {r['mode']} "
                        f"{label} {r['quantity']}")
    finished = all(x["done"] >= x["total"] for x in parts)
    run = dict(first["doc"]["run"])  # versions, platform, devices: the shards' (all equal)
    cov = _coverage(parts)
    run.update(id="", started=min(s["doc"]["run"]["started"] for s in shards),
               finished=_now(), status=measured_status(merged) if finished else "interrupted",
               profile="sweep", seed=None, command="python -m audit merge " + " ".join(argv),
               sweep={**{k: first[k] for k in ("subject", "dtype", "device", "mode", "targets",
                                               "max_ulp", "seed", "samples")},
                      "family": first.get("family"),
                      "shards": [x for s in shards for x in s["shards"]], "parts": parts,
                      "finished": finished, "coverage": float(cov), "complete": cov == 1,
                      **({"params": first["params"]} if first.get("params") else {}),
                      **({"execution": first["execution"]}
                         if first.get("execution", "eager") != "eager" else {})})
    doc = {"schema_version": results.SCHEMA_VERSION, "run": run, "records": merged,
           "equivalence": [], "breakdown": [], "comparison": None}
    try:
        run_dir = _write(doc, out)
    except OSError as e:
        raise UsageError(f"cannot write OUT {args.out}: {e.strerror or e}") from None
    note = "" if cov == 1 else f" (incomplete: {float(cov):.2%} of the sweep's inputs)"
    print(f"{label}: {len(records)} records into {len(merged)}{note}: {run_dir}")
    return 0


# ---------------------------------------------------------------------------- bench


def cmd_bench(argv: list[str]) -> int:
    """Side-by-side throughput on the same float32 inputs, and exhaustive 16-bit sweeps."""
    from audit import bench

    p = _Parser(prog="python -m audit bench")
    p.add_argument("--points", type=int, default=1 << 20,
                   help="batch size (default 2**20, the sweeps' chunk)")
    p.add_argument("--mpmath-points", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.25, help="seconds per round")
    p.add_argument("--sweeps", choices=("all", "torch", "none"), default="all",
                   help="which exhaustive 16-bit sweeps to time: every subject with a fast "
                        "reference (default; a few minutes), torch.bce_with_logits float16 "
                        "only, or none")
    p.add_argument("--json", action="store_true",
                   help="also print the figures as one JSON object, the last line")
    args = p.parse_args(attach_values(argv, p))
    _count("--points", args.points, high=MAX_BENCH_POINTS)
    _count("--mpmath-points", args.mpmath_points)
    _count("--rounds", args.rounds, high=1000)
    if not 0 <= args.min_time <= MAX_MIN_TIME:  # NaN fails both comparisons
        raise UsageError(f"--min-time must be between 0 and {MAX_MIN_TIME:g} seconds, "
                         f"not {args.min_time:g}")
    if args.mpmath_points > args.points:
        raise UsageError(f"--mpmath-points ({args.mpmath_points:,}) cannot exceed --points "
                         f"({args.points:,})")
    bench.run(args.points, args.mpmath_points, args.rounds, args.min_time, args.sweeps,
              args.json)
    return 0


# ---------------------------------------------------------------------------- table


def _fmt(v: object) -> str:
    return v if isinstance(v, str) else f"{v:.4g}"


def markdown_table(records: list[dict]) -> str:
    """One markdown row per record: what a sweep found, to paste into an issue or a note."""
    head = ("| subject | quantity | dtype | device | mode | n | correctly rounded | max ulp "
            "| p99 ulp <= | non-ok points by status | worst input | worst status |")
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in sorted(records, key=lambda r: (r["subject"], r["dtype"], r["device"],
                                            r["quantity"] != "loss")):
        bad = ", ".join(f"{k} {v:,}" for k, v in r["counts"].items() if k != "ok") or "none"
        w = r.get("worst") or {}
        worst = f"x={w.get('input')} y={w.get('target')}" if w else "-"
        rows.append(f"| {r['subject']} | {r['quantity']} | {r['dtype']} | {r['device']} | "
                    f"{r['mode']} | {r['n']:,} | {r['correctly_rounded']:.4%} | "
                    f"{_fmt(r['max_ulp'])} | {_fmt(r['p99_ulp'])} | {bad} | {worst} | "
                    f"{w.get('status', '-')} |")
    return "\n".join(rows)


def cmd_table(argv: list[str]) -> int:
    p = _Parser(prog="python -m audit table")
    p.add_argument("runs", nargs="+", help="results.json files or run directories")
    args = p.parse_args(argv)
    records: list[dict] = []
    for run in args.runs:
        records += _load(run)["records"]
    print(markdown_table(records))
    return 0
