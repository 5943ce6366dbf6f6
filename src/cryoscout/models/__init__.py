"""The screening models shipped with cryoscout, and the names ``-m/--model`` takes for them.

``default``
    ``default_xcryonet.pt``: XCryoNet (+ tree head, calibrated), the model used
    when no ``-m`` is given.
``baseline``
    ``baseline_gbt.pt``: gradient-boosted trees on hand-made square features
    (no attention maps).

Each file has a human-readable ``.json`` beside it (what it was fitted on, how).
This module imports nothing heavy, so commands can check a model name before
torch loads.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Name -> file of every shipped screening model.
SHIPPED = {
    "default": HERE / "default_xcryonet.pt",
    "baseline": HERE / "baseline_gbt.pt",
}


def model_file(model: str | os.PathLike | None) -> Path:
    """The model file or run folder that a ``-m/--model`` value means.

    Parameters
    ----------
    model
        ``None`` or a name of :data:`SHIPPED` (``"default"``, ``"baseline"``):
        that shipped model; anything else is a path (a model ``.pt`` file or a
        training run folder). A folder called like a name is given with its
        path, e.g. ``./baseline``.

    Returns
    -------
    pathlib.Path
    """
    if model is None:
        return SHIPPED["default"]
    return SHIPPED.get(os.fspath(model), Path(model))


def model_label(model: str | os.PathLike | None) -> str:
    """How a run record names the model: the shipped model's name, else the absolute path."""
    if model is None or os.fspath(model) in SHIPPED:
        return "default" if model is None else os.fspath(model)
    return str(Path(model).resolve())


def check_model_option(model: str | os.PathLike | None) -> None:
    """Fail at once on a ``-m/--model`` value that names nothing (before torch loads).

    Raises
    ------
    cryoscout.errors.InputError
        If ``model`` is neither a shipped model's name nor an existing path.
    """
    from cryoscout.errors import InputError

    if model is not None and not model_file(model).exists():
        names = ", ".join(SHIPPED)
        raise InputError(
            model,
            f"no such model (give a run folder from `cryoscout train`, its model.pt, "
            f"or a shipped model: {names})",
        )
