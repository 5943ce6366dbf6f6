"""What both training commands share: checkpoints for ``--resume`` and honest interruption.

``cryoscout train`` (screening) and ``cryoscout pick train`` (picking) keep Lightning's
``last.ckpt`` in ``RUN/checkpoints/`` after every epoch, continue from it with
``--resume``, and stop with :class:`~cryoscout.interrupt.Interrupted` when a signal
ends the run (Lightning itself turns Ctrl-C into ``sys.exit(1)`` and SIGTERM into
an exit with status 0).
"""

from __future__ import annotations

import os
import signal
import threading
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
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from cryoscout.interrupt import Interrupted

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        trainer.fit(module, *loaders, ckpt_path=None if ckpt_path is None else str(ckpt_path))
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
