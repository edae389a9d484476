"""Self-tests of results.json handling and of the HTML report built from it."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from audit import report, results
from audit.results import (
    ResultsError,
    from_json_value,
    load_results,
    new_run_dir,
    to_json_value,
    validate,
    write_results,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "harness" / "fixtures" / "sample_results.json"
HOSTILE = "<script>alert(1)</script>"
SEVERITY = ["error", "spurious_nan", "spurious_inf", "missing_inf", "wrong_sign",
            "spurious_zero", "inaccurate", "ok"]


@pytest.fixture(scope="module")
def sample() -> dict:
    return json.loads(FIXTURE.read_text())


def _expected_status(records: list[dict]) -> str:
    """Independent of audit.report: most severe status with a nonzero count or as worst."""
    seen = {s for r in records for s, c in r["counts"].items() if c}
    seen |= {r["worst"]["status"] for r in records if r["worst"]}
    return min(seen, key=SEVERITY.index)


class _Page(HTMLParser):
    """Elements with their attributes, and the text inside <code> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.codes: list[str] = []
        self._in_code = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag == "code":
            self._in_code, self.codes = True, [*self.codes, ""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self._in_code = False

    def handle_data(self, data: str) -> None:
        if self._in_code:
            self.codes[-1] += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag
                and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def _hostile_doc(sample: dict) -> dict:
    doc = copy.deepcopy(sample)
    rec = copy.deepcopy(next(r for r in doc["records"] if r["worst"]["status"] == "error"))
    rec["subject"] = HOSTILE
    rec["worst"]["repro"] = f"python -m audit probe '{HOSTILE}' --input \"<img src=x>\""
    rec["contract"] = {"id": "<b>x</b>", "status": "error", "region": "<i>", "reason": "&amp;",
                       "link": "javascript:alert(2)"}
    doc["records"].append(rec)
    return doc


@pytest.fixture(scope="module")
def rendered(sample: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The report of the fixture plus a hostile record, rendered once for all page tests."""
    doc = _hostile_doc(sample)
    path = report.write_report(doc, tmp_path_factory.mktemp("run"))
    assert path.name == "index.html" and path.parent.is_dir()
    return path, doc


@pytest.fixture(scope="module")
def page(rendered: tuple[Path, dict]) -> tuple[str, _Page, dict]:
    path, doc = rendered
    html = path.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(html)
    return html, parsed, doc


def _without_points(doc: dict) -> dict:
    """Same findings, no per-point data: renders in a fraction of the time (no plots)."""
    return {**doc, "records": [{**r, "points": []} for r in doc["records"]], "breakdown": []}


# ---------------------------------------------------------------- results.json


def test_fixture_validates(sample: dict) -> None:
    validate(sample)
    assert load_results(FIXTURE)["run"]["id"] == sample["run"]["id"]


@pytest.mark.parametrize("breakage", ["missing_field", "unknown_status", "float_nan",
                                      "bad_dtype", "nan_in_points", "count_name"])
def test_broken_docs_are_rejected(sample: dict, breakage: str) -> None:
    doc = {**sample, "records": [copy.deepcopy(sample["records"][0])]}
    validate(doc)  # valid before the breakage
    rec = doc["records"][0]
    if breakage == "missing_field":
        del rec["max_ulp"]
    elif breakage == "unknown_status":
        rec["worst"]["status"] = "kinda_ok"
    elif breakage == "float_nan":
        rec["max_ulp"] = math.nan
    elif breakage == "bad_dtype":
        rec["dtype"] = "float8"
    elif breakage == "nan_in_points":
        rec["points"][0][2] = math.inf
    elif breakage == "count_name":
        rec["counts"]["weird"] = 1
    with pytest.raises(ResultsError):
        validate(doc)


def test_bare_nan_in_file_is_rejected(tmp_path: Path) -> None:
    text = FIXTURE.read_text().replace('"max_ulp": "inf"', '"max_ulp": Infinity', 1)
    assert "Infinity" in text
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ResultsError, match="bare Infinity"):
        load_results(tmp_path)


@pytest.mark.parametrize("x, stored", [(1.5, 1.5), (math.inf, "inf"), (-math.inf, "-inf"),
                                       (0.0, 0.0), (-0.0, -0.0), (None, None), (3, 3)])
def test_json_values_round_trip(x: float | None, stored: object) -> None:
    assert to_json_value(x) == stored
    back = from_json_value(to_json_value(x))
    assert back == x and (x is None or math.copysign(1, back) == math.copysign(1, x))


def test_nan_round_trips_as_string() -> None:
    assert to_json_value(math.nan) == "nan"
    assert math.isnan(from_json_value("nan"))


def test_write_then_load_is_identity_and_strict_json(sample: dict, tmp_path: Path) -> None:
    path = write_results(sample, tmp_path)
    text = path.read_text()
    assert not re.search(r"\b(NaN|Infinity)\b", text)
    assert load_results(tmp_path) == sample
    with pytest.raises(ValueError):  # a float NaN must never reach the file
        write_results({**sample, "schema_version": math.nan}, tmp_path / "bad")


# ---------------------------------------------------------------- run directories


def test_latest_points_at_newest_run(tmp_path: Path) -> None:
    first = new_run_dir(tmp_path, "20261123T150600Z")
    second = new_run_dir(tmp_path, "20261123T150700Z")
    latest = tmp_path / "latest"
    assert latest.is_symlink() and latest.resolve() == second.resolve()
    assert first.is_dir() and not os.path.isabs(os.readlink(latest))  # relocatable
    assert results.find_previous(second) is None  # first has no results.json yet
    write_results({"x": 1}, first)
    assert results.find_previous(second) is None  # a run of no record is no baseline
    write_results({"run": {"command": "pytest"}, "records": [{"mode": "grid"}]}, first)
    assert results.find_previous(second) == first
    assert results.find_previous(second, like={"run": {"command": "pytest -q"}}) == first
    assert results.find_previous(second, like={"run": {"command": "python -m audit sweep"},
                                               "records": [{"mode": "sampled"}]}) is None
    assert (tmp_path / "latest").resolve() == second.resolve()
    third = new_run_dir(tmp_path, "20261123T150800Z", latest=False)  # the pytest run's way
    assert (tmp_path / "latest").resolve() == second.resolve() and third.is_dir()


def test_two_runs_in_the_same_second_do_not_collide(tmp_path: Path) -> None:
    dirs = [new_run_dir(tmp_path) for _ in range(3)]
    assert len({d.name for d in dirs}) == 3
    assert (tmp_path / "latest").resolve() == dirs[-1].resolve()
    assert sorted(d.name for d in dirs) == [d.name for d in dirs]  # names sort in run order


def test_a_real_latest_directory_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "keep.txt").write_text("data")
    run = new_run_dir(tmp_path, "20261123T150600Z")
    assert (tmp_path / "latest").resolve() == run.resolve()
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("latest.replaced")]
    assert len(moved) == 1 and (moved[0] / "keep.txt").read_text() == "data"


# ---------------------------------------------------------------- the page


def test_no_external_references(page: tuple[str, _Page, dict]) -> None:
    html, parsed, _ = page
    external = re.compile(r"^\s*(https?:|//|ftp:)", re.I)
    for tag, attrs in parsed.elements:
        for name in ("src", "href", "xlink:href", "data"):
            if tag in ("script", "link", "img", "use", "image", "iframe", "source", "object",
                       "embed", "audio", "video") or name == "src":
                assert not external.match(attrs.get(name, "")), (tag, attrs)
    assert not parsed.find("link") and not parsed.find("img")
    assert all("src" not in a for a in parsed.find("script"))
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", html)
    assert "@import" not in html and "@font-face" not in html


def test_every_matrix_cell_has_the_right_status(page: tuple[str, _Page, dict]) -> None:
    _, parsed, doc = page
    groups: dict[tuple, list] = {}
    for r in doc["records"]:
        groups.setdefault((r["subject"], r["dtype"], r["device"], r["quantity"]), []).append(r)
    for (subject, dtype, device, quantity), recs in groups.items():
        cells = parsed.find("td", data_subject=subject, data_dtype=dtype, data_device=device,
                            data_quantity=quantity)
        assert len(cells) == 1, (subject, dtype, device, quantity)
        classes = cells[0]["class"].split()
        assert f"st-{_expected_status(recs)}" in classes, (subject, dtype, classes)
        anchor = report.anchor(subject, dtype)
        assert parsed.find("section", id=anchor) and parsed.find("a", href="#" + anchor)
    for s in doc["run"]["skipped"]:
        for quantity in ("loss", "grad"):
            cells = parsed.find("td", data_subject=s["subject"], data_dtype=s["dtype"],
                                data_device=s["device"], data_quantity=quantity)
            assert len(cells) == 1 and "st-skipped" in cells[0]["class"].split()
            assert cells[0]["title"] == s["reason"]


def test_known_deviations_look_different_from_new_findings(
        page: tuple[str, _Page, dict]) -> None:
    _, parsed, doc = page
    cells = {(a["data-subject"], a["data-dtype"], a["data-device"], a["data-quantity"]): a
             for a in parsed.find("td") if "data-subject" in a}
    for key in {(r["subject"], r["dtype"], r["device"], r["quantity"]) for r in doc["records"]}:
        recs = [r for r in doc["records"]
                if (r["subject"], r["dtype"], r["device"], r["quantity"]) == key]
        failing = [r for r in recs if _expected_status([r]) != "ok" or r["outcome"] == "failed"]
        classes = cells[key]["class"].split()
        if failing and all(r["contract"] for r in failing):
            assert "known" in classes and "new-finding" not in classes, key
        elif failing:
            assert "new-finding" in classes and "known" not in classes, key
        else:  # nothing to declare, even where a (stale) contract exists
            assert "known" not in classes and "new-finding" not in classes, key
    assert any("known" in a["class"].split() for a in cells.values())


def test_every_worst_case_is_listed_with_its_repro(page: tuple[str, _Page, dict]) -> None:
    _, parsed, doc = page
    findings = [r for r in doc["records"] if r["worst"] and r["worst"]["status"] != "ok"]
    assert 0 < len(findings) <= 30
    rows = parsed.find("tr", **{"class": "worst-row"})
    assert len(rows) == len(findings)
    for r in findings:
        assert r["worst"]["repro"] in parsed.codes, r["worst"]["repro"]
    first = rows[0]
    assert first["data-subject"] == HOSTILE or first["data-subject"] == "torch.bce"


def test_hostile_names_are_escaped(page: tuple[str, _Page, dict]) -> None:
    html, parsed, _ = page
    assert HOSTILE not in html and "<img src=x>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert len(parsed.find("script")) == 1  # only the optional copy-button script
    assert not [a for a in parsed.find("a") if a.get("href", "").startswith("javascript:")]
    assert "<b>x</b>" not in html


def test_sections_and_plots(page: tuple[str, _Page, dict]) -> None:
    html, parsed, doc = page
    for anchor in ("summary", "worst", "equivalence", "breakdown", "details", "environment"):
        assert parsed.find("h2", id=anchor), anchor
    svgs = parsed.find("svg", **{"class": "plot"})
    assert len(svgs) >= len({(r["subject"], r["dtype"]) for r in doc["records"]})
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    ids = [a["id"] for _, a in parsed.elements if "id" in a]
    assert len(ids) == len(set(ids)), "duplicate ids across inline SVGs"
    assert "loses all precision beyond x = 16.6" in html
    assert len(html) < 6_000_000


def test_comparison_section(sample: dict, tmp_path: Path) -> None:
    from audit.compare import attach_comparison

    old = copy.deepcopy(_without_points(sample))
    old["records"][0]["counts"] = {"ok": old["records"][0]["n"]}
    old["records"][0]["worst"]["status"] = "ok"
    old["records"][0]["max_ulp"] = 0.25
    doc = _without_points(sample)
    attach_comparison(doc, old)
    validate(doc)
    html = report.render_report(doc)
    assert doc["comparison"]["previous"] == sample["run"]["id"]
    assert 'id="comparison"' in html and 'class="regression"' in html


def test_minimal_doc_renders(sample: dict, tmp_path: Path) -> None:
    doc = {"schema_version": 1, "run": copy.deepcopy(sample["run"]), "records": []}
    doc["run"]["skipped"] = []
    validate(doc)
    html = report.write_report(doc, tmp_path).read_text()
    assert "No findings" in html


# ---------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install -y chromium); the browser test needs it")
def test_report_renders_in_chromium(rendered: tuple[Path, dict], tmp_path: Path) -> None:
    index, doc = rendered
    url = index.resolve().as_uri()
    shot = tmp_path / "report.png"  # never into the repository

    def chromium(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0", *args, url],
            capture_output=True, text=True, timeout=120, check=False)

    shown = chromium(f"--screenshot={shot}", "--window-size=1400,2000")
    assert shot.is_file() and shot.stat().st_size > 20_000, shown.stderr[-2000:]
    dom = chromium("--dump-dom", "--virtual-time-budget=3000")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="matrix"') == 4
    assert dom.stdout.count("data-subject=") >= len({(r["subject"], r["dtype"], r["device"],
                                                       r["quantity"]) for r in doc["records"]})
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout
    console = [line for line in (shown.stderr + dom.stderr).splitlines()
               if ("Uncaught" in line or "ERROR:CONSOLE" in line or "CONSOLE(" in line)
               and ("index.html" in line or "file://" in line)]
    assert not console, "\n".join(console)
