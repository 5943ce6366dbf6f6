"""Placeholder for `extract`; replaced by its implementation."""


def extract() -> None:
    """Not built yet."""
    raise NotImplementedError("extract")
