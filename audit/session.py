"""Result collection for a pytest run, safe under pytest-xdist and interruptions.

Every worker appends each record to `<run_dir>/.records/<worker>.jsonl` the moment it
exists (flushed), so a crash or Ctrl-C loses nothing measured; the controller merges
the lines into results.json and index.html at session finish, whatever the outcome,
then removes `.records/`. A run killed outright (SIGKILL) keeps its `.records/`:
:func:`rebuild` (``python -m audit rebuild RUN_DIR``) writes its report from them.

The run folder is created only when an audit test is about to run (:class:`RunPlace`),
so ``pytest --help``, ``--collect-only`` or a run of no audit test leave nothing behind
and never move ``reports/latest``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit import results

PARTS = results.PARTS_NAME
RUN_INFO = "run.json"  # in .records/: what the controller knows of the run (for rebuild)
FAILING_OUTCOMES = frozenset({"failed", "xpass_strict"})


class RunPlace:
    """The controller's run folder, made on first use.

    ``given`` (``--report-dir``) is used as it is (created if missing, its old
    ``.records/`` dropped); otherwise a fresh ``base/<timestamp>`` is reserved. ``info``
    (started, profile, seed, command) is stored in ``.records/run.json`` for :func:`rebuild`.
    """

    def __init__(self, base: Path, given: Path | None, info: dict[str, Any]) -> None:
        self.base, self.given, self.info = base, given, info
        self.path: Path | None = None
        self._made_dir = False

    @property
    def default_layout(self) -> bool:
        """Whether the run lives in ``base/<timestamp>`` (``latest``, retention)."""
        return self.given is None

    def ensure(self) -> Path:
        if self.path is None:
            if self.given is not None:
                self._made_dir = not self.given.exists()
                self.given.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(self.given / PARTS, ignore_errors=True)  # this run's only
                path = self.given
            else:
                path = results.new_run_dir(self.base, latest=False)
                self._made_dir = True
            (path / PARTS).mkdir(exist_ok=True)
            _write_info(path, {"id": path.name, **self.info})
            self.path = path
        return self.path

    def discard(self) -> None:
        """Nothing was audited: remove what :meth:`ensure` made."""
        if self.path is None:
            return
        shutil.rmtree(self.path / PARTS, ignore_errors=True)
        if self._made_dir:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty: never a user's files
        self.path = None


def _write_info(run_dir: Path, info: dict[str, Any]) -> None:
    tmp = run_dir / PARTS / f".{RUN_INFO}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp, run_dir / PARTS / RUN_INFO)


def read_info(run_dir: Path) -> dict[str, Any]:
    """The run's own metadata from ``.records/run.json`` ({} if absent or unreadable)."""
    try:
        info = json.loads((Path(run_dir) / PARTS / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class Collector:
    """Per-process sink for records, skips, equivalence and breakdown entries.

    ``run_dir`` is the run folder, or a function returning it (the controller's
    :meth:`RunPlace.ensure`), called on the first write only.
    """

    def __init__(self, run_dir: Path | Callable[[], Path], worker: str,
                 frameworks: list[str] | None = None) -> None:
        self.frameworks = frameworks  # only these are asked for versions / FTZ state
        self._run_dir = run_dir
        self.worker = worker
        self.path: Path | None = None
        self._meta_written = False
        self._started = False

    def _target(self) -> Path:
        if self.path is None:
            run_dir = self._run_dir() if callable(self._run_dir) else Path(self._run_dir)
            parts = run_dir / PARTS
            parts.mkdir(parents=True, exist_ok=True)
            self.path = parts / f"{self.worker}.jsonl"
        return self.path

    def _write(self, kind: str, payload: dict[str, Any]) -> None:
        with self._target().open("a") as f:
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

    def started(self, nodeid: str) -> None:
        """An audit test starts in this process: the run has something to report."""
        if not self._started:
            self._started = True
            self._write("started", {"nodeid": nodeid})

    def add(self, record: dict[str, Any]) -> None:
        self._meta()
        self._write("record", record)

    def skip(self, subject: str, dtype: str | None, device: str, reason: str) -> None:
        self._write("skipped", {"subject": subject, "dtype": dtype, "device": device,
                                "reason": reason})

    def equivalence(self, entry: dict[str, Any]) -> None:
        self._write("equivalence", entry)

    def breakdown(self, entry: dict[str, Any]) -> None:
        self._write("breakdown", entry)


def _part_files(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / PARTS).glob("*.jsonl"))


def has_parts(run_dir: Path) -> bool:
    """Whether any process wrote a line for this run (an audit test started)."""
    return any(p.stat().st_size > 0 for p in _part_files(run_dir))


def _read_parts(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"meta": [], "record": [], "skipped": [],
                                            "equivalence": [], "breakdown": []}
    for part in _part_files(run_dir):
        for line in part.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                item = json.loads(line)
                kind, data = item["kind"], item["data"]
            except (json.JSONDecodeError, KeyError, TypeError):  # a line cut by a kill
                continue
            out.setdefault(kind, []).append(data)
    return out


def run_status(records: Iterable[dict[str, Any]], *, interrupted: bool = False,
               testsfailed: int = 0, exitstatus: int = 0) -> str:
    """A run's ``status`` from what was measured, not from an exit code alone.

    ``"interrupted"`` if the run was cut short (a signal, or pytest's exit status 2):
    its records are incomplete whatever they say; else ``"failed"`` if a record failed
    (``failed`` / ``xpass_strict``), a test failed, or pytest ended in error; else
    ``"passed"``.
    """
    if interrupted or int(exitstatus) == 2:
        return "interrupted"
    if testsfailed or int(exitstatus) not in (0, 5) or any(
            r.get("outcome") in FAILING_OUTCOMES for r in records):
        return "failed"
    return "passed"


def build_document(run_dir: Path, run_id: str, started: str, status: str | None,
                   profile: str | None, seed: int | None, command: str) -> dict[str, Any]:
    """The results.json document of a finished (or interrupted) run.

    ``status=None`` derives it from the records (:func:`run_status`)."""
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
    return results.with_verdicts({
        "schema_version": results.SCHEMA_VERSION,
        "run": {
            "id": run_id, "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "status": status or run_status(parts["record"]), "profile": profile,
            "derandomized": _derandomized(profile),
            "seed": seed, "command": command,
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
    })


def _derandomized(profile: str | None) -> bool | None:
    """Whether the run's Hypothesis profile is derandomized (its examples fixed), so the
    report says so instead of "seed random"; None if the profile is not known here."""
    if profile is None or "hypothesis" not in sys.modules:
        return None
    from hypothesis import settings
    from hypothesis.errors import InvalidArgument

    try:
        return bool(settings.get_profile(profile).derandomize)
    except InvalidArgument:  # a profile not registered in this process
        return None


def finish(run_dir: Path, doc: dict[str, Any], *, latest: bool = False,
           keep: int | None = None) -> Path:
    """Attach the comparison with the previous run of the same kind, write results.json
    and index.html, then drop ``.records/``; with ``latest`` point ``<parent>/latest``
    here, with ``keep`` remove all but the newest ``keep`` runs of the parent."""
    from audit import compare, report

    run_dir = Path(run_dir)
    if (run_dir / PARTS).is_dir():  # a report that fails to build can be rebuilt
        with contextlib.suppress(OSError):
            _write_info(run_dir, {**read_info(run_dir), "status": doc["run"]["status"]})
    previous = results.find_previous(run_dir, like=doc)
    if previous is not None:
        try:
            compare.attach_comparison(doc, results.load_results(previous, check=False))
        except Exception as e:  # an unreadable old run must not cost us this report
            print(f"audit: could not compare with {previous}: {e}", file=sys.stderr)
    results.write_results(doc, run_dir)
    path = report.write_report(doc, run_dir)
    shutil.rmtree(run_dir / PARTS, ignore_errors=True)
    if latest:
        results.point_latest(run_dir.parent, run_dir)
    if keep is not None:
        results.prune_runs(run_dir.parent, keep, protect=[run_dir])
    return path


def rebuild(run_dir: str | os.PathLike[str]) -> Path:
    """Write results.json and index.html of a run from its ``.records/`` (a run killed
    with SIGKILL, or whose report failed); returns the index.html path.

    The status is the one the run recorded at its finish, else ``"interrupted"``.
    ``latest`` is pointed here when this is the newest run of a ``reports/`` folder.
    Raises FileNotFoundError / NotADirectoryError when there is nothing to rebuild.
    """
    try:
        return _rebuild(Path(run_dir))
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as e:  # unreadable, unwritable: one line, not a traceback
        raise ValueError(f"cannot rebuild {run_dir}: {e.strerror or e}") from None


def _rebuild(run_dir: Path) -> Path:
    if not run_dir.exists():
        raise FileNotFoundError(f"no such folder: {run_dir}")
    if not run_dir.is_dir():
        raise NotADirectoryError(f"not a folder: {run_dir}")
    if not (run_dir / PARTS).is_dir():
        done = " (its report is already built)" if (run_dir / results.RESULTS_NAME).is_file() \
            else ""
        raise FileNotFoundError(f"no {PARTS}/ in {run_dir}: nothing to rebuild{done}")
    info = read_info(run_dir)
    started = info.get("started")
    if not isinstance(started, str):
        started = datetime.fromtimestamp((run_dir / PARTS).stat().st_mtime, UTC).isoformat(
            timespec="seconds")
    seed = info.get("seed")
    status = info.get("status")
    doc = build_document(
        run_dir, run_dir.name, started,
        status if status in ("passed", "failed", "interrupted") else "interrupted",
        info.get("profile") if isinstance(info.get("profile"), str) else None,
        seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        str(info.get("command") or "pytest (command not recorded)"))
    newest = results.is_run_id(run_dir.name) and not any(
        results.is_run_id(p.name) and p.name > run_dir.name
        and (p / results.RESULTS_NAME).is_file() for p in run_dir.parent.iterdir())
    return finish(run_dir, doc, latest=newest)
