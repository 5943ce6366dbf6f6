"""What both training commands share: checkpoints for ``--resume`` and honest interruption.

``cryoscout train`` (screening) and ``cryoscout pick train`` (picking) keep Lightning's
``last.ckpt`` in ``RUN/checkpoints/`` after every epoch, continue from it with
``--resume``, and stop with :class:`~cryoscout.interrupt.Interrupted` when a signal
ends the run (Lightning itself turns Ctrl-C into ``sys.exit(1)`` and SIGTERM into
an exit with status 0).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: The checkpoint ``--resume`` continues from, relative to the run folder.
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def checkpoint_callback(run_dir: str | os.PathLike):
    """Lightning callback that keeps ``run_dir/checkpoints/last.ckpt`` after every epoch."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    return ModelCheckpoint(dirpath=Path(run_dir) / "checkpoints", save_last=True)


def resume_checkpoint(run_dir: str | os.PathLike, resume: bool) -> Path | None:
    """The checkpoint to continue from, checking that the run folder agrees with ``resume``.

    Parameters
    ----------
    run_dir
        The run folder (``-o``).
    resume
        Whether the user asked to continue the run in ``run_dir``.

    Returns
    -------
    pathlib.Path or None
        ``run_dir/checkpoints/last.ckpt`` when resuming, else None.

    Raises
    ------
    InputError
        Resuming without a checkpoint, or starting afresh over a run that has one
        (its checkpoints and metrics would be mixed with the new run's).
    """
    from cryoscout.errors import InputError

    last = Path(run_dir) / LAST_CHECKPOINT
    if resume:
        if not last.is_file():
            raise InputError(run_dir, f"nothing to resume: {LAST_CHECKPOINT} not found")
        return last
    if last.is_file():
        raise InputError(
            run_dir,
            "holds an earlier run (checkpoints/last.ckpt): add --resume to continue it, "
            "or choose another output folder",
        )
    return None


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's INFO loggers (devices, tips) for the block; algorithms do not print."""
    names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def fit(trainer, module, *loaders, ckpt_path: str | os.PathLike | None = None) -> None:
    """``trainer.fit`` that raises :class:`~cryoscout.interrupt.Interrupted` when stopped.

    Lightning catches ``KeyboardInterrupt`` (and so :class:`Interrupted`) and calls
    ``sys.exit(1)``, and ends a run that received SIGTERM with ``SIGTERMException``
    (exit status 0). Both are turned back into :class:`Interrupted` with the signal
    that stopped the run; Lightning's SIGINT handler (it ignores further Ctrl-C) is undone.

    Parameters
    ----------
    trainer
        A ``pytorch_lightning.Trainer``.
    module, loaders
        Passed to ``trainer.fit``.
    ckpt_path
        A checkpoint to resume from.

    Raises
    ------
    cryoscout.interrupt.Interrupted
        When Ctrl-C or SIGTERM stopped the run.
    cryoscout.errors.InputError
        When ``ckpt_path`` holds another architecture.
    """
    ckpt = None if ckpt_path is None else str(ckpt_path)
    run_interruptibly(trainer, lambda: trainer.fit(module, *loaders, ckpt_path=ckpt), ckpt_path)


def run_interruptibly(
    trainer, call: Callable[[], object], ckpt_path: str | os.PathLike | None = None
) -> None:
    """Run ``call`` (``trainer.fit``, ``trainer.predict``...) as :func:`fit` describes.

    Parameters
    ----------
    trainer
        The ``pytorch_lightning.Trainer`` that ``call`` runs.
    call
        The trainer's entry point with its arguments bound.
    ckpt_path
        The checkpoint ``call`` resumes from, named in the error when it does not fit.
    """
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from cryoscout.interrupt import Interrupted

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        call()
    except SystemExit as exc:
        if not trainer.interrupted:
            raise
        cause = exc.__context__  # the KeyboardInterrupt Lightning caught, if any
        if isinstance(cause, Interrupted):
            signum = cause.signum
        else:
            signum = signal.SIGTERM if isinstance(exc, SIGTERMException) else signal.SIGINT
        raise Interrupted(signum) from None
    except RuntimeError as exc:
        if ckpt_path is not None and "state_dict" in str(exc):
            from cryoscout.errors import InputError

            raise InputError(
                ckpt_path, "does not fit this network: resume with the options of its run"
            ) from None
        raise
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
    if trainer.interrupted:
        raise Interrupted(signal.SIGINT)


def duration(seconds: float) -> str:
    """``75`` -> ``1 min 15 s``; ``4000`` -> ``1 h 06 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(epoch: int, epochs: int, figures: list[str], elapsed: float, done: int) -> str:
    """``epoch 3/20  loss 0.41  val F1 0.52  1 min 02 s elapsed  ETA 5 min 51 s``.

    Parameters
    ----------
    epoch, epochs
        The epoch just finished (1-based) and the last one.
    figures
        What to report about it, already formatted.
    elapsed, done
        Seconds since this run started and the epochs it has finished (fewer than
        ``epoch`` after a resume); the ETA assumes the remaining epochs take as long.
    """
    parts = [f"epoch {epoch}/{epochs}", *figures, f"{duration(elapsed)} elapsed"]
    if epoch < epochs and done > 0:
        parts.append(f"ETA {duration(elapsed / done * (epochs - epoch))}")
    return "  ".join(parts)


def epoch_reporter(report: Callable[[str], None], metrics: dict[str, str]):
    """A Lightning callback that calls ``report(line)`` after every training epoch.

    Parameters
    ----------
    report
        Receives one :func:`progress_line` per epoch (e.g. prints it to stderr).
    metrics
        Logged metric name -> label, e.g. ``{"val/mad_mean": "val |error|"}``; those
        present at the end of the epoch are reported.
    """
    import pytorch_lightning as pl

    class _EpochReporter(pl.Callback):
        def on_train_start(self, trainer, module) -> None:
            self.t0, self.first = time.perf_counter(), trainer.current_epoch

        def on_train_epoch_end(self, trainer, module) -> None:
            if not trainer.is_global_zero:
                return
            logged = trainer.callback_metrics
            figures = [
                f"{label} {float(logged[k]):.4f}" for k, label in metrics.items() if k in logged
            ]
            epoch = trainer.current_epoch + 1
            elapsed = time.perf_counter() - self.t0
            report(progress_line(epoch, trainer.max_epochs, figures, elapsed, epoch - self.first))

    return _EpochReporter()
