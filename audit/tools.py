"""`python -m audit sweep | merge | bench` (the long-running tools, outside pytest)."""

from __future__ import annotations

import argparse
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from audit import results, subjects
from audit.dtypes import DTYPES, ulp_budget
from reference.cli import UsageError, attach_values, parse_number


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(message)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _doc(records: list[dict], command: str, profile: str, started: str | None = None) -> dict:
    from audit import frameworks

    known = [subjects.SUBJECTS[r["subject"]] for r in records if r["subject"] in subjects.SUBJECTS]
    chosen = subjects.frameworks_of(known)
    now = _now()
    return {
        "schema_version": results.SCHEMA_VERSION,
        "run": {"id": "", "started": started or now, "finished": now,
                "status": "failed" if any(r["outcome"] == "failed" for r in records)
                else "passed", "profile": profile, "seed": None, "command": command,
                "versions": {"python": platform.python_version(), **frameworks.versions(chosen)},
                "platform": {"system": platform.system(), "machine": platform.machine(),
                             "processor": platform.processor() or platform.machine(),
                             "cpu_count": os.cpu_count()},
                "ftz": {}, "devices": frameworks.devices_available(chosen), "skipped": []},
        "records": records, "equivalence": [], "breakdown": [], "comparison": None,
    }


def _write(doc: dict, out: str | None) -> Path:
    from audit import report

    run_dir = Path(out) if out else results.new_run_dir(Path("reports"))
    run_dir.mkdir(parents=True, exist_ok=True)
    doc["run"]["id"] = run_dir.name
    results.write_results(doc, run_dir)
    report.write_report(doc, run_dir)
    return run_dir


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes i/n (e.g. 1/4), not {text!r}") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text}: need 1 <= i <= n")
    return i - 1, n


def cmd_sweep(argv: list[str]) -> int:
    from audit.sweep import sweep_jobs

    p = _Parser(prog="python -m audit sweep")
    p.add_argument("subject")
    p.add_argument("--dtype", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--exhaustive", action="store_true")
    g.add_argument("--samples", type=int)
    p.add_argument("--targets", default="0,1", help="comma list of targets (default 0,1)")
    p.add_argument("--shard", default="1/1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk", type=int, default=1 << 20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-ulp", type=float, default=None)
    p.add_argument("--out", default=None, help="run directory (default reports/<timestamp>)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes on this machine, one thread each (default 1)")
    args = p.parse_args(attach_values(argv, p))
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.dtype not in DTYPES:
        raise UsageError(f"unknown dtype {args.dtype!r}; expected one of {', '.join(DTYPES)}")
    try:
        subjects.get(args.subject)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    if args.samples is not None and args.samples <= 0:
        raise UsageError("--samples must be positive")
    targets = [parse_number(t, args.dtype) for t in args.targets.split(",")]
    shard = _shard(args.shard)
    reason = subjects.get(args.subject).skip_reason(args.dtype, args.device)  # imports
    if reason is not None:
        raise UsageError(f"{args.subject} cannot run {args.dtype} on {args.device}: {reason}")
    started = _now()
    records = sweep_jobs(args.subject, args.dtype, jobs=args.jobs, device=args.device,
                         targets=targets, exhaustive=args.exhaustive,
                         samples=args.samples or 0, shard=shard, chunk=args.chunk,
                         seed=args.seed, budget=args.max_ulp or ulp_budget(args.dtype),
                         progress=not args.quiet)
    run_dir = _write(_doc(records, "python -m audit sweep " + " ".join(argv), "sweep", started),
                     args.out)
    for r in records:
        print(f"{r['subject']} {r['dtype']} {r['quantity']}: n={r['n']:,} "
              f"max_ulp={r['max_ulp']} p99<={r['p99_ulp']} counts={r['counts']}")
    print(f"results: {run_dir / results.RESULTS_NAME}")
    return 0


def cmd_merge(argv: list[str]) -> int:
    from audit.sweep import merge_records

    p = _Parser(prog="python -m audit merge")
    p.add_argument("out", help="run directory to write")
    p.add_argument("shards", nargs="+", help="results.json files or run dirs of the shards")
    args = p.parse_args(argv)
    records: list[dict] = []
    starts: list[str] = []
    for s in args.shards:
        try:
            doc = results.load_results(s)
        except results.ResultsError as e:
            raise UsageError(str(e)) from None
        records += doc["records"]
        starts.append(doc["run"]["started"])
    merged = merge_records(records)
    run_dir = _write(_doc(merged, "python -m audit merge " + " ".join(argv), "sweep",
                          min(starts)), args.out)
    print(f"merged {len(records)} records into {len(merged)}: {run_dir}")
    return 0


def cmd_bench(argv: list[str]) -> int:
    """Side-by-side throughput on the same float32 inputs, and exhaustive 16-bit sweeps."""
    from audit import bench

    p = _Parser(prog="python -m audit bench")
    p.add_argument("--points", type=int, default=1 << 20,
                   help="batch size (default 2**20, the sweeps' chunk)")
    p.add_argument("--mpmath-points", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.25, help="seconds per round")
    args = p.parse_args(attach_values(argv, p))
    if min(args.points, args.mpmath_points, args.rounds) < 1 or args.min_time < 0:
        raise UsageError("--points, --mpmath-points and --rounds must be positive")
    if args.mpmath_points > args.points:
        raise UsageError("--mpmath-points cannot exceed --points")
    bench.run(args.points, args.mpmath_points, args.rounds, args.min_time)
    return 0


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
        try:
            records += results.load_results(run)["records"]
        except results.ResultsError as e:
            raise UsageError(str(e)) from None
    print(markdown_table(records))
    return 0
