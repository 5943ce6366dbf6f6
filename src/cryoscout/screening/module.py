"""Lightning module: XCryoNet's three alternating training steps (manual optimisation).

Each batch runs the paper's three steps in order:

1. the feature networks, the primary and attribute classifiers and the primary
   decoder, on the supervised losses of the primary and attribute branches plus
   the primary reconstruction loss;
2. only the attribute branches' feature networks and decoders, on their
   reconstruction losses (the attention-weighted inputs are detached, so the
   decoders do not shape the attention);
3. only the fusion branch, on the supervised loss (features detached).

Supervised losses use labeled squares only: a NaN label is masked out, so an
unlabeled square (all NaN) or a partly labeled one contributes nothing to them.
Reconstruction losses use every square in the batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from cryoscout.errors import InputError, stage
from cryoscout.screening.model import ATTRIBUTE_INDEX, XCryoNet


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries whose target is not NaN.

    Parameters
    ----------
    pred, target
        Tensors of the same shape; NaN in ``target`` marks a missing label.

    Returns
    -------
    torch.Tensor
        Scalar; 0 (still differentiable) when no target is present.
    """
    valid = ~torch.isnan(target)
    if not bool(valid.any()):
        return pred.sum() * 0.0
    diff = pred[valid] - target[valid]
    return (diff * diff).mean()


def supervised_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's eq. 2: MSE over the four attributes + MSE over overall (masked).

    Parameters
    ----------
    scores, labels
        ``(b, 5)`` predictions and labels in :data:`~cryoscout.screening.model.SCORES` order.
    """
    return masked_mse(scores[:, :4], labels[:, :4]) + masked_mse(scores[:, 4], labels[:, 4])


class XCryoNetModule(pl.LightningModule):
    """Trains :class:`~cryoscout.screening.model.XCryoNet` with the three-step schedule.

    Parameters
    ----------
    variant, size, width
        Passed to :class:`~cryoscout.screening.model.XCryoNet`.
    lr
        Adam learning rate of each of the three optimisers.
    freeze_norm
        Keep the batch-norm statistics as they are (fine-tuning): with a few
        dozen labels, a handful of small batches would otherwise replace the
        statistics learnt on thousands of squares and shift every prediction.
    """

    def __init__(
        self,
        variant: str = "xcryonet",
        size: int = 128,
        width: int = 16,
        lr: float = 1e-3,
        freeze_norm: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = XCryoNet(variant, size, width)
        self.lr = lr
        self.freeze_norm = freeze_norm

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.freeze_norm:  # Lightning puts the module in train mode each epoch
            for m in self.net.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def configure_optimizers(self):
        groups = self.net.parameter_groups()
        steps = ("step1", "step2", "step3")
        return [torch.optim.Adam(groups[k], lr=self.lr) for k in steps if groups[k]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, 1, s, s) -> (b, 5)
        return self.net(x, reconstruct="none").scores

    # The three steps' losses, separate so that tests can check what each one updates.
    def step1_loss(self, x: torch.Tensor, y: torch.Tensor):
        """Step 1 loss: primary + attribute supervised losses and primary reconstruction.

        Returns ``(loss, forward output, {name: loss term})``.
        """
        out = self.net(x, reconstruct="primary")
        loss_sp = supervised_loss(out.primary_scores, y)
        loss_up = torch.mean((out.primary_recon - x) ** 2)
        loss_sa = torch.zeros((), device=x.device)
        for name, i in ATTRIBUTE_INDEX.items():
            if name in out.attribute_scores:
                loss_sa = loss_sa + masked_mse(out.attribute_scores[name], y[:, i])
        logs = {"loss_primary_sup": loss_sp, "loss_primary_rec": loss_up}
        if self.net.variant == "xcryonet":
            logs["loss_attr_sup"] = loss_sa
        return loss_sp + loss_up + loss_sa, out, logs

    def step2_loss(self, out):
        """Step 2 loss: attribute reconstruction of the detached weighted inputs.

        Returns ``(loss, {name: detached attribute feature maps})``.
        """
        loss = torch.zeros((), device=out.scores.device)
        feats = {}
        for name, branch in self.net.attribute_branches.items():
            w = out.weighted[name].detach()  # (b, 1, s, s)
            f = branch.features(w)  # (b, 2w, s/4, s/4)
            feats[name] = f.detach()
            loss = loss + torch.mean((branch.decoder(f) - w) ** 2)
        return loss, feats

    def step3_loss(self, out, feats: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """Step 3 loss: the fusion branch's supervised loss on detached features."""
        return supervised_loss(self.net.fuse(out.primary_features.detach(), feats), y)

    def _step(self, opt, loss: torch.Tensor) -> None:
        # Clearing every gradient first means an optimiser only ever sees this step's gradients.
        self.net.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()

    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch  # (b, 1, s, s), (b, 5) with NaN for missing labels
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        loss1, out, logs = self.step1_loss(x, y)
        self._step(opts[0], loss1)
        if self.net.variant == "xcryonet":
            loss2, feats = self.step2_loss(out)
            self._step(opts[1], loss2)
            loss3 = self.step3_loss(out, feats, y)
            self._step(opts[2], loss3)
            logs |= {"loss_attr_rec": loss2, "loss_fusion": loss3}
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in logs.items()},
            on_step=False,
            on_epoch=True,
            batch_size=x.shape[0],
        )

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        scores = self.net(x, reconstruct="none").scores
        err = torch.abs(scores.clamp(0, 4) - y)
        self.log("val/mad_overall", torch.nanmean(err[:, 4]), batch_size=x.shape[0])
        self.log("val/mad_mean", torch.nanmean(err), batch_size=x.shape[0], prog_bar=True)


#: Logged metrics in the per-epoch line of ``cryoscout train``, with their labels
#: (see :func:`cryoscout.training.epoch_reporter`).
EPOCH_METRICS = {
    "train/loss_primary_sup": "primary loss",
    "train/loss_fusion": "fusion loss",
    "val/mad_mean": "held-out |error|",
}


def fit(
    module: XCryoNetModule,
    train_set,
    run_dir: str | os.PathLike,
    epochs: int,
    batch_size: int = 32,
    seed: int = 0,
    val_set=None,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
    resume: str | os.PathLike | None = None,
    progress: bool = False,
    callbacks: list | None = None,
    num_workers: int = 0,
) -> XCryoNetModule:
    """Train ``module`` with a Lightning ``Trainer``: CPU, GPU, DDP and SLURM alike.

    Lightning picks the cluster environment (SLURM included) and the
    distributed strategy from ``accelerator``, ``devices`` and ``num_nodes``.

    Parameters
    ----------
    module
        The module to train (modified in place and returned).
    train_set, val_set
        Torch datasets of ``(image (1, s, s), labels (5,))``.
    run_dir
        Where ``metrics.csv`` and ``checkpoints/`` (``last.ckpt``) are written.
    epochs, batch_size, seed
        Schedule and the seed of every random choice (shuffling, initialisation).
    accelerator, devices, num_nodes, precision
        Passed to :class:`pytorch_lightning.Trainer`.
    resume
        A checkpoint to continue from (``run_dir/checkpoints/last.ckpt``).
    progress
        Show Lightning's progress bar.
    callbacks
        More Lightning callbacks (e.g. the app's progress reporter).
    num_workers
        Processes that assemble training batches (0: the training process itself).

    Raises
    ------
    cryoscout.interrupt.Interrupted
        When Ctrl-C or SIGTERM stopped the run (``last.ckpt`` holds the last whole epoch).
    """
    import warnings

    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from cryoscout.training import checkpoint_callback
    from cryoscout.training import fit as fit_interruptibly

    run_dir = Path(run_dir)
    pl.seed_everything(seed, workers=True, verbose=False)
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=accelerator == "gpu",
    )
    val_loader = DataLoader(val_set, batch_size=batch_size) if val_set is not None else None
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        precision=precision,
        default_root_dir=run_dir,
        logger=CSVLogger(save_dir=run_dir, name="", version=""),
        callbacks=[checkpoint_callback(run_dir), *(callbacks or [])],
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    # Lightning's CSV logger starts metrics.csv afresh: keep the epochs before a resume.
    metrics = run_dir / "metrics.csv"
    earlier = metrics.read_text() if resume is not None and metrics.is_file() else None
    try:
        with warnings.catch_warnings():
            # Small datasets trigger Lightning's "few batches"/"num_workers" advice: not useful.
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*number of training batches.*")
            warnings.filterwarnings("ignore", ".*exists and is not empty.*")
            fit_interruptibly(trainer, module, loader, val_loader, ckpt_path=resume)
    finally:  # an interrupted resume keeps the earlier epochs too
        if earlier and metrics.is_file() and trainer.is_global_zero:
            import io

            import pandas as pd

            from cryoscout.io.atomic import write_text

            merged = pd.concat([pd.read_csv(io.StringIO(earlier)), pd.read_csv(metrics)])
            write_text(metrics, merged.to_csv(index=False))
    return module


def evaluate(net: XCryoNet, images: np.ndarray, labels: np.ndarray, batch_size: int = 64):
    """Mean absolute difference per score of ``net`` on normalised squares.

    Parameters
    ----------
    net
        The network (put in eval mode).
    images
        ``(n, s, s)`` normalised squares at the network's size.
    labels
        ``(n, 5)`` true scores (NaN = not labeled).

    Returns
    -------
    dict
        Score name -> mean absolute difference.
    """
    from cryoscout.screening.metrics import mean_abs_diff

    return mean_abs_diff(predict_normalised(net, images, batch_size), labels)


def predict_normalised(net: XCryoNet, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``(n, 5)`` scores clipped to [0, 4] for already normalised ``(n, s, s)`` squares.

    Runs on the device that holds ``net``'s parameters.
    """
    net.eval()
    device = next(net.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            scores = net(batch[:, None].float().to(device), reconstruct="none").scores
            out.append(scores.clamp(0, 4).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 5), np.float32)


def train_run(
    folders: list[str | os.PathLike],
    run_dir: str | os.PathLike,
    variant: str = "xcryonet",
    n_labeled: int = -1,
    n_unlabeled: int = 0,
    epochs: int = 20,
    size: int = 128,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 1e-3,
    width: int = 16,
    normalisation: str = "atlas",
    test_fraction: float = 0.2,
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
    resume: str | os.PathLike | None = None,
    augment=None,
    progress: bool = False,
    init: str | os.PathLike | None = None,
    callbacks: list | None = None,
) -> dict:
    """The ``cryoscout train`` operation: read, split, train, evaluate, save.

    Writes into ``run_dir`` (marked ``INCOMPLETE`` until the run ends, see
    :func:`cryoscout.io.runfolder.resumable_run_folder`): ``model.pt``
    (see :func:`cryoscout.screening.predict.save_model`),
    ``config.yaml`` (version, command line, options, data and split sizes, test error),
    ``metrics.csv`` (Lightning's CSV log) and ``checkpoints/last.ckpt``.

    Parameters
    ----------
    folders
        Extraction folders with ``labels.csv``.
    n_labeled, n_unlabeled
        Labeled squares to train on (-1: all that are not held out) and
        unlabeled ones to add (0: fully supervised; -1: all the rest).
    test_fraction
        Fraction of labeled squares held out to measure the error.
    augment
        Optional ``f(square, rng) -> square`` appearance randomisation.
    init
        Fine-tune: start from this model (a run folder or ``model.pt``; ``"default"``
        for the shipped one) instead of random weights. Its variant, size, width and
        normalisation replace the arguments, and its error on the held-out squares
        before training is recorded as ``test_mean_abs_diff_before``.
    callbacks
        More Lightning callbacks, passed to :func:`fit`.

    Returns
    -------
    dict
        What was recorded in ``config.yaml``.
    """
    from cryoscout.io.runfolder import resumable_run_folder
    from cryoscout.runinfo import write_run_config
    from cryoscout.screening.data import load_screening_data, make_split, training_dataset
    from cryoscout.screening.predict import save_model

    run_dir = Path(run_dir)
    # Checkpoints stay in place for --resume; INCOMPLETE marks the folder until the end.
    with resumable_run_folder(run_dir, resume=resume is not None):
        start = None
        if init is not None:
            from cryoscout.screening.predict import load_model

            start = load_model(None if str(init) == "default" else init)
            if not hasattr(start, "net"):  # the baseline's trees have no weights to tune
                raise InputError(init, f"{start.kind} cannot be fine-tuned: give an XCryoNet model")
            variant, size = start.variant, start.size
            width, normalisation = int(start.meta["width"]), start.meta["normalisation"]
        data = load_screening_data(folders, size=size, normalisation=normalisation)
        if not data.labeled.any():
            raise InputError(folders[0], "no labeled squares (labels.csv missing or empty)")
        big = len(data)
        split = make_split(
            data,
            n_labeled=big if n_labeled < 0 else n_labeled,
            n_unlabeled=big if n_unlabeled < 0 else n_unlabeled,
            seed=seed,
            test_fraction=test_fraction,
        )
        if len(split.labeled) == 0:
            raise InputError(
                folders[0], "too few labeled squares to train on after holding out tests"
            )
        semi = len(split.unlabeled) > 0
        train_set = training_dataset(data, split, semi_supervised=semi, augment=augment, seed=seed)
        val_set = None
        if len(split.test):
            from cryoscout.screening.data import SquareDataset

            val_set = SquareDataset(data.images[split.test], data.labels[split.test])
        pl.seed_everything(seed, workers=True, verbose=False)  # the initial weights too
        module = XCryoNetModule(
            variant, size=size, width=width, lr=lr, freeze_norm=start is not None
        )
        before = {}
        if start is not None:
            module.net.load_state_dict(start.net.state_dict())
            if len(split.test):
                before = evaluate(module.net, data.images[split.test], data.labels[split.test])
            module.net.train()
        with stage("training", run_dir):  # names the run in an unexpected error
            fit(
                module,
                train_set,
                run_dir,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                val_set=val_set,
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                precision=precision,
                resume=resume,
                progress=progress,
                callbacks=callbacks,
            )
        net = module.net.cpu().eval()
        test = split.test
        test_mad = evaluate(net, data.images[test], data.labels[test]) if len(test) else {}
        record = {
            "variant": variant,
            "supervision": "SS" if semi else "FS",
            "size": size,
            "width": width,
            "normalisation": normalisation,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "augment": augment is not None,
            "data": [str(f) for f in folders],
            "n_labeled": len(split.labeled),
            "n_unlabeled": len(split.unlabeled),
            "n_test": len(split.test),
            "test_mean_abs_diff": test_mad,
        }
        if init is not None:
            record["init"] = str(init)
            record["test_mean_abs_diff_before"] = before
        if module.trainer is None or module.trainer.is_global_zero:
            save_model(run_dir / "model.pt", net, normalisation, training=record)
            write_run_config(run_dir, record)
    return record
