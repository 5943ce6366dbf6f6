"""Placeholder for `atlas`; replaced by its implementation."""


def atlas() -> None:
    """Not built yet."""
    raise NotImplementedError("atlas")
