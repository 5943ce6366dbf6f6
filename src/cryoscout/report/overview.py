"""``overview.png``: the atlas with every square outlined and numbered."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

# Longest side of the drawn atlas in pixels; larger atlases are block-averaged.
MAX_SIDE = 2000


def render_overview(
    montage_image: np.ndarray,
    table: pd.DataFrame,
    path: str | os.PathLike,
    color_by: str | None = None,
    pitch_px: float | None = None,
    angle_deg: float | None = None,
    side_px: float | None = None,
) -> Path:
    """Write :func:`overview_png` to ``path`` atomically and return ``path``.

    ``path`` is the PNG to write; the other parameters are those of :func:`overview_png`.
    """
    from cryoscout.io.atomic import write_bytes

    png = overview_png(montage_image, table, color_by, pitch_px, angle_deg, side_px)
    return write_bytes(path, png)


def overview_png(
    montage_image: np.ndarray,
    table: pd.DataFrame,
    color_by: str | None = None,
    pitch_px: float | None = None,
    angle_deg: float | None = None,
    side_px: float | None = None,
) -> bytes:
    """Draw the atlas with each square outlined (at the lattice angle) and numbered.

    Parameters
    ----------
    montage_image
        ``(h, w)`` stitched atlas (NaN where not imaged).
    table
        Squares: ``x_px, y_px`` and ``square_id``; ``full`` (partial squares are
        drawn dashed and dimmer) and the ``color_by`` column when given.
    color_by
        A 0-4 score column to colour the outlines by, with a colour bar.
    pitch_px, angle_deg
        Lattice pitch and angle; estimated from the square centres when omitted.
    side_px
        Side of the outline (the opening, pitch - bar width); 0.75 pitch when omitted.

    Returns
    -------
    bytes
        The PNG.
    """
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors
    from matplotlib.patches import Polygon

    from cryoscout.atlas.lattice import block_mean

    image = np.asarray(montage_image, dtype=np.float32)
    h, w = image.shape
    factor = max(1, int(np.ceil(max(h, w) / MAX_SIDE)))
    small, _ = block_mean(image, factor)
    finite = small[np.isfinite(small)]
    lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
    shown = np.clip((small - lo) / max(hi - lo, 1e-12), 0, 1)
    shown = np.where(np.isfinite(shown), shown, 0.0)

    x = table["x_px"].to_numpy(float)
    y = table["y_px"].to_numpy(float)
    if pitch_px is None or angle_deg is None:
        est_pitch, est_angle = _lattice_from_centres(x, y)
        pitch_px = est_pitch if pitch_px is None else pitch_px
        angle_deg = est_angle if angle_deg is None else angle_deg
    full = table["full"].to_numpy(int) == 1 if "full" in table else np.ones(len(x), bool)
    ids = table["square_id"].to_numpy() if "square_id" in table else np.arange(1, len(x) + 1)

    dpi = 100
    fig_w = shown.shape[1] / dpi
    fig_h = shown.shape[0] / dpi
    scale_fig = 10.0 / max(fig_w, fig_h)  # a 10-inch figure whatever the atlas size
    fig, ax = plt.subplots(
        figsize=(fig_w * scale_fig + (1.2 if color_by else 0), fig_h * scale_fig)
    )
    ax.imshow(shown, cmap="gray", vmin=0, vmax=1, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.set_axis_off()

    cmap = matplotlib.colormaps["viridis"]
    norm = colors.Normalize(0, 4)
    values = None
    if color_by is not None and color_by in table:
        values = table[color_by].to_numpy(float)
    half = 0.5 * (side_px if side_px else 0.75 * pitch_px)  # openings are 0.6-0.75 pitch
    t = np.deg2rad(angle_deg)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * half
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    outline = corners @ rot.T
    font = float(np.clip(pitch_px / factor * scale_fig * 0.12, 3, 9))
    for k in range(len(x)):
        if values is not None and np.isfinite(values[k]):
            color = cmap(norm(values[k]))
        else:
            color = "#ff4040" if full[k] else "#ffb000"
        ax.add_patch(
            Polygon(
                outline + np.array([x[k], y[k]]),
                closed=True,
                fill=False,
                edgecolor=color,
                linewidth=0.9 if full[k] else 0.6,
                linestyle="-" if full[k] else "--",
                alpha=1.0 if full[k] else 0.6,
            )
        )
        ax.text(x[k], y[k], str(ids[k]), color=color, fontsize=font, ha="center", va="center")
    n_full = int(full.sum())
    title = f"{len(x)} squares ({n_full} full, {len(x) - n_full} partial, dashed)"
    if values is not None:
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, label=color_by)
        title += f"; colour: {color_by} (0-4)"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=max(100, int(shown.shape[1] / (fig_w * scale_fig))), format="png")
    plt.close(fig)
    return buffer.getvalue()


def _lattice_from_centres(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pitch and angle (mod 90) from the nearest-neighbour vectors of square centres."""
    if len(x) < 2:
        return 100.0, 0.0
    from scipy.spatial import cKDTree

    pts = np.stack([x, y], axis=1)
    dist, idx = cKDTree(pts).query(pts, k=2)
    vec = pts[idx[:, 1]] - pts
    pitch = float(np.median(dist[:, 1]))
    # Angles mod 90 averaged on the circle (x4 maps the square's symmetry to one turn).
    ang = np.arctan2(vec[:, 1], vec[:, 0])
    mean4 = np.angle(np.mean(np.exp(4j * ang)))
    return pitch, float(np.rad2deg(mean4 / 4)) % 90.0
