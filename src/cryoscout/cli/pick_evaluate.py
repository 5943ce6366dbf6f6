"""Placeholder for `evaluate`; replaced by its implementation."""


def evaluate() -> None:
    """Not built yet."""
    raise NotImplementedError("evaluate")
