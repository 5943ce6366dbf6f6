"""Pick many tomograms in one run: Lightning's prediction loop over a list of tomograms.

Each process (one per GPU under DDP or SLURM; one on a CPU) takes the tomograms
``rank::world_size`` of the full input list, so the share of each rank never depends on
timing, and skips those already done. A tomogram is segmented tile by tile, its picks
found by MP-NMS and written as one file per format, each atomically; a completion record
``<name>.done.json`` is written last, so a tomogram counts as done only when its files are
complete. When every tomogram is done, rank 0 gathers the RELION 5 files into one STAR file
(``rlnTomoName`` per tomogram). Rerunning the same command resumes an interrupted run.

Output folder::

    TS_01_picks.csv, TS_01_picks_relion5.star, ...   one file per tomogram and format
    TS_01.done.json                                  completion record (settings, counts)
    picks_relion5.star                               all tomograms (with relion5)
    config.yaml                                      run record
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as _pl
import torch as _torch

from cryoscout.errors import InputError

#: Pick files per format: ``<tomo name><suffix>``.
SUFFIX = {
    "csv": "_picks.csv",
    "coords": "_picks.coords",
    "relion4": "_picks_relion4.star",
    "relion5": "_picks_relion5.star",
}
#: File extensions taken as tomograms when a folder is given.
TOMOGRAM_EXTENSIONS = (".mrc", ".rec", ".map")
COMBINED_STAR = "picks_relion5.star"
_RECORD = ".done.json"


#: MP-NMS threshold of a class nothing chose one for (``pick train --val-tomogram``,
#: ``pick predict --threshold``).
DEFAULT_THRESHOLD = 0.1


@dataclass
class PickSettings:
    """How every tomogram of a run is picked (recorded with each tomogram).

    Attributes
    ----------
    threshold
        MP-NMS minimum pooled foreground fraction: one value, or one per class.
    particle_radius
        Particle radius in voxels per class (sizes MP-NMS).
    tile, margin
        Inference tile side and discarded margin, in voxels.
    formats
        Pick file formats (keys of :data:`SUFFIX`).
    tilt_series_pixel_size_A, binning
        For RELION 4 coordinates (unbinned tilt-series pixels).
    save_maps
        Also write ``<name>_segmentation.mrc`` and ``<name>_scores.mrc``.
    copick_picks
        ``user_id/session_id`` under which the picks of a copick project's tomograms are
        also stored in the project (``None``: not stored).
    max_surround
        MP-NMS isolation test (:func:`~cryoscout.picking.mpnms.mp_nms`): drop picks whose
        class fills more than this share of a shell around them; ``None``: off.
    """

    threshold: float | dict[int, float]
    particle_radius: dict[int, float]
    tile: int
    margin: int
    formats: tuple[str, ...] = ("csv", "relion5")
    tilt_series_pixel_size_A: float | None = None
    binning: float | None = None
    save_maps: bool = False
    copick_picks: str | None = "cryoscout/0"
    max_surround: float | None = None


@dataclass
class TomogramJob:
    """One tomogram to pick: its file, RELION name, and header facts."""

    path: Path
    name: str
    shape: tuple[int, int, int]  # (z, y, x)
    voxel_size_A: float | None
    copick: Any = None  # a cryoscout.io.copick_project.CopickTomogram (path: its config)


@dataclass
class Progress:
    """Overall progress, reported after each tomogram."""

    done: int
    total: int
    name: str
    n_picks: int
    seconds: float
    eta_s: float | None


@dataclass
class BatchResult:
    """What a run left in the output folder."""

    total: int
    skipped: int
    picked: int
    n_picks: int
    combined: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0  # of the process that returns it (only rank 0 should report)


def find_tomograms(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files, folders and glob patterns into a list of tomogram files.

    Parameters
    ----------
    inputs
        Tomogram files; folders (their ``.mrc``, ``.rec`` and ``.map`` files, sorted); glob
        patterns (``"tomos/*.mrc"``, ``"**"`` recursive), expanded here so that a quoted
        pattern works for thousands of files.

    Returns
    -------
    list of pathlib.Path
        In the order given, each file once.

    Raises
    ------
    InputError
        A path that does not exist, a folder or pattern with no tomogram, or no input.
    """
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            hits = sorted(p for p in path.iterdir() if p.suffix.lower() in TOMOGRAM_EXTENSIONS)
            if not hits:
                raise InputError(
                    path, f"folder holds no tomogram ({', '.join(TOMOGRAM_EXTENSIONS)})"
                )
        elif path.is_file():
            hits = [path]
        elif glob.has_magic(text):
            hits = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not hits:
                raise InputError(text, "pattern matches no file")
        else:
            raise InputError(path, "no such file or folder")
        found += hits
    if not found:
        raise InputError(None, "no tomogram given")
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The items one process takes: every ``world_size``-th from ``rank`` (no padding).

    Deterministic and independent of what is already done, so two processes never take
    the same tomogram and none is left out, even when one resumes later than another.

    Examples
    --------
    >>> shard(["a", "b", "c", "d", "e"], 1, 2)
    ['b', 'd']
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return list(items)[rank::world_size]


def plan_jobs(
    inputs: Sequence[str | os.PathLike],
    tomo_name: str | None = None,
    copick_voxel_size_A: float | None = None,
    copick_tomo_type: str | None = None,
) -> list[TomogramJob]:
    """The tomograms to pick, with their shape, voxel size and RELION name.

    Parameters
    ----------
    inputs
        Tomogram files, folders, glob patterns (see :func:`find_tomograms`), and copick
        project configurations (``.json``: one tomogram per run, named by the run).
    tomo_name
        ``rlnTomoName`` to use; only with a single tomogram. Default
        :func:`cryoscout.io.coords.tomo_name_from_path`.
    copick_voxel_size_A, copick_tomo_type
        Which tomogram of each copick run (needed when a run has several).

    Raises
    ------
    InputError
        An unreadable or non-3D file; two tomograms with the same name; ``tomo_name``
        with several tomograms.
    """
    from cryoscout.io.coords import tomo_name_from_path
    from cryoscout.io.mrc import read_mrc

    projects = [Path(i) for i in inputs if str(i).lower().endswith(".json")]
    others = [i for i in inputs if not str(i).lower().endswith(".json")]
    files = find_tomograms(others) if others or not projects else []
    jobs = []
    for path in files:
        data, voxel = read_mrc(path, mmap=True)  # header and a map, no data read
        if data.ndim != 3:
            raise InputError(path, f"expected a 3D tomogram, got an array of shape {data.shape}")
        name = tomo_name_from_path(path)
        jobs.append(TomogramJob(Path(path), name, tuple(int(n) for n in data.shape), voxel))
        del data
    if projects:
        from cryoscout.io.copick_project import list_copick_tomograms

        for config in projects:
            for t in list_copick_tomograms(config, copick_voxel_size_A, copick_tomo_type):
                jobs.append(TomogramJob(config, t.run, t.shape, t.voxel_size_A, copick=t))
    if tomo_name is not None:
        if len(jobs) != 1:
            raise InputError("--tomo-name", f"names one tomogram; {len(jobs)} given")
        jobs[0].name = tomo_name
    by_name: dict[str, Path] = {}
    for job in jobs:
        if job.name in by_name:
            raise InputError(
                job.path,
                f"has the same tomogram name {job.name!r} as {by_name[job.name]}; "
                "rename one (pick files are named by tomogram)",
            )
        by_name[job.name] = job.path
    return jobs


def record_path(out_dir: Path, name: str) -> Path:
    """Completion record of one tomogram."""
    return Path(out_dir) / f"{name}{_RECORD}"


def pick_files(out_dir: Path, name: str, settings: PickSettings) -> list[Path]:
    """The files one tomogram gets."""
    files = [Path(out_dir) / f"{name}{SUFFIX[f]}" for f in settings.formats]
    if settings.save_maps:
        files += [Path(out_dir) / f"{name}_segmentation.mrc", Path(out_dir) / f"{name}_scores.mrc"]
    return files


def settings_record(settings: PickSettings, model_sha256: str) -> dict[str, Any]:
    """Settings as stored in a completion record (JSON types)."""
    rec = asdict(settings)
    rec["formats"] = list(settings.formats)
    rec["particle_radius"] = {str(c): float(r) for c, r in settings.particle_radius.items()}
    rec["model_sha256"] = model_sha256
    if settings.max_surround is None:  # as recorded before the option existed: resumable
        del rec["max_surround"]
    return json.loads(json.dumps(rec))


def read_record(out_dir: Path, name: str) -> dict[str, Any] | None:
    """A tomogram's completion record, or ``None`` when absent or unreadable."""
    path = record_path(out_dir, name)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_done(out_dir: Path, job: TomogramJob, settings: dict[str, Any]) -> bool:
    """Whether ``job`` was picked with ``settings`` and all its files are there.

    Raises
    ------
    InputError
        When it was picked with other settings (another model, threshold, formats...):
        mixing them in one folder would make the combined file inconsistent.
    """
    rec = read_record(out_dir, job.name)
    if rec is None:
        return False
    if rec.get("settings") != settings:
        diff = sorted(k for k in settings if rec.get("settings", {}).get(k) != settings[k])
        raise InputError(
            record_path(out_dir, job.name),
            f"picked with other settings ({', '.join(diff)}); use another --out folder",
        )
    return all((Path(out_dir) / f).is_file() for f in rec.get("files", []))


def pick_tomogram(
    model,
    info,
    job: TomogramJob,
    out_dir: Path,
    settings: PickSettings,
    device="cpu",
    on_tile: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Segment one tomogram, find its picks by MP-NMS and write them (not the record).

    ``on_tile(done, total)`` is called after each segmented tile.

    Returns
    -------
    pandas.DataFrame
        ``class, name, x, y, z, score`` (voxels).
    """
    import contextlib

    import mrcfile

    from cryoscout.io.atomic import atomic_path
    from cryoscout.io.coords import write_picks
    from cryoscout.io.mrc import read_mrc
    from cryoscout.picking.infer import TomogramPrediction, predict_tomogram
    from cryoscout.picking.mpnms import mp_nms

    if job.copick is not None:
        from cryoscout.io.copick_project import open_copick_tomogram

        volume, voxel = open_copick_tomogram(job.copick), job.voxel_size_A
    else:
        volume, voxel = read_mrc(job.path, mmap=True)
    classes = list(range(1, model.num_classes + 1))
    with contextlib.ExitStack() as stack:
        out = None
        if settings.save_maps:
            # Written tile by tile into memory-mapped MRC files (tomograms larger than
            # memory work); renamed when complete.
            maps = []
            for suffix, mode in (("_segmentation.mrc", 0), ("_scores.mrc", 2)):
                tmp = stack.enter_context(atomic_path(Path(out_dir) / f"{job.name}{suffix}"))
                mrc = stack.enter_context(
                    mrcfile.new_mmap(tmp, shape=job.shape, mrc_mode=mode, overwrite=True)
                )
                if voxel is not None:
                    mrc.voxel_size = voxel
                maps.append(mrc.data)
            out = TomogramPrediction(labels=maps[0], scores=maps[1])
        pred = predict_tomogram(
            model,
            volume,
            tile=settings.tile,
            margin=settings.margin,
            normalization=info.normalization,
            device=str(device),
            out=out,
            on_tile=on_tile,
        )
        picks = mp_nms(
            np.asarray(pred.labels),
            settings.particle_radius,
            threshold=settings.threshold,
            classes=classes,
            max_surround=settings.max_surround,
        )
    picks.insert(1, "name", [info.class_names[c - 1] for c in picks["class"]])
    for fmt in settings.formats:
        write_picks(
            Path(out_dir) / f"{job.name}{SUFFIX[fmt]}",
            picks,
            fmt,
            tomo_name=job.name,
            voxel_size_A=voxel,
            shape=job.shape,
            tilt_series_pixel_size_A=settings.tilt_series_pixel_size_A,
            binning=settings.binning,
        )
    if job.copick is not None and settings.copick_picks:
        from cryoscout.io.copick_project import write_copick_picks

        user, _, session = settings.copick_picks.partition("/")
        write_copick_picks(job.copick, picks, user, session or "0")
    return picks


def write_record(
    out_dir: Path,
    job: TomogramJob,
    settings: PickSettings,
    settings_rec: dict[str, Any],
    picks: pd.DataFrame,
    seconds: float,
    rank: int = 0,
) -> dict[str, Any]:
    """Write the completion record of a tomogram whose files are all written."""
    from cryoscout import __version__
    from cryoscout.io.atomic import write_text

    rec = {
        "tomogram": str(job.path),
        "tomo_name": job.name,
        "shape_zyx": list(job.shape),
        "voxel_size_A": job.voxel_size_A,
        "files": [p.name for p in pick_files(out_dir, job.name, settings)],
        "n_picks": len(picks),
        "picks_per_class": {str(k): int(v) for k, v in picks["name"].value_counts().items()},
        "seconds": round(seconds, 2),
        "rank": rank,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cryoscout_version": __version__,
        "settings": settings_rec,
    }
    write_text(record_path(out_dir, job.name), json.dumps(rec, indent=1))
    return rec


def combine_relion5(out_dir: Path, jobs: Sequence[TomogramJob]) -> Path:
    """Gather the tomograms' RELION 5 pick files into one STAR file, in input order."""
    import starfile

    from cryoscout.io.atomic import atomic_path

    tables = []
    for job in jobs:
        path = Path(out_dir) / f"{job.name}{SUFFIX['relion5']}"
        star = starfile.read(path)
        table = star.get("particles") if isinstance(star, dict) else star
        if isinstance(table, pd.DataFrame) and len(table):
            tables.append(table)
    columns = ["rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst"]
    columns += ["rlnCenteredCoordinateZAngst", "rlnClassNumber", "rlnAutopickFigureOfMerit"]
    combined = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    dest = Path(out_dir) / COMBINED_STAR
    with atomic_path(dest) as tmp:
        starfile.write({"particles": combined}, tmp, overwrite=True)
    return dest


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (identifies the model in completion records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def predict_many(
    model_path: str | os.PathLike,
    tomograms: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: PickSettings | None = None,
    tomo_name: str | None = None,
    copick_voxel_size_A: float | None = None,
    copick_tomo_type: str | None = None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    strategy: str = "auto",
    on_progress: Callable[[Progress], None] | None = None,
    run_config: dict[str, Any] | None = None,
) -> BatchResult:
    """Pick every tomogram with Lightning's prediction loop; resume where a run stopped.

    Parameters
    ----------
    model_path
        ``model.pt`` or its run folder (``cryoscout pick train``).
    tomograms
        Files, folders, glob patterns or copick configurations (see :func:`plan_jobs`).
    out_dir
        Output folder (see the module docstring).
    settings
        Picking settings; default :func:`default_settings` for the model.
    tomo_name
        ``rlnTomoName`` for a single tomogram.
    copick_voxel_size_A, copick_tomo_type
        Which tomogram of each copick run.
    accelerator, devices, num_nodes, strategy
        Passed to :class:`pytorch_lightning.Trainer` (``"ddp"`` for several GPUs or nodes;
        under SLURM, Lightning reads the ranks from the environment).
    on_progress
        Called on rank 0 after each of its tomograms, with the overall count of done
        tomograms read from the output folder (so it covers every rank).
    run_config
        Extra entries for ``config.yaml`` (written by rank 0 when all are done).

    Returns
    -------
    BatchResult
        Counts, and the combined STAR file (when ``relion5`` is among the formats).

    Raises
    ------
    InputError
        Bad model or tomogram, or an output folder picked with other settings; checked
        for every tomogram before any is picked.
    KeyboardInterrupt
        Interrupted (Ctrl-C); finished tomograms stay done, rerun to resume.
    """
    import warnings

    from cryoscout.picking.weights import load_model
    from cryoscout.training import quiet_lightning, run_interruptibly

    out_dir = Path(out_dir)
    model, info = load_model(model_path)
    model_file = Path(model_path) / "model.pt" if Path(model_path).is_dir() else Path(model_path)
    settings = settings or default_settings(model, info)
    jobs = plan_jobs(tomograms, tomo_name, copick_voxel_size_A, copick_tomo_type)
    _check_formats(jobs, settings)
    sig = settings_record(settings, file_sha256(model_file))
    pending = [i for i, job in enumerate(jobs) if not is_done(out_dir, job, sig)]
    out_dir.mkdir(parents=True, exist_ok=True)
    if pending:  # an older combined file would look complete if this run stops early
        (out_dir / COMBINED_STAR).unlink(missing_ok=True)

    picker = _Picker(model, info, jobs, out_dir, settings, sig)
    data = _TomogramData(len(jobs), pending)
    callbacks = [_Finish(jobs, out_dir, settings, sig, on_progress, run_config)]
    trainer = _pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # _TomogramData shards by rank itself, unpadded
        callbacks=callbacks,
    )
    with quiet_lightning(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*num_workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        run_interruptibly(
            trainer, lambda: trainer.predict(picker, datamodule=data, return_predictions=False)
        )
    records = [read_record(out_dir, job.name) for job in jobs]
    done = [r for r in records if r is not None and r.get("settings") == sig]
    combined = out_dir / COMBINED_STAR
    return BatchResult(
        total=len(jobs),
        skipped=len(jobs) - len(pending),
        picked=len(pending),
        n_picks=sum(int(r["n_picks"]) for r in done),
        combined=combined if "relion5" in settings.formats and combined.is_file() else None,
        records=done,
        rank=trainer.global_rank,
    )


def _check_formats(jobs: Sequence[TomogramJob], settings: PickSettings) -> None:
    """Refuse, before any tomogram is picked, what a writer would refuse after segmenting."""
    from cryoscout.io.coords import relion4_scale

    for job in jobs:
        if "relion5" in settings.formats and job.voxel_size_A is None:
            raise InputError(job.path, "no pixel size in the header; RELION 5 STAR needs it")
        if "relion4" in settings.formats:
            ts, binning = settings.tilt_series_pixel_size_A, settings.binning
            relion4_scale(job.path, job.voxel_size_A, ts, binning)


def default_settings(model, info, **overrides) -> PickSettings:
    """Settings from what the model records: MP-NMS sized by the particle radius.

    The particle radius comes from ``pick train --val-radius``, else about 1.7x the label
    radius (labels are ~0.6 of the particle radius); the thresholds per class from
    ``pick train --val-tomogram``, else 0.1; the tile is the training patch.
    """
    classes = range(1, model.num_classes + 1)
    recorded = {int(c): float(r) for c, r in info.extra.get("particle_radius", {}).items()}
    radius = {c: recorded.get(c, 1.7 * info.radius.get(c, 1.0)) for c in classes}
    chosen = {int(c): float(t) for c, t in info.extra.get("threshold", {}).items()}
    threshold = (
        {c: chosen.get(c, DEFAULT_THRESHOLD) for c in classes} if chosen else DEFAULT_THRESHOLD
    )
    tile = info.patch_size
    base = {
        "threshold": threshold,
        "particle_radius": radius,
        "tile": tile,
        "margin": max(tile // 6, 1),
    }
    base.update(overrides)
    return PickSettings(**base)


# --- Lightning pieces -------------------------------------------------------------------


class _Indices(_torch.utils.data.Dataset):
    """Indices of the tomograms this rank picks (the tomograms are read in the step)."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return self.indices[i]


class _TomogramData(_pl.LightningDataModule):
    """Pending tomograms, sharded ``rank::world_size`` over the full input list."""

    def __init__(self, n_total: int, pending: Sequence[int]) -> None:
        super().__init__()
        self.n_total, self.pending = n_total, list(pending)

    def predict_dataloader(self):
        # The rank's share of the *full* list, less what is done: the split never depends
        # on what other ranks have finished, so no tomogram is taken twice or left out.
        mine = set(shard(range(self.n_total), self.trainer.global_rank, self.trainer.world_size))
        todo = [i for i in self.pending if i in mine]
        return _torch.utils.data.DataLoader(_Indices(todo), batch_size=None, shuffle=False)


class _Picker(_pl.LightningModule):
    """Prediction step: one tomogram, from reading it to its completion record."""

    def __init__(self, model, info, jobs, out_dir, settings, settings_rec) -> None:
        super().__init__()
        self.model = model
        self.info, self.jobs, self.out_dir = info, jobs, out_dir
        self.settings, self.settings_rec = settings, settings_rec

    def predict_step(self, batch, batch_idx: int) -> dict[str, Any]:
        job = self.jobs[int(batch)]
        t0 = time.perf_counter()
        picks = pick_tomogram(self.model, self.info, job, self.out_dir, self.settings, self.device)
        seconds = time.perf_counter() - t0
        return write_record(
            self.out_dir, job, self.settings, self.settings_rec, picks, seconds, self.global_rank
        )


class _Finish(_pl.Callback):
    """Overall progress after each tomogram; the combined STAR when every rank is done."""

    def __init__(self, jobs, out_dir, settings, settings_rec, on_progress, run_config) -> None:
        self.jobs, self.out_dir = jobs, out_dir
        self.settings, self.settings_rec = settings, settings_rec
        self.on_progress, self.run_config = on_progress, run_config

    def _n_done(self) -> int:
        return sum(record_path(self.out_dir, j.name).is_file() for j in self.jobs)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._t0, self._done0 = time.perf_counter(), self._n_done()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.is_global_zero or self.on_progress is None:
            return
        done = self._n_done()
        rate = (done - self._done0) / max(time.perf_counter() - self._t0, 1e-9)
        eta = (len(self.jobs) - done) / rate if rate > 0 else None
        rec = outputs or {}
        self.on_progress(
            Progress(
                done,
                len(self.jobs),
                rec.get("tomo_name", ""),
                int(rec.get("n_picks", 0)),
                float(rec.get("seconds", 0.0)),
                eta,
            )
        )

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("cryoscout-picks-done")
        if not trainer.is_global_zero:
            return
        if "relion5" in self.settings.formats:
            combine_relion5(self.out_dir, self.jobs)
        from cryoscout.runinfo import write_run_config

        config = {"tomograms": len(self.jobs), "settings": self.settings_rec}
        write_run_config(self.out_dir, {**config, **(self.run_config or {})})
