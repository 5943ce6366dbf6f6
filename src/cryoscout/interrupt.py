"""Runs stopped by Ctrl-C (SIGINT) or SIGTERM: an exception that says which signal.

The command line turns :class:`Interrupted` into a message (with the command that
resumes the run, when one can) and the conventional exit status 128 + signal number
(130 for Ctrl-C, 143 for SIGTERM), so that ``cryoscout ... && next-step`` stops.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupted(KeyboardInterrupt):
    """A run was stopped by a signal.

    A ``KeyboardInterrupt``, so that code which handles Ctrl-C handles SIGTERM too
    and ``except Exception`` does not swallow it.

    Parameters
    ----------
    signum
        The signal (``signal.SIGINT`` or ``signal.SIGTERM``).
    resume
        The command that continues the run, when it can be continued.
    """

    def __init__(self, signum: int = signal.SIGINT, resume: str | None = None) -> None:
        self.signum = int(signum)
        self.resume = resume
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it."""
        return 128 + self.signum


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`.

    Without this SIGTERM kills Python without running ``finally`` blocks (temporary
    files stay behind) and gives no message. The previous handlers come back on exit.
    Outside the main thread (where handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
