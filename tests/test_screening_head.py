"""Tree head and calibration: trees as arrays equal scikit-learn, monotone maps, model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscout.errors import InputError
from cryoscout.screening.calibration import MonotoneMap
from cryoscout.screening.head import TreeHead
from cryoscout.screening.model import SCORES, XCryoNet
from cryoscout.screening.predict import load_model, save_model
from cryoscout.screening.trees import CumulativeTrees, TreeEnsemble

S = 32


def test_exported_trees_predict_exactly_what_sklearn_predicts(tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = np.where(x[:, 0] > 0, 2.0, 0.5) + np.sin(3 * x[:, 1]) + 0.1 * rng.normal(size=400)
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the learned side
    model = HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=7, random_state=0)
    with threadpool_limits(1):
        model.fit(x, y)
    trees = TreeEnsemble.from_sklearn(model)
    assert trees.n_trees == model.n_iter_
    fresh = rng.normal(size=(300, 6)).astype(np.float32).astype(np.float64)  # as heads read
    fresh[rng.random(fresh.shape) < 0.1] = np.nan
    np.testing.assert_allclose(trees.predict(fresh), model.predict(fresh), rtol=0, atol=1e-10)
    # Round trip through a weights-only file.
    torch.save(trees.to_record(), tmp_path / "t.pt")
    back = TreeEnsemble.from_record(torch.load(tmp_path / "t.pt", weights_only=True))
    np.testing.assert_allclose(back.predict(fresh), model.predict(fresh), rtol=0, atol=1e-10)


def test_mean_of_ensembles_predicts_the_mean_of_their_predictions():
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    y = x[:, 0] ** 2 + np.sign(x[:, 1])
    shapes = [(20, 5), (35, 9)]  # different tree counts and node counts: padding must not leak
    fits = [
        HistGradientBoostingRegressor(max_iter=n, max_leaf_nodes=m, random_state=k).fit(x, y)
        for k, (n, m) in enumerate(shapes)
    ]
    parts = [TreeEnsemble.from_sklearn(f) for f in fits]
    mean = TreeEnsemble.mean(parts)
    assert mean.n_trees == sum(p.n_trees for p in parts)
    fresh = rng.normal(size=(200, 4))
    expected = np.mean([f.predict(fresh) for f in fits], axis=0)
    np.testing.assert_allclose(mean.predict(fresh), expected, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="no ensemble"):
        TreeEnsemble.mean([])


def test_head_of_several_seeds_averages_them():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12_000, 3)).astype(np.float32)  # > 10,000: early stopping holds out
    labels = np.clip(np.stack([x[:, 0] + 2] * 5, axis=1) + 0.3 * rng.normal(size=(12_000, 5)), 0, 4)
    one = [TreeHead.fit(x, labels, seed=s) for s in (5, 6)]
    both = TreeHead.fit(x, labels, seed=5, n_seeds=2)
    fresh = rng.normal(size=(100, 3)).astype(np.float32)
    expected = np.mean([h.predict(fresh) for h in one], axis=0)
    np.testing.assert_allclose(both.predict(fresh), expected, atol=1e-9)
    assert not np.allclose(one[0].predict(fresh), one[1].predict(fresh))  # seeds differ
    with pytest.raises(ValueError, match="n_seeds"):
        TreeHead.fit(x, labels, n_seeds=0)


def test_cumulative_trees_predict_the_expected_level_of_sklearn_classifiers(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 5))
    y = np.clip(np.round(1.5 + x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=600)), 0, 3)
    x[rng.random(x.shape) < 0.05] = np.nan
    params = {"max_iter": 25, "max_leaf_nodes": 7}
    with threadpool_limits(1):
        ordinal = CumulativeTrees.fit(x, y, levels=4, seed=0, **params)
        classifiers = [
            HistGradientBoostingClassifier(random_state=0, **params).fit(x, (y >= k).astype(int))
            for k in (1, 2, 3)
        ]
    fresh = rng.normal(size=(200, 5)).astype(np.float32).astype(np.float64)
    fresh[rng.random(fresh.shape) < 0.1] = np.nan
    # Level 4 is reached by no square: a constant of (almost) probability 0.
    assert ordinal.cuts[3].n_trees == 0 and ordinal.n_trees == sum(c.n_iter_ for c in classifiers)
    expected = sum(c.predict_proba(fresh)[:, 1] for c in classifiers)
    np.testing.assert_allclose(ordinal.predict(fresh), expected, rtol=0, atol=1e-9)
    torch.save(ordinal.to_record(), tmp_path / "o.pt")
    back = CumulativeTrees.from_record(torch.load(tmp_path / "o.pt", weights_only=True))
    np.testing.assert_allclose(back.predict(fresh), expected, rtol=0, atol=1e-9)
    # Averaging over seeds averages each level's log-odds.
    with threadpool_limits(1):
        other = CumulativeTrees.fit(x, y, levels=4, seed=1, **params)
    mean = CumulativeTrees.mean([ordinal, other])
    from scipy.special import expit

    logits = [[c.predict(fresh) for c in e.cuts] for e in (ordinal, other)]
    expected = sum(expit((a + b) / 2) for a, b in zip(*logits, strict=True))
    np.testing.assert_allclose(mean.predict(fresh), expected, rtol=0, atol=1e-9)


def test_a_saved_threshold_splits_float32_features_as_the_exact_one_did(tmp_path):
    a = np.float32(1.0)
    b = np.nextafter(a, np.float32(2))  # the next float32: nothing lies between them
    for threshold in (0.5 * (float(a) + float(b)), 0.25 * float(a) + 0.75 * float(b)):
        stump = TreeEnsemble(
            feature=np.zeros((1, 3), np.int64), threshold=np.array([[threshold, 0.0, 0.0]]),
            left=np.array([[1, 0, 0]]), right=np.array([[2, 0, 0]]),
            missing_left=np.zeros((1, 3), bool), is_leaf=np.array([[False, True, True]]),
            value=np.array([[0.0, -1.0, 1.0]]), bias=0.0, depth=1,
        )  # fmt: skip
        torch.save(stump.to_record(), tmp_path / "s.pt")
        record = torch.load(tmp_path / "s.pt", weights_only=True)
        assert record["threshold"].dtype == torch.float32 and record["left"].dtype == torch.int16
        back = TreeEnsemble.from_record(record)
        x = np.array([[a], [b]], np.float64)
        np.testing.assert_array_equal(stump.predict(x), [-1.0, 1.0])
        np.testing.assert_array_equal(back.predict(x), [-1.0, 1.0])


def test_tree_record_with_children_out_of_range_is_refused():
    from sklearn.ensemble import HistGradientBoostingRegressor

    x = np.random.default_rng(1).normal(size=(100, 2))
    record = TreeEnsemble.from_sklearn(
        HistGradientBoostingRegressor(max_iter=3).fit(x, x[:, 0])
    ).to_record()
    record["left"] = record["left"] + 1000
    with pytest.raises(ValueError, match="out of range"):
        TreeEnsemble.from_record(record)


def test_monotone_map_undoes_a_compressed_scale_and_keeps_the_order():
    rng = np.random.default_rng(2)
    true = rng.integers(0, 5, 2000).astype(float)
    predicted = 1.2 + 0.4 * true + 0.05 * rng.normal(size=2000)  # squeezed towards the middle
    cal = MonotoneMap.fit(predicted, true)
    # Squares predicted like a true 0 (and like a true 4) come back to 0 (and 4).
    np.testing.assert_allclose(cal(1.2 + 0.4 * np.arange(5)), np.arange(5), atol=0.05)
    grid = np.linspace(-1, 6, 200)
    assert np.all(np.diff(cal(grid)) >= 0)
    assert cal(grid).min() >= 0 and cal(grid).max() <= 4
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0, y_max=4, out_of_bounds="clip").fit(predicted, true)
    # The isotonic map, blended with 1 % of a straight line over the predictions' range.
    line = 4 * np.clip((grid - predicted.min()) / np.ptp(predicted), 0, 1)
    np.testing.assert_allclose(cal(grid), 0.99 * iso.predict(grid) + 0.01 * line, atol=1e-12)
    assert np.abs(cal(grid) - iso.predict(grid)).max() <= 0.04


def test_monotone_map_never_ties_the_best_squares():
    # Everything predicted above 3 is truly a 4 on average: the isotonic map is
    # flat there, and a top-20 would be chosen by square number.
    rng = np.random.default_rng(4)
    predicted = rng.uniform(0, 4, 3000)
    true = np.clip(np.rint(1.4 * predicted), 0, 4)
    cal = MonotoneMap.fit(predicted, true)
    top = np.sort(predicted)[-50:]
    assert np.all(np.diff(cal(top)) > 0)  # the model's own order is kept
    assert np.all(cal(top) > 3.95)


def test_monotone_map_record_must_be_monotone():
    bad = {"x": torch.tensor([0.0, 1.0, 2.0]), "y": torch.tensor([0.0, 2.0, 1.0])}
    with pytest.raises(ValueError, match="not monotone"):
        MonotoneMap.from_record(bad)


def test_zero_point_cut_is_where_defects_become_more_likely_than_not():
    # By hand: at predicted 1 a quarter of the squares are cracked, at 2 three
    # quarters; the share crosses one half half-way, at 1.5.
    predicted = np.repeat([0.0, 1.0, 2.0, 3.0], 4)
    true = np.array([0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 2, 3, 3, 4, 4, 4], dtype=float)
    cal = MonotoneMap.fit(predicted, true, zero_point=True)
    assert cal.zero_below == pytest.approx(1.5)
    plain = MonotoneMap.fit(predicted, true)
    assert plain.zero_below == -np.inf
    # Below the cut exactly 0 (the plain map gives the mean truth, 0.5 at 1.0);
    # from the cut on, the same values as without a zero point.
    assert cal(np.array([1.0, 1.49])).tolist() == [0.0, 0.0]
    assert plain(1.0) == pytest.approx(0.5, abs=0.04)
    np.testing.assert_array_equal(cal(np.array([1.5, 2.0, 3.0])), plain(np.array([1.5, 2.0, 3.0])))
    grid = np.linspace(-1, 5, 300)
    assert np.all(np.diff(cal(grid)) >= 0)


def test_zero_point_ties_clean_squares_and_raises_spearman():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    true = np.where(rng.random(3000) < 0.8, 0, rng.integers(1, 5, 3000)).astype(float)
    predicted = np.clip(0.9 * true + 0.35 * rng.normal(size=3000), 0, None)  # noisy near 0
    half = slice(0, 1500)  # fit on one half, judge on the other
    cal = MonotoneMap.fit(predicted[half], true[half], zero_point=True)
    plain = MonotoneMap.fit(predicted[half], true[half])
    test_p, test_t = predicted[1500:], true[1500:]
    zeroed = cal(test_p) == 0
    assert 0.9 < zeroed[test_t == 0].mean() and zeroed[test_t > 0].mean() < 0.2
    assert spearmanr(cal(test_p), test_t).statistic > spearmanr(plain(test_p), test_t).statistic
    # Squares above the cut keep their calibrated values, and so their order.
    kept = ~zeroed
    np.testing.assert_array_equal(cal(test_p)[kept], plain(test_p)[kept])


def test_zero_point_survives_the_record_and_older_records_have_none():
    cal = MonotoneMap(np.array([0.0, 4.0]), np.array([0.0, 4.0]), zero_below=0.7)
    back = MonotoneMap.from_record(cal.to_record())
    assert back.zero_below == pytest.approx(0.7) and back(0.69) == 0.0 and back(0.71) > 0.7
    old = {"x": torch.tensor([0.0, 4.0], dtype=torch.float64), "y": torch.tensor([0.0, 4.0])}
    assert MonotoneMap.from_record(old).zero_below == -np.inf
    with pytest.raises(ValueError, match="zero point"):
        MonotoneMap.from_record({**old, "zero_below": torch.tensor(float("nan"))})


@pytest.fixture(scope="module")
def head_model(tmp_path_factory):
    """A tiny network with a tree head fitted on its inputs, and calibration; saved."""
    from threadpoolctl import threadpool_limits

    tmp_path = tmp_path_factory.mktemp("head")
    torch.manual_seed(0)
    net = XCryoNet("xcryonet", size=S, width=4)
    plain = save_model(tmp_path / "plain.pt", net, "atlas")
    rng = np.random.default_rng(3)
    stack = rng.normal(size=(60, S, S)).astype(np.float32)
    stack[:30, 8:24, 8:24] += 3.0  # a bright opening: the label the trees must learn
    labels = np.zeros((60, len(SCORES)))
    labels[:30] = 4.0
    inputs = load_model(plain).predict(stack, head_inputs=True).head_inputs
    with threadpool_limits(1):  # OpenMP threads on a busy machine cost more than they give
        head = TreeHead.fit(inputs, labels, seed=0)
    cal = {"overall": MonotoneMap(np.array([0.0, 4.0]), np.array([0.0, 2.0]))}
    path = save_model(tmp_path / "head.pt", net, "atlas", head=head, calibration=cal)
    return path, stack, head, inputs


def test_model_with_tree_head_loads_weights_only_and_scores_through_the_head(head_model):
    path, stack, head, inputs = head_model
    record = torch.load(path, weights_only=True)  # no pickle needed
    assert record["format_version"] == 2 and record["head"]["kind"] == "trees"
    model = load_model(path)
    assert model.head is not None and "tree head" in model.kind
    scores = model.predict(stack).scores.to_numpy()
    expected = np.clip(head.predict(inputs), 0, 4)
    expected[:, -1] = expected[:, -1] / 2  # the calibration of overall: x -> x / 2
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    # The trees learned the bright opening, which a random network does not know.
    assert scores[:30, 0].mean() > 3 and scores[30:, 0].mean() < 1
    # Attention maps still come from the network.
    assert set(model.predict(stack[:2]).attention) == {"cracking", "contamination"}


def test_broken_head_is_a_one_line_input_error(head_model, tmp_path):
    path, *_ = head_model
    record = torch.load(path, weights_only=True)
    record["head"]["trees"].pop("cracking")
    broken = tmp_path / "broken.pt"
    torch.save(record, broken)
    with pytest.raises(InputError, match="broken tree head"):
        load_model(broken)


def test_version_1_files_still_load(tmp_path):
    torch.manual_seed(0)
    net = XCryoNet("xcryonet", size=S, width=4)
    path = save_model(tmp_path / "m.pt", net, "atlas")
    record = torch.load(path, weights_only=True)
    old = {k: v for k, v in record.items() if k not in ("head", "calibration")}
    torch.save(dict(old, format_version=1), tmp_path / "v1.pt")
    stack = np.random.default_rng(0).normal(size=(3, S, S)).astype(np.float32)
    a = load_model(tmp_path / "v1.pt").predict(stack).scores
    b = load_model(path).predict(stack).scores
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy())


def test_fast_head_reads_only_the_cheap_hand_made_features(head_model, tmp_path):
    from threadpoolctl import threadpool_limits

    from cryoscout.screening.baseline import N_FAST, square_features
    from cryoscout.screening.head import N_CONTEXT, fast_inputs

    path, stack, _, inputs = head_model
    model = load_model(path)
    fast_in = load_model(path.parent / "plain.pt").predict(stack, head_inputs="fast").head_inputs
    np.testing.assert_allclose(fast_in, fast_inputs(inputs), atol=1e-6)
    n_fast = inputs.shape[1] - len(square_features(stack[0])) + N_FAST
    assert fast_in.shape == (len(stack), n_fast)
    np.testing.assert_array_equal(fast_in[:, -N_CONTEXT:], inputs[:, -N_CONTEXT:])  # atlas context
    labels = np.zeros((len(stack), len(SCORES)))
    labels[:30] = 4.0
    with threadpool_limits(1):
        head = TreeHead.fit(fast_in, labels, hand="fast")
    fast = save_model(tmp_path / "fast.pt", model.net, "atlas", head=head)
    loaded = load_model(fast)
    assert loaded.head.hand == "fast" and loaded.head.n_inputs == n_fast
    pred = loaded.predict(stack)
    np.testing.assert_allclose(
        pred.scores.to_numpy(), np.clip(head.predict(fast_in), 0, 4), atol=1e-6
    )
    assert pred.scores["brightness"][:30].mean() > 3


def test_head_with_crack_features_and_an_ordinal_overall_round_trips(head_model, tmp_path):
    from threadpoolctl import threadpool_limits

    from cryoscout.screening.baseline import N_FAST
    from cryoscout.screening.data import prepare_stack
    from cryoscout.screening.head import N_CONTEXT, fast_inputs
    from cryoscout.screening.lines import N_LINE_FEATURES, line_features

    path, stack, _, inputs = head_model
    model = load_model(path)
    plain = load_model(path.parent / "plain.pt")
    lines_in = plain.predict(stack, head_inputs="lines").head_inputs
    fast_in = fast_inputs(inputs)
    assert lines_in.shape[1] == fast_in.shape[1] + N_LINE_FEATURES
    cut = fast_in.shape[1] - N_CONTEXT
    np.testing.assert_allclose(lines_in[:, :cut], fast_in[:, :cut], atol=1e-6)
    squares = prepare_stack(stack, "atlas", S)  # as the network sees them
    np.testing.assert_allclose(lines_in[:, cut:-N_CONTEXT], line_features(squares), atol=1e-5)
    assert N_FAST < cut
    labels = np.zeros((len(stack), len(SCORES)))
    labels[:30] = 4.0
    labels[:15, SCORES.index("overall")] = 3.0
    with threadpool_limits(1):
        head = TreeHead.fit(lines_in, labels, hand="lines", ordinal=("overall",))
    assert head.ordinal == ("overall",) and isinstance(head.trees["overall"], CumulativeTrees)
    # The head walks its ensembles on several threads: the same as one score at a time.
    one_by_one = np.stack([head.trees[s].predict(lines_in) for s in SCORES], axis=1)
    np.testing.assert_array_equal(head.predict(lines_in), one_by_one)
    saved = save_model(tmp_path / "lines.pt", model.net, "atlas", head=head)
    loaded = load_model(saved)
    assert loaded.head.hand == "lines" and loaded.head.ordinal == ("overall",)
    pred = loaded.predict(stack).scores
    np.testing.assert_allclose(pred.to_numpy(), np.clip(head.predict(lines_in), 0, 4), atol=1e-6)
    overall = pred["overall"].to_numpy()
    assert overall[15:30].mean() > overall[:15].mean() + 0.5 > overall[30:].mean() + 1
    with pytest.raises(ValueError, match="ordinal scores"):
        TreeHead.fit(lines_in, labels, ordinal=("ice",))


def test_atlas_context_places_each_square_between_the_bars_and_the_brightest():
    from cryoscout.screening.head import atlas_context

    levels = np.linspace(0.0, 1.0, 21)
    stack = np.zeros((21, S, S), np.float32)  # bars: 0
    stack[:, 4:-4, 4:-4] = levels[:, None, None]  # openings at known levels
    ctx = atlas_context(stack[::-1])[::-1]  # order of the stack does not matter
    np.testing.assert_allclose(ctx[:, 2], levels)  # rank
    top = np.percentile(levels, 95)
    np.testing.assert_allclose(ctx[:, 0], levels / top, atol=1e-6)  # 0 at the bars
    assert np.all(ctx[:, 4] == 0) and np.allclose(ctx[:, 5], top)
    # Against vacuum: the brightest blocks are the level-1 opening, so m itself.
    np.testing.assert_allclose(ctx[:, 7], levels, atol=1e-6)


def test_a_head_fitted_before_the_vacuum_column_reads_the_first_seven(head_model, tmp_path):
    from cryoscout.screening.head import N_CONTEXT

    path, stack, _, inputs = head_model
    model = load_model(path)
    old_inputs = inputs[:, : inputs.shape[1] - (N_CONTEXT - 7)]
    labels = np.zeros((len(stack), len(SCORES)))
    labels[:30] = 4.0
    head = TreeHead.fit(old_inputs, labels)
    saved = save_model(tmp_path / "old.pt", model.net, "atlas", head=head)
    record = torch.load(saved, weights_only=True)
    record["head"].pop("n_context")  # as written before the column existed
    torch.save(record, saved)
    loaded = load_model(saved)
    assert loaded.head.n_context == 7
    np.testing.assert_allclose(
        loaded.predict(stack).scores.to_numpy(), np.clip(head.predict(old_inputs), 0, 4)
    )
