"""The atlas overview: targets marked with their rank, readable IDs, a scale bar in µm."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cryoscout.report.overview import TARGET_COLOUR, overview_figure, overview_png, scale_bar_um

W = H = 1000
PITCH, SIDE = 100.0, 70.0
PINK = np.array([int(TARGET_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])


def _atlas(bright: tuple[int, ...] = ()):
    """A black atlas with a 9 x 9 lattice of squares; squares in ``bright`` are white."""
    centres = [(100.0 + PITCH * i, 100.0 + PITCH * j) for j in range(9) for i in range(9)]
    table = pd.DataFrame(centres, columns=["x_px", "y_px"])
    table.insert(0, "square_id", np.arange(1, len(table) + 1))
    table["full"] = 1
    table["rank"] = np.arange(1, len(table) + 1)[::-1]  # the last squares rank best
    table["target"] = table["rank"] <= 3
    table["overall"] = 4 - table["rank"] / len(table) * 4
    image = np.zeros((H, W), np.float32)
    image[:4, :4] = 1.0  # a few bright pixels so black stays black under percentile scaling
    for k in bright:
        x, y = centres[k]
        image[int(y - SIDE / 2) : int(y + SIDE / 2), int(x - SIDE / 2) : int(x + SIDE / 2)] = 1
    return image, table


def _render(image, table, **kw) -> np.ndarray:
    png = overview_png(image, table, pitch_px=PITCH, angle_deg=0.0, side_px=SIDE, **kw)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _image_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the black atlas in the rendered PNG."""
    dark = (rgb < 10).all(axis=2)
    # rows and columns along outlines are less dark: bridge them
    top, height = _longest_span(dark.mean(axis=1) > 0.3, gap=8)
    left, width = _longest_span(dark.mean(axis=0) > 0.3, gap=8)
    return top, left, height, width


def _longest_span(flags: np.ndarray, gap: int = 0) -> tuple[int, int]:
    """(start, length) of the longest run of True, bridging runs of False up to ``gap``."""
    flags = np.asarray(flags, bool).copy()
    if gap:
        idx = np.flatnonzero(flags)
        for a, b in itertools.pairwise(idx):
            if b - a <= gap + 1:
                flags[a:b] = True
    best, start = (0, 0), None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            best = max(best, (i - start, start))
            start = None
    return best[1], best[0]


def _pink(rgb: np.ndarray) -> np.ndarray:
    return (np.abs(rgb - PINK) < 40).all(axis=-1)


def test_targets_have_a_thick_pink_outline_and_others_none():
    image, table = _atlas()
    rgb = _render(image, table, color_by="overall")
    top, left, h, w = _image_box(rgb)
    sx, sy = w / W, h / H
    for _, row in table.iterrows():
        # the left edge of the outline, half-way down: a horizontal cut through it
        ex = left + (row.x_px - SIDE / 2 + 0.5) * sx
        ey = top + (row.y_px + 0.5) * sy
        cut = _pink(rgb[int(ey), int(ex) - 8 : int(ex) + 9])
        if row.target:
            assert cut.sum() >= 3, (row.square_id, cut.sum())  # thick: 3 px or more
        else:
            assert cut.sum() == 0, row.square_id


def test_targets_carry_their_rank_at_a_corner():
    import matplotlib.pyplot as plt

    image, table = _atlas()
    fig, _ = overview_figure(image, table, pitch_px=PITCH, angle_deg=0.0, side_px=SIDE)
    try:
        texts = [t for t in fig.axes[0].texts if t.get_gid() == "target-rank"]
        ranks = {t.get_text(): t.get_position() for t in texts}
    finally:
        plt.close(fig)
    targets = table[table["target"]]
    assert set(ranks) == {str(r) for r in targets["rank"]}
    for _, row in targets.iterrows():
        x, y = ranks[str(row["rank"])]
        # on the outline's top-left corner
        assert abs(x - (row.x_px - SIDE / 2)) < 1 and abs(y - (row.y_px - SIDE / 2)) < 1


def test_square_ids_have_a_halo_readable_on_white_and_black():
    image, table = _atlas(bright=(40,))
    rgb = _render(image, table)
    top, left, h, w = _image_box(rgb)
    sx, sy = w / W, h / H

    def around(k: int) -> np.ndarray:
        x, y = left + (table.x_px[k] + 0.5) * sx, top + (table.y_px[k] + 0.5) * sy
        return rgb[int(y) - 6 : int(y) + 7, int(x) - 12 : int(x) + 13]

    white_sq, black_sq = around(40), around(30)
    # on the white square the ID shows as dark halo; on the black one as white letters
    assert ((white_sq < 60).all(axis=-1)).sum() >= 10
    assert ((black_sq > 200).all(axis=-1)).sum() >= 10


@pytest.mark.parametrize(
    "width_um, expected", [(2000, 200), (1500, 200), (999, 100), (50, 10), (4.9, 0.5), (26, 5)]
)
def test_scale_bar_length_is_a_round_fifth_at_most(width_um, expected):
    assert scale_bar_um(width_um) == pytest.approx(expected)


def test_scale_bar_matches_the_pixel_size():
    image, table = _atlas()
    pixel_size_A = 20_000.0  # 2 µm per pixel: a 2000 µm wide atlas, so a 200 µm bar
    rgb = _render(image, table, pixel_size_A=pixel_size_A)
    top, left, h, w = _image_box(rgb)
    white = (rgb > 245).all(axis=-1)[top : top + h, left : left + w]
    bottom = white[int(0.85 * h) :]  # the bar sits in the bottom left corner
    runs = [_longest_run(r) for r in bottom]
    expected = scale_bar_um(W * pixel_size_A / 1e4) / (pixel_size_A / 1e4) * w / W
    assert max(runs) == pytest.approx(expected, abs=3)
    # without a pixel size there is no bar
    rgb = _render(image, table)
    top, left, h, w = _image_box(rgb)
    white = (rgb > 245).all(axis=-1)[top : top + h, left : left + w]
    assert max(_longest_run(r) for r in white[int(0.85 * h) :]) < 0.5 * expected


def _longest_run(row: np.ndarray) -> int:
    return _longest_span(row)[1]
