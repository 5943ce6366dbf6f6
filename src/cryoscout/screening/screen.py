"""``cryoscout screen``: extract squares, score them, rank them and export targets.

The whole main job in one call: read an atlas (EPU, SerialEM montage or a
single image), stitch it, extract its grid squares, score each square with an
XCryoNet model, rank the squares by predicted overall quality and write what a
facility needs to act on it: a table of scores, a self-contained HTML report,
and the best full squares as targets (CSV, and a SerialEM navigator file when
the input carries stage positions).

Everything is computed before the first file is written, so a bad input fails
without leaving outputs behind; each file is written atomically.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from cryoscout.errors import InputError, stage

log = logging.getLogger(__name__)

SCORES = ("brightness", "squareness", "cracking", "contamination", "overall")
#: Automatic labels of squares.csv, renamed in scores.csv so they do not clash with predictions.
AUTO_LABELS = {"brightness": "auto_brightness", "squareness": "auto_squareness"}


class _Predictions(Protocol):
    scores: pd.DataFrame
    attention: dict[str, np.ndarray]


class _Model(Protocol):
    def predict(self, stack: np.ndarray) -> _Predictions: ...


@dataclass
class ScreenResult:
    """What :func:`screen` wrote.

    Attributes
    ----------
    out_dir
        The output folder.
    scores
        The ``scores.csv`` table (one row per square, row ``i`` is section ``i``
        of ``squares.mrcs``).
    targets
        The ``targets.csv`` table (the best full squares, best first).
    files
        Written files by name (``"report"``, ``"scores"``, ``"targets_csv"``,
        ``"targets_nav"`` when written, ``"squares"``, ``"overview"``, ``"config"``).
    """

    out_dir: Path
    scores: pd.DataFrame
    targets: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def report(self) -> Path:
        """Path of ``report.html``."""
        return self.files["report"]


def rank_squares(table: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Merge the extraction table with the model's scores and rank the squares.

    Parameters
    ----------
    table
        The ``squares.csv`` table (``square_id, x_px, y_px, stage_x_um,
        stage_y_um, full, ncc, brightness, squareness`` [+ ``epu_square_id``]).
    predictions
        The model's scores, one row per row of ``table`` in the same order, with
        columns ``brightness, squareness, cracking, contamination, overall``.

    Returns
    -------
    pandas.DataFrame
        ``table`` with ``brightness``/``squareness`` renamed ``auto_brightness``/
        ``auto_squareness``, the five predicted scores and ``rank``: 1 is the
        highest predicted overall among full squares; partial squares
        (``full == 0``) rank after every full square. Ties go to the lower
        ``square_id`` so that ranks are reproducible.
    """
    if len(table) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(table)} squares")
    missing = [s for s in SCORES if s not in predictions]
    if missing:
        raise ValueError(f"predictions lack {missing}")
    out = table.reset_index(drop=True).rename(columns=AUTO_LABELS)
    for name in SCORES:
        out[name] = predictions[name].to_numpy(dtype=float)
    full = out["full"].to_numpy(dtype=int) if "full" in out else np.ones(len(out), int)
    overall = np.nan_to_num(out["overall"].to_numpy(dtype=float), nan=-np.inf)
    tie = out["square_id"].to_numpy() if "square_id" in out else np.arange(len(out))
    order = np.lexsort((tie, -overall, -full))  # last key sorts first
    rank = np.empty(len(out), dtype=int)
    rank[order] = np.arange(1, len(out) + 1)
    out["rank"] = rank
    return out


def select_targets(scores: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """The ``top_k`` best full squares, best first, as the ``targets.csv`` table.

    Parameters
    ----------
    scores
        Output of :func:`rank_squares`.
    top_k
        How many targets at most.

    Returns
    -------
    pandas.DataFrame
        Columns ``rank, label, square_id`` [``epu_square_id``], ``stage_x_um,
        stage_y_um, x_px, y_px`` and the five scores. ``label`` names the
        point in SerialEM: rank and grid-square ID (EPU) or square number.
    """
    if top_k < 0:
        raise ValueError("top_k must be >= 0")
    full = scores["full"].astype(int) == 1 if "full" in scores else np.ones(len(scores), bool)
    best = scores[full].sort_values("rank").head(top_k).copy()
    epu = best["epu_square_id"] if "epu_square_id" in best else pd.Series(None, index=best.index)
    best["label"] = [
        f"R{i:02d}-GS{_id_text(e)}" if _id_text(e) else f"R{i:02d}-S{_id_text(s)}"
        for i, e, s in zip(range(1, len(best) + 1), epu, best["square_id"], strict=True)
    ]
    cols = ["rank", "label", "square_id", "epu_square_id", "stage_x_um", "stage_y_um"]
    cols += ["x_px", "y_px", *SCORES]
    return best[[c for c in cols if c in best]].reset_index(drop=True)


def _id_text(value: Any) -> str:
    """An ID as text: integers stay integers even when pandas stored them as floats."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def screen(
    input_path: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    model_dir: str | os.PathLike | None = None,
    top_k: int = 20,
    size: int | None = None,
    pixel_size_A: float | None = None,
    detail_k: int = 12,
    flat_field: bool = True,
) -> ScreenResult:
    """Screen an atlas: extract, score and rank its squares, and export targets.

    Parameters
    ----------
    input_path
        An EPU ``Atlas.dm`` (or its folder), a SerialEM montage (.mrc + .mdoc)
        or a single stitched image (.mrc, .tif, .png); ``None`` screens the built-in
        example atlas (:func:`make_example_atlas`), simulated into ``out_dir/example_atlas``.
    out_dir
        Output folder, written whole or not at all (:func:`cryoscout.io.runfolder.run_folder`;
        an earlier screen there is replaced). Receives ``scores.csv``, ``squares.mrcs``,
        ``overview.png``, ``report.html``, ``targets.csv``, ``targets.nav``
        (when the input carries stage positions) and ``config.yaml``.
    model_dir
        A training run folder (``cryoscout train``), a model file, or the name of
        a model shipped with cryoscout (``"default"``, ``"baseline"``:
        :func:`cryoscout.models.model_file`); ``None`` uses the default model.
    top_k
        Number of targets: the best full squares.
    size
        Square size in pixels for extraction; default: the model's input size.
    pixel_size_A
        Atlas pixel size in Å, overriding the file's.
    detail_k
        Lowest-ranked full squares shown as cards in the report, after the targets' cards.
    flat_field
        Divide the atlas tiles by the beam's fall-off estimated from them
        (:func:`cryoscout.atlas.stitch.stitch`); ``False`` for tiles already corrected.

    Returns
    -------
    ScreenResult
        The tables and the paths written.

    Raises
    ------
    InputError
        For an input, model or option a user can fix.
    """
    from cryoscout.io.runfolder import run_folder
    from cryoscout.models import model_label
    from cryoscout.screening.predict import load_model

    if top_k < 0:
        raise InputError("--top-k", "must be 0 or more")
    out_dir = Path(out_dir).absolute()
    # The output folder and the model first: both fail before minutes of extraction.
    with run_folder(out_dir) as folder:
        model = load_model(model_dir)
        size = size or model.size

        from cryoscout.atlas.extract import extract_squares
        from cryoscout.atlas.stitch import stitch
        from cryoscout.io.atlas_reader import open_atlas

        if input_path is None:
            log.info("simulating the example atlas into %s", out_dir / "example_atlas")
            make_example_atlas(folder / "example_atlas")
            input_path = out_dir / "example_atlas" / "Atlas.dm"  # where it will be
            source_path = folder / "example_atlas" / "Atlas.dm"
        else:
            source_path = input_path
        log.info("reading %s", input_path)
        source = open_atlas(source_path, pixel_size_A=pixel_size_A)
        with stage("stitching", input_path):
            montage = stitch(source, flat_field=flat_field)
        with stage("extracting squares", input_path):
            extraction = extract_squares(montage, size=size)
        config = {
            "input": str(Path(input_path).resolve()),
            "format": source.format,
            "model": model_label(model_dir),
            "top_k": top_k,
            "size": size,
            "pixel_size_A": pixel_size_A,
            "flat_field": flat_field,
        }
        result = screen_extraction(
            extraction,
            montage,
            model,
            folder,
            top_k=top_k,
            input_path=input_path,
            model_name=f"{model.kind} ({_model_where(model_dir)})",
            config=config,
            detail_k=detail_k,
        )
    # The staging folder is now the output folder: report where the files are.
    result.out_dir = out_dir
    result.files = {k: out_dir / p.relative_to(folder) for k, p in result.files.items()}
    return result


def _model_where(model_dir: str | os.PathLike | None) -> str:
    """Where the model came from, for the report: a shipped model's name or the path given."""
    from cryoscout.models import SHIPPED, model_label

    label = model_label(model_dir)
    return f"{label} model shipped with cryoscout" if label in SHIPPED else str(model_dir)


def screen_extraction(
    extraction: Any,
    montage: Any,
    model: _Model,
    out_dir: str | os.PathLike,
    top_k: int = 20,
    input_path: str | os.PathLike | None = None,
    model_name: str | None = None,
    config: dict[str, Any] | None = None,
    detail_k: int = 12,
) -> ScreenResult:
    """Score, rank and export squares already extracted (the second half of :func:`screen`).

    Parameters
    ----------
    extraction
        An :class:`cryoscout.atlas.extract.Extraction` (``.table``, ``.stack``
        ``(n, size, size)``, ``.pixel_size_A``).
    montage
        The :class:`cryoscout.io.atlas_source.Montage` the squares came from.
    model
        Anything with ``predict(stack) -> Predictions`` (``.scores``, ``.attention``).
    out_dir, top_k, detail_k
        As in :func:`screen`.
    input_path, model_name
        Shown in the report.
    config
        Recorded in ``config.yaml`` (the run record).

    Returns
    -------
    ScreenResult
    """
    from cryoscout.io.atomic import atomic_path, write_bytes
    from cryoscout.io.mrc import write_mrc
    from cryoscout.io.navigator import write_navigator
    from cryoscout.report.html import write_report
    from cryoscout.runinfo import write_run_config

    out_dir = Path(out_dir)
    table = extraction.table
    stack = np.asarray(extraction.stack)
    if len(table) == 0:
        raise InputError(input_path, "no grid squares found, so there is nothing to screen")
    log.info("scoring %d squares", len(table))
    with stage("scoring squares", input_path):
        predictions = model.predict(stack)
    scores = rank_squares(table, predictions.scores)
    targets = select_targets(scores, top_k)
    has_stage = montage.px_to_stage is not None
    attention = {k: np.asarray(v) for k, v in (predictions.attention or {}).items()}

    report_table = scores.copy()
    report_table["target"] = report_table["square_id"].isin(targets["square_id"])

    # Render everything in memory first: a failure here leaves no output behind.
    overview_png = _overview_png(montage, report_table, getattr(extraction, "lattice", None))
    files: dict[str, Path] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    files["squares"] = write_mrc(
        out_dir / "squares.mrcs", stack, getattr(extraction, "pixel_size_A", None), stack=True
    )
    files["scores"] = out_dir / "scores.csv"
    with atomic_path(files["scores"]) as tmp:
        scores.to_csv(tmp, index=False, float_format="%.4f")
    files["targets_csv"] = out_dir / "targets.csv"
    with atomic_path(files["targets_csv"]) as tmp:
        targets.to_csv(tmp, index=False, float_format="%.4f")
    stale_nav = out_dir / "targets.nav"
    if has_stage and len(targets):
        cols = zip(targets["rank"], targets["square_id"], targets["overall"], strict=True)
        notes = [f"cryoscout rank {r}, square {_id_text(q)}, overall {o:.2f}" for r, q, o in cols]
        files["targets_nav"] = write_navigator(
            stale_nav, targets, labels=list(targets["label"]), notes=notes
        )
    elif stale_nav.exists():  # a nav from an earlier run would contradict this one
        stale_nav.unlink()
    files["overview"] = write_bytes(out_dir / "overview.png", overview_png)
    record = dict(config or {})
    record.update(
        squares=len(scores),
        full_squares=int(scores["full"].sum()) if "full" in scores else len(scores),
        targets=len(targets),
        stage_positions=has_stage,
    )
    files["config"] = write_run_config(out_dir, record)
    files["report"] = write_report(
        out_dir / "report.html",
        overview_png,
        report_table,
        stack,
        attention,
        input_path=input_path,
        model=model_name,
        detail_k=detail_k,
        extra_meta={
            "Targets": f"{len(targets)} best full squares"
            + (" (targets.csv, targets.nav)" if has_stage else " (targets.csv; no stage data)")
        },
    )
    return ScreenResult(out_dir=out_dir, scores=scores, targets=targets, files=files)


def _overview_png(montage: Any, scores: pd.DataFrame, lattice: Any = None) -> bytes:
    """PNG bytes of the overview: squares coloured by predicted overall, targets marked."""
    from cryoscout.report.overview import overview_png

    return overview_png(
        montage.image,
        scores,
        color_by="overall",
        pitch_px=getattr(lattice, "pitch_px", None),
        angle_deg=getattr(lattice, "angle_deg", None),
        side_px=getattr(lattice, "square_side_px", None),
        pixel_size_A=getattr(montage, "pixel_size_A", None),
    )


#: Seed of the built-in example atlas: the README's main job always shows the same grid.
EXAMPLE_SEED = 7


def make_example_atlas(out_dir: str | os.PathLike, seed: int = EXAMPLE_SEED) -> Path:
    """Simulate the built-in example atlas (EPU format, fixed seed) into ``out_dir``.

    Small enough to simulate and screen in well under a minute on two CPU cores,
    with every kind of defect the model scores.

    Parameters
    ----------
    out_dir
        Folder for the atlas (created); it also receives the simulator's ``truth.csv``.
    seed
        Simulation seed; the example is always the same atlas by default.

    Returns
    -------
    pathlib.Path
        The ``Atlas.dm`` to screen.
    """
    from cryoscout.simulate.atlas import AtlasConfig, simulate_atlas, write_simulated_atlas

    # 3 x 3 tiles of 1024 px at 500 nm/px: about 300 squares of a 300-mesh grid,
    # with the simulator's default defect rates.
    sim = simulate_atlas(AtlasConfig(tiles_x=3, tiles_y=3), seed=seed)
    written = write_simulated_atlas(sim, out_dir, fmt="epu")
    return Path(written)
