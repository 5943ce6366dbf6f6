"""``overview.png``: the atlas with every square outlined and numbered.

Targets (the squares ``screen`` exports for collection) are drawn unmistakably:
a thick :data:`TARGET_COLOUR` outline and their rank in a badge at the corner.
Square IDs are white with a black halo, readable on bright and dark squares
alike; a scale bar in µm is drawn when the pixel size is known.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Longest side of the drawn atlas in pixels; larger atlases are block-averaged.
MAX_SIDE = 2000
#: Outline and rank-badge colour of targets: a hot pink that neither the gray atlas
#: nor the viridis score colours contain.
TARGET_COLOUR = "#ff1493"


def render_overview(
    montage_image: np.ndarray,
    table: pd.DataFrame,
    path: str | os.PathLike,
    color_by: str | None = None,
    pitch_px: float | None = None,
    angle_deg: float | None = None,
    side_px: float | None = None,
    pixel_size_A: float | None = None,
) -> Path:
    """Write :func:`overview_png` to ``path`` atomically and return ``path``.

    ``path`` is the PNG to write; the other parameters are those of :func:`overview_png`.
    """
    from cryoscout.io.atomic import write_bytes

    png = overview_png(montage_image, table, color_by, pitch_px, angle_deg, side_px, pixel_size_A)
    return write_bytes(path, png)


def overview_png(
    montage_image: np.ndarray,
    table: pd.DataFrame,
    color_by: str | None = None,
    pitch_px: float | None = None,
    angle_deg: float | None = None,
    side_px: float | None = None,
    pixel_size_A: float | None = None,
) -> bytes:
    """Draw the atlas with each square outlined (at the lattice angle) and numbered.

    Parameters
    ----------
    montage_image
        ``(h, w)`` stitched atlas (NaN where not imaged).
    table
        Squares: ``x_px, y_px`` and ``square_id``; ``full`` (partial squares are
        drawn dashed and dimmer), the ``color_by`` column when given, and
        ``target`` (bool) with ``rank`` to mark the targets.
    color_by
        A 0-4 score column to colour the outlines by, with a colour bar.
    pitch_px, angle_deg
        Lattice pitch and angle; estimated from the square centres when omitted.
    side_px
        Side of the outline (the opening, pitch - bar width); 0.75 pitch when omitted.
    pixel_size_A
        Pixel size of ``montage_image`` in Å; draws a scale bar in µm when given.

    Returns
    -------
    bytes
        The PNG.
    """
    import io

    import matplotlib.pyplot as plt

    fig, dpi = overview_figure(
        montage_image, table, color_by, pitch_px, angle_deg, side_px, pixel_size_A
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    return palette_png(buffer.getvalue())


def palette_png(png: bytes, max_px: int | None = None) -> bytes:
    """Store a PNG with a 256-colour palette (a fifth of the bytes), optionally downscaled.

    The octree palette keeps the few saturated colours of outlines and colour bars
    that a median-cut palette spends on the atlas' grays.
    """
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if max_px is not None and max(img.size) > max_px:
        img.thumbnail((max_px, max_px), Image.LANCZOS)
    buffer = io.BytesIO()
    img.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG")
    return buffer.getvalue()


def overview_figure(
    montage_image: np.ndarray,
    table: pd.DataFrame,
    color_by: str | None = None,
    pitch_px: float | None = None,
    angle_deg: float | None = None,
    side_px: float | None = None,
    pixel_size_A: float | None = None,
) -> tuple[Figure, int]:
    """The overview as a matplotlib figure and the dpi that keeps the atlas' resolution.

    Parameters are those of :func:`overview_png`. The caller closes the figure
    (``matplotlib.pyplot.close``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors
    from matplotlib import patheffects as pe
    from matplotlib.lines import Line2D
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
    target = table["target"].to_numpy(bool) if "target" in table else np.zeros(len(x), bool)
    rank = table["rank"].to_numpy() if "rank" in table else None

    dpi = 100
    fig_w = shown.shape[1] / dpi
    fig_h = shown.shape[0] / dpi
    scale_fig = 10.0 / max(fig_w, fig_h)  # a 10-inch figure whatever the atlas size
    legend_in = 0.7 if target.any() or (color_by is not None and color_by in table) else 0.0
    fig, ax = plt.subplots(
        figsize=(fig_w * scale_fig + (1.2 if color_by else 0), fig_h * scale_fig + legend_in),
        layout="constrained",
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
    # the corner nearest the image's top left carries the rank badge
    badge_at = outline[np.argmin(outline.sum(axis=1))]
    pitch_pt = pitch_px / factor * scale_fig * 0.72  # lattice pitch in points on the figure
    font = float(np.clip(pitch_pt * 0.17, 3, 9))
    halo = [pe.withStroke(linewidth=max(1.5, font * 0.3), foreground="black")]
    for k in np.argsort(target, kind="stable"):  # targets last, on top
        if values is not None and np.isfinite(values[k]):
            color = cmap(norm(values[k]))
        else:
            color = "#ff4040" if full[k] else "#ffb000"
        corners_k = outline + np.array([x[k], y[k]])
        if target[k]:
            width = float(np.clip(pitch_pt * 0.06, 1.8, 4.0))
            ax.add_patch(
                Polygon(corners_k, closed=True, fill=False, edgecolor="black", linewidth=width + 2)
            )
            ax.add_patch(
                Polygon(
                    corners_k, closed=True, fill=False, edgecolor=TARGET_COLOUR, linewidth=width
                )
            )
            if rank is not None:
                ax.text(
                    x[k] + badge_at[0],
                    y[k] + badge_at[1],
                    f"{int(rank[k])}",
                    color="white",
                    fontsize=float(np.clip(font * 1.35, 4, 12)),
                    fontweight="bold",
                    ha="center",
                    va="center",
                    bbox={
                        "boxstyle": "round,pad=0.25",
                        "fc": TARGET_COLOUR,
                        "ec": "black",
                        "lw": 0.8,
                    },
                    gid="target-rank",
                )
        else:
            ax.add_patch(
                Polygon(
                    corners_k,
                    closed=True,
                    fill=False,
                    edgecolor=color,
                    linewidth=0.9 if full[k] else 0.6,
                    linestyle="-" if full[k] else "--",
                    alpha=1.0 if full[k] else 0.6,
                )
            )
        ax.text(
            x[k],
            y[k],
            str(ids[k]),
            color="white",
            fontsize=font,
            ha="center",
            va="center",
            path_effects=halo,
            gid="square-id",
        )
    if pixel_size_A:
        _scale_bar(ax, w, h, pixel_size_A, max(font, 7.0), halo)

    n_full = int(full.sum())
    ax.set_title(
        f"{len(x)} squares: {n_full} full, {len(x) - n_full} partial (dashed, never targets)",
        fontsize=10,
    )
    handles = []
    if target.any():
        handles.append(
            Line2D([], [], color=TARGET_COLOUR, lw=3, label=f"{int(target.sum())} targets, by rank")
        )
    if values is not None:
        handles.append(Line2D([], [], color=cmap(0.6), lw=1, label=f"outline colour: {color_by}"))
        fig.colorbar(
            cm.ScalarMappable(norm=norm, cmap=cmap),
            ax=ax,
            fraction=0.04,
            label=f"predicted {color_by} (0-4)",
        )
    if handles:
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=len(handles),
            frameon=False,
            fontsize=10,
        )
    return fig, max(100, int(shown.shape[1] / (fig_w * scale_fig)))


def scale_bar_um(width_um: float) -> float:
    """A round scale-bar length (1, 2 or 5 times a power of ten), at most ``width_um / 5``."""
    target = width_um / 5
    if not np.isfinite(target) or target <= 0:
        raise ValueError(f"width must be positive, not {width_um}")
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target))


def _scale_bar(ax, w: int, h: int, pixel_size_A: float, font: float, halo) -> None:
    """A white bar with a black edge in the bottom left corner, labelled in µm."""
    from matplotlib.patches import Rectangle

    um_per_px = pixel_size_A / 1e4
    length_um = scale_bar_um(w * um_per_px)
    length_px = length_um / um_per_px
    thick = max(3.0, 0.008 * h)
    x0, y0 = 0.03 * w, h - 0.03 * h - thick
    # a dark plate under bar and label keeps them readable over bright squares
    pad = 0.012 * w
    ax.add_patch(
        Rectangle(
            (x0 - pad, y0 - 4.5 * thick),
            length_px + 2 * pad,
            5.5 * thick + pad,
            facecolor="black",
            alpha=0.6,
            lw=0,
        )
    )
    ax.add_patch(
        Rectangle((x0, y0), length_px, thick, facecolor="white", edgecolor="black", lw=0.8)
    )
    ax.text(
        x0 + length_px / 2,
        y0 - 0.6 * thick,
        f"{length_um:g} µm",
        color="white",
        fontsize=font,
        fontweight="bold",
        ha="center",
        va="bottom",
        path_effects=halo,
        gid="scale-bar",
    )


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
