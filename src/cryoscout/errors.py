"""Errors that the command line turns into one-line messages.

Raise :class:`InputError` for anything a user can fix (a bad file, a bad
value); the command line prints ``cryoscout: error: <path>: <problem>`` and
exits non-zero without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from os import PathLike


class CryoscoutError(Exception):
    """Base class of every error cryoscout reports to a user."""


class InputError(CryoscoutError):
    """A file or value given by the user cannot be used.

    Parameters
    ----------
    path
        The file (or option name) at fault; ``None`` when no single file is.
    problem
        What is wrong, in one short sentence without a trailing full stop.
    """

    def __init__(self, path: str | PathLike | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        # One line, always: library messages quoted in a problem may hold newlines.
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def stage(name: str, path: str | PathLike | None = None) -> Iterator[None]:
    """Name the stage of work (and its input) that an unexpected exception came from.

    Errors a user can fix are :class:`InputError`; anything else is a bug or a
    resource problem, and the command line still prints one line for it, naming the
    input and the stage (``stitching``, ``scoring``...) recorded here. The innermost
    stage wins. :class:`CryoscoutError` and interrupts pass through untouched.

    Examples
    --------
    >>> with stage("stitching", "grid3/Atlas.dm"):  # doctest: +SKIP
    ...     montage = stitch(source)
    """
    try:
        yield
    except CryoscoutError:
        raise
    except Exception as exc:
        if getattr(exc, "cryoscout_stage", None) is None:
            exc.cryoscout_stage = (name, None if path is None else str(path))
        raise
