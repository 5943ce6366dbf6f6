"""Run folders are whole or visibly not: staged, locked, and checked by every reader.

Each file of a run is written atomically (:mod:`cryoscout.io.atomic`); this module
does the same for the folder as a unit.

- :func:`run_folder` (``extract``, ``screen``, ``explain``): the run writes into a
  hidden sibling ``.<name>.partial-<pid>`` that is renamed to ``<name>`` only when
  every file is written, replacing an earlier cryoscout run there whole. A killed run
  leaves no folder under the final name; the next run into it removes the leftover.
- :func:`resumable_run_folder` (``train``): checkpoints must survive a kill so that
  ``--resume`` can continue, so the run writes in place, and an ``INCOMPLETE`` file
  marks the folder until the run ends.
- Both hold an exclusive lock (``.<name>.lock`` beside the folder) for the whole run:
  a second run into the same folder fails at once instead of mixing its files in.
- Both check, before any work, that the folder can be written, and refuse a folder
  holding files that are not a cryoscout run.
- :func:`check_complete` is what readers of run folders call (extraction folders,
  model folders): it refuses a staging folder and a marked one, with one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryoscout.errors import InputError

#: The file that marks a resumable run folder whose run has not finished.
INCOMPLETE = "INCOMPLETE"
#: Every finished cryoscout run folder holds its run record.
RECORD = "config.yaml"
_STAGING = re.compile(r"^\..+\.(partial|old)-\d+$")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(out: str | os.PathLike) -> Path:
    """Refuse, before any work, an output folder that cannot be created or replaced.

    Parameters
    ----------
    out
        The run folder to write (it may not exist yet).

    Returns
    -------
    pathlib.Path
        ``out`` as an absolute path.

    Raises
    ------
    InputError
        ``out`` is a file, or neither it nor the folder it goes into is writable.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    base = _nearest_existing(out.parent)
    if not base.is_dir():
        raise InputError(out, f"cannot create the folder: {base} is not a folder")
    # Try it: permission bits say nothing for root, read-only mounts or ACLs.
    for folder in (base, out) if out.is_dir() else (base,):
        try:
            with tempfile.TemporaryFile(dir=folder, prefix=".cryoscout-write-test-"):
                pass
        except OSError as exc:
            raise InputError(
                out, f"cannot write the output folder: {folder} is not writable ({exc.strerror})"
            ) from None
    return out


def is_run_folder(folder: Path) -> bool:
    """A folder cryoscout wrote: its run record or its INCOMPLETE marker is there."""
    return (folder / RECORD).is_file() or (folder / INCOMPLETE).is_file()


def _refuse_foreign(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()) and not is_run_folder(out):
        raise InputError(
            out, "folder holds files that are not a cryoscout run; give a new or empty folder"
        )


@contextlib.contextmanager
def lock_folder(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (via ``.<name>.lock`` beside it) or refuse.

    The lock file is removed when the run ends. A process that opened it just before
    then holds a lock on a deleted file, so each holder checks, once locked, that the
    file it locked is still the one on disk (and otherwise takes the new one).

    Raises
    ------
    InputError
        Another process holds the lock: a run is writing into ``out`` now.
    """
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(
                out,
                "another cryoscout run is writing into this folder now; wait for it "
                "or choose another folder",
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its holder has just removed: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: nobody else holds this file
        os.close(fd)


def _remove_leftovers(out: Path) -> None:
    """Staging folders of earlier runs into ``out`` that were killed (we hold the lock)."""
    for p in out.parent.glob(f".{glob_escape(out.name)}.*-*"):
        if _STAGING.match(p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def glob_escape(name: str) -> str:
    """``name`` with glob wildcards escaped."""
    return re.sub(r"([*?[])", r"[\1]", name)


@contextlib.contextmanager
def run_folder(out: str | os.PathLike, overwrite: bool | None = None) -> Iterator[Path]:
    """Write a run into a staging folder; it becomes ``out`` only when complete.

    Enter it before the work starts: the checks (writable, not a foreign folder, no
    concurrent run) then fail fast.

    Parameters
    ----------
    out
        The run folder. An earlier cryoscout run there is replaced whole when this
        run completes (and left untouched when it does not).
    overwrite
        ``None``: replace an earlier cryoscout run, refuse other files. ``False``:
        refuse any non-empty folder. ``True``: replace whatever the folder holds
        (the user asked, e.g. ``simulate atlas --overwrite``).

    Yields
    ------
    pathlib.Path
        The staging folder to write every file into.

    Raises
    ------
    InputError
        As :func:`check_writable` and :func:`lock_folder`; ``out`` holds other files.

    Examples
    --------
    >>> with run_folder("squares") as folder:  # doctest: +SKIP
    ...     write_extraction(folder, extraction)
    """
    out = check_writable(out)
    if overwrite is None:
        _refuse_foreign(out)
    elif not overwrite and out.is_dir() and any(out.iterdir()):
        raise InputError(out, "folder exists and is not empty (use --overwrite to replace it)")
    with lock_folder(out):
        _remove_leftovers(out)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        tmp.mkdir()
        try:
            yield tmp
            if out.exists():
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def resumable_run_folder(out: str | os.PathLike, resume: bool = False) -> Iterator[Path]:
    """Write a run in place, marked ``INCOMPLETE`` until it ends (for ``--resume``).

    Parameters
    ----------
    out
        The run folder.
    resume
        The run continues one in ``out`` (from its checkpoint). Without it, ``out``
        must be new or empty: a finished or interrupted run there is not overwritten.

    Yields
    ------
    pathlib.Path
        ``out`` (absolute).

    Raises
    ------
    InputError
        As :func:`run_folder`; or ``out`` already holds a run and ``resume`` is false.
    """
    out = Path(out).absolute()
    if _secondary_rank():  # DDP/SLURM: rank 0 alone checks, locks and marks the folder
        yield out
        return
    out = check_writable(out)
    _refuse_foreign(out)
    if not resume and out.is_dir() and any(out.iterdir()):
        state = "an interrupted" if (out / INCOMPLETE).exists() else "a finished"
        raise InputError(
            out,
            f"holds {state} run: add --resume to continue it, or choose another output folder",
        )
    with lock_folder(out):
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        marker = out / INCOMPLETE
        marker.write_text(
            "This run has not finished (it is running, or it was interrupted).\n"
            "Continue it: run the same command again with --resume.\n"
        )
        try:
            yield out
        except BaseException:
            # Failed before writing anything (a bad input): leave no run to resume.
            if {p.name for p in out.iterdir()} == {INCOMPLETE}:
                marker.unlink()
                if created:
                    out.rmdir()
            raise
        marker.unlink()


def _secondary_rank() -> bool:
    """This process is not rank 0 of a distributed (Lightning DDP or SLURM) run."""
    for name in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "0").strip()
        if value.isdigit() and int(value) > 0:
            return True
    return False


def check_complete(folder: str | os.PathLike, what: str = "run folder") -> Path:
    """Refuse a run folder that is not whole: a staging folder, or one marked INCOMPLETE.

    Parameters
    ----------
    folder
        A folder given as input (an extraction folder, a training run).
    what
        What it should be, for the error (``"extraction folder"``).

    Raises
    ------
    InputError
        The folder is a leftover of an interrupted run, or its run has not finished.
    """
    folder = Path(folder)
    if _STAGING.match(folder.name):
        raise InputError(
            folder, f"an unfinished {what} left by an interrupted run; run the command again"
        )
    if (folder / INCOMPLETE).is_file():
        raise InputError(
            folder, f"an incomplete {what}: its run was interrupted or is still running"
        )
    return folder
