"""Attention maps as an operator reads them: one scale per atlas, flat maps said, titles whole."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.screening.explain import (
    FLAT_SPREAD,
    _explain_fig,
    attention_overlay,
    attention_range,
    is_flat,
    map_spread,
    predicted_defects,
)

S = 64


def _map(level: float = 0.95, noise: float = 0.002, bars: float | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = level + rng.normal(0, noise, (S, S))
    if bars is not None:  # the bars around the opening get less attention
        b = S // 7
        a[:b], a[-b:], a[:, :b], a[:, -b:] = bars, bars, bars, bars
    return a.astype(np.float32)


def test_uniform_map_is_flat_even_with_dim_bars():
    assert is_flat(_map())
    assert is_flat(_map(bars=0.6))  # contrast only at the bars: nothing singled out


def test_map_with_a_crack_in_the_opening_is_not_flat():
    a = _map(bars=0.6)
    a[S // 2 - 1 : S // 2 + 1, S // 4 : 3 * S // 4] = 0.99  # a bright line
    a[S // 3 : S // 3 + 6, S // 3 : S // 3 + 6] = 0.85  # and a dark lump
    assert map_spread(a) > FLAT_SPREAD
    assert not is_flat(a)


def test_spread_at_the_threshold_decides():
    a = _map(noise=0.0)
    a[S // 2 - 4 : S // 2 + 4, S // 2 - 4 : S // 2 + 4] = 0.95 + 2 * FLAT_SPREAD
    assert not is_flat(a)
    assert is_flat(a, min_spread=3 * FLAT_SPREAD)


def test_one_range_for_all_maps_of_an_atlas():
    maps = np.stack([_map(0.9, seed=1), _map(0.97, seed=2), _map(0.8, seed=3)])
    lo, hi = attention_range(maps)
    assert lo < 0.81 and hi > 0.96
    # the same attention is the same colour on every square, whatever its own range
    square = np.tile(np.linspace(0, 1, S, dtype=np.float32), (S, 1))
    one = attention_overlay(square, np.full((S, S), 0.9, np.float32), lo, hi)
    two = attention_overlay(square, maps[0] * 0 + 0.9, lo, hi)
    np.testing.assert_array_equal(one, two)
    low = attention_overlay(square, np.full((S, S), lo, np.float32), lo, hi)
    assert np.all(low[..., 0] == low[..., 1])  # nothing at the bottom of the scale: gray
    # a constant map still gets a usable range
    c_lo, c_hi = attention_range(np.full((2, S, S), 0.5))
    assert c_lo < 0.5 < c_hi and c_hi - c_lo == pytest.approx(0.01)


@pytest.mark.parametrize(
    "scores, expected",
    [
        ({"cracking": 0.7, "contamination": 0.0}, []),
        ({"cracking": 1.0, "contamination": 0.99}, ["cracking"]),
        ({"cracking": 2.5, "contamination": 3.0}, ["cracking", "contamination"]),
        ({"cracking": float("nan"), "contamination": 1.2}, ["contamination"]),
    ],
)
def test_predicted_defects_from_the_threshold(scores, expected):
    assert predicted_defects(scores) == expected


def test_figure_titles_are_whole_inside_the_figure_and_apart():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    square = np.random.default_rng(0).random((S, S)).astype(np.float32)
    att = {"cracking": _map(0.9), "contamination": _map(0.95)}
    scores = {
        "brightness": 3.31,
        "squareness": 3.72,
        "cracking": 0.7,
        "contamination": 0.0,
        "overall": 3.8,
    }
    fig = _explain_fig(square, att, scores, "square 12", {"cracking": (0.8, 1.0)})
    FigureCanvasAgg(fig).draw()  # a real draw: the layout runs as in savefig
    box = fig.bbox
    (heading,) = [t for sub in fig.subfigs for t in sub.texts]
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    for t in [heading, *titles]:
        ext = t.get_window_extent()
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, t.get_text()
        assert ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, t.get_text()
    for t in titles:  # the heading never covers a panel title
        assert heading.get_window_extent().y0 > t.get_window_extent().y1, t.get_text()
    head = heading.get_text().replace("\u00a0", " ")
    for name, value in scores.items():
        assert f"{name} {value:.1f}" in head
    names = [ax.get_title() for ax in fig.axes]
    assert "cracking attention\nflat: nothing singled out" in names
    assert "contamination attention\nflat: nothing singled out" in names
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 2
