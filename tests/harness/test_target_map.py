"""The logit x target map of `--targets all` sweeps (audit/target_map.py)."""

from __future__ import annotations

import numpy as np
import pytest

from audit import regions, results, subjects
from audit.sweep import merge_records, sweep
from audit.target_map import TargetMap, _patterns, all_targets, merge_fields

SUBJECT = "torch.bce_with_logits"


@pytest.mark.parametrize(("dtype", "count"), [("float16", 15361), ("bfloat16", 16257)])
def test_all_targets_are_every_value_in_the_unit_interval(dtype, count):
    t = all_targets(dtype)
    every = regions.all_values(dtype)
    inside = every[(every >= 0) & (every <= 1)]
    assert t.size == count == np.unique(inside).size  # +0 and -0 are one target
    assert t[0] == 0 and t[-1] == 1 and np.all(np.diff(t) > 0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cells_are_ordered_and_the_tables_match_the_binade_maths(dtype):
    m = TargetMap(dtype)
    x = regions.all_values(dtype)
    x = np.sort(x[~np.isnan(x)])
    xi = m._x_table[_patterns(x, dtype)]
    assert np.array_equal(xi, m.x_index(x)) and np.all(np.diff(xi) >= 0)
    assert xi[0] == 0 and xi[-1] == m.nx - 1  # -inf and +inf have cells of their own
    t = all_targets(dtype)
    yi = m._y_table[_patterns(t, dtype)]
    assert np.array_equal(yi, m.y_index(t)) and np.all(np.diff(yi) >= 0)
    assert yi[0] == 0 and yi[-1] == m.ny - 1 and m.y_index(np.array([0.5]))[0] == -m.tmin
    xs, ys = m.labels()
    assert (len(xs), len(ys)) == (m.nx, m.ny)


def test_counts_and_the_largest_error_land_in_their_cells():
    m = TargetMap("float16")
    x = np.array([1.0, 1.5, -3.0, np.inf, np.nan])
    y = np.array([0.0, 0.0, 1 - 2.0**-11, 0.25, 0.5])
    m.add(x, y, np.array([True, False, True, False, True]),
          np.array([3.0, 0.25, np.inf, 0.0, 9.0]))
    f = m.field()
    n, bad = np.array(f["n"]), np.array(f["bad"])
    assert n.sum() == 4 and bad.sum() == 2  # the NaN logit is not placed
    one = m.x_index(np.array([1.0]))[0], 0
    assert n[one] == 2 and bad[one] == 1 and f["max_ulp"][one[0]][one[1]] == 3.0
    # 1 - 2**-11, the largest float16 target below 1: the highest cell below the y = 1 row
    below_one = all_targets("float16")[:-1]
    hair = m.x_index(np.array([-3.0]))[0], int(m.y_index(below_one).max())
    assert hair[1] == m.y_index(np.array([1 - 2.0**-11]))[0] < m.ny - 1
    assert bad[hair] == 1 and f["max_ulp"][hair[0]][hair[1]] == "inf"
    both = merge_fields([f, f])
    assert np.array(both["n"]).sum() == 8 and both["max_ulp"] == f["max_ulp"]


def test_a_swept_record_carries_a_map_that_adds_up_and_merges():
    if subjects.get(SUBJECT).skip_reason("float16", "cpu"):
        pytest.skip(subjects.get(SUBJECT).skip_reason("float16", "cpu"))
    targets = all_targets("float16")[::997].tolist()  # 16 targets, many to a call
    shards = [sweep(SUBJECT, "float16", targets=targets, exhaustive=False, samples=300,
                    shard=(i, 2), chunk=1024, budget=1.0, progress=False, target_map=True)
              for i in range(2)]
    for records in shards:
        for r in records:
            m = r["target_map"]
            nan_inputs = r["n"] - int(np.sum(m["n"]))
            assert 0 <= nan_inputs <= r["n"] // 10  # only NaN logits stay off the map
            assert int(np.sum(m["bad"])) <= r["n"] - r["counts"].get("ok", 0)
    merged = merge_records([r for records in shards for r in records])
    for r in merged:
        parts = [s for records in shards for s in records if s["quantity"] == r["quantity"]]
        assert np.array_equal(np.array(r["target_map"]["n"]),
                              np.sum([p["target_map"]["n"] for p in parts], axis=0))


def test_targets_all_from_the_command_line_validates(tmp_path, capsys):
    """`--targets all`: every float16 target against 20 sampled logits; the run's
    results.json (schema-checked on load) has a map per quantity covering every point."""
    from audit.cli import main

    if subjects.get(SUBJECT).skip_reason("float16", "cpu"):
        pytest.skip(subjects.get(SUBJECT).skip_reason("float16", "cpu"))
    out = tmp_path / "run"
    assert main(["sweep", SUBJECT, "--dtype", "float16", "--samples", "20", "--targets",
                 "all", "--quiet", "--out", str(out)]) == 0
    doc = results.load_results(out)
    assert len(doc["run"]["sweep"]["targets"]) == 15361
    for r in doc["records"]:
        placed = int(np.sum(r["target_map"]["n"]))
        assert r["n"] % 15361 == 0 and r["n"] - placed == 15361 * (r["n"] // 15361 - placed
                                                                   // 15361)


def test_all_targets_is_for_16_bit_dtypes_only(capsys):
    from audit.cli import main

    assert main(["sweep", SUBJECT, "--dtype", "float32", "--samples", "10",
                 "--targets", "all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--targets all is for float16 and bfloat16" in err[0]
