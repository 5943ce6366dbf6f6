"""Pick metrics on hand-made cases, and the evaluate command."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cryoscout.picking.evaluate import evaluate_picks


def _df(rows, score=False):
    df = pd.DataFrame(rows, columns=["class", "x", "y", "z"])
    if score:
        df["score"] = 1.0
    return df


def test_exact_counts_per_class_and_overall():
    truth = _df([(1, 10, 10, 10), (1, 30, 30, 30), (1, 50, 50, 50), (2, 10, 40, 10)])
    picks = _df([(1, 11, 10, 10), (1, 30, 33, 30), (1, 80, 80, 80), (2, 10, 40, 12), (2, 0, 0, 0)])
    res = evaluate_picks(picks, truth, radius=4)
    c1, c2 = res.per_class.loc[1], res.per_class.loc[2]
    assert (c1.tp, c1.fp, c1.fn) == (2, 1, 1)
    assert (c2.tp, c2.fp, c2.fn) == (1, 1, 0)
    assert c1.precision == pytest.approx(2 / 3) and c1.recall == pytest.approx(2 / 3)
    assert res.overall["tp"] == 3 and res.overall["fp"] == 2 and res.overall["fn"] == 1
    assert res.overall["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)


def test_two_picks_near_one_particle_count_once():
    truth = _df([(1, 10, 10, 10)])
    picks = _df([(1, 10, 10, 11), (1, 10, 10, 9)])
    res = evaluate_picks(picks, truth, radius=3)
    assert (res.overall["tp"], res.overall["fp"], res.overall["fn"]) == (1, 1, 0)


def test_matching_is_one_to_one_and_maximal():
    # Greedy nearest-first would give pick A to truth 1 and leave truth 2 unmatched;
    # the maximum matching pairs A-2 and B-1.
    truth = _df([(1, 0, 0, 0), (1, 4, 0, 0)])
    picks = _df([(1, 1.5, 0, 0), (1, -2.5, 0, 0)])
    res = evaluate_picks(picks, truth, radius=3)
    assert res.overall["tp"] == 2


def test_fbeta_uses_half_radius_and_beta_4():
    truth = _df([(1, 0, 0, 0), (1, 20, 0, 0)])
    picks = _df([(1, 1, 0, 0), (1, 23, 0, 0), (1, 50, 0, 0)])
    res = evaluate_picks(picks, truth, radius=4)
    assert res.overall["tp"] == 2  # both within 4
    # Within 2 (half radius): one hit -> p = 1/3, r = 1/2.
    p, r = 1 / 3, 1 / 2
    assert res.overall["fbeta4"] == pytest.approx(17 * p * r / (16 * p + r))


def test_per_class_radius_and_wrong_class_is_a_miss():
    truth = _df([(1, 0, 0, 0), (2, 50, 0, 0)])
    picks = _df([(2, 0, 0, 5), (2, 50, 0, 5)])
    res = evaluate_picks(picks, truth, radius={1: 10, 2: 6})
    assert res.per_class.loc[1].fn == 1 and res.per_class.loc[2].fp == 1
    assert res.per_class.loc[2].tp == 1


def test_cli_json_keys(tmp_path, run_cli):
    truth = _df([(1, 10, 10, 10), (2, 30, 30, 30)])
    picks = _df([(1, 11, 10, 10), (2, 40, 40, 40)], score=True)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    picks.to_csv(tmp_path / "picks.csv", index=False)
    res = run_cli(
        "pick",
        "evaluate",
        tmp_path / "picks.csv",
        tmp_path / "truth.csv",
        "--radius",
        "1:3,2:3",
        "--json",
    )
    assert res.code == 0, res.err
    out = json.loads(res.out)
    keys = {"precision", "recall", "f1", "fbeta4", "tp", "fp", "fn"}
    assert set(out) == {"overall", "per_class"}
    assert set(out["overall"]) == keys
    assert set(out["per_class"]) == {"1", "2"}
    assert all(set(v) == keys for v in out["per_class"].values())
    assert out["per_class"]["1"]["tp"] == 1 and out["per_class"]["2"]["fp"] == 1
    table = run_cli(
        "pick", "evaluate", tmp_path / "picks.csv", tmp_path / "truth.csv", "--radius", "3"
    )
    assert table.code == 0 and "fbeta4" in table.out and "all" in table.out


def test_cli_bad_radius_is_one_line(tmp_path, run_cli):
    _df([(1, 1, 1, 1)]).to_csv(tmp_path / "t.csv", index=False)
    res = run_cli("pick", "evaluate", tmp_path / "t.csv", tmp_path / "t.csv", "--radius", "x")
    assert res.code == 1 and "--radius" in res.err and res.err.count("\n") == 1
