"""Progress bars on stderr, shared by every long-running operation."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether progress bars are drawn: on a terminal, unless CRYOSCOUT_NO_PROGRESS is set."""
    if os.environ.get("CRYOSCOUT_NO_PROGRESS"):
        return False
    return sys.stderr.isatty() or bool(os.environ.get("CRYOSCOUT_PROGRESS"))


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate over ``items`` while drawing a progress bar on stderr.

    Parameters
    ----------
    items
        Anything iterable.
    desc
        Short label shown before the bar.
    total
        Number of items, when ``items`` has no ``len``.
    unit
        Name of one item (``"tile"``, ``"square"``...).

    Yields
    ------
    Each item of ``items`` in order.
    """
    from tqdm.auto import tqdm

    yield from tqdm(
        items,
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        disable=not progress_enabled(),
        leave=False,
        dynamic_ncols=True,
    )
