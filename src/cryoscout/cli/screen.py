"""Placeholder for `screen`; replaced by its implementation."""


def screen() -> None:
    """Not built yet."""
    raise NotImplementedError("screen")
