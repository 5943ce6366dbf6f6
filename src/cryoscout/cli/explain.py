"""Placeholder for `explain`; replaced by its implementation."""


def explain() -> None:
    """Not built yet."""
    raise NotImplementedError("explain")
