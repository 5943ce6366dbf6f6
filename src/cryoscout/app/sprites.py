"""Images the page shows: the atlas overview, its thumbnail and per-atlas sprite sheets.

A sprite sheet holds one small tile per square (tile ``i`` at column ``i % cols``,
row ``i // cols``), so a gallery of thousands of squares is a handful of cached
images rather than thousands of requests.
"""

from __future__ import annotations

import io

import numpy as np

#: Side of a square's tile in the sprite sheets, in pixels.
SPRITE_SIZE = 64
#: Longer side of the overview and thumbnail images.
OVERVIEW_MAX = 2048
THUMBNAIL_MAX = 256


def display_uint8(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Grey levels for display: percentiles ``low``..``high`` stretched to 0-255."""
    x = np.asarray(image, dtype=np.float32)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros(x.shape, np.uint8)
    lo, hi = np.percentile(finite, [low, high])
    scaled = (np.nan_to_num(x, nan=lo) - lo) / (hi - lo if hi > lo else 1.0)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 ``(h, w)`` grey or ``(h, w, 4)`` RGBA array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The montage as uint8 with its longer side at most ``max_side``; and the scale used."""
    from PIL import Image

    grey = display_uint8(image)
    h, w = grey.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.LANCZOS))
    return grey, scale


def sprite_cols(n: int) -> int:
    """Columns of a sprite sheet of ``n`` tiles: close to square."""
    return max(1, int(np.ceil(np.sqrt(max(n, 1)))))


def sprite_sheet(tiles: np.ndarray, size: int = SPRITE_SIZE) -> np.ndarray:
    """Tile ``(n, h, w)`` or ``(n, h, w, c)`` uint8 images, resized to ``size``, into one sheet."""
    from PIL import Image

    n = len(tiles)
    cols = sprite_cols(n)
    rows = max(1, int(np.ceil(n / cols)))
    extra = tiles.shape[3:]
    sheet = np.zeros((rows * size, cols * size, *extra), np.uint8)
    for i, tile in enumerate(tiles):
        small = np.asarray(Image.fromarray(tile).resize((size, size), Image.Resampling.BILINEAR))
        r, c = divmod(i, cols)
        sheet[r * size : (r + 1) * size, c * size : (c + 1) * size] = small
    return sheet


def crop_sheet(stack: np.ndarray, size: int = SPRITE_SIZE) -> np.ndarray:
    """Grey sprite sheet of the squares, one contrast stretch for the whole atlas.

    One stretch for all squares keeps brightness comparable between squares, as
    the model sees them (normalised per atlas).
    """
    return sprite_sheet(display_uint8(stack), size)


def overlay_rgba(maps: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """RGBA overlays of ``(n, h, w)`` attention maps: colour ``rgb``, opacity from attention.

    Each map is stretched between its own 2nd and 98th percentiles first: the
    network's attention is high almost everywhere, and what matters is *where*
    it is highest within the square.
    """
    a = np.asarray(maps, dtype=np.float32)
    lo = np.percentile(a, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(a, 98, axis=(1, 2), keepdims=True)
    a = np.clip((a - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., :3] = rgb
    rgba[..., 3] = (a * 220).astype(np.uint8)  # never fully opaque: the square stays visible
    return rgba


def overlay_sheet(
    maps: np.ndarray, rgb: tuple[int, int, int], size: int = SPRITE_SIZE
) -> np.ndarray:
    """RGBA sprite sheet of attention maps (see :func:`overlay_rgba`)."""
    return sprite_sheet(overlay_rgba(maps, rgb), size)


#: Overlay colours: cracking red, contamination blue (as in the report).
OVERLAY_COLOURS = {"cracking": (230, 40, 40), "contamination": (40, 120, 255)}
