"""Training the picking network with PyTorch Lightning.

Loss: multi-class soft Dice over *all* output channels (background and every
particle class, equally weighted), each channel's Dice computed over the whole
batch: ``1 - mean_c (2 Σ p_c g_c + ε) / (Σ p_c + Σ g_c + ε)``. Pooling over the
batch keeps a class that is absent from one patch from dominating the loss.
Optionally (``loss="dice+ce"``) voxel-wise cross-entropy is added, as in nnU-Net:
it gives gradients while Dice's are weak (prediction near uniform), but on sparse TBall
labels it can settle on all-background (seen on a 768-patch CPU run), so Dice stays the
default.
Optimiser: AdamW with a one-cycle learning-rate schedule stepped every batch.
The same code runs on CPU, one GPU or several GPUs (DDP): only the Trainer's
``accelerator``, ``devices``, ``strategy`` and ``precision`` change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from cryoscout.picking.data import Augmentation, PatchDataset, TrainingTomogram
from cryoscout.picking.unet import ResUNet3d


def soft_dice_loss(
    logits: torch.Tensor,  # (b, C, d, h, w)
    target: torch.Tensor,  # (b, d, h, w) int64 in [0, C)
    eps: float = 1.0,
) -> torch.Tensor:  # scalar in [0, 1)
    """Multi-class soft Dice loss over background + classes (mean over channels).

    Parameters
    ----------
    logits
        Network output before softmax.
    target
        Class index of every voxel (0 = background).
    eps
        Smoothing; a channel absent from both prediction and target scores Dice 1.
    """
    n_cls = logits.shape[1]
    prob = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target, n_cls).permute(0, 4, 1, 2, 3).to(prob.dtype)
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice.mean()


LOSSES = ("dice", "dice+ce")


def picking_loss(
    logits: torch.Tensor,  # (b, C, d, h, w)
    target: torch.Tensor,  # (b, d, h, w) int64 in [0, C)
    kind: str = "dice",
) -> torch.Tensor:  # scalar
    """Training loss: soft Dice, or soft Dice plus cross-entropy.

    Parameters
    ----------
    logits, target
        As for :func:`soft_dice_loss`.
    kind
        ``"dice"`` (DeepETPicker) or ``"dice+ce"`` (Dice + mean voxel cross-entropy).
    """
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    loss = soft_dice_loss(logits, target)
    if kind == "dice+ce":
        loss = loss + F.cross_entropy(logits.float(), target)
    return loss


@dataclass
class TrainConfig:
    """Options of one training run (recorded in ``config.yaml``).

    Attributes
    ----------
    channels
        Encoder channels per level.
    coord_mode
        ``"patch"`` or ``"tomogram"`` coordinate channels.
    patch_size
        Training patch side in voxels.
    epochs, batch_size, samples_per_epoch
        Schedule: ``samples_per_epoch`` random patches per epoch.
    lr, weight_decay
        AdamW; ``lr`` is the one-cycle peak.
    background_fraction
        Share of patches at random positions.
    distractor_fraction
        Share of patches centred on known distractors (learned negatives; needs
        ``TrainingTomogram.negatives``).
    seed
        Seeds patch sampling, augmentation and weight initialisation.
    accelerator, devices, strategy, precision
        Passed to ``pytorch_lightning.Trainer``.
    num_workers
        Data-loader workers.
    val_every
        Epochs between validation F1 evaluations (when a validation tomogram is given).
    augmentation
        Augmentation settings.
    loss
        ``"dice"`` or ``"dice+ce"`` (see :func:`picking_loss`).
    """

    channels: tuple[int, ...] = (24, 48, 72, 108)
    coord_mode: str = "patch"
    patch_size: int = 72
    epochs: int = 50
    batch_size: int = 4
    samples_per_epoch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    background_fraction: float = 0.25
    distractor_fraction: float = 0.0
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_workers: int = 0
    val_every: int = 1
    augmentation: Augmentation = field(default_factory=Augmentation)
    loss: str = "dice"


# A validation scorer: ``score(model) -> {"val_f1": ...}``, e.g. segment a held-out
# tomogram, pick and match against its annotations.
Validation = Callable[[ResUNet3d], dict[str, float]]


class PickingModule(pl.LightningModule):
    """Lightning wrapper: soft Dice loss, AdamW + OneCycleLR.

    Parameters
    ----------
    model
        The network.
    lr, weight_decay
        AdamW settings; ``lr`` is the one-cycle maximum.
    loss
        ``"dice"`` or ``"dice+ce"``.
    """

    def __init__(
        self,
        model: ResUNet3d,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        loss: str = "dice",
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss = loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch  # (b, 1, p, p, p), (b, p, p, p)
        loss = picking_loss(self.model(x), y, self.loss)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=total, pct_start=0.3
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        # New random patches every epoch (the dataset seeds items with the epoch).
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, PatchDataset):
            dataset.epoch = self.current_epoch


class _History(pl.Callback):
    """Collect one row of metrics per epoch; run the validation scorer.

    ``earlier`` rows (the metrics of an interrupted run) are kept up to the epoch the
    run resumes from, and ``elapsed_s`` goes on counting from theirs.
    """

    def __init__(
        self,
        validation: Validation | None,
        val_every: int,
        on_epoch=None,
        earlier: pd.DataFrame | None = None,
    ) -> None:
        self.rows: list[dict] = [] if earlier is None else earlier.to_dict("records")
        self.validation = validation
        self.val_every = max(1, val_every)
        self.on_epoch = on_epoch
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, module: PickingModule) -> None:
        # After a resume current_epoch is the number of epochs the checkpoint holds.
        self.rows = [r for r in self.rows if r["epoch"] <= trainer.current_epoch]
        before = float(self.rows[-1].get("elapsed_s", 0.0)) if self.rows else 0.0
        self._t0 = time.perf_counter() - before

    def on_train_epoch_end(self, trainer: pl.Trainer, module: PickingModule) -> None:
        m = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": float(m["train_loss"]) if "train_loss" in m else float("nan"),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
        }
        last = trainer.current_epoch + 1 == trainer.max_epochs
        if self.validation is not None and trainer.is_global_zero:
            if (trainer.current_epoch + 1) % self.val_every == 0 or last:
                was_training = module.model.training
                row.update(self.validation(module.model))
                module.model.train(was_training)
        row["elapsed_s"] = round(time.perf_counter() - self._t0, 2)
        self.rows.append(row)
        if self.on_epoch is not None and trainer.is_global_zero:
            self.on_epoch(pd.DataFrame(self.rows))


def train_model(
    tomograms: list[TrainingTomogram],
    num_classes: int,
    config: TrainConfig,
    validation: Validation | None = None,
    on_epoch: Callable[[pd.DataFrame], None] | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    history: pd.DataFrame | None = None,
    progress: bool = False,
    init: Mapping[str, torch.Tensor] | None = None,
) -> tuple[ResUNet3d, pd.DataFrame]:
    """Train a :class:`ResUNet3d` on patches of annotated tomograms.

    Parameters
    ----------
    tomograms
        Prepared training tomograms (normalised, with TBall-M labels).
    num_classes
        Number of particle classes.
    config
        Training options.
    validation
        Optional validation tomogram and scorer (its metrics join the history).
    on_epoch
        Called with the history so far after every epoch (e.g. to write metrics.csv).
    run_dir
        Where ``checkpoints/last.ckpt`` is kept after every epoch; None: no checkpoints.
    resume
        A checkpoint to continue from (``run_dir/checkpoints/last.ckpt``); the
        configuration must be the one of the run that wrote it.
    history
        The metrics of the run being resumed; its rows up to the checkpoint's epoch
        are kept at the head of the returned history.
    progress
        Show Lightning's progress bar within each epoch.
    init
        Weights to start from (a state_dict of the same architecture) instead of random
        ones: fine-tuning an earlier picker on more annotations.

    Returns
    -------
    model : ResUNet3d
        Trained, on the CPU, in eval mode.
    history : pandas.DataFrame
        One row per epoch: ``epoch, train_loss, lr``, validation metrics, ``elapsed_s``.

    Raises
    ------
    cryoscout.interrupt.Interrupted
        When Ctrl-C or SIGTERM stopped the run (``last.ckpt`` holds the last whole epoch).
    """
    import warnings

    from cryoscout.training import checkpoint_callback, quiet_lightning
    from cryoscout.training import fit as fit_interruptibly

    pl.seed_everything(config.seed, workers=True, verbose=False)
    model = ResUNet3d(num_classes, config.channels, config.coord_mode)
    if init is not None:
        model.load_state_dict(init, strict=True)
    dataset = PatchDataset(
        tomograms,
        patch_size=config.patch_size,
        samples_per_epoch=config.samples_per_epoch,
        background_fraction=config.background_fraction,
        augmentation=config.augmentation,
        seed=config.seed,
        distractor_fraction=config.distractor_fraction,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=False,  # items are already random; their order is fixed by the seed
        num_workers=config.num_workers,
        drop_last=len(dataset) >= config.batch_size,
        persistent_workers=False,
    )
    recorder = _History(validation, config.val_every, on_epoch, history)
    callbacks: list[pl.Callback] = [recorder]
    if run_dir is not None:
        callbacks.append(checkpoint_callback(run_dir))
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=config.precision,
        logger=False,
        enable_checkpointing=run_dir is not None,
        enable_progress_bar=progress,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    module = PickingModule(model, config.lr, config.weight_decay, config.loss)
    with quiet_lightning(), warnings.catch_warnings():
        # Lightning warns about few workers and small logging intervals on tiny runs.
        warnings.filterwarnings("ignore", message=".*num_workers.*")
        warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # resume
        fit_interruptibly(trainer, module, loader, ckpt_path=resume)
    model = module.model.cpu().eval()
    return model, pd.DataFrame(recorder.rows)
