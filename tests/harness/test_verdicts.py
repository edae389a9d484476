"""Self-tests of the verdicts (audit/verdicts.py, DESIGN.md section 8): safe intervals
from synthetic graded points, the streaming form of sweeps against the one-shot form,
the results.json summary and the plain-language sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit import families, results, verdicts
from audit.batch import Batch
from audit.checks import Case, Outcome
from audit.grading import STATUSES, Graded
from audit.sweep import Accumulator, values_of
from audit.verdict_text import beyond_text, interval_text, recommendations

LOGITS = families.get("bce_with_logits")
CODE = {s: i for i, s in enumerate(STATUSES)}


def outcome(x, y, statuses, mode: str = "grid", subject: str = "torch.bce_with_logits",
            check: str = "values", weight=1.0, extra=None) -> Outcome:
    """An Outcome of synthetic points: only what verdicts read is meaningful."""
    pts = Batch.of(x, y, weight, 1.0, **(extra or {}))
    n = len(pts)
    code = np.array([CODE[s] for s in statuses], np.int8)
    graded = Graded(code, np.zeros(n), np.zeros(n), "float32")
    zeros = np.zeros(n)
    return Outcome(Case(subject, check, "float32", "cpu"), pts, zeros, zeros,
                   (zeros, zeros), graded, mode=mode)


def target_entry(out: Outcome, target: float, family=LOGITS) -> dict:
    st = verdicts.outcome_stability(out, family)
    return next(e for e in st["targets"] if e["target"] == target)


def test_failing_points_on_both_sides() -> None:
    x = [-5.0, -3.0, -1.0, 0.0, 1.0, 2.0, 4.0]
    st = ["ok", "spurious_zero", "ok", "ok", "ok", "inaccurate", "ok"]
    e = target_entry(outcome(x, 1.0, st), 1.0)
    assert e["safe"] == [-1.0, 1.0]
    assert e["below"] == {"input": -3.0, "status": "spurious_zero"}
    assert e["above"] == {"input": 2.0, "status": "inaccurate"}
    assert e["basis"] == "grid" and e["n"] == 7 and e["ok"] == 5


def test_nothing_failing_reaches_the_extreme_inputs() -> None:
    x = [-math.inf, -1e10, 0.0, 3.0, math.inf]
    e = target_entry(outcome(x, 0.0, ["ok"] * 5), 0.0)
    assert e["safe"] == ["-inf", "inf"] and e["below"] is None and e["above"] is None


def test_all_failing_and_the_centre_failing() -> None:
    x = [-2.0, 0.0, 2.0]
    e = target_entry(outcome(x, 1.0, ["inaccurate", "spurious_nan", "inaccurate"]), 1.0)
    assert e["safe"] is None
    assert e["below"] == e["above"] == {"input": 0.0, "status": "spurious_nan"}
    # only the centre fails: still no safe interval (it must contain the centre)
    e = target_entry(outcome(x, 1.0, ["ok", "error", "ok"]), 1.0)
    assert e["safe"] is None and e["below"]["status"] == "error"
    # the centre not graded and both neighbours failing: nothing around it is ok
    e = target_entry(outcome([-1.0, 1.0, 5.0], 1.0, ["inaccurate", "inaccurate", "ok"]), 1.0)
    assert e["safe"] is None


def test_a_tie_at_the_edge_takes_the_worst_status() -> None:
    x = [0.0, 1.0, 3.0, 3.0]
    e = target_entry(outcome(x, 0.0, ["ok", "ok", "inaccurate", "spurious_nan"]), 0.0)
    assert e["above"] == {"input": 3.0, "status": "spurious_nan"} and e["safe"] == [0.0, 1.0]


def test_basis_targets_and_filters() -> None:
    x = np.array([-1.0, 0.0, 1.0] * 3)
    y = np.repeat([0.0, 1.0, 0.25], 3)  # a soft target never gets a verdict
    st = ["ok"] * 9
    st[2] = "inaccurate"  # target 0 fails at x = 1
    out = outcome(x, y, st, mode="exhaustive")
    got = verdicts.outcome_stability(out, LOGITS)
    assert [e["target"] for e in got["targets"]] == [0.0, 1.0]
    assert all(e["basis"] == "exhaustive" for e in got["targets"])
    assert got["targets"][0]["above"] == {"input": 1.0, "status": "inaccurate"}
    assert got["targets"][1]["above"] is None and got["n"] == 9
    # weighted points, other checks and reductions are not plain: no verdicts
    assert verdicts.outcome_stability(outcome(x, y, st, check="weighted"), LOGITS) is None
    weighted = outcome([0.0, 1.0], 1.0, ["ok", "inaccurate"], weight=np.array([1.0, 2.0]))
    assert target_entry(weighted, 1.0)["above"] is None


def test_parametric_family_uses_its_default_setting_only() -> None:
    focal = families.get("focal_with_logits")
    x = [0.0, 1.0, 0.0, 1.0]
    gamma = np.array([2.0, 2.0, 0.5, 0.5])  # the default is gamma 2, alpha None (NaN)
    out = outcome(x, 1.0, ["ok", "ok", "ok", "inaccurate"], subject="keras.focal_with_logits",
                  extra={"gamma": gamma, "alpha": np.full(4, np.nan)})
    e = target_entry(out, 1.0, focal)
    assert e["above"] is None and e["n"] == 2


def _codes(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Statuses with structure: fails beyond |x| = 9 and at x <= -3.5, speckles inside."""
    code = np.full(x.size, CODE["ok"], np.int8)
    code[x > 9] = CODE["spurious_zero"]
    code[x <= -3.5] = CODE["inaccurate"]
    code[np.isinf(x)] = CODE["spurious_nan"]
    speckle = (np.abs(x) > 2) & (rng.random(x.size) < 0.05)
    code[speckle] = CODE["inaccurate"]
    return code


def _essentials(e: dict) -> tuple:
    return e["safe"], e["below"], e["above"], e["basis"], e["n"], e["ok"]


def test_sweep_accumulator_equals_the_one_shot_verdict() -> None:
    """An exhaustive float16 sweep streamed in pattern order gives the one-shot verdict."""
    rng = np.random.default_rng(1)
    start, stop = LOGITS.patterns("float16")
    x_all = values_of(np.arange(start, stop, dtype=np.uint64), "float16")
    code_all = _codes(x_all, rng)
    acc = Accumulator(Case("torch.bce_with_logits", "values", "float16", "cpu"), "exhaustive")
    chunk = 5000
    for target in (0.0, 1.0):
        for i in range(0, x_all.size, chunk):
            x, code = x_all[i:i + chunk], code_all[i:i + chunk]
            g = Graded(code, np.zeros(x.size), np.zeros(x.size), "float16")
            acc.add(x, np.full(x.size, target), np.zeros(x.size), np.zeros(x.size), g)
    streamed = acc.record("sweep")["stability"]
    one = outcome(np.concatenate([x_all, x_all]), np.repeat([0.0, 1.0], x_all.size),
                  [STATUSES[c] for c in np.concatenate([code_all, code_all])],
                  mode="exhaustive")
    shot = verdicts.outcome_stability(one, LOGITS)
    assert [_essentials(e) for e in streamed["targets"]] == \
        [_essentials(e) for e in shot["targets"]]
    assert streamed["targets"][0]["basis"] == "exhaustive"
    assert shot["targets"][0]["below"]["input"] <= -2 and shot["targets"][0]["above"]["input"] >= 2


def test_streaming_in_any_order_is_conservative_and_shards_merge_exactly() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([np.linspace(-20, 20, 4001), [math.inf, -math.inf]])
    code = _codes(x, rng)
    one = verdicts.TargetStats(1.0, 0.0)
    one.add(x, code)
    order = rng.permutation(x.size)
    streamed = verdicts.TargetStats(1.0, 0.0)
    for part in np.array_split(order, 37):
        streamed.add(x[part], code[part])
    assert (streamed.low.edge, streamed.high.edge) == (one.low.edge, one.high.edge)
    lo, hi = streamed.safe()
    one_lo, one_hi = one.safe()
    assert one_lo <= lo <= 0 <= hi <= one_hi  # never wider than the truth
    assert code[x == lo][0] == CODE["ok"] and code[x == hi][0] == CODE["ok"]
    shards = []
    for part in np.array_split(np.arange(x.size), 5):  # contiguous shards, merged
        s = verdicts.TargetStats(1.0, 0.0)
        s.add(x[part], code[part])
        shards.append(s)
    merged = verdicts.merge_stats(shards[::-1])
    assert merged.safe() == one.safe() and merged.entry("grid") == one.entry("grid")
    # and through the stored form, as merged sweep records do
    back = [verdicts.TargetStats.from_entry(s.entry("grid"), 0.0) for s in shards]
    assert verdicts.merge_stats(back).entry("grid") == one.entry("grid")


def test_inputs_total_counts_every_non_nan_input() -> None:
    for dtype in ("float16", "bfloat16"):
        start, stop = LOGITS.patterns(dtype)
        every = values_of(np.arange(start, stop, dtype=np.uint64), dtype)
        assert verdicts.inputs_total(dtype, LOGITS) == every.size
        probs = families.get("bce")
        start, stop = probs.patterns(dtype)
        assert verdicts.inputs_total(dtype, probs) == stop - start


def test_segments_are_capped_and_keep_long_runs_exact() -> None:
    x = np.arange(2000.0)
    code = np.full(x.size, CODE["ok"], np.int8)
    code[1000:1500:2] = CODE["inaccurate"]  # 250 speckles: 500 runs
    code[1800:] = CODE["spurious_nan"]
    segs = verdicts.segments(x, code, cap=10)
    assert len(segs) <= 10
    assert segs[0][:3] == [0.0, 999.0, "ok"]
    assert segs[-1] == [1800.0, 1999.0, "spurious_nan", 200, 0]
    mixed = [s for s in segs if 1000 <= s[0] < 1500]
    assert mixed and mixed[0][2] == "inaccurate" and 0 < mixed[0][4] < mixed[0][3]
    assert sum(s[3] for s in segs) == x.size


def _record(subject: str, quantity: str, stability: dict | None, n: int) -> dict:
    return {"subject": subject, "dtype": "float32", "device": "cpu", "quantity": quantity,
            "n": n, "family": "bce_with_logits", **({"stability": stability}
                                                   if stability else {})}


def test_document_verdicts_have_the_design_shape() -> None:
    out = outcome([-1.0, 0.0, 1.0], 1.0, ["inaccurate", "ok", "ok"])
    st = verdicts.outcome_stability(out, LOGITS)
    records = [_record("a.bce_with_logits", "loss", st, 3),
               _record("b.bce_with_logits", "loss", st, 4)]  # stale: n moved on
    got = verdicts.document_verdicts(records)
    assert got == [{"subject": "a.bce_with_logits", "dtype": "float32", "device": "cpu",
                    "execution": "eager", "quantity": "loss", "target": 1.0,
                    "safe": [0.0, 1.0], "basis": "grid",
                    "below": {"input": -1.0, "status": "inaccurate"}, "above": None}]


def test_results_carry_verdicts_and_files_without_them_still_load(tmp_path) -> None:
    import json
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "sample_results.json"
    doc = json.loads(fixture.read_text())
    assert "verdicts" not in doc
    results.validate(doc)  # no verdicts: still a valid run
    rec = doc["records"][0]
    x = np.tile(np.linspace(-4, 4, rec["n"] // 2), 2)
    rec["n"] = x.size
    out = outcome(x, np.repeat([0.0, 1.0], x.size // 2), ["ok"] * x.size)
    rec["stability"] = verdicts.outcome_stability(out, LOGITS)
    rec["inf_counts"] = {}
    results.write_results(doc, tmp_path)
    back = results.load_results(tmp_path)  # validates the new fields and `verdicts`
    assert {v["target"] for v in back["verdicts"]} == {0.0, 1.0}
    assert all(v["safe"] == [-4.0, 4.0] for v in back["verdicts"])
    assert "verdicts" not in doc  # the caller's document is left as it was


def test_sentences_a_person_can_read() -> None:
    every = {"safe": ["-inf", "inf"], "below": None, "above": None, "quantity": "loss"}
    assert interval_text(every) == "every x" and beyond_text(every) == []
    finite = {**every, "safe": [-65504.0, 65504.0],
              "below": {"input": "-inf", "status": "spurious_nan"},
              "above": {"input": "inf", "status": "spurious_nan"}}
    assert interval_text(finite) == "every finite x"
    assert beyond_text(finite)[0] == "at x = −∞: the loss is NaN"
    part = {**every, "safe": [-17.25, "inf"], "below": {"input": -17.34,
                                                        "status": "spurious_zero"}}
    assert interval_text(part) == "x ≥ −17.25"
    assert beyond_text(part) == ["below x = −17.25: the loss underflows to 0 "
                                 "(first at x = −17.34)"]
    assert interval_text({**part, "safe": None}, "q") == "no q"


def test_recommendation_names_the_widest_safe_loss() -> None:
    def v(subject: str, target: float, safe, below=None, above=None) -> dict:
        return {"subject": subject, "dtype": "float16", "device": "cpu", "execution": "eager",
                "quantity": "loss", "target": target, "safe": safe, "basis": "exhaustive",
                "below": below, "above": above}

    fail = {"input": 7.7, "status": "inaccurate"}
    vs = [v("t.bce_with_logits", t, ["-inf", "inf"]) for t in (0.0, 1.0)] + \
         [v("t.sigmoid_bce", t, [-3.0, 7.6], {"input": -3.1, "status": "inaccurate"}, fail)
          for t in (0.0, 1.0)]
    fams = {"t.bce_with_logits": "bce_with_logits", "t.sigmoid_bce": "sigmoid_bce"}
    (line,) = recommendations(vs, fams, ["float16"])
    assert line["text"] == ("Logits: t.bce_with_logits (the fused loss on logits), safe for "
                            "every x; BCELoss(sigmoid(x)) at best for −3 ≤ x ≤ 7.6 "
                            "(t.sigmoid_bce).")


def test_exhaustive_checks_grade_what_a_complete_sweep_grades() -> None:
    """A float16 check's exhaustive inputs are exactly the inputs a sweep counts."""
    assert LOGITS.every_input("float16").size == verdicts.inputs_total("float16", LOGITS)


@pytest.mark.parametrize("bad", [[], [-3.0], [4.0], [-3.0, 4.0]])
def test_shards_split_at_the_centre_merge_to_the_one_shot_interval(bad):
    """An exhaustive sweep's shards 1/2 and 2/2 are the positive and the negative halves:
    merged, they must give the whole sweep's interval, infinite ends included (a side
    where nothing fails keeps its outermost ok input, even -inf)."""
    x = np.array([-np.inf, -5.0, -3.0, -1.0, -0.0, 0.0, 2.0, 4.0, 6.0, np.inf])
    code = np.where(np.isin(x, bad), STATUSES.index("inaccurate"), verdicts.OK)
    whole = verdicts.TargetStats(0.0, 0.0)
    whole.add(x, code)
    parts = []
    for half in (~np.signbit(x), np.signbit(x)):
        part = verdicts.TargetStats(0.0, 0.0)
        part.add(x[half], code[half])
        parts.append(part)
    merged = verdicts.merge_stats(parts)
    assert merged.safe() == whole.safe()
    for end in ("below", "above"):
        assert merged.entry("grid")[end] == whole.entry("grid")[end]
