"""One self-contained ``report.html`` for a screened atlas.

Everything the page shows is inside the file: images are embedded as base64
PNG, the style sheet and the few lines of script that sort the table are
inline, and nothing is fetched from the network, so the report can be mailed,
archived or opened on a microscope PC without internet access.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import itertools
import os
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from cryoscout import __version__
from cryoscout.io.atomic import write_text

SCORES = ("brightness", "squareness", "cracking", "contamination", "overall")

# Colour scale for the overall score (0 useless .. 4 excellent): viridis, as in the
# overview picture, sampled at whole scores; the same stops draw the legend.
_STOPS = (
    (0.0, (68, 1, 84)),
    (1.0, (59, 82, 139)),
    (2.0, (33, 145, 140)),
    (3.0, (94, 201, 98)),
    (4.0, (253, 231, 37)),
)
# The overview is only for orientation: cap its size so the report stays small.
_MAX_OVERVIEW_PX = 1400

Overlay = Callable[[np.ndarray, np.ndarray], np.ndarray]


def write_report(
    path: str | os.PathLike,
    overview_png: bytes | None,
    scores: pd.DataFrame,
    square_images: np.ndarray | None,
    attention: Mapping[str, np.ndarray] | None = None,
    *,
    title: str = "cryoscout grid screening report",
    input_path: str | os.PathLike | None = None,
    model: str | None = None,
    created: _dt.datetime | None = None,
    detail_k: int = 12,
    extra_meta: Mapping[str, str] | None = None,
    overlay: Overlay | None = None,
) -> Path:
    """Write the screening report as one self-contained HTML file.

    Parameters
    ----------
    path
        Destination ``report.html`` (written atomically).
    overview_png
        PNG bytes of the atlas overview (squares coloured by overall score);
        ``None`` leaves the overview out.
    scores
        One row per square, row ``i`` describing ``square_images[i]``; uses the
        columns it finds among ``rank, square_id, epu_square_id, full, target,
        stage_x_um, stage_y_um`` and the five scores ``brightness, squareness,
        cracking, contamination, overall``.
    square_images
        ``(n, h, w)`` extracted squares; ``None`` leaves thumbnails out.
    attention
        Attention maps by attribute (``"cracking"``, ``"contamination"``), each
        ``(n, h, w)`` in (0, 1); empty or ``None`` for models without attention.
    title
        Page title.
    input_path, model
        What was screened and with which model, shown in the header.
    created
        Time shown in the header; default now.
    detail_k
        Squares shown large with their attention overlays: the ``detail_k`` best
        and the ``detail_k`` worst (all squares when there are at most ``2 * detail_k``).
    extra_meta
        More header lines (label -> text).
    overlay
        ``overlay(square, attention_map) -> (h, w, 3) uint8``; default
        :func:`cryoscout.screening.explain.attention_overlay` when available.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    text = render_report(
        overview_png,
        scores,
        square_images,
        attention,
        title=title,
        input_path=input_path,
        model=model,
        created=created,
        detail_k=detail_k,
        extra_meta=extra_meta,
        overlay=overlay,
    )
    return write_text(path, text)


def render_report(
    overview_png: bytes | None,
    scores: pd.DataFrame,
    square_images: np.ndarray | None,
    attention: Mapping[str, np.ndarray] | None = None,
    *,
    title: str = "cryoscout grid screening report",
    input_path: str | os.PathLike | None = None,
    model: str | None = None,
    created: _dt.datetime | None = None,
    detail_k: int = 12,
    extra_meta: Mapping[str, str] | None = None,
    overlay: Overlay | None = None,
) -> str:
    """The report's HTML text; see :func:`write_report` for the parameters."""
    n = len(scores)
    table = scores.reset_index(drop=True)
    if square_images is not None and len(square_images) != n:
        raise ValueError(f"{len(square_images)} square images for {n} score rows")
    attention = dict(attention or {})
    for name, maps in attention.items():
        if len(maps) != n:
            raise ValueError(f"{len(maps)} {name} attention maps for {n} score rows")
    created = created or _dt.datetime.now().astimezone()
    gray = _to_uint8(square_images) if square_images is not None else None

    meta = {
        "Input": str(input_path) if input_path is not None else "-",
        "Model": model or "-",
        "cryoscout": __version__,
        "Written": created.isoformat(timespec="seconds"),
        **(extra_meta or {}),
    }
    page = Template(resources.files("cryoscout.report").joinpath("report.html").read_text())
    return page.substitute(
        title=_e(title),
        version=_e(__version__),
        created=_e(created.isoformat(timespec="seconds")),
        meta="".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta.items()),
        summary=_summary(table),
        overview_section=_overview_section(overview_png),
        table_head=_table_head(table, gray is not None),
        table_rows=_table_rows(table, gray, detail_ids=set(_detail_rows(table, detail_k))),
        detail_sections=_detail_sections(table, gray, attention, detail_k, overlay),
        legend_gradient=", ".join(f"rgb{c}" for _, c in _STOPS),
    )


# ---------------------------------------------------------------- page parts


def _summary(table: pd.DataFrame) -> str:
    n = len(table)
    full = int(table["full"].sum()) if "full" in table else n
    stats = [(str(n), "squares found"), (str(full), "full squares")]
    if "target" in table:
        stats.append((str(int(table["target"].sum())), "targets"))
    if "overall" in table and n:
        ov = table["overall"].to_numpy(dtype=float)
        good = int((ov >= 3.0).sum())
        stats += [(f"{np.nanmedian(ov):.2f}", "median overall"), (str(good), "overall >= 3")]
    return "".join(f'<div class="stat"><b>{v}</b><span>{_e(k)}</span></div>' for v, k in stats)


def _overview_section(png: bytes | None) -> str:
    if not png:
        return ""
    png = _shrink_png(png, _MAX_OVERVIEW_PX)
    return (
        '<section class="overview"><h2>Atlas overview</h2>'
        f'<img alt="atlas overview, squares coloured by overall score" src="{_data_uri(png)}">'
        '<p class="note">Each square is outlined in the colour of its predicted overall score '
        "and numbered by its square ID.</p></section>"
    )


_COLUMNS = (
    # (column, header, format)
    ("rank", "rank", "{:.0f}"),
    ("square_id", "square", "{}"),
    ("epu_square_id", "grid-square ID", "{}"),
    ("full", "full", "{:.0f}"),
    ("overall", "overall", "{:.2f}"),
    ("brightness", "brightness", "{:.2f}"),
    ("squareness", "squareness", "{:.2f}"),
    ("cracking", "cracking", "{:.2f}"),
    ("contamination", "contamination", "{:.2f}"),
    ("stage_x_um", "stage x (µm)", "{:.1f}"),
    ("stage_y_um", "stage y (µm)", "{:.1f}"),
)


def _present(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    cols = [c for c in _COLUMNS if c[0] in table]
    # stage columns full of NaN (an image without stage data) say nothing
    return [c for c in cols if not (c[0].startswith("stage_") and table[c[0]].isna().all())]


def _table_head(table: pd.DataFrame, thumbs: bool) -> str:
    heads = []
    for col, head, _ in _present(table):
        heads.append(
            f'<th class="id">{_e(head)}</th>' if col.endswith("id") else f"<th>{head}</th>"
        )
        if col == "rank" and thumbs:
            heads.append('<th class="id">square image</th>')
    return "".join(heads)


def _table_rows(table: pd.DataFrame, gray: np.ndarray | None, detail_ids: set[int]) -> str:
    cols = _present(table)
    rows = []
    order = np.argsort(table["rank"].to_numpy()) if "rank" in table else np.arange(len(table))
    for i in order:
        row = table.iloc[i]
        classes = []
        if "full" in table and not int(row["full"]):
            classes.append("partial")
        if "target" in table and bool(row["target"]):
            classes.append("target")
        cells = []
        for col, _, fmt in cols:
            value = row[col]
            text = "" if pd.isna(value) else fmt.format(value)
            if col == "square_id" and i in detail_ids:
                text = f'<a href="#sq{i}">{_e(text)}</a>'
            else:
                text = _e(text)
            if col.endswith("id"):
                cells.append(f'<td class="id">{text}</td>')
            elif col == "overall" and not pd.isna(value):
                cells.append(
                    f'<td class="score" style="background:{_colour(float(value), 0.45)}">'
                    f"{text}</td>"
                )
            else:
                cells.append(f"<td>{text}</td>")
            if col == "rank" and gray is not None:
                thumb = _png(_resize(gray[i], 48))
                cells.append(
                    f'<td class="id" data-v="{i}"><img alt="" src="{_data_uri(thumb)}"></td>'
                )
        cls = f' class="{" ".join(classes)}"' if classes else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return "\n".join(rows)


def _detail_rows(table: pd.DataFrame, k: int) -> list[int]:
    """Row indices shown large: the k best and the k worst by rank.

    All squares when there are at most ``2 * k``; otherwise the worst are taken
    among full squares, since partial ones rank last for being partial.
    """
    if k <= 0:
        return []
    order = np.argsort(table["rank"].to_numpy()) if "rank" in table else np.arange(len(table))
    order = [int(i) for i in order]
    if len(order) <= 2 * k:
        return order
    full = [i for i in order if "full" not in table or int(table["full"].iloc[i])]
    worst = [i for i in full[-k:] if i not in order[:k]]
    return order[:k] + worst


def _detail_sections(
    table: pd.DataFrame,
    gray: np.ndarray | None,
    attention: dict[str, np.ndarray],
    k: int,
    overlay: Overlay | None,
) -> str:
    if gray is None or k <= 0:
        return ""
    rows = _detail_rows(table, k)
    overlay = overlay or _default_overlay()
    if len(rows) == len(table):
        groups = [("Every square with its attention maps", rows)]
    else:
        groups = [
            (f"The {k} best squares", rows[:k]),
            (f"The {len(rows) - k} worst full squares", rows[k:]),
        ]
    out = []
    for heading, idx in groups:
        cards = [_card(table, gray, attention, i, overlay) for i in idx]
        out.append(
            f"<section><h2>{_e(heading)}</h2>"
            '<p class="note">Attention overlays show where the model looked for each defect '
            "(the warmer and brighter the colour, the more attention).</p>"
            f'<div class="cards">{"".join(cards)}</div></section>'
        )
    return "\n".join(out)


def _card(
    table: pd.DataFrame,
    gray: np.ndarray,
    attention: dict[str, np.ndarray],
    i: int,
    overlay: Overlay,
) -> str:
    row = table.iloc[i]
    name = f"square {row['square_id']}" if "square_id" in table else f"square {i}"
    if "epu_square_id" in table and not pd.isna(row["epu_square_id"]):
        name += f" (grid square {row['epu_square_id']})"
    rank = f"rank {int(row['rank'])}: " if "rank" in table else ""
    figs = [_figure(_png(gray[i]), "square")]
    for attr, maps in attention.items():
        rgb = overlay(gray[i].astype(np.float32) / 255.0, np.asarray(maps[i], dtype=np.float32))
        figs.append(_figure(_png(_resize(np.asarray(rgb), gray.shape[1])), f"{attr} attention"))
    vals = " &middot; ".join(
        f"{s} <b>{float(row[s]):.2f}</b>" for s in SCORES if s in table and not pd.isna(row[s])
    )
    partial = "" if "full" not in table or int(row["full"]) else " &middot; partial"
    return (
        f'<div class="card" id="sq{i}"><h3>{_e(rank + name)}{partial}</h3>'
        f'<div class="imgs">{"".join(figs)}</div><div class="scores">{vals}</div></div>'
    )


def _figure(png: bytes, caption: str) -> str:
    return f'<figure><img alt="{_e(caption)}" src="{_data_uri(png)}">{_e(caption)}</figure>'


# ------------------------------------------------------------------- images


def _default_overlay() -> Overlay:
    """The overlay of ``cryoscout explain``, so the report and explain draw maps alike."""
    from cryoscout.screening.explain import attention_overlay

    return attention_overlay


def _to_uint8(stack: np.ndarray) -> np.ndarray:
    """Scale a stack to uint8 with ONE range for all squares.

    A shared range keeps brightness comparable between squares (a dark,
    thick-ice square must look darker than an empty one), which per-square
    normalisation would hide.
    """
    arr = np.asarray(stack, dtype=np.float32)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    scaled = (np.nan_to_num(arr, nan=lo) - lo) / max(float(hi - lo), 1e-12)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a square ``(h, w)`` or ``(h, w, 3)`` image to ``size`` x ``size`` pixels."""
    from PIL import Image

    arr = np.asarray(img)
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    if arr.dtype != np.uint8:  # float maps in [0, 1]
        out = Image.fromarray(arr.astype(np.float32)).resize((size, size), Image.BILINEAR)
        return np.asarray(out)
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.LANCZOS))


def _png(img: np.ndarray) -> bytes:
    """PNG bytes; colour images go through a 64-colour palette, a third of the size."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img))
    if im.mode == "RGB":
        im = im.quantize(64)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _shrink_png(png: bytes, max_px: int) -> bytes:
    """Downscale a large PNG and store it with a 256-colour palette (a third of the bytes)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    if max(img.size) <= max_px and img.mode == "P":
        return png
    img = img.convert("RGB")
    img.thumbnail((max_px, max_px), Image.LANCZOS)
    buf = io.BytesIO()
    img.quantize(256).save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _colour(value: float, alpha: float = 1.0) -> str:
    """CSS colour of an overall score on the red-yellow-green scale."""
    v = float(np.clip(value, _STOPS[0][0], _STOPS[-1][0]))
    for (v0, c0), (v1, c1) in itertools.pairwise(_STOPS):
        if v <= v1:
            t = (v - v0) / (v1 - v0)
            r, g, b = (round(a + t * (b_ - a)) for a, b_ in zip(c0, c1, strict=True))
            return f"rgba({r},{g},{b},{alpha})"
    return f"rgba{(*_STOPS[-1][1], alpha)}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
