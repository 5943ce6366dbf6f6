"""What every run folder records so that a result can be traced and repeated."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from cryoscout import __version__
from cryoscout.io.atomic import write_text

_invocation: list[str] | None = None


def record_invocation(args: list[str]) -> None:
    """Remember the command line the ``cryoscout`` entry point was called with.

    ``sys.argv`` is wrong when :func:`cryoscout.cli.main.main` is called from Python
    (a notebook, a workflow engine, the tests), so the entry point records its own.
    """
    global _invocation
    _invocation = list(args)


def command_line() -> str:
    """The command line of this run, shell-quoted."""
    args = _invocation if _invocation is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    return " ".join(shlex.quote(a) for a in args)


def resume_command() -> str:
    """This run's command line with ``--resume`` added (once): what continues it."""
    args = _invocation if _invocation is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    if "--resume" not in args:
        args = [*args, "--resume"]
    return " ".join(shlex.quote(a) for a in args)


def write_run_config(
    run_dir: str | os.PathLike, config: dict[str, Any], filename: str = "config.yaml"
) -> Path:
    """Write the run record into ``run_dir`` with the version, time and command line.

    Parameters
    ----------
    run_dir
        The run folder (created if needed).
    config
        Options and data used by the run; must be YAML-serialisable
        (paths are converted to strings).

    Returns
    -------
    pathlib.Path
        The path of the record.
    """
    import yaml

    record = {
        "cryoscout_version": __version__,
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(),
        "python": platform.python_version(),
        "host": platform.node(),
        "config": _plain(config),
    }
    out = Path(run_dir) / filename
    return write_text(out, yaml.safe_dump(record, sort_keys=False))


def _plain(value: Any) -> Any:
    """Convert paths, tuples, dataclasses and numpy scalars into YAML-friendly values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value
