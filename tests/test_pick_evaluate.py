"""Pick metrics on hand-made cases (one-to-one report and the CZII score), and the command."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from copick_support import new_copick_project
from cryoscout.picking.evaluate import czii_score, evaluate_picks


def f4(p: float, r: float) -> float:
    """F-beta with beta 4, written out: (1 + 16) p r / (16 p + r)."""
    return 17 * p * r / (16 * p + r) if p + r > 0 else 0.0


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


def test_one_to_one_boundary_is_inclusive():
    truth = _df([(1, 0, 0, 0), (1, 50, 0, 0)])
    picks = _df([(1, 4, 0, 0), (1, 54.001, 0, 0)])
    res = evaluate_picks(picks, truth, radius=4)
    assert (res.overall["tp"], res.overall["fp"], res.overall["fn"]) == (1, 1, 1)


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
    keys = {"precision", "recall", "f1", "tp", "fp", "fn"}
    assert set(out) == {"overall", "per_class"}
    assert set(out["overall"]) == keys
    assert set(out["per_class"]) == {"1", "2"}
    assert all(set(v) == keys for v in out["per_class"].values())
    assert out["per_class"]["1"]["tp"] == 1 and out["per_class"]["2"]["fp"] == 1
    table = run_cli(
        "pick", "evaluate", tmp_path / "picks.csv", tmp_path / "truth.csv", "--radius", "3"
    )
    assert table.code == 0 and "f1" in table.out and "all" in table.out


def test_cli_bad_radius_is_one_line(tmp_path, run_cli):
    _df([(1, 1, 1, 1)]).to_csv(tmp_path / "t.csv", index=False)
    res = run_cli("pick", "evaluate", tmp_path / "t.csv", tmp_path / "t.csv", "--radius", "x")
    assert res.code == 1 and "--radius" in res.err and res.err.count("\n") == 1


# --- The CZII challenge score: one hand-made case per way it differs from one-to-one F1.


def test_czii_pools_counts_over_tomograms_before_f_beta():
    # Radius 8 -> a pick counts within 4. Tomogram 0: 1 truth, 1 hit. Tomogram 1: 3 truths,
    # 1 hit + 1 pick far away. Pooled tp 2, fp 1, fn 2 -> p 2/3, r 1/2 (not the mean of the
    # per-tomogram F-betas, 1 and f4(1/2, 1/3)).
    truth = _df([(1, 10, 10, 10), (1, 10, 10, 10), (1, 40, 10, 10), (1, 70, 10, 10)])
    truth["tomo"] = [0, 1, 1, 1]
    picks = _df([(1, 12, 10, 10), (1, 10, 13, 10), (1, 90, 90, 90)])
    picks["tomo"] = [0, 1, 1]
    res = czii_score(picks, truth, radius={1: 8})
    row = res.per_class.loc[1]
    assert (row.tp, row.fp, row.fn) == (2, 1, 2)
    assert res.score == pytest.approx(f4(2 / 3, 1 / 2))
    assert res.score == pytest.approx(34 / 67)
    assert res.score != pytest.approx((1 + f4(1 / 2, 1 / 3)) / 2)
    # Picks in a tomogram without truth are left out, as the challenge filters them.
    extra = pd.concat([picks, _df([(1, 5, 5, 5)]).assign(tomo=7)], ignore_index=True)
    assert czii_score(extra, truth, radius={1: 8}).score == pytest.approx(res.score)


def test_czii_divides_by_the_sum_of_all_weights():
    # Class 1 perfect (F 1), class 2 half found with no false picks (p 1, r 1/2).
    # Weight 2 for a class absent from this truth still counts: (1*1 + 2*f4(1, 1/2)) / 5.
    truth = _df([(1, 0, 0, 0), (2, 50, 0, 0), (2, 90, 0, 0)])
    picks = _df([(1, 1, 0, 0), (2, 50, 1, 0)])
    res = czii_score(picks, truth, radius=6, weights={1: 1, 2: 2, 3: 2})
    assert res.score == pytest.approx((1 * 1 + 2 * f4(1, 1 / 2)) / 5)
    assert res.per_class.loc[2, "weight"] == 2
    # Equal weights when none are given: the mean over the truth's classes.
    assert czii_score(picks, truth, radius=6).score == pytest.approx((1 + f4(1, 1 / 2)) / 2)
    with pytest.raises(ValueError, match="no weight for class 2"):
        czii_score(picks, truth, radius=6, weights={1: 1})


def test_czii_ignores_classes_only_in_the_picks():
    truth = _df([(1, 0, 0, 0)])
    picks = _df([(1, 0, 1, 0), (5, 30, 30, 30), (5, 60, 0, 0)])
    res = czii_score(picks, truth, radius=4)
    assert list(res.per_class.index) == [1] and res.score == pytest.approx(1.0)
    # The one-to-one report counts them as false positives instead.
    one = evaluate_picks(picks, truth, radius=4)
    assert one.per_class.loc[5].fp == 2 and one.overall["f1"] == pytest.approx(
        2 * (1 / 3) / (4 / 3)
    )


def test_czii_matches_many_to_one():
    # Two true centres 3 apart and one pick between them (1.5 from each), radius 4 -> 2:
    # the pick finds both. The far pick is a false positive. tp 2, fp 2 - 2 = 0, fn 0.
    truth = _df([(1, 0, 0, 0), (1, 3, 0, 0)])
    picks = _df([(1, 1.5, 0, 0), (1, 20, 0, 0)])
    res = czii_score(picks, truth, radius=4)
    row = res.per_class.loc[1]
    assert (row.tp, row.fp, row.fn) == (2, 0, 0) and res.score == pytest.approx(1.0)
    # One-to-one, the pick takes one centre: tp 1, fp 1, fn 1.
    one = evaluate_picks(picks, truth, radius=2).overall
    assert (one["tp"], one["fp"], one["fn"]) == (1, 1, 1)
    # With that pick alone, the official count gives fp = 1 - 2 = -1, precision 2/(2-1) = 2
    # and F-beta 17*2/(32+1) = 34/33 > 1: reproduced as the challenge computes it.
    alone = czii_score(picks.iloc[:1], truth, radius=4)
    assert alone.per_class.loc[1, "fp"] == -1
    assert alone.score == pytest.approx(34 / 33)


def test_czii_counts_a_pick_at_exactly_half_the_radius():
    truth = _df([(1, 0, 0, 0), (1, 50, 0, 0)])
    picks = _df([(1, 3, 0, 0), (1, 50, 3.001, 0)])  # radius 6: 3 counts, 3.001 does not
    res = czii_score(picks, truth, radius=6)
    row = res.per_class.loc[1]
    assert (row.tp, row.fp, row.fn) == (1, 1, 1)
    assert res.score == pytest.approx(f4(1 / 2, 1 / 2))


def _write_pair(folder, truth, picks):
    folder.mkdir()
    truth.to_csv(folder / "particles.csv", index=False)
    picks.to_csv(folder / "picks.csv", index=False)
    pd.DataFrame({"class": [1, 2], "name": ["4v94", "1u6g"], "radius_vox": [8.0, 6.0]}).to_csv(
        folder / "classes.csv", index=False
    )
    return folder / "picks.csv", folder / "particles.csv"


def test_cli_czii_over_two_tomograms_speaks_class_names(tmp_path, run_cli):
    # Tomogram a: 4v94 found (within 4 = 8/2), 1u6g missed (pick 5 away > 3).
    # Tomogram b: 4v94 missed, 1u6g found. Pooled per class: tp 1, fp 1, fn 1 -> p = r = 1/2.
    # Weights 4v94:1, 1u6g:3 -> (1*f4(.5,.5) + 3*f4(.5,.5)) / 4 = f4(.5,.5) = 0.5.
    a = _write_pair(
        tmp_path / "a",
        _df([(1, 10, 10, 10), (2, 40, 40, 40)]),
        _df([(1, 10, 10, 14), (2, 40, 40, 45)]),
    )
    b = _write_pair(
        tmp_path / "b",
        _df([(1, 10, 10, 10), (2, 40, 40, 40)]),
        _df([(1, 30, 10, 10), (2, 40, 41, 40)]),
    )
    res = run_cli(
        "pick", "evaluate", *a, *b, "--metric", "czii", "--weights", "4v94:1,1u6g:3", "--json"
    )
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert set(out["czii"]["per_class"]) == {"4v94", "1u6g"}
    assert set(out["per_class"]) == {"4v94", "1u6g"}
    c = out["czii"]["per_class"]["1u6g"]
    assert (c["tp"], c["fp"], c["fn"], c["weight"]) == (1, 1, 1, 3.0)
    assert out["czii"]["score"] == pytest.approx(0.5)
    # One-to-one at the full radius the 1u6g pick 5 away is a hit.
    assert out["per_class"]["1u6g"]["tp"] == 2
    table = run_cli("pick", "evaluate", *a, *b, "--metric", "czii")
    assert table.code == 0 and "CZII score 0.5000" in table.out and "4v94" in table.out


def test_cli_czii_challenge_weights_by_name(tmp_path, run_cli):
    truth = _df([(1, 0, 0, 0), (2, 50, 0, 0)])
    truth["name"] = ["ribosome", "thyroglobulin"]
    picks = _df([(1, 0, 0, 0)])
    truth.to_csv(tmp_path / "t.csv", index=False)
    picks.to_csv(tmp_path / "p.csv", index=False)
    args = ("pick", "evaluate", tmp_path / "p.csv", tmp_path / "t.csv", "--radius", "10")
    res = run_cli(*args, "--metric", "czii", "--weights", "czii", "--json")
    assert res.code == 0, res.err
    # ribosome F 1 (weight 1), thyroglobulin F 0 (weight 2); all six weights sum to 7.
    assert json.loads(res.out)["czii"]["score"] == pytest.approx(1 / 7)
    bad = run_cli(*args, "--metric", "czii", "--weights", "ribosome:1")
    assert bad.code == 1 and "no weight for class thyroglobulin" in bad.err


def test_cli_needs_pairs(tmp_path, run_cli):
    _df([(1, 1, 1, 1)]).to_csv(tmp_path / "t.csv", index=False)
    res = run_cli("pick", "evaluate", tmp_path / "t.csv", tmp_path / "t.csv", tmp_path / "t.csv")
    assert res.code == 1 and "PICKS TRUTH pairs" in res.err and res.err.count("\n") == 1


def test_cli_reads_relion4_picks_of_a_binned_tomogram(tmp_path, run_cli):
    import numpy as np

    from cryoscout.io.coords import write_picks
    from cryoscout.io.mrc import write_mrc

    write_mrc(tmp_path / "tomo.mrc", np.zeros((20, 30, 40), np.float32), 10.0)
    truth = _df([(1, 10, 12, 5)])
    truth.to_csv(tmp_path / "t.csv", index=False)
    write_picks(
        tmp_path / "p.star", truth, "relion4", voxel_size_A=10.0, tilt_series_pixel_size_A=2.5
    )
    args = ("pick", "evaluate", tmp_path / "p.star", tmp_path / "t.csv", "--radius", "2")
    res = run_cli(
        *args, "--tomogram", tmp_path / "tomo.mrc", "--tilt-series-pixel-size", "2.5", "--json"
    )
    assert res.code == 0, res.err
    assert json.loads(res.out)["overall"]["tp"] == 1
    refused = run_cli(*args, "--tomogram", tmp_path / "tomo.mrc")
    assert refused.code == 1 and "tilt-series pixel size" in refused.err


def _copick_project(tmp_path):
    import numpy as np

    path, root = new_copick_project(
        tmp_path, [("ribosome", 150), ("thyroglobulin", 130), ("membrane", 0)]
    )
    # Å. TS_1: ribosome found (pick 75 Å away = half of 150, inclusive); thyroglobulin
    # missed (70 Å > 65). TS_2: ribosome missed, one extra ribosome pick far away.
    points = {
        ("TS_1", "curation", "ribosome"): [[1000, 1000, 500]],
        ("TS_1", "curation", "thyroglobulin"): [[3000, 3000, 500]],
        ("TS_2", "curation", "ribosome"): [[2000, 2000, 800]],
        ("TS_1", "model", "ribosome"): [[1075, 1000, 500]],
        ("TS_1", "model", "thyroglobulin"): [[3070, 3000, 500]],
        ("TS_2", "model", "ribosome"): [[5000, 5000, 800]],
    }
    for run_name in ("TS_1", "TS_2"):
        run = root.new_run(run_name)
        for (r, user, obj), pts in points.items():
            if r == run_name:
                picks = run.new_picks(obj, session_id="0", user_id=user)
                picks.from_numpy(np.array(pts, float))
                picks.store()
    return path


def test_cli_czii_reads_a_copick_project(tmp_path, run_cli):
    config = _copick_project(tmp_path)
    res = run_cli(
        "pick", "evaluate", "--copick", config, "--picks", "model/0", "--metric", "czii",
        "--weights", "czii", "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    czii = json.loads(res.out)["czii"]
    ribo, thyro = czii["per_class"]["ribosome"], czii["per_class"]["thyroglobulin"]
    # ribosome pooled over both runs: tp 1, fp 1, fn 1 -> F4(1/2, 1/2) = 1/2; thyroglobulin 0.
    assert (ribo["tp"], ribo["fp"], ribo["fn"]) == (1, 1, 1)
    assert (thyro["tp"], thyro["fp"], thyro["fn"]) == (0, 1, 1)
    # Challenge weights: ribosome 1, thyroglobulin 2, all six summing to 7.
    assert czii["score"] == pytest.approx(1 * 0.5 / 7)
    missing = run_cli("pick", "evaluate", "--copick", config, "--picks", "nobody")
    assert missing.code == 1 and "no particle picks of nobody" in missing.err
