"""Result collection for a pytest run, safe under pytest-xdist and interruptions.

Every worker appends each record to `<run_dir>/.records/<worker>.jsonl` the moment it
exists (flushed), so a crash or Ctrl-C loses nothing measured; the controller merges
the lines into results.json and index.html at session finish, whatever the outcome.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit import results

PARTS = ".records"


class Collector:
    """Per-process sink for records, skips, equivalence and breakdown entries."""

    def __init__(self, run_dir: Path, worker: str, frameworks: list[str] | None = None
                 ) -> None:
        self.frameworks = frameworks  # only these are asked for versions / FTZ state
        self.dir = run_dir / PARTS
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{worker}.jsonl"
        self._meta_written = False

    def _write(self, kind: str, payload: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, "data": payload}) + "\n")
            f.flush()

    def _meta(self) -> None:
        if self._meta_written:
            return
        self._meta_written = True
        from audit import frameworks

        chosen = self.frameworks
        self._write("meta", {"versions": frameworks.versions(chosen),
                             "ftz": frameworks.ftz_state(chosen),
                             "devices": frameworks.devices_available(chosen)})

    def add(self, record: dict[str, Any]) -> None:
        self._meta()
        self._write("record", record)

    def skip(self, subject: str, dtype: str, device: str, reason: str) -> None:
        self._write("skipped", {"subject": subject, "dtype": dtype, "device": device,
                                "reason": reason})

    def equivalence(self, entry: dict[str, Any]) -> None:
        self._write("equivalence", entry)

    def breakdown(self, entry: dict[str, Any]) -> None:
        self._write("breakdown", entry)


def _read_parts(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"meta": [], "record": [], "skipped": [],
                                            "equivalence": [], "breakdown": []}
    for part in sorted((run_dir / PARTS).glob("*.jsonl")):
        for line in part.read_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interrupt
                continue
            out.setdefault(item["kind"], []).append(item["data"])
    return out


def build_document(run_dir: Path, run_id: str, started: str, status: str, profile: str,
                   seed: int | None, command: str) -> dict[str, Any]:
    """The results.json document of a finished (or interrupted) run."""
    parts = _read_parts(run_dir)
    meta = parts["meta"][0] if parts["meta"] else {}
    versions = {"python": platform.python_version(), **meta.get("versions", {})}
    for name in ("numpy", "mpmath", "hypothesis"):
        mod = sys.modules.get(name)
        if mod is not None:
            versions.setdefault(name, getattr(mod, "__version__", "?"))
    seen = set()
    skipped = []
    for s in parts["skipped"]:
        key = (s["subject"], s["dtype"], s["device"], s["reason"])
        if key not in seen:
            seen.add(key)
            skipped.append(s)
    return {
        "schema_version": results.SCHEMA_VERSION,
        "run": {
            "id": run_id, "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "status": status, "profile": profile, "seed": seed, "command": command,
            "versions": versions,
            "platform": {"system": platform.system(), "machine": platform.machine(),
                         "processor": platform.processor() or platform.machine(),
                         "cpu_count": os.cpu_count()},
            "ftz": meta.get("ftz", {}),
            "devices": meta.get("devices", {"cpu": None}),
            "skipped": skipped,
        },
        "records": parts["record"],
        "equivalence": parts["equivalence"],
        "breakdown": parts["breakdown"],
        "comparison": None,
    }


def finish(run_dir: Path, doc: dict[str, Any]) -> Path:
    """Attach the comparison with the previous run, write results.json and index.html."""
    from audit import compare, report

    previous = results.find_previous(run_dir)
    if previous is not None:
        try:
            compare.attach_comparison(doc, results.load_results(previous, check=False))
        except Exception as e:  # an unreadable old run must not cost us this report
            print(f"audit: could not compare with {previous}: {e}", file=sys.stderr)
    results.write_results(doc, run_dir)
    return report.write_report(doc, run_dir)
