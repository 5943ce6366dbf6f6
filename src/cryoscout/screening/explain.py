"""Explanations: attention maps drawn over their squares.

:func:`attention_overlay` is the one drawing of an attention map, shared by
``cryoscout explain`` and the HTML report; :func:`explain_figure` makes the
per-square picture (image | cracking overlay | contamination overlay).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: How strongly the attention colour covers the square where attention is 1.
OVERLAY_ALPHA = 0.55


def _gray(square: np.ndarray) -> np.ndarray:
    """The square scaled to [0, 1] between its 1st and 99th percentiles."""
    x = np.asarray(square, dtype=np.float32)
    lo, hi = np.percentile(x, [1, 99])
    return np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def attention_overlay(square: np.ndarray, att: np.ndarray) -> np.ndarray:
    """Draw an attention map over its square.

    Parameters
    ----------
    square
        ``(h, w)`` grid-square image (any intensity scale).
    att
        ``(h, w)`` attention map in (0, 1) (other values are clipped).

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8 RGB: the square in gray, coloured (inferno colour
        map) in proportion to the attention.
    """
    from matplotlib import colormaps

    gray = _gray(square)
    a = np.clip(np.asarray(att, dtype=np.float32), 0, 1)
    if a.shape != gray.shape:
        raise ValueError(f"attention {a.shape} and square {gray.shape} differ in shape")
    colour = colormaps["inferno"](a)[..., :3]  # (h, w, 3)
    weight = OVERLAY_ALPHA * a[..., None]
    rgb = (1 - weight) * gray[..., None] + weight * colour
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def explain_figure(
    square: np.ndarray, attention: dict[str, np.ndarray], scores: dict[str, float], title: str
) -> bytes:
    """PNG of one square: image | cracking overlay | contamination overlay.

    Parameters
    ----------
    square
        ``(h, w)`` image.
    attention
        ``"cracking"``, ``"contamination"`` -> ``(h, w)`` maps (may be empty).
    scores
        Predicted scores, shown in the title.
    title
        First title line (e.g. the square ID).

    Returns
    -------
    bytes
        The PNG file's content.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    panels = [("image", np.stack([_gray(square)] * 3, axis=-1))]
    panels += [(f"{k} attention", attention_overlay(square, v)) for k, v in attention.items()]
    fig = Figure(figsize=(3 * len(panels), 3.4), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, rgb) in zip(axes, panels, strict=True):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    line = "  ".join(f"{k[:5]} {v:.1f}" for k, v in scores.items())
    fig.suptitle(f"{title}\n{line}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


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
    from cryoscout.progress import track
    from cryoscout.runinfo import write_run_config
    from cryoscout.screening.predict import load_model

    out_dir = Path(out_dir).absolute()
    with run_folder(out_dir) as staging:  # checked before the work; written whole or not
        model = load_model(model_dir)  # first: a bad model fails before any work
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
        names = []
        for i in track(rows, "explaining", unit="square"):
            att = {k: v[i] for k, v in pred.attention.items()}
            png = explain_figure(stack[i], att, pred.scores.iloc[i].to_dict(), f"square {ids[i]}")
            names.append(safe_filename(f"square_{ids[i]}.png"))  # IDs are data: keep them in
            write_bytes(staging / names[-1], png)
        write_text(staging / "scores.csv", scores.to_csv(index=False, float_format="%.3f"))
        record = {"extraction": folder.resolve(), "model": str(model_dir or "default")}
        write_run_config(staging, {**record, "squares": list(squares or []), "top": top})
    return [out_dir / name for name in names]
