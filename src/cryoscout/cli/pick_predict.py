"""Placeholder for `predict`; replaced by its implementation."""


def predict() -> None:
    """Not built yet."""
    raise NotImplementedError("predict")
