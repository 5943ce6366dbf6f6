"""What keeps every command's failure to one line: option checks, warnings, unexpected errors.

- :func:`check_options` adds to every command, once, the checks no option should
  need to repeat: a float option must be a finite number (``--pixel-size inf`` and
  ``nan`` are refused at the command line) and a ``--seed`` must not be negative.
- :func:`quiet_warnings` records the warnings numpy, scikit-image, mrcfile, torch
  and Lightning emit during a command: dropped when the command fails (its one error
  line says what went wrong), sent to the log (``-v`` shows them) when it succeeds.
- :func:`unexpected_error_line` turns an exception that is not an
  :class:`~cryoscout.errors.InputError` into one line naming the input and the stage
  (see :func:`cryoscout.errors.stage`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator

import typer

_SEED_NAMES = {"seed"}


def _finite(value):
    if value is None:
        return value
    values = value if isinstance(value, list | tuple) else [value]
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise typer.BadParameter(f"must be a finite number, not {v}")
    return value


def _not_negative(value):
    if isinstance(value, int) and value < 0:
        raise typer.BadParameter(f"must be 0 or more, not {value}")
    return value


def _chain(check: Callable, callback: Callable | None) -> Callable:
    def run(ctx, param, value):
        value = check(value)
        return callback(ctx, param, value) if callback is not None else value

    return run


def check_options(command) -> object:
    """Add the common option checks to ``command`` and all its subcommands (in place).

    The checks look at the parsed values (a float must be finite; a seed not
    negative), so they hold whatever type an option is declared with.
    """
    for sub in getattr(command, "commands", {}).values():
        check_options(sub)
    for param in command.params:
        if getattr(param, "_cryoscout_checked", False):
            continue
        param._cryoscout_checked = True
        param.callback = _chain(_finite, param.callback)
        if param.name in _SEED_NAMES:
            param.callback = _chain(_not_negative, param.callback)
    return command


@contextlib.contextmanager
def quiet_warnings(debug: bool = False) -> Iterator[Callable[[bool], None]]:
    """Record warnings raised inside; the yielded ``done(ok)`` logs them when ``ok``.

    With ``debug`` nothing is recorded: warnings show as Python prints them.
    """
    if debug:
        yield lambda ok: None
        return
    with warnings.catch_warnings(record=True) as caught:

        def done(ok: bool) -> None:
            if not ok:
                return  # the error line says what went wrong; the warnings are noise now
            log = logging.getLogger("cryoscout.warnings")
            seen = set()
            for w in caught:
                text = f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
                if text not in seen:
                    seen.add(text)
                    log.info(text)

        yield done


def unexpected_error_line(exc: BaseException, command: str = "cryoscout") -> str:
    """One line for an exception that is not the user's to fix.

    Names the input and the stage recorded by :func:`cryoscout.errors.stage`, the
    exception type and the first line of its message.
    """
    stage, path = getattr(exc, "cryoscout_stage", None) or (None, None)
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
    if isinstance(exc, MemoryError):
        message = "ran out of memory"
    where = f"{path}: " if path else ""
    during = f"{stage} failed" if stage else f"{command} failed"
    return f"cryoscout: error: {where}{during}: {message} (run with --debug for the traceback)"
