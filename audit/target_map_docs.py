"""Write docs/soft-label-maps.md from `--targets all` sweep runs: a table per run and the
logit x target heat map of each record (PNG beside the page).

    python -m audit.target_map_docs runs/tmaps/*/ --out docs/soft-label-maps.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from audit import results
from audit.figures import target_map_figure
from audit.grading import STATUSES


def _slug(record: dict[str, Any]) -> str:
    return f"{record['subject']}-{record['dtype']}-{record['quantity']}".replace(".", "_")


def _row(record: dict[str, Any], seconds: float | None) -> str:
    n = record["n"]
    bad = {k: v for k, v in record["counts"].items() if k != "ok" and v}
    statuses = ", ".join(f"{k} {v:,} ({v / n:.2%})" for k, v in sorted(
        bad.items(), key=lambda kv: STATUSES.index(kv[0]))) or "none"
    w = record.get("worst") or {}
    repro = f"`{w['repro']}`" if w.get("repro") else ""
    took = "" if seconds is None else f"{seconds:,.0f} s"
    return (f"| {record['subject']} | {record['dtype']} | {record['quantity']} | {n:,} | "
            f"{record['correctly_rounded']:.2%} | {statuses} | {record['max_ulp']} | "
            f"{took} | {repro} |")


def write(runs: list[Path], out: Path) -> Path:
    pics = out.with_suffix("")
    pics.mkdir(parents=True, exist_ok=True)
    rows, figures = [], []
    for run in runs:
        doc = results.load_results(run)
        began, ended = doc["run"].get("started"), doc["run"].get("finished")
        seconds = None
        if began and ended:
            from datetime import datetime

            seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(began)
                       ).total_seconds()
        for r in doc["records"]:
            if not r.get("target_map"):
                continue
            rows.append(_row(r, seconds if r["quantity"] == "loss" else None))
            name = f"{_slug(r)}.png"
            target_map_figure(r).savefig(pics / name, dpi=80, metadata={"Software": None})
            figures.append(f"### {r['subject']} {r['dtype']} {r['quantity']}\n\n"
                           f"![{r['subject']} {r['dtype']} {r['quantity']}]"
                           f"({pics.name}/{name})\n")
    text = "\n".join([
        "# Soft-label BCE in half precision: every target against every logit",
        "",
        "Each run is `python -m audit sweep SUBJECT --dtype D --exhaustive --targets all "
        "--jobs 2` (two single-threaded processes, the pool that `--workers 2`, a local "
        "Dask cluster, has since replaced): every finite and infinite logit of the dtype "
        "against every target value "
        "of the dtype in [0, 1] (float16: 63,488 finite logits x 15,361 targets; bfloat16: "
        "65,280 x 16,257), values and gradients, each point graded against the certified "
        "reference (1 ulp budget). paddle has no float16/bfloat16 CPU kernel, so it has no "
        "map. Time: the wall time of the run (both quantities, 2 processes on 2 cores, "
        "shared with other work).",
        "",
        "| subject | dtype | quantity | points | correctly rounded | not ok | max ulp | time "
        "| worst point |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "In each map a cell holds the logits of one sign and binade against the targets of "
        "one binade of y (below 1/2) or of 1 - y (above 1/2); the colour is the share of "
        "its points that are not ok, white where all are ok.",
        "",
        *figures,
    ])
    out.write_text(text + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m audit.target_map_docs")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/soft-label-maps.md"))
    args = p.parse_args(argv)
    print(write(args.runs, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
