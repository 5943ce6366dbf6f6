"""Placeholder for `info`; replaced by its implementation."""


def info() -> None:
    """Not built yet."""
    raise NotImplementedError("info")
