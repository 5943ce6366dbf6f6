"""Single stitched atlas images: .mrc, .tif/.tiff, .png and .jpg/.jpeg.

Such files often carry no usable pixel size (MRC headers of 0 or 1 Å, PNG and JPEG
none); the pixel size is then ``None`` unless the caller gives one, or, for the PNG
and JPEG images EPU writes (grid squares, atlases), unless EPU's ``MicroscopeImage``
XML of the same name lies beside the image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from cryoscout.errors import InputError
from cryoscout.io.atlas_source import AtlasSource, TileRecord
from cryoscout.io.validate import image_side, pixel_size

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".st")
TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")
PILLOW_SUFFIXES = PNG_SUFFIXES + JPEG_SUFFIXES  # read with Pillow
IMAGE_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES + PILLOW_SUFFIXES


def mrc_header(path: Path):
    """The header of an MRC file (a copy), checked; see :func:`cryoscout.io.mrc.read_mrc_header`."""
    from cryoscout.io.mrc import read_mrc_header

    return read_mrc_header(path)


def _to_2d(data: np.ndarray, path: Path) -> np.ndarray:
    """A 2D float32 image; a single-section stack is squeezed, RGB(A) made gray."""
    arr = np.asarray(data)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        rgb = arr[..., :3].astype(np.float32)
        arr = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(path, f"expected one 2D image, found an array of shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def _tiff_pixel_size(tif) -> float | None:
    """Pixel size in Å from TIFF resolution tags when they are in centimetres."""
    try:
        page = tif.pages[0]
        unit = page.tags.get("ResolutionUnit")
        res = page.tags.get("XResolution")
        if unit is None or res is None or int(unit.value) != 3:  # 3 = centimetre
            return None
        num, den = res.value
        per_cm = num / den if den else 0.0
        return 1e8 / per_cm if per_cm > 0 else None
    except Exception:  # odd tags: no pixel size rather than no image
        return None


def read_image_pixels(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """Load a single image file as a 2D float32 array and its header pixel size.

    Parameters
    ----------
    path
        ``.mrc`` (via :func:`cryoscout.io.mrc.read_mrc`), ``.tif``/``.tiff`` (tifffile)
        or ``.png``/``.jpg``/``.jpeg`` (Pillow; RGB is converted to gray).

    Returns
    -------
    image : numpy.ndarray
        ``(y, x)`` float32, rows as the reading library returns them.
    pixel_size_A : float or None
        Pixel size from the header; ``None`` when absent, 0 or 1 Å.

    Raises
    ------
    InputError
        Missing, unreadable or not a single 2D image.
    """
    from cryoscout.io.mrc import read_mrc

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        data, pixel = read_mrc(path)
        return _to_2d(data, path), pixel
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                data = tif.asarray()
                pixel = _tiff_pixel_size(tif)
        except Exception as exc:
            raise InputError(path, f"not a readable TIFF file ({exc})") from None
        if pixel is not None and abs(pixel - 1.0) < 1e-6:
            pixel = None
        return _to_2d(data, path), pixel
    if suffix in PILLOW_SUFFIXES:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning on atlases
                Image.MAX_IMAGE_PIXELS = None
                with Image.open(path) as img:
                    if img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr"):
                        img = img.convert("RGB")
                    data = np.asarray(img)
        except Exception as exc:
            kind = "PNG" if suffix in PNG_SUFFIXES else "JPEG"
            raise InputError(path, f"not a readable {kind} file ({exc})") from None
        return _to_2d(data, path), None
    raise InputError(path, f"unsupported image type {suffix or '(no extension)'}")


def _image_shape(path: Path) -> tuple[int, int]:
    """``(height, width)`` without loading pixels where the format allows it."""
    suffix = path.suffix.lower()
    try:
        if suffix in MRC_SUFFIXES:
            h = mrc_header(path)
            if int(h.nz) > 1:
                raise InputError(path, f"{int(h.nz)} sections, not one image")
            return int(h.ny), int(h.nx)
        if suffix in PILLOW_SUFFIXES:
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = None
            with Image.open(path) as img:
                return image_side(path, "height", img.height), image_side(path, "width", img.width)
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
                return image_side(path, "height", shape[0]), image_side(path, "width", shape[1])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"not a readable image file ({exc})") from None
    raise InputError(path, f"unsupported image type {suffix or '(no extension)'}")


def read_single_image(path: str | os.PathLike, pixel_size_A: float | None = None) -> AtlasSource:
    """Describe a single stitched atlas image as an :class:`AtlasSource` of one tile.

    Only the header is read (the pixels are loaded by
    :func:`cryoscout.io.atlas_reader.load_tile`), except for TIFF pixel sizes.

    Parameters
    ----------
    path
        ``.mrc``, ``.tif``/``.tiff``, ``.png`` or ``.jpg``/``.jpeg``.
    pixel_size_A
        Pixel size in Å; overrides the header. The header's 0 or 1 Å (and PNG's or
        JPEG's absent one) mean unknown: ``None``, unless an EPU ``MicroscopeImage``
        XML of the same name lies beside a PNG or JPEG.

    Returns
    -------
    AtlasSource
        ``format="image"`` with one tile at ``(0, 0)`` covering the whole image.

    Raises
    ------
    InputError
        Missing, unreadable or unsupported file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(path, f"unsupported image type {path.suffix or '(no extension)'}")
    height, width = _image_shape(path)
    if pixel_size_A is not None:
        pixel_size("--pixel-size", "the pixel size", pixel_size_A)
    header_pixel = _header_pixel_size(path)
    pixel = pixel_size_A if pixel_size_A is not None else header_pixel
    tile = TileRecord(index=0, path=path, x_px=0.0, y_px=0.0, width=width, height=height)
    return AtlasSource("image", path, pixel, [tile], (height, width))


def _header_pixel_size(path: Path) -> float | None:
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        from cryoscout.io.mrc import header_pixel_size

        return header_pixel_size(path, mrc_header(path))
    if suffix in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            pixel = _tiff_pixel_size(tif)
        return None if pixel is None or abs(pixel - 1.0) < 1e-6 else pixel
    xml = path.with_suffix(".xml")
    if suffix in PILLOW_SUFFIXES and xml.is_file():  # EPU's GridSquare_*.jpg + .xml
        from cryoscout.io.epu import read_microscope_image_xml

        try:
            meta = read_microscope_image_xml(xml)
        except InputError:
            return None  # some other XML: the image itself is still usable
        # The pixel size is the camera readout's; the preview image is smaller.
        readout = meta["readout_width_px"]
        width = _image_shape(path)[1]
        return meta["pixel_size_A"] * (readout / width if readout and width else 1.0)
    return None
