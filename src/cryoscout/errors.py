"""Errors that the command line turns into one-line messages.

Raise :class:`InputError` for anything a user can fix (a bad file, a bad
value); the command line prints ``cryoscout: error: <path>: <problem>`` and
exits non-zero without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

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
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
