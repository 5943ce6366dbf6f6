"""One self-contained ``report.html`` for a screened atlas.

Everything the page shows is inside the file: images are embedded as base64
PNG, the style sheet and the few lines of script that sort the table are
inline, and nothing is fetched from the network, so the report can be mailed,
archived or opened on a microscope PC without internet access.

The page answers, in this order: what the scores mean, where the targets are
(the overview), why each target was chosen and why the worst squares were
rejected (cards, with attention overlays for predicted defects), and every
square's scores (the table).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import itertools
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from cryoscout import __version__
from cryoscout.io.atomic import write_text
from cryoscout.screening.explain import (
    ATTENTION_CMAP,
    DEFECT_THRESHOLD,
    FLAT_SPREAD,
    attention_overlay,
    attention_range,
    is_flat,
    predicted_defects,
)

SCORES = ("brightness", "squareness", "cracking", "contamination", "overall")

#: What each 0-4 score means, for the legend: (what it measures, the levels). The
#: levels follow the operator rubric the simulator labels with (docs/simulator.md),
#: after the attributes of XCryoNet (Xu et al., MICCAI 2020).
SCALE_LEGEND = {
    "brightness": (
        "how much electron beam the opening lets through",
        "0 opaque (thick ice, about 550 nm or more) · 2 half transparent · "
        "4 empty (no ice). Neither end is good: the best ice lies in between.",
    ),
    "squareness": (
        "how much of the opening is intact film",
        "4 intact · 3 about 1/6 broken or covered by a bent bar · 1 about half · "
        "0 two thirds or more",
    ),
    "cracking": (
        "the part of the surface with cracks",
        "0 no crack · 1 a short crack (about 0.6% of the opening) · "
        "2 one crack across the square · 3 several cracks (3%) · 4 heavily cracked",
    ),
    "contamination": (
        "the part of the surface covered by ice crystals or debris",
        "0 clean · 1 about 3% covered · 2 about 8% · 3 about 17% · 4 a third or more",
    ),
    "overall": (
        "usefulness for collection: the worse of ice quality and squareness, "
        "less 0.75 per point of cracking and of contamination",
        "4 excellent (ice 40-100 nm, intact, clean) · 3 good · 2 usable · 1 poor · 0 useless",
    ),
}

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
    defect_threshold: float = DEFECT_THRESHOLD,
) -> Path:
    """Write the screening report as one self-contained HTML file.

    Parameters
    ----------
    path
        Destination ``report.html`` (written atomically).
    overview_png
        PNG bytes of the atlas overview (targets marked, squares coloured by
        overall score); ``None`` leaves the overview out.
    scores
        One row per square, row ``i`` describing ``square_images[i]``; uses the
        columns it finds among ``rank, square_id, epu_square_id, full, target,
        stage_x_um, stage_y_um`` and the five scores ``brightness, squareness,
        cracking, contamination, overall``.
    square_images
        ``(n, h, w)`` extracted squares; ``None`` leaves thumbnails and cards out.
    attention
        Attention maps by attribute (``"cracking"``, ``"contamination"``), each
        ``(n, h, w)`` in (0, 1); empty or ``None`` for models without attention.
        Each attribute's maps are drawn on one colour scale for all squares.
    title
        Page title.
    input_path, model
        What was screened and with which model, shown in the header.
    created
        Time shown in the header; default now.
    detail_k
        Cards (the square large, with its scores and why it ranks where it
        does) are shown for every target (``target`` column) and for the
        ``detail_k`` lowest-ranked full squares. Without a ``target`` column,
        the ``detail_k`` best take the targets' place.
    extra_meta
        More header lines (label -> text).
    defect_threshold
        A card shows the cracking or contamination attention overlay only when
        that score is at least this (a predicted defect).

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
        defect_threshold=defect_threshold,
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
    defect_threshold: float = DEFECT_THRESHOLD,
) -> str:
    """The report's HTML text; see :func:`write_report` for the parameters."""
    n = len(scores)
    table = scores.reset_index(drop=True)
    if square_images is not None and len(square_images) != n:
        raise ValueError(f"{len(square_images)} square images for {n} score rows")
    attention = {k: np.asarray(v) for k, v in (attention or {}).items()}
    for name, maps in attention.items():
        if len(maps) != n:
            raise ValueError(f"{len(maps)} {name} attention maps for {n} score rows")
    created = created or _dt.datetime.now().astimezone()
    gray = _to_uint8(square_images) if square_images is not None else None
    groups = _card_groups(table, detail_k) if gray is not None else []

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
        scale_legend=_scale_legend(table, defect_threshold),
        overview_section=_overview_section(overview_png, table),
        table_head=_table_head(table, gray is not None),
        table_rows=_table_rows(table, gray, detail_ids={i for _, _, rows in groups for i in rows}),
        detail_sections=_detail_sections(table, gray, attention, groups, defect_threshold),
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


def _scale_legend(table: pd.DataFrame, threshold: float) -> str:
    """The 0-4 scale of each score, and how to read a prediction between two levels."""
    rows = "".join(
        f"<b>{_e(name)}</b><span>{_e(what)}</span><span>{_e(levels)}</span>"
        for name, (what, levels) in SCALE_LEGEND.items()
        if name in table
    )
    if not rows:
        return ""
    text = (
        "Predictions are continuous estimates of these whole-number grades: a cracking of "
        "0.7 lies between 0 (no crack) and 1 (a short crack), so the model is not sure there "
        "is any crack. It seldom predicts exactly 0 for a clean square, so cryoscout counts "
        "cracking or contamination as a predicted defect only from "
        f"{threshold:g}, the first defect grade."
    )
    chosen = table[table["target"].astype(bool)] if "target" in table else table.iloc[:0]
    spans = [
        f"{a} {chosen[a].min():.2f}-{chosen[a].max():.2f}"
        for a in ("cracking", "contamination")
        if a in chosen and len(chosen)
    ]
    if spans:
        text += f" Here the {len(chosen)} targets score {' and '.join(spans)}."
    return (
        '<section class="scale"><h2>What the scores mean (0-4)</h2>'
        f'<div class="legendgrid">{rows}</div>'
        f'<p class="note">{_e(text)}</p></section>'
    )


def _overview_section(png: bytes | None, table: pd.DataFrame) -> str:
    if not png:
        return ""
    png = _shrink_png(png, _MAX_OVERVIEW_PX)
    k = int(table["target"].sum()) if "target" in table else 0
    targets = (
        f"The {k} targets, where the microscope will collect, have a thick pink outline and "
        "their rank in a pink badge (1 is the best); they are listed in targets.csv (and "
        "targets.nav when the atlas has stage positions). "
        if k
        else ""
    )
    return (
        '<section class="overview"><h2>Atlas overview: where to collect</h2>'
        f'<p class="lead">{_e(targets)}</p>'
        f'<img alt="atlas overview, targets outlined and numbered by rank" '
        f'src="{_data_uri(png)}">'
        '<p class="note">Every other square is outlined in the colour of its predicted '
        "overall score (colour bar) and labelled with its square ID; dashed outlines are "
        "partial squares at the rim, never targets. The scale bar is in µm.</p></section>"
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


def _card_groups(table: pd.DataFrame, k: int) -> list[tuple[str, str, list[int]]]:
    """The cards: (what they are, heading, row indices), targets first.

    Targets are every row with ``target`` true (else the ``k`` best); then the
    ``k`` lowest-ranked full squares that are not targets, since partial squares
    rank last for being partial, not for what the model saw.
    """
    order = np.argsort(table["rank"].to_numpy()) if "rank" in table else np.arange(len(table))
    order = [int(i) for i in order]
    if "target" in table:
        best = [i for i in order if bool(table["target"].iloc[i])]
        what = f"the {len(best)} targets"
        head = f"The {len(best)} targets: the best full squares, where the microscope will collect"
    else:
        best = order[: max(k, 0)]
        what = f"the {len(best)} best squares"
        head = f"The {len(best)} best squares"
    groups = [(what, head, best)] if best else []
    if k > 0:
        full = [i for i in order if "full" not in table or int(table["full"].iloc[i])]
        worst = [i for i in full if i not in set(best)][-k:]
        if worst:
            what = f"the {len(worst)} lowest-ranked full squares"
            groups.append((what, f"{what[0].upper()}{what[1:]}: not collected", worst))
    return groups


def _detail_sections(
    table: pd.DataFrame,
    gray: np.ndarray | None,
    attention: dict[str, np.ndarray],
    groups: list[tuple[str, str, list[int]]],
    threshold: float,
) -> str:
    if gray is None or not groups:
        return ""
    # one colour scale per attribute over the whole atlas: the same colour is the
    # same attention on every card
    ranges = {name: attention_range(maps) for name, maps in attention.items()}
    shown = sum(len(rows) for _, _, rows in groups)
    intro = (
        f"Cards show {' and '.join(what for what, _, _ in groups)} ({shown} of the "
        f"{len(table)} squares) to explain what the model selects and what it rejects; "
        "the table lists every square with its scores."
    )
    if ranges:
        intro += (
            f" Attention overlays are drawn only for a predicted defect (cracking or "
            f"contamination of {threshold:g} or more): on a square without one the maps are "
            "near-uniform and show nothing. A map is called flat when its values inside the "
            f"opening spread less than {FLAT_SPREAD:g} (it singles nothing out)."
            " The cracking map lights up the cracks; the contamination map lights up the "
            "clean film, so contamination shows as dark holes in it (as in the XCryoNet "
            "paper, Fig. 3)."
        )
    else:  # e.g. the gradient-boosted-trees baseline: say why the cards have no overlays
        intro += (
            " This model computes no attention maps, so the cards show no attention "
            "overlays; the scores alone say why a square ranks where it does."
        )
    legends = "".join(_attention_legend(name, *r) for name, r in ranges.items())
    out = [f'<section class="cardsintro"><p class="lead">{_e(intro)}</p>{legends}</section>']
    for _, heading, idx in groups:
        cards = [_card(table, gray, attention, ranges, i, threshold) for i in idx]
        out.append(
            f'<section><h2>{_e(heading)}</h2><div class="cards">{"".join(cards)}</div></section>'
        )
    return "\n".join(out)


def _attention_legend(name: str, vmin: float, vmax: float) -> str:
    from matplotlib import colormaps

    cmap = colormaps[ATTENTION_CMAP]
    stops = ", ".join(
        "rgb({},{},{})".format(*(round(255 * c) for c in cmap(t)[:3])) for t in np.linspace(0, 1, 9)
    )
    return (
        f'<div class="attlegend"><b>{_e(name)} attention</b> '
        f'<span class="num">{vmin:.3f}</span>'
        f'<span class="bar" style="background:linear-gradient(to right, {stops})"></span>'
        f'<span class="num">{vmax:.3f}</span> '
        '<span class="note">(one scale for every square)</span></div>'
    )


def _reasons(row: pd.Series, threshold: float, flat: set[str] | None = None) -> list[str]:
    """What pulls a square's overall score down, in words, from its predicted scores.

    ``flat``: the predicted defects whose attention map singles nothing out, so the
    score is not backed by a region the model found.
    """
    said = []
    if "brightness" in row and row["brightness"] < 1.5:
        said.append(f"dark: thick ice (brightness {row['brightness']:.1f})")
    if "brightness" in row and row["brightness"] > 3.8:
        said.append(f"very bright: little or no ice (brightness {row['brightness']:.1f})")
    if "squareness" in row and row["squareness"] < 2.5:
        said.append(f"film broken or bar in the opening (squareness {row['squareness']:.1f})")
    for name in predicted_defects(row, threshold):
        if name in (flat or set()):
            said.append(f"{name} {row[name]:.1f} predicted, but its map is flat: no region found")
        else:
            word = "cracked" if name == "cracking" else "contaminated"
            said.append(f"{word} ({name} {row[name]:.1f})")
    return said


def _card(
    table: pd.DataFrame,
    gray: np.ndarray,
    attention: dict[str, np.ndarray],
    ranges: dict[str, tuple[float, float]],
    i: int,
    threshold: float,
) -> str:
    row = table.iloc[i]
    name = f"square {row['square_id']}" if "square_id" in table else f"square {i}"
    if "epu_square_id" in table and not pd.isna(row["epu_square_id"]):
        name += f" (grid square {row['epu_square_id']})"
    target = "target" in table and bool(row["target"])
    rank = ""
    if "rank" in table:
        rank = (
            f'<span class="badge">{int(row["rank"])}</span>'
            if target
            else f"rank {int(row['rank'])}: "
        )
    figs = [_figure(_png(gray[i]), "square")]
    defects = [d for d in predicted_defects(row, threshold) if d in attention]
    flat = set()
    for attr in defects:
        att = np.asarray(attention[attr][i], dtype=np.float32)
        rgb = attention_overlay(gray[i].astype(np.float32) / 255.0, att, *ranges[attr])
        if is_flat(att):
            flat.add(attr)
        caption = f"{attr} attention" + (" (flat: nothing singled out)" if attr in flat else "")
        figs.append(_figure(_png(_resize(np.asarray(rgb), gray.shape[1])), caption))
    # overall first: it decides the rank; the attributes say why
    vals = "".join(
        f"<div>{s} <b>{float(row[s]):.2f}</b></div>"
        for s in ("overall", *SCORES[:-1])
        if s in table and not pd.isna(row[s])
    )
    reasons = _reasons(row, threshold, flat)
    if reasons:
        verdict = "; ".join(reasons)
    elif target:
        verdict = "no defect predicted"
    else:
        verdict = "no single defect stands out: ranked low on the overall score"
    if attention and not defects and not target:
        verdict += "; no cracking or contamination predicted, so no overlay"
    partial = "" if "full" not in table or int(row["full"]) else " &middot; partial"
    cls = "card" + (" target" if target else "") + (" wide" if len(figs) > 2 else "")
    return (
        f'<div class="{cls}" id="sq{i}"><h3>{rank}{_e(name)}{partial}</h3>'
        f'<div class="body"><div class="imgs">{"".join(figs)}</div>'
        f'<div class="scores">{vals}</div></div>'
        f'<div class="verdict">{_e(verdict[0].upper() + verdict[1:])}</div></div>'
    )


def _figure(png: bytes, caption: str) -> str:
    return f'<figure><img alt="{_e(caption)}" src="{_data_uri(png)}">{_e(caption)}</figure>'


# ------------------------------------------------------------------- images


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
    """Downscale a large PNG and store it with a 256-colour palette."""
    from cryoscout.report.overview import palette_png

    return palette_png(png, max_px)


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
