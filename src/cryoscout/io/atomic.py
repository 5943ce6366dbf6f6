"""Write outputs under a temporary name and rename them only when complete.

An interrupted run therefore never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file keeps the final suffix (``out.partial.mrc``) so that
    libraries that choose a format by extension still do the right thing.
    On error the temporary file is removed and the exception propagates.

    Parameters
    ----------
    path
        Final destination.

    Yields
    ------
    pathlib.Path
        Where to write the content.

    Examples
    --------
    >>> with atomic_path("scores.csv") as tmp:  # doctest: +SKIP
    ...     df.to_csv(tmp)
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.partial-{os.getpid()}{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
