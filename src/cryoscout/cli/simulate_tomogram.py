"""Placeholder for `tomogram`; replaced by its implementation."""


def tomogram() -> None:
    """Not built yet."""
    raise NotImplementedError("tomogram")
