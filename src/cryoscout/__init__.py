"""cryoscout: learned, explainable decisions for cryo-EM.

Two systems share this package:

* grid screening (XCryoNet, MICCAI 2020): read an atlas, extract grid squares,
  score them with an attention-guided semi-supervised network;
* particle picking in tomograms (DeepETPicker, Nat. Commun. 2024): weakly
  supervised 3D segmentation followed by MP-NMS.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cryoscout")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
