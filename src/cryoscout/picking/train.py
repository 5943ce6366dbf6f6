"""Train a picker into a run folder: the one code path of ``pick train`` and the app.

:func:`train_picker` takes tomograms already read (arrays, memory maps or zarr arrays)
and their annotation tables; it paints the TBall-M labels, trains the network
(:func:`cryoscout.picking.module.train_model`), and writes the run folder's
``metrics.csv`` (after every epoch), ``model.pt`` and ``config.yaml``. Reading the
inputs, the run folder's lock and ``INCOMPLETE`` marker
(:func:`cryoscout.io.runfolder.resumable_run_folder`) and anything printed stay with the
caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoscout.picking.module import TrainConfig
from cryoscout.picking.weights import PickingModelInfo

METRICS = "metrics.csv"
MODEL = "model.pt"


@dataclass
class PickerTrainResult:
    """What :func:`train_picker` left in the run folder.

    Attributes
    ----------
    model
        The trained network (CPU, eval mode).
    info
        The metadata saved with it.
    history
        One row per epoch (``epoch, train_loss, lr``, validation F1, ``elapsed_s``).
    record
        The run record written to ``config.yaml``.
    model_path
        ``out_dir/model.pt``.
    """

    model: Any
    info: PickingModelInfo
    history: pd.DataFrame
    record: dict[str, Any]
    model_path: Path


def train_picker(
    volumes: Sequence[np.ndarray],
    tables: Sequence[pd.DataFrame],
    class_names: Sequence[str],
    label_radius: Mapping[int, float],
    config: TrainConfig,
    out_dir: str | os.PathLike,
    particle_radius: Mapping[int, float] | None = None,
    voxel_size_A: float | None = None,
    validation: Sequence[tuple[np.ndarray, pd.DataFrame]] | None = None,
    on_epoch: Callable[[pd.DataFrame], None] | None = None,
    resume: str | os.PathLike | None = None,
    init: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    progress: bool = False,
    negatives: Sequence[pd.DataFrame | None] | None = None,
    lowpass_A: float = 0.0,
) -> PickerTrainResult:
    """Train the 3D U-Net on annotated tomograms and write the run folder.

    Parameters
    ----------
    volumes
        ``(z, y, x)`` tomograms, raw intensities (each is read once, to normalise it).
    tables
        One annotation table per tomogram: ``class`` (1-based), ``x, y, z`` (voxels).
    class_names
        Names of classes 1..n.
    label_radius
        TBall-M label radius in voxels per class.
    config
        Training options (architecture, schedule, devices, augmentation).
    out_dir
        The run folder (existing); ``metrics.csv`` is rewritten after every epoch.
    particle_radius
        Particle radius in voxels per class: the hit radius of validation and the MP-NMS
        size recorded for prediction (default: prediction uses 1.7x the label radius).
    voxel_size_A
        Voxel size of the training tomograms, recorded with the weights.
    validation
        Held-out ``(volume, annotations)`` pairs, one or more: scored by F1 (their counts
        pooled) every ``config.val_every`` epochs, and the final model's per-class MP-NMS
        thresholds chosen on them (:func:`~cryoscout.picking.thresholds.choose_thresholds`).
    on_epoch
        Called with the history so far after every epoch (after ``metrics.csv`` is written).
    resume
        ``out_dir/checkpoints/last.ckpt`` of an interrupted run to continue (same options);
        the epochs of its ``metrics.csv`` are kept.
    init
        A state_dict to start from (fine-tuning a picker with the same classes and
        architecture) instead of random weights.
    inputs
        What the run was trained on (paths, ids), added to ``config.yaml``.
    progress
        Show Lightning's progress bar within each epoch.
    negatives
        One table per tomogram (or ``None``) of points known *not* to be particles
        (``x, y, z`` voxels; with ``kind, radius``, a vesicle gives points on its
        membrane: :func:`~cryoscout.picking.data.distractor_points`).
        ``config.distractor_fraction`` of the patches are centred on them (learned
        negatives).
    lowpass_A
        Gaussian low-pass of the input, sigma in Å (``pick train --lowpass``; needs
        ``voxel_size_A``), at training and validation; recorded in the model's
        normalisation (``lowpass_sigma`` in voxels, ``lowpass_A``) so that prediction
        applies the same filter. 0: off.

    Returns
    -------
    PickerTrainResult

    Raises
    ------
    ValueError
        ``lowpass_A`` negative or not finite, or given without ``voxel_size_A``.
    cryoscout.interrupt.Interrupted
        Ctrl-C or SIGTERM (``checkpoints/last.ckpt`` holds the last whole epoch).
    """
    from cryoscout.io.atomic import atomic_path
    from cryoscout.picking.data import NORMALIZATION, prepare_tomogram
    from cryoscout.picking.lowpass import sigma_voxels
    from cryoscout.picking.module import train_model
    from cryoscout.picking.weights import save_model
    from cryoscout.runinfo import write_run_config

    out_dir = Path(out_dir)
    names = list(class_names)
    num_classes = len(names)
    radius_map = {int(c): float(r) for c, r in label_radius.items()}
    negatives = list(negatives) if negatives is not None else [None] * len(volumes)
    normalization = dict(NORMALIZATION)
    sigma = 0.0
    if lowpass_A:
        sigma = sigma_voxels(lowpass_A, voxel_size_A)
        normalization.update(lowpass_sigma=sigma, lowpass_A=float(lowpass_A))
    prepared = [
        prepare_tomogram(
            vol, table, radius_map, NORMALIZATION["clip"], distractors=neg, lowpass_sigma=sigma
        )
        for vol, table, neg in zip(volumes, tables, negatives, strict=True)
    ]
    hit = {int(c): float(r) for c, r in (particle_radius or radius_map).items()}
    scorer = None
    if validation:
        scorer = _validation_scorer(
            validation, hit, num_classes, names, config.patch_size, normalization
        )

    metrics_path = out_dir / METRICS
    earlier = None
    if resume is not None and metrics_path.is_file():
        earlier = pd.read_csv(metrics_path)

    def write_metrics(history: pd.DataFrame) -> None:
        with atomic_path(metrics_path) as tmp:
            history.to_csv(tmp, index=False, float_format="%.6g")
        if on_epoch is not None:
            on_epoch(history)

    model, history = train_model(
        prepared,
        num_classes,
        config,
        scorer,
        write_metrics,
        run_dir=out_dir,
        resume=resume,
        history=earlier,
        progress=progress,
        init=init,
    )
    extra: dict[str, Any] = {
        "epochs": config.epochs,
        "seed": config.seed,
        "samples_per_epoch": config.samples_per_epoch,
    }
    if particle_radius:
        extra["particle_radius"] = {str(c): float(r) for c, r in hit.items()}
    val_f1_at: dict[int, float] = {}
    if validation:
        # Each class's MP-NMS threshold from the final model on the validation tomograms;
        # pick predict uses them unless told otherwise.
        from cryoscout.picking.thresholds import choose_thresholds

        segmented = [
            (_segment(model, volume, config.patch_size, normalization), truth)
            for volume, truth in validation
        ]
        classes = list(range(1, num_classes + 1))
        chosen, val_f1_at = choose_thresholds(segmented, hit, classes)
        if chosen:
            extra["threshold"] = {str(c): t for c, t in chosen.items()}
    info = PickingModelInfo(
        class_names=names,
        radius=radius_map,
        patch_size=config.patch_size,
        normalization=normalization,
        voxel_size_A=voxel_size_A,
        extra=extra,
    )
    model_path = save_model(out_dir / MODEL, model, info)
    record = {
        **dict(inputs or {}),
        "n_particles": int(sum(len(t) for t in tables)),
        "n_negative_points": int(sum(len(t.negatives) for t in prepared)),
        "class_names": names,
        "label_radius": radius_map,
        "lowpass_A": float(lowpass_A),
        **{k: v for k, v in config.__dict__.items() if k != "augmentation"},
        "augmentation": dict(config.augmentation.__dict__),
        "final_train_loss": float(history["train_loss"].iloc[-1]),
        "resumed": resume is not None,
        "init": init is not None,
    }
    if "val_f1" in history:
        record["final_val_f1"] = float(history["val_f1"].dropna().iloc[-1])
    if val_f1_at:
        record["threshold"] = extra["threshold"]
        record["val_f1_at_threshold"] = {names[c - 1]: f for c, f in val_f1_at.items()}
    write_run_config(out_dir, record)
    return PickerTrainResult(model, info, history, record, model_path)


def _segment(model, volume, patch: int, normalization: dict) -> np.ndarray:
    """The class map of a validation tomogram, tiled as ``pick predict`` tiles it.

    ``normalization`` is the model's (with its low-pass), so validation sees what
    prediction will.
    """
    from cryoscout.picking.infer import predict_tomogram

    volume = np.asarray(volume, dtype=np.float32)
    margin = max(patch // 6, 1)
    pred = predict_tomogram(
        model, volume, tile=patch, margin=margin, normalization=normalization, progress=False
    )
    return np.asarray(pred.labels)


def _validation_scorer(validation, hit, num_classes, names, patch, normalization):
    """``score(model) -> {"val_f1": ..., "val_f1_<name>": ...}`` on held-out tomograms
    (counts pooled over them)."""
    from cryoscout.picking.evaluate import evaluate_picks, stack_tomograms
    from cryoscout.picking.mpnms import mp_nms

    classes = list(range(1, num_classes + 1))
    truth = stack_tomograms([t for _, t in validation])

    def score(model) -> dict[str, float]:
        # Sized by the particle (hit) radius: by the smaller label radius one particle's
        # blob splits into several picks.
        picks = stack_tomograms(
            [
                mp_nms(_segment(model, volume, patch, normalization), hit, classes=classes,
                       progress=False)
                for volume, _ in validation
            ]
        )  # fmt: skip
        result = evaluate_picks(picks, truth, hit)
        scores = {"val_f1": float(result.overall["f1"])}
        for c, row in result.per_class.iterrows():
            scores[f"val_f1_{names[int(c) - 1]}"] = float(row["f1"])
        return scores

    return score
