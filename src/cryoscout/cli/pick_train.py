"""Placeholder for `train`; replaced by its implementation."""


def train() -> None:
    """Not built yet."""
    raise NotImplementedError("train")
