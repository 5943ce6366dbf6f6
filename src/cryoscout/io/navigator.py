"""SerialEM navigator files (.nav): grid-square targets as stage points.

A navigator file is an IMOD "autodoc" text file: global ``key = value`` lines
(``AdocVersion = 2.00``), then one ``[Item = label]`` section per navigator
item. A point item (``Type = 0``) carries its stage position twice, as
``StageXYZ`` and as its single vertex ``PtsX``/``PtsY`` (stage µm; SerialEM
stores the vertices of points and polygons in stage coordinates), plus
``NumPts = 1``, ``Regis`` (the registration it belongs to) and ``MapID`` (an
ID unique within the file). SerialEM opens or merges such a file through
Navigator > Open / Merge; the points then show in the item list and on any map
of the same registration. See SerialEM's help, "File Formats and Other
Documentation", section "Navigator Files".
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cryoscout.errors import InputError
from cryoscout.io.atomic import write_text

#: Keys every point item written here carries; SerialEM needs these to place a point.
POINT_KEYS = ("Color", "StageXYZ", "NumPts", "Regis", "Type", "MapID", "PtsX", "PtsY")

ADOC_VERSION = "2.00"
# SerialEM labels are short strings shown in a narrow list column; it accepts
# letters, digits, '-' and '_' without trouble.
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def write_navigator(
    path: str | os.PathLike,
    targets: pd.DataFrame,
    labels: Sequence[str] | None = None,
    notes: Sequence[str] | None = None,
    stage_z_um: float = 0.0,
    registration: int = 1,
    color: int = 0,
    acquire: bool = False,
) -> Path:
    """Write stage positions as point items of a SerialEM navigator file.

    Parameters
    ----------
    path
        Destination ``.nav`` file (written atomically).
    targets
        One row per point with columns ``stage_x_um`` and ``stage_y_um`` (µm);
        rows whose stage position is NaN are an error, not silently dropped.
    labels
        Item labels (``[Item = label]``), one per row; default ``1, 2, ...``.
        Characters other than letters, digits, ``-``, ``_`` and ``.`` become ``_``;
        duplicates get a numeric suffix because SerialEM needs unique labels.
    notes
        Free text per row, shown in SerialEM's item list (``Note``).
    stage_z_um
        Z of every point (µm); atlases carry none, so 0 by default.
    registration
        SerialEM registration number (``Regis``) the points belong to; it must
        match the registration of the session's maps to show on them.
    color
        SerialEM colour index (0 red, 1 green, 2 blue, 3 yellow, 4 magenta).
    acquire
        Mark every point for acquisition (``Acquire = 1``).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        When the table lacks stage columns, holds NaN positions, or the
        number of labels or notes does not match the number of rows.

    Examples
    --------
    >>> df = pd.DataFrame({"stage_x_um": [10.0], "stage_y_um": [-5.5]})
    >>> write_navigator("targets.nav", df, labels=["R01-GS12"])  # doctest: +SKIP
    """
    text = navigator_text(
        targets,
        labels=labels,
        notes=notes,
        stage_z_um=stage_z_um,
        registration=registration,
        color=color,
        acquire=acquire,
        saved_as=Path(path).name,
    )
    return write_text(path, text)


def navigator_text(
    targets: pd.DataFrame,
    labels: Sequence[str] | None = None,
    notes: Sequence[str] | None = None,
    stage_z_um: float = 0.0,
    registration: int = 1,
    color: int = 0,
    acquire: bool = False,
    saved_as: str | None = None,
) -> str:
    """The text of a navigator file; see :func:`write_navigator` for the parameters."""
    missing = {"stage_x_um", "stage_y_um"} - set(targets.columns)
    if missing:
        raise ValueError(f"targets lack column(s) {sorted(missing)}")
    xs = targets["stage_x_um"].to_numpy(dtype=float)
    ys = targets["stage_y_um"].to_numpy(dtype=float)
    n = len(xs)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("targets hold NaN stage positions; the input carries no stage data")
    labels = _unique_labels([str(i + 1) for i in range(n)] if labels is None else list(labels))
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} targets")
    if notes is not None and len(notes) != n:
        raise ValueError(f"{len(notes)} notes for {n} targets")

    # IDs must be unique within a session's navigator, also after merging into
    # an open one: derive them from the content instead of counting from 1.
    seed = zlib.crc32(("|".join(labels) + f"{xs.sum():.3f}{ys.sum():.3f}").encode())
    base_id = 100_000_000 + seed % 1_000_000_000
    group_id = base_id - 1

    lines = [f"AdocVersion = {ADOC_VERSION}"]
    if saved_as:
        lines.append(f"LastSavedAs = {saved_as}")
    lines.append("")
    for i in range(n):
        lines += [
            f"[Item = {labels[i]}]",
            f"Color = {int(color)}",
            f"StageXYZ = {xs[i]:.3f} {ys[i]:.3f} {stage_z_um:.3f}",
            "NumPts = 1",
            f"Regis = {int(registration)}",
            "Type = 0",
        ]
        if notes is not None:
            lines.append(f"Note = {_one_line(notes[i])}")
        lines += [
            f"GroupID = {group_id}",
            f"Acquire = {int(acquire)}",
            f"MapID = {base_id + i}",
            f"PtsX = {xs[i]:.3f}",
            f"PtsY = {ys[i]:.3f}",
            "",
        ]
    return "\n".join(lines) + "\n"


def read_navigator(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read the items of a SerialEM navigator file.

    Parameters
    ----------
    path
        A ``.nav`` file in autodoc format (SerialEM's XML navigator format is not read).

    Returns
    -------
    list of dict
        One dict per ``[Item = label]`` section, in file order: ``"label"``
        holds the label, every other key maps to its value string as written
        (for example ``item["StageXYZ"] == "10.000 -5.500 0.000"``).

    Raises
    ------
    InputError
        When the file is missing or is not an autodoc navigator file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    header = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not header.startswith("AdocVersion"):
        raise InputError(path, "not a SerialEM navigator file (no 'AdocVersion' line)")

    items: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        section = re.fullmatch(r"\[\s*(\w+)\s*=\s*(.*?)\s*\]", line)
        if section:
            current = {"label": section.group(2)} if section.group(1) == "Item" else None
            if current is not None:
                items.append(current)
            continue
        if current is not None and "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return items


def _unique_labels(labels: list[str]) -> list[str]:
    """Clean labels for SerialEM and make duplicates unique."""
    used: set[str] = set()
    out = []
    for raw in labels:
        base = _LABEL_BAD.sub("_", raw.strip()) or "item"
        label, k = base, 1
        while label in used:
            label, k = f"{base}_{k}", k + 1
        used.add(label)
        out.append(label)
    return out


def _one_line(text: str) -> str:
    """Notes are single autodoc values: no line breaks."""
    return " ".join(str(text).split())
