"""The extraction folder: ``squares.csv``, ``squares.mrcs`` and ``labels.csv``.

Row i of ``squares.csv`` is section i of ``squares.mrcs``. ``labels.csv`` holds
``square_id`` and any subset of the five scores (``brightness, squareness,
cracking, contamination, overall``): written from a simulator's ``truth.csv``
by ``cryoscout extract``, or by a person labelling squares.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryoscout.errors import InputError
from cryoscout.io.atlas_source import KnownSquare
from cryoscout.io.atomic import atomic_path
from cryoscout.io.mrc import read_mrc, write_mrc
from cryoscout.io.runfolder import check_complete

SCORE_COLUMNS = ("brightness", "squareness", "cracking", "contamination", "overall")


@dataclass
class ExtractionData:
    """An extraction folder read back.

    Attributes
    ----------
    table
        ``squares.csv``.
    stack
        ``(n, size, size)`` float32 ``squares.mrcs``.
    pixel_size_A
        Pixel size of the squares (``None`` when unknown).
    labels
        ``labels.csv`` (``square_id`` + score columns), ``None`` when absent.
    """

    table: pd.DataFrame
    stack: np.ndarray
    pixel_size_A: float | None
    labels: pd.DataFrame | None = None


def find_truth(input_path: str | os.PathLike) -> Path | None:
    """The simulator's ``truth.csv`` beside an atlas input (its folder or the parent), if any."""
    p = Path(input_path)
    folder = p if p.is_dir() else p.parent
    for cand in (folder / "truth.csv", folder.parent / "truth.csv"):
        if cand.is_file():
            return cand
    return None


def nearest_known_squares(
    table: pd.DataFrame, known: Sequence[KnownSquare], max_dist_px: float
) -> list[str]:
    """ID of the metadata square nearest each found square ('' beyond ``max_dist_px``)."""
    if not known or table.empty:
        return [""] * len(table)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.array([[k.x_px, k.y_px] for k in known], float))
    dist, idx = tree.query(table[["x_px", "y_px"]].to_numpy(float))
    return [known[i].square_id if d <= max_dist_px else "" for d, i in zip(dist, idx, strict=True)]


def labels_from_truth(table: pd.DataFrame, truth: pd.DataFrame, max_dist_px: float) -> pd.DataFrame:
    """Scores of the true square matched one-to-one to each found square.

    Parameters
    ----------
    table
        Found squares (``square_id, x_px, y_px``).
    truth
        Simulator truth (``x_px, y_px`` and the score columns).
    max_dist_px
        Largest centre distance of a match (half a pitch).

    Returns
    -------
    pandas.DataFrame
        ``square_id`` + the score columns the truth has; unmatched squares get no row.
    """
    from cryoscout.atlas.evaluate import match_to_truth

    missing = {"x_px", "y_px"} - set(truth.columns)
    if missing:
        raise InputError("truth.csv", f"missing columns {sorted(missing)}")
    scores = [c for c in SCORE_COLUMNS if c in truth.columns]
    m = match_to_truth(
        table[["x_px", "y_px"]].to_numpy(float),
        truth[["x_px", "y_px"]].to_numpy(float),
        max_dist_px,
    )
    out = pd.DataFrame({"square_id": table["square_id"].to_numpy()[m.found_index]})
    for col in scores:
        out[col] = truth[col].to_numpy()[m.truth_index]
    return out.sort_values("square_id").reset_index(drop=True)


def write_extraction(
    out_dir: str | os.PathLike,
    extraction,
    known_squares: Sequence[KnownSquare] | None = None,
    truth: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write ``squares.csv``, ``squares.mrcs`` and, with a truth table, ``labels.csv``.

    Parameters
    ----------
    out_dir
        The extraction folder (created if needed).
    extraction
        :class:`cryoscout.atlas.extract.Extraction`.
    known_squares
        Grid squares the metadata lists (EPU): each found square gets the
        ``epu_square_id`` of the nearest one within half a pitch.
    truth
        A simulator's truth table: its scores become ``labels.csv``.

    Returns
    -------
    dict
        ``{"squares": path, "stack": path, "labels": path}`` for the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = extraction.table.copy()
    half_pitch = 0.5 * extraction.lattice.pitch_px
    if known_squares:
        table["epu_square_id"] = nearest_known_squares(table, known_squares, half_pitch)
    files = {}
    files["stack"] = write_mrc(
        out / "squares.mrcs",
        extraction.stack.astype(np.float32),
        extraction.pixel_size_A,
        stack=True,
    )
    with atomic_path(out / "squares.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    files["squares"] = out / "squares.csv"
    if truth is not None:
        labels = labels_from_truth(table, truth, half_pitch)
        with atomic_path(out / "labels.csv") as tmp:
            labels.to_csv(tmp, index=False, float_format="%.6g")
        files["labels"] = out / "labels.csv"
    return files


def read_extraction(folder: str | os.PathLike) -> ExtractionData:
    """Read an extraction folder written by ``cryoscout extract`` (or ``cryoscout screen``).

    A ``screen`` output folder holds the same stack with ``scores.csv`` (which
    has every column of ``squares.csv``) in place of ``squares.csv``.

    Raises
    ------
    cryoscout.errors.InputError
        When the folder is left by an interrupted run, ``squares.csv`` or
        ``squares.mrcs`` is missing, they disagree in length, or ``labels.csv``
        has no ``square_id`` or no score column.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    check_complete(folder, "extraction folder")
    listing = folder / "squares.csv"
    if not listing.is_file() and (folder / "scores.csv").is_file():
        listing = folder / "scores.csv"  # a screen output folder
    for path in (listing, folder / "squares.mrcs"):
        if not path.is_file():
            raise InputError(folder, f"not an extraction or screen folder (no {path.name})")
    try:
        table = pd.read_csv(listing, dtype={"epu_square_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(listing, f"not a readable CSV ({exc})") from None
    if "square_id" not in table.columns:
        raise InputError(listing, "has no square_id column")
    stack, apix = read_mrc(folder / "squares.mrcs")
    if stack.ndim == 2:
        stack = stack[None]
    if len(stack) != len(table):
        raise InputError(
            folder / "squares.mrcs",
            f"holds {len(stack)} squares but {listing.name} lists {len(table)}",
        )
    labels = None
    lpath = folder / "labels.csv"
    if lpath.is_file():
        try:
            labels = pd.read_csv(lpath)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(lpath, f"not a readable CSV ({exc})") from None
        if "square_id" not in labels.columns:
            raise InputError(lpath, "has no square_id column")
        if not set(SCORE_COLUMNS) & set(labels.columns):
            raise InputError(lpath, f"has none of the score columns {', '.join(SCORE_COLUMNS)}")
    return ExtractionData(table, np.asarray(stack, np.float32), apix, labels)
