"""EPU atlases: read an ``Atlas.dm`` (+ per-tile ``MicroscopeImage`` XML), write one.

An EPU atlas folder holds ``Atlas.dm`` (XML written by .NET's DataContractSerializer),
one image per tile (``Tile_<id>_<n>_<atlas id>.mrc``) and, beside each tile, a
``MicroscopeImage`` XML with its pixel size and stage position. Namespaces, prefixes
and element order differ between EPU versions, and full-size files are written on one
line, so the reader matches elements by local name only, never by position or prefix.

Units: EPU stores lengths in metres; cryoscout uses Å for pixel sizes and µm for
stage positions. Atlas pixel coordinates are used as montage pixel coordinates
unchanged (x = column, y = row of the array as mrcfile reads the tiles), so the grid
square centres EPU lists stay valid on the stitched montage.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoscout.errors import InputError
from cryoscout.io.atlas_source import AtlasSource, KnownSquare, TileRecord
from cryoscout.io.atomic import atomic_path
from cryoscout.io.validate import (
    MAX_IMAGE_SIDE,
    MAX_STAGE_UM,
    finite,
    image_side,
    pixel_size,
    tile_extent,
)

if TYPE_CHECKING:
    import pandas as pd
    from lxml import etree

# The namespaces EPU 3.x writes (used by the writer only; the reader ignores them).
_DC = "http://schemas.datacontract.org/2004/07/"
NS_PERSIST = _DC + "Applications.SciencesAppsShared.GridAtlas.Persistence"
NS_DATAMODEL = _DC + "Applications.SciencesAppsShared.GridAtlas.Datamodel"
NS_TYPES = _DC + "Fei.Applications.Common.Types"
NS_SHARED = _DC + "Fei.SharedObjects"
NS_DRAWING = _DC + "System.Drawing"
NS_GENERIC = _DC + "System.Collections.Generic"
NS_COMMON_TYPES = _DC + "Fei.Common.Types"
NS_ARRAYS = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
NS_I = "http://www.w3.org/2001/XMLSchema-instance"
NS_Z = "http://schemas.microsoft.com/2003/10/Serialization/"

ATLAS_FILE = "Atlas.dm"
_MAGNIFICATION = "microscopeData/optics/TemMagnification/NominalMagnification"
_M_TO_UM = 1e6
_M_TO_A = 1e10
_EXTENSIONS = {"mrc": ".mrc", "tiff": ".tiff", "tif": ".tif", "png": ".png", "jpg": ".jpg"}


# --------------------------------------------------------------------------- reading


def _local(elem: etree._Element) -> str:
    tag = elem.tag
    if not isinstance(tag, str):  # comments, processing instructions
        return ""
    return tag.rpartition("}")[2]


def _children(elem: etree._Element, name: str) -> Iterator[etree._Element]:
    return (c for c in elem if _local(c) == name)


def _child(elem: etree._Element | None, path: str) -> etree._Element | None:
    """Follow ``a/b/c`` by local names from ``elem``; ``None`` where a step is missing."""
    for name in path.split("/"):
        if elem is None:
            return None
        elem = next(_children(elem, name), None)
    return elem


def _descendant(elem: etree._Element, name: str) -> etree._Element | None:
    return next((e for e in elem.iter() if _local(e) == name), None)


def _is_nil(elem: etree._Element) -> bool:
    return elem.get(f"{{{NS_I}}}nil") == "true"


def _float(elem: etree._Element | None, path: str) -> float | None:
    node = _child(elem, path)
    if node is None or _is_nil(node) or node.text is None or not node.text.strip():
        return None
    try:
        return float(node.text.strip())
    except ValueError:
        return None


def _required(elem: etree._Element, path: str, file: Path, where: str) -> float:
    value = _float(elem, path)
    if value is None:
        raise InputError(file, f"{where}: missing or non-numeric {path}")
    return value


def _parse_xml(path: Path, what: str) -> etree._Element:
    from lxml import etree

    if not path.is_file():
        raise InputError(path, "no such file")
    parser = etree.XMLParser(huge_tree=True, remove_blank_text=True, resolve_entities=False)
    try:
        return etree.parse(str(path), parser).getroot()
    except etree.XMLSyntaxError as exc:
        raise InputError(path, f"not a readable {what} XML file ({exc.msg})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the file ({exc})") from None


def read_microscope_image_xml(path: str | os.PathLike) -> dict[str, float | None]:
    """Read the metadata EPU writes beside every image (a ``MicroscopeImage`` XML).

    Parameters
    ----------
    path
        The ``.xml`` file beside an EPU image (tile, grid square, foil hole...).

    Returns
    -------
    dict
        ``pixel_size_A`` (float, from ``SpatialScale/pixelSize/x/numericValue``),
        ``stage_x_um`` and ``stage_y_um`` (from ``microscopeData/stage/Position``;
        ``None`` when absent), ``magnification`` (nominal; ``None`` when absent) and
        ``readout_width_px`` (camera readout width the pixel size is for; ``None`` when absent).

    Raises
    ------
    InputError
        The file is missing, not XML, or has no pixel size.
    """
    path = Path(path)
    root = _parse_xml(path, "EPU MicroscopeImage")
    pixel_m = _float(root, "SpatialScale/pixelSize/x/numericValue")
    if pixel_m is None:
        raise InputError(path, "missing SpatialScale/pixelSize/x/numericValue (pixel size)")
    field = "SpatialScale/pixelSize/x/numericValue (pixel size)"
    pixel_A = pixel_size(path, field, finite(path, field, pixel_m) * _M_TO_A)
    stage = _child(root, "microscopeData/stage/Position")
    area = _child(root, "microscopeData/acquisition/camera/ReadoutArea")
    readout = [_float(area, k) for k in ("width", "height")]
    return {
        "pixel_size_A": pixel_A,
        "stage_x_um": _stage_um(stage, "X", path, "microscopeData/stage/Position"),
        "stage_y_um": _stage_um(stage, "Y", path, "microscopeData/stage/Position"),
        "magnification": _float(root, _MAGNIFICATION),
        "readout": None
        if None in readout
        else tuple(
            image_side(path, f"ReadoutArea/{k}", v)
            for k, v in zip(("width", "height"), readout, strict=True)
        ),
        # The width the pixel size refers to; EPU's JPEG previews are smaller.
        "readout_width_px": _float(root, "microscopeData/acquisition/camera/ReadoutArea/width"),
    }


def _stage_um(elem, axis: str, file: Path, where: str) -> float | None:
    """A stage coordinate in µm (EPU stores metres); ``None`` when absent."""
    value = _float(elem, axis)
    if value is None:
        return None
    return finite(file, f"{where}/{axis}", value * _M_TO_UM, -MAX_STAGE_UM, MAX_STAGE_UM, " µm")


def _atlas_file(path: Path) -> Path:
    if path.is_dir():
        candidate = path / ATLAS_FILE
        if not candidate.is_file():
            raise InputError(path, f"folder holds no EPU {ATLAS_FILE}")
        return candidate
    if not path.exists():
        raise InputError(path, "no such file or folder")
    return path


def _tile_path(base: str, file_format: str | None, folder: Path) -> Path:
    # EPU on Windows may store a full path: keep only the file name, resolved beside the atlas.
    name = base.replace("\\", "/").rsplit("/", 1)[-1]
    if not Path(name).suffix:
        name += _EXTENSIONS.get((file_format or "mrc").strip().lower(), ".mrc")
    return folder / name


def _atlas_position(entry: etree._Element, file: Path, where: str) -> dict[str, float]:
    """A tile's checked ``AtlasPixelPosition``: finite ``x, y``; whole, positive sizes."""
    out = {}
    for key in ("x", "y", "width", "height"):
        field = f"{where}: AtlasPixelPosition/{key}"
        value = _required(entry, f"AtlasPixelPosition/{key}", file, where)
        if key in ("width", "height"):
            out[key] = image_side(file, field, value)
        else:
            out[key] = finite(file, field, value, -MAX_IMAGE_SIDE, MAX_IMAGE_SIDE, " px")
    return out


def _read_tiles(items: etree._Element, file: Path) -> list[TileRecord]:
    tiles: list[TileRecord] = []
    for entry in _children(items, "TileXml"):
        if _is_nil(entry) or len(entry) == 0:
            continue  # EPU pre-allocates the list: empty slots are nil
        ref = _child(entry, "TileImageReference/BaseFileName")
        if ref is None or _is_nil(ref) or not (ref.text or "").strip():
            continue  # a tile with no image file is not a tile with pixels
        where = f"tile {ref.text.strip()}"
        if _child(entry, "AtlasPixelPosition") is None:
            raise InputError(file, f"{where}: missing AtlasPixelPosition")
        fmt = _child(entry, "TileImageReference/FileFormat")
        stage = _child(entry, "StagePosition")

        pos = _atlas_position(entry, file, where)
        tiles.append(
            TileRecord(
                index=len(tiles),
                path=_tile_path(ref.text.strip(), None if fmt is None else fmt.text, file.parent),
                x_px=pos["x"],
                y_px=pos["y"],
                width=int(pos["width"]),
                height=int(pos["height"]),
                stage_x_um=_stage_um(stage, "X", file, f"{where}: StagePosition"),
                stage_y_um=_stage_um(stage, "Y", file, f"{where}: StagePosition"),
            )
        )
    return tiles


def _read_squares(root: etree._Element, file: Path) -> list[KnownSquare]:
    """Grid squares: dictionary entries keyed by grid-square ID with a PositionOnTheAtlas."""
    squares: dict[str, KnownSquare] = {}
    for pos in (e for e in root.iter() if _local(e) == "PositionOnTheAtlas"):
        value = pos.getparent()
        pair = value.getparent() if value is not None else None
        key = _child(pair, "key") if pair is not None else None
        if key is None or not (key.text or "").strip():
            node_id = _child(value, "Id")
            key = node_id
        square_id = (key.text or "").strip() if key is not None else ""
        if not square_id or square_id in squares:
            continue  # EPU may list one square in several tiles: keep the first
        where = f"grid square {square_id}"
        sizes = [
            finite(file, f"{where}: Size/{k}", v, 0, MAX_IMAGE_SIDE, " px")
            for k in ("width", "height")
            if (v := _float(pos, f"Size/{k}")) is not None
        ]
        stage = _child(value, "StagePosition")
        squares[square_id] = KnownSquare(
            square_id=square_id,
            x_px=finite(
                file,
                f"{where}: Center/x",
                _required(pos, "Center/x", file, where),
                -MAX_IMAGE_SIDE,
                MAX_IMAGE_SIDE,
                " px",
            ),
            y_px=finite(
                file,
                f"{where}: Center/y",
                _required(pos, "Center/y", file, where),
                -MAX_IMAGE_SIDE,
                MAX_IMAGE_SIDE,
                " px",
            ),
            size_px=float(np.mean(sizes)) if sizes else None,
            stage_x_um=_stage_um(stage, "X", file, f"{where}: StagePosition"),
            stage_y_um=_stage_um(stage, "Y", file, f"{where}: StagePosition"),
        )
    return list(squares.values())


def _tile_pixel_size(tile: TileRecord, atlas: Path) -> float | None:
    """Montage pixel size from the tile's MicroscopeImage XML, rescaled to atlas pixels.

    Where the tile image exists, its shape must agree with the box the atlas places it
    in and with the camera readout its XML states (same aspect ratio: EPU may bin).
    """
    if tile.path is None:
        return None
    xml = tile.path.with_suffix(".xml")
    if not xml.is_file():
        return None
    meta = read_microscope_image_xml(xml)
    pixel = meta["pixel_size_A"]
    shape = _image_shape(tile.path)
    if shape is None:
        return pixel
    nx, ny = shape
    boxes = [
        (f"{atlas.name} places it in a {tile.width}x{tile.height} px box", tile.width, tile.height)
    ]
    if meta["readout"]:
        rw, rh = meta["readout"]
        boxes.append((f"{xml.name} states a {rw}x{rh} px readout", rw, rh))
    for what, w, h in boxes:
        if abs((nx / ny) / (w / h) - 1) > 0.02:
            raise InputError(tile.path, f"is {nx}x{ny} px but {what} (another aspect ratio)")
    # EPU places binned-down tiles on the atlas: scale by image width / atlas width.
    return pixel * nx / tile.width


def _image_shape(path: Path) -> tuple[int, int] | None:
    """``(nx, ny)`` of an MRC tile from its (checked) header; ``None`` when absent."""
    if not path.is_file() or path.suffix.lower() != ".mrc":
        return None
    from cryoscout.io.mrc import read_mrc_header

    header = read_mrc_header(path)
    return int(header.nx), int(header.ny)


def _atlas_pixel_size(tiles: list[TileRecord], atlas: Path) -> float | None:
    """The one pixel size of the montage; tiles that disagree by over 2 % are an error."""
    found = [(t, p) for t in tiles if (p := _tile_pixel_size(t, atlas)) is not None]
    if not found:
        return None
    first, pixel = found[0]
    for tile, p in found[1:]:
        if abs(p / pixel - 1) > 0.02:
            raise InputError(
                tile.path.with_suffix(".xml"),
                f"pixel size {p:.4g} Å on the atlas differs from {pixel:.4g} Å of "
                f"{first.path.name}",
            )
    return pixel


def read_epu_atlas(path: str | os.PathLike) -> AtlasSource:
    """Read an EPU atlas: its tiles, their placement, and the grid squares EPU found.

    Parameters
    ----------
    path
        ``Atlas.dm``, or the folder that holds it.

    Returns
    -------
    AtlasSource
        ``format="epu"``; one :class:`TileRecord` per tile that names an image file
        (files resolved beside ``Atlas.dm``; they need not exist); one
        :class:`KnownSquare` per distinct grid-square ID; the pixel size in Å from a
        tile's ``MicroscopeImage`` XML (or a ``SpatialScale`` in the atlas XML), else
        ``None``; ``montage_shape`` covering every tile in atlas pixel coordinates.

    Raises
    ------
    InputError
        Missing file, invalid XML, no tile list, or a tile/square missing a required field.

    Examples
    --------
    >>> src = read_epu_atlas("Sample4/Atlas")  # doctest: +SKIP
    >>> len(src.tiles), len(src.known_squares)  # doctest: +SKIP
    (64, 412)
    """
    file = _atlas_file(Path(path))
    root = _parse_xml(file, "EPU atlas")
    if _local(root) == "EpuSessionXml":
        ref = _descendant(root, "AtlasId")
        hint = f" ({ref.text.strip()})" if ref is not None and ref.text else ""
        raise InputError(file, f"an EPU session file, not an atlas: give its Atlas.dm{hint}")
    tiles_list = _descendant(root, "TilesEfficient")
    if tiles_list is None:
        raise InputError(file, "not an EPU atlas: missing Atlas/TilesEfficient")
    items = _child(tiles_list, "_items")
    tiles = _read_tiles(items if items is not None else tiles_list, file)
    squares = _read_squares(root, file)

    pixel = _atlas_pixel_size(tiles, file)
    if pixel is None:
        scale = _descendant(root, "SpatialScale")
        value = _float(scale, "pixelSize/x/numericValue") if scale is not None else None
        field = "SpatialScale/pixelSize/x/numericValue (pixel size)"
        pixel = pixel_size(file, field, value * _M_TO_A) if value is not None else None

    if tiles:
        # Atlas pixel coordinates are the montage's: its origin stays at (0, 0).
        shape = tile_extent(file, tiles)  # atlas pixels are montage pixels
    elif squares:
        shape = (
            int(np.ceil(max(s.y_px + (s.size_px or 0) / 2 for s in squares))),
            int(np.ceil(max(s.x_px + (s.size_px or 0) / 2 for s in squares))),
        )
    else:
        shape = (0, 0)
    return AtlasSource("epu", file, pixel, tiles, shape, squares)


# --------------------------------------------------------------------------- writing


def _sub(parent: etree._Element, ns: str, name: str, text: object = None) -> etree._Element:
    from lxml import etree

    elem = etree.SubElement(parent, f"{{{ns}}}{name}" if ns else name)
    if text is not None:
        elem.text = _fmt(text) if isinstance(text, float) else str(text)
    return elem


def _fmt(value: float) -> str:
    return repr(float(value))


def _stage_xyz(parent: etree._Element, ns: str, name: str, x_m: float, y_m: float) -> None:
    pos = _sub(parent, ns, name)
    for axis, v in (("A", 0.0), ("B", 0.0), ("X", x_m), ("Y", y_m), ("Z", 0.0)):
        _sub(pos, NS_SHARED, axis, float(v))


def _apply(px_to_stage: np.ndarray, x: float, y: float) -> tuple[float, float]:
    sx, sy = np.asarray(px_to_stage, dtype=float) @ np.array([x, y, 1.0])
    return float(sx), float(sy)


def _microscope_image_xml(
    name: str, pixel_size_A: float, stage_um: tuple[float, float], shape: tuple[int, int]
) -> bytes:
    """A ``MicroscopeImage`` XML laid out as EPU writes it, for the fields cryoscout reads."""
    from lxml import etree

    nsmap = {None: NS_SHARED, "i": NS_I, "a": NS_COMMON_TYPES, "b": NS_DRAWING}
    root = etree.Element(f"{{{NS_SHARED}}}MicroscopeImage", nsmap=nsmap)
    _sub(root, NS_SHARED, "name", name)
    # Deterministic ID so that a seeded simulation writes identical files.
    _sub(root, NS_SHARED, "uniqueID", uuid.uuid5(uuid.NAMESPACE_URL, name))
    scale = _sub(root, NS_SHARED, "SpatialScale")
    for group, value in (("offset", 0.0), ("pixelSize", pixel_size_A / _M_TO_A)):
        node = _sub(scale, NS_SHARED, group)
        for axis in ("x", "y"):
            ax = _sub(node, NS_SHARED, axis)
            _sub(ax, NS_SHARED, "numericValue", float(value))
            unit = _sub(ax, NS_SHARED, "unit")
            _sub(unit, NS_COMMON_TYPES, "_x003C_PrefixExponent_x003E_k__BackingField", 1)
            _sub(unit, NS_COMMON_TYPES, "_x003C_Symbol_x003E_k__BackingField", "m")
    data = _sub(root, NS_SHARED, "microscopeData")
    camera = _sub(_sub(data, NS_SHARED, "acquisition"), NS_SHARED, "camera")
    area = _sub(camera, NS_SHARED, "ReadoutArea")
    for name, v in (("height", shape[0]), ("width", shape[1]), ("x", 0), ("y", 0)):
        _sub(area, NS_DRAWING, name, int(v))
    _sub(data, NS_SHARED, "core")
    stage = _sub(data, NS_SHARED, "stage")
    _sub(stage, NS_SHARED, "Holder", "Unspecified")
    pos = _sub(stage, NS_SHARED, "Position")
    x_m, y_m = stage_um[0] / _M_TO_UM, stage_um[1] / _M_TO_UM
    for axis, v in (("A", 0.0), ("B", 0.0), ("X", x_m), ("Y", y_m), ("Z", 0.0)):
        _sub(pos, NS_SHARED, axis, float(v))
    return etree.tostring(root, xml_declaration=False, encoding="utf-8")


def write_epu_atlas(
    out_dir: str | os.PathLike,
    tiles: Sequence[np.ndarray],
    positions_px: Sequence[tuple[float, float]],
    pixel_size_A: float,
    px_to_stage: np.ndarray,
    squares: pd.DataFrame | Sequence[KnownSquare] | None = None,
    atlas_id: int = 4590151,
) -> Path:
    """Write tiles and grid squares as an EPU atlas folder, laid out as EPU writes one.

    Writes ``Atlas.dm`` (same element names, nesting and namespaces as EPU 3.x for
    every field :func:`read_epu_atlas` uses), one MRC per tile named
    ``Tile_<id>_<n>_<atlas_id>.mrc`` and a ``MicroscopeImage`` XML beside each tile with
    its pixel size and stage position. Like full-size EPU files, ``Atlas.dm`` is one line.

    Parameters
    ----------
    out_dir
        Folder to write into (created if needed).
    tiles
        2D float32 arrays ``(h, w)``, one per tile, as mrcfile will read them back.
    positions_px
        ``(x, y)`` top-left corner of each tile in montage pixels (x = column, y = row).
    pixel_size_A
        Pixel size of the tiles (and of the montage) in Å.
    px_to_stage
        ``(2, 3)`` affine mapping montage pixels to stage µm:
        ``[sx, sy] = A @ [x, y, 1]``. A tile's stage position is the image of its
        centre pixel ``(x + (w - 1) / 2, y + (h - 1) / 2)``.
    squares
        Grid squares EPU would list: a DataFrame with columns ``square_id``
        (integer-like; the EPU node key), ``x_px``, ``y_px`` (centre in montage
        pixels), ``size_px`` (may be ``None``), or :class:`KnownSquare` records (whose
        stage positions, when set, are written instead of the affine's). Each is
        stored under the tile that contains its centre.
    atlas_id
        Identifier used in tile file names, as EPU does.

    Returns
    -------
    pathlib.Path
        The written ``Atlas.dm``.
    """
    from lxml import etree

    from cryoscout.io.mrc import write_mrc

    if len(tiles) != len(positions_px):
        raise ValueError(f"{len(tiles)} tiles but {len(positions_px)} positions")
    a = np.asarray(px_to_stage, dtype=float)
    if a.shape != (2, 3):
        raise ValueError(f"px_to_stage must be (2, 3), got {a.shape}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    um_per_px = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))

    nsmap = {None: NS_PERSIST, "i": NS_I, "z": NS_Z, "a": NS_TYPES, "b": NS_DRAWING}
    nsmap |= {"c": NS_SHARED, "d": NS_DATAMODEL, "g": NS_GENERIC}
    root = etree.Element(f"{{{NS_PERSIST}}}AtlasSessionXml", nsmap=nsmap)
    root.set(f"{{{NS_Z}}}Id", "1")
    _sub(root, NS_TYPES, "Id", atlas_id)
    atlas = _sub(root, NS_PERSIST, "Atlas")
    _sub(atlas, NS_TYPES, "Id", atlas_id)
    _sub(atlas, NS_PERSIST, "Name", "cryoscout simulated atlas")
    tiles_list = _sub(atlas, NS_PERSIST, "TilesEfficient")
    items = _sub(tiles_list, NS_PERSIST, "_items")

    tile_boxes = []
    for n, (tile, (x, y)) in enumerate(zip(tiles, positions_px, strict=True)):
        tile = np.asarray(tile, dtype=np.float32)
        h, w = tile.shape
        tile_id = atlas_id + 6 + 14 * n
        name = f"Tile_{tile_id}_{n}_{atlas_id}"
        stage_um = _apply(a, x + (w - 1) / 2, y + (h - 1) / 2)
        write_mrc(out / f"{name}.mrc", tile, pixel_size_A)
        with atomic_path(out / f"{name}.xml") as tmp:
            tmp.write_bytes(_microscope_image_xml(name, pixel_size_A, stage_um, (h, w)))

        entry = _sub(items, NS_PERSIST, "TileXml")
        _sub(entry, NS_TYPES, "Id", tile_id)
        app = _sub(entry, NS_PERSIST, "AtlasPixelPosition")
        for key, v in (("height", h), ("width", w), ("x", round(x)), ("y", round(y))):
            _sub(app, NS_DRAWING, key, v)
        nodes = _sub(entry, NS_PERSIST, "Nodes")
        pairs = _sub(nodes, "", "KeyValuePairs")
        _stage_xyz(entry, NS_PERSIST, "StagePosition", stage_um[0] / 1e6, stage_um[1] / 1e6)
        ref = _sub(entry, NS_PERSIST, "TileImageReference")
        _sub(ref, NS_TYPES, "BaseFileName", name)
        _sub(ref, NS_TYPES, "FileFormat", "Mrc")
        tile_boxes.append((x, y, w, h, pairs))

    for row in _square_rows(squares):
        x, y = float(row.x_px), float(row.y_px)
        sx_um, sy_um = _apply(a, x, y)
        if getattr(row, "stage_x_um", None) is not None:  # a given stage position wins
            sx_um, sy_um = float(row.stage_x_um), float(row.stage_y_um)
        _square_node(_containing_tile(tile_boxes, x, y), row, sx_um, sy_um, um_per_px)

    _sub(tiles_list, NS_PERSIST, "_size", len(tiles))
    _sub(root, NS_PERSIST, "ImageFileFormat", "Mrc")
    text = etree.tostring(root, xml_declaration=False, encoding="utf-8")
    with atomic_path(out / ATLAS_FILE) as tmp:
        tmp.write_bytes(text)
    return out / ATLAS_FILE


def _square_rows(squares) -> list:
    """Rows with ``square_id, x_px, y_px`` (+ optional ``size_px``, ``stage_x_um/_y_um``)."""
    if squares is None:
        return []
    if hasattr(squares, "itertuples"):  # a DataFrame
        return list(squares.itertuples(index=False))
    return list(squares)  # KnownSquare records or similar


def _containing_tile(boxes, x: float, y: float) -> etree._Element:
    for bx, by, w, h, pairs in boxes:
        if bx <= x < bx + w and by <= y < by + h:
            return pairs
    # A square centred outside every tile: store it under the nearest tile centre.
    dists = [(bx + w / 2 - x) ** 2 + (by + h / 2 - y) ** 2 for bx, by, w, h, _ in boxes]
    return boxes[int(np.argmin(dists))][4]


def _square_node(pairs, row, sx_um: float, sy_um: float, um_per_px: float) -> None:
    pair = _sub(pairs, NS_GENERIC, "KeyValuePairOfintNodeXml30oatNZW")
    _sub(pair, NS_GENERIC, "key", row.square_id)
    value = _sub(pair, NS_GENERIC, "value")
    _sub(value, NS_TYPES, "Id", row.square_id)
    size = getattr(row, "size_px", None)
    size = None if size is None or not np.isfinite(size) else float(size)
    side_m = (size or 0.0) * um_per_px / _M_TO_UM
    sx_m, sy_m = sx_um / _M_TO_UM, sy_um / _M_TO_UM
    _stage_xyz(value, NS_PERSIST, "AlignedStagePosition", sx_m, sy_m)
    pos = _sub(value, NS_PERSIST, "PositionOnTheAtlas")
    center = _sub(pos, NS_DATAMODEL, "Center")
    _sub(center, NS_DRAWING, "x", float(row.x_px))
    _sub(center, NS_DRAWING, "y", float(row.y_px))
    phys = _sub(pos, NS_DATAMODEL, "Physical")
    for key, v in (
        ("height", side_m),
        ("width", side_m),
        ("x", sx_m - side_m / 2),
        ("y", sy_m - side_m / 2),
    ):
        _sub(phys, NS_DRAWING, key, float(v))
    _sub(pos, NS_DATAMODEL, "Rotation", 0.0)
    if size is not None:
        size_node = _sub(pos, NS_DATAMODEL, "Size")
        _sub(size_node, NS_DRAWING, "height", size)
        _sub(size_node, NS_DRAWING, "width", size)
    _stage_xyz(value, NS_PERSIST, "StagePosition", sx_m, sy_m)
