"""Explanations: attention maps drawn over their squares.

:func:`attention_overlay` is the one drawing of an attention map, shared by
``cryoscout explain`` and the HTML report; :func:`explain_figure` makes the
per-square picture (image | cracking overlay | contamination overlay).

Attention maps are sigmoid outputs in (0, 1) that sit close to 1 over most of a
square, so drawn on a fixed 0-1 scale they all look alike. They are drawn on a
scale shared by every square of one atlas (:func:`attention_range`), so the same
colour means the same attention on every square, and a map with no structure
inside the opening is called *flat* (:func:`is_flat`): it singles nothing out.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: How strongly the attention colour covers the square at the top of the scale.
OVERLAY_ALPHA = 0.6
#: Colour map of the attention overlays (and of their colour bars).
ATTENTION_CMAP = "inferno"
#: A predicted cracking or contamination from this score up counts as a defect: 1 is
#: the first level above "none" on the 0-4 scale; below it the maps explain nothing.
DEFECT_THRESHOLD = 1.0
#: A map whose spread (99th - 1st percentile) inside the opening is below this many
#: attention units is flat. Measured on the example atlas with the shipped model: the
#: 20 targets' maps spread 0.015-0.038; maps of squares truly cracked or contaminated
#: (grade 2 or more) mostly 0.05-0.2; broken, empty squares' maps 0.001.
FLAT_SPREAD = 0.04
#: Central part of the square (fraction of its side), safely inside the opening:
#: the bars around the opening always get less attention and would hide flatness.
OPENING_FRACTION = 0.5


def _gray(square: np.ndarray) -> np.ndarray:
    """The square scaled to [0, 1] between its 1st and 99th percentiles."""
    x = np.asarray(square, dtype=np.float32)
    lo, hi = np.percentile(x, [1, 99])
    return np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def attention_range(maps: np.ndarray) -> tuple[float, float]:
    """One display range for all attention maps of one attribute.

    Parameters
    ----------
    maps
        ``(n, h, w)`` attention maps of every square of an atlas (or one map).

    Returns
    -------
    (float, float)
        ``(vmin, vmax)``: the 1st and 99.9th percentiles of all values together,
        widened to at least 0.01 so a constant map still has a range.
    """
    a = np.asarray(maps, dtype=np.float32)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(a, [1, 99.9]))
    if hi - lo < 0.01:
        mid = 0.5 * (hi + lo)
        lo, hi = mid - 0.005, mid + 0.005
    return lo, hi


def map_spread(att: np.ndarray) -> float:
    """Dynamic range of one attention map inside the opening: 99th - 1st percentile.

    Parameters
    ----------
    att
        ``(h, w)`` attention map of one square.
    """
    a = np.asarray(att, dtype=np.float32)
    h, w = a.shape
    mh, mw = (round(s * (1 - OPENING_FRACTION) / 2) for s in (h, w))
    inner = a[mh : h - mh, mw : w - mw]
    lo, hi = np.percentile(inner, [1, 99])
    return float(hi - lo)


def is_flat(att: np.ndarray, min_spread: float = FLAT_SPREAD) -> bool:
    """Whether a map attends nothing in particular (:func:`map_spread` below ``min_spread``)."""
    return map_spread(att) < min_spread


def predicted_defects(
    scores: Mapping[str, float], threshold: float = DEFECT_THRESHOLD
) -> list[str]:
    """Attributes with attention maps (cracking, contamination) scored ``threshold`` or more."""
    return [
        k
        for k in ("cracking", "contamination")
        if k in scores and np.isfinite(scores[k]) and float(scores[k]) >= threshold
    ]


def attention_overlay(
    square: np.ndarray, att: np.ndarray, vmin: float = 0.0, vmax: float = 1.0
) -> np.ndarray:
    """Draw an attention map over its square.

    Parameters
    ----------
    square
        ``(h, w)`` grid-square image (any intensity scale).
    att
        ``(h, w)`` attention map.
    vmin, vmax
        Attention drawn as no colour and as full colour; values outside are
        clipped. Use one range for every square (:func:`attention_range`).

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8 RGB: the square in gray, coloured (inferno colour
        map) in proportion to the attention.
    """
    from matplotlib import colormaps

    gray = _gray(square)
    a = np.asarray(att, dtype=np.float32)
    if a.shape != gray.shape:
        raise ValueError(f"attention {a.shape} and square {gray.shape} differ in shape")
    t = np.clip((a - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    colour = colormaps[ATTENTION_CMAP](t)[..., :3]  # (h, w, 3)
    weight = OVERLAY_ALPHA * t[..., None]
    rgb = (1 - weight) * gray[..., None] + weight * colour
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def explain_figure(
    square: np.ndarray,
    attention: Mapping[str, np.ndarray],
    scores: Mapping[str, float],
    title: str,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> bytes:
    """PNG of one square: image | cracking overlay | contamination overlay.

    Parameters
    ----------
    square
        ``(h, w)`` image.
    attention
        ``"cracking"``, ``"contamination"`` -> ``(h, w)`` maps (may be empty).
    scores
        Predicted scores, shown under the title with their full names.
    title
        First title line (e.g. the square ID).
    ranges
        Display range per attribute, shared by every square of the atlas
        (:func:`attention_range`); default: each map's own range.

    Returns
    -------
    bytes
        The PNG file's content.
    """
    fig = _explain_fig(square, attention, scores, title, ranges)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _explain_fig(
    square: np.ndarray,
    attention: Mapping[str, np.ndarray],
    scores: Mapping[str, float],
    title: str,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """The matplotlib figure of :func:`explain_figure` (same parameters)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import cm, colors
    from matplotlib.figure import Figure

    ranges = dict(ranges or {})
    panels = [("image", np.stack([_gray(square)] * 3, axis=-1), None)]
    for name, att in attention.items():
        vmin, vmax = ranges.get(name) or attention_range(att)
        caption = f"{name} attention"
        if is_flat(att):
            caption += "\nflat: nothing singled out"
        panels.append((caption, attention_overlay(square, att, vmin, vmax), (vmin, vmax)))
    # non-breaking spaces keep each "name value" pair on one line when wrapped
    line = "  ·  ".join(f"{k}\u00a0{float(v):.1f}" for k, v in scores.items())
    head = [title, *textwrap.wrap(line, 32 * len(panels))]
    head_in = 0.17 * len(head) + 0.1  # the heading gets its own band: never over the panels
    fig = Figure(figsize=(3.1 * len(panels), 4.1 + head_in), dpi=100, layout="constrained")
    top, body = fig.subfigures(2, 1, height_ratios=[head_in, 4.1])
    top.text(0.5, 0.5, "\n".join(head), ha="center", va="center", fontsize=9)
    axes = body.subplots(1, len(panels), squeeze=False)[0]
    for ax, (caption, rgb, vrange) in zip(axes, panels, strict=True):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
        if vrange is not None:
            bar = body.colorbar(
                cm.ScalarMappable(colors.Normalize(*vrange), ATTENTION_CMAP),
                ax=ax,
                orientation="horizontal",
                fraction=0.06,
                pad=0.03,
            )
            bar.set_label("attention (same scale for every square)", fontsize=7)
            bar.ax.tick_params(labelsize=7)
    return fig


def select_squares(
    square_ids: np.ndarray, overall: np.ndarray, wanted: Sequence[int] | None, top: int | None
) -> np.ndarray:
    """Row indices to explain: the given square IDs, the ``top`` best by overall, or all.

    Raises
    ------
    ValueError
        If a wanted square ID is not in ``square_ids``.
    """
    if wanted:
        pos = {int(s): i for i, s in enumerate(square_ids)}
        missing = [s for s in wanted if int(s) not in pos]
        if missing:
            raise ValueError(f"no square with id {', '.join(map(str, missing))}")
        return np.array([pos[int(s)] for s in wanted], dtype=int)
    order = np.argsort(-np.asarray(overall), kind="stable")
    return order[:top] if top else order


def explain_extraction(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_dir: str | os.PathLike | None = None,
    squares: Sequence[int] | None = None,
    top: int | None = None,
) -> list[Path]:
    """The ``cryoscout explain`` operation: score an extraction folder and draw overlays.

    ``model_dir`` is what :func:`cryoscout.screening.predict.load_model` takes (a
    run folder, a model file, a shipped model's name); a model without attention
    maps (the ``baseline``, a ``primary`` network) is an ``InputError``.

    Writes ``square_<id>.png`` per selected square (the ID made safe as a file name)
    ``scores.csv`` (the five predicted scores of every square) and ``config.yaml`` into
    ``out_dir``,
    as a whole (:func:`cryoscout.io.runfolder.run_folder`).

    Returns
    -------
    list of pathlib.Path
        The PNGs written.
    """
    from cryoscout.errors import InputError, stage
    from cryoscout.io.atomic import write_bytes, write_text
    from cryoscout.io.runfolder import run_folder
    from cryoscout.io.squares import read_extraction
    from cryoscout.io.validate import safe_filename
    from cryoscout.models import model_label
    from cryoscout.progress import track
    from cryoscout.runinfo import write_run_config
    from cryoscout.screening.predict import load_model

    out_dir = Path(out_dir).absolute()
    with run_folder(out_dir) as staging:  # checked before the work; written whole or not
        model = load_model(model_dir)  # first: a bad model fails before any work
        if not model.has_attention:  # nothing to draw: say so rather than write bare squares
            raise InputError(
                model_dir if model_dir is not None else model.source,
                f"{model.kind}: no attention maps to draw (explain needs an XCryoNet model, "
                "e.g. -m default)",
            )
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(folder, "no such extraction folder")
        extraction = read_extraction(folder)
        stack, table = extraction.stack, extraction.table
        with stage("scoring squares", folder):
            pred = model.predict(stack)
        ids = table["square_id"].to_numpy()
        try:
            rows = select_squares(ids, pred.scores["overall"].to_numpy(), squares, top)
        except ValueError as exc:
            raise InputError("--squares", str(exc)) from None
        scores = pred.scores.copy()
        scores.insert(0, "square_id", ids)
        # one colour scale per attribute for every square, so overlays compare
        ranges = {k: attention_range(v) for k, v in pred.attention.items()}
        names = []
        for i in track(rows, "explaining", unit="square"):
            att = {k: v[i] for k, v in pred.attention.items()}
            png = explain_figure(
                stack[i], att, pred.scores.iloc[i].to_dict(), f"square {ids[i]}", ranges
            )
            names.append(safe_filename(f"square_{ids[i]}.png"))  # IDs are data: keep them in
            write_bytes(staging / names[-1], png)
        write_text(staging / "scores.csv", scores.to_csv(index=False, float_format="%.3f"))
        record = {"extraction": folder.resolve(), "model": model_label(model_dir)}
        write_run_config(staging, {**record, "squares": list(squares or []), "top": top})
    return [out_dir / name for name in names]
