"""Save and load a trained picking network: ``model.pt`` = state_dict + metadata.

The file is a plain dictionary of tensors, strings and numbers so that it loads
with ``torch.load(weights_only=True)`` (no pickled code runs). It records what
is needed to use the weights on a new tomogram: the architecture and its
arguments, class names, the label radius of each class, the training patch
size and the tomogram normalisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryoscout.errors import InputError, first_line
from cryoscout.io.atomic import atomic_path

FORMAT = "cryoscout-picking-weights"
FORMAT_VERSION = 1


@dataclass
class PickingModelInfo:
    """Metadata stored beside the weights.

    Attributes
    ----------
    class_names
        Names of classes 1..n (index 0 of this list is class 1).
    radius
        Label radius in voxels per class (``{class: r}``).
    patch_size
        Training patch side in voxels (the natural inference tile).
    normalization
        How tomograms are normalised before the network (see ``picking.data.normalize``),
        and low-passed when it holds ``lowpass_sigma`` (voxels; ``picking.lowpass``).
    voxel_size_A
        Voxel size of the training tomograms, when known.
    extra
        Anything else worth keeping (training options).
    """

    class_names: list[str]
    radius: dict[int, float]
    patch_size: int
    normalization: dict[str, Any] = field(default_factory=lambda: {"method": "standardize"})
    voxel_size_A: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_model(path: str | os.PathLike, model, info: PickingModelInfo) -> Path:
    """Write ``model`` (a :class:`~cryoscout.picking.unet.ResUNet3d`) and ``info`` atomically.

    Parameters
    ----------
    path
        Destination, usually ``RUN_DIR/model.pt``.
    model
        The network; its ``config()`` and ``state_dict()`` are stored.
    info
        Metadata.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import torch

    from cryoscout import __version__
    from cryoscout.picking.unet import ARCHITECTURE

    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cryoscout_version": __version__,
        "architecture": ARCHITECTURE,
        "model_config": model.config(),
        "class_names": list(info.class_names),
        # String keys: weights_only loading accepts them and YAML/JSON stay readable.
        "radius": {str(k): float(v) for k, v in info.radius.items()},
        "patch_size": int(info.patch_size),
        "normalization": dict(info.normalization),
        "voxel_size_A": None if info.voxel_size_A is None else float(info.voxel_size_A),
        "extra": dict(info.extra),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return Path(path)


def load_model(path: str | os.PathLike, map_location: str = "cpu"):
    """Load ``model.pt`` (or a run folder holding one) written by :func:`save_model`.

    Parameters
    ----------
    path
        The ``model.pt`` file or its run folder.
    map_location
        Device for the tensors.

    Returns
    -------
    model : cryoscout.picking.unet.ResUNet3d
        In eval mode.
    info : PickingModelInfo

    Raises
    ------
    InputError
        Missing, corrupt, or another kind of model file; another architecture;
        weights that do not fit the recorded architecture.
    """
    import torch

    from cryoscout.io.runfolder import check_complete
    from cryoscout.picking.unet import ARCHITECTURE, ResUNet3d

    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    check_complete(path.parent, "training run")
    if not path.is_file():
        raise InputError(path, "no such model file (expected model.pt from `cryoscout pick train`)")
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a readable model file ({type(exc).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(path, "not a cryoscout picking model")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, "written by a newer cryoscout; please upgrade")
    if record.get("architecture") != ARCHITECTURE:
        raise InputError(
            path,
            f"model of another architecture ({record.get('architecture')!r}, "
            f"expected {ARCHITECTURE!r})",
        )
    try:
        model = ResUNet3d(**record["model_config"])
        model.load_state_dict(record["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(
            path, f"weights do not fit the recorded architecture ({first_line(exc)})"
        ) from None
    model.eval()
    info = PickingModelInfo(
        class_names=list(record.get("class_names", [])),
        radius={int(k): float(v) for k, v in record.get("radius", {}).items()},
        patch_size=int(record.get("patch_size", 72)),
        normalization=dict(record.get("normalization", {"method": "standardize"})),
        voxel_size_A=record.get("voxel_size_A"),
        extra=dict(record.get("extra", {})),
    )
    return model, info
