"""EPU atlas reading (real files) and writing (round trip through the reader)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoscout.errors import InputError
from cryoscout.io.epu import read_epu_atlas, read_microscope_image_xml, write_epu_atlas

A = np.array([[0.5, 0.02, -100.0], [0.02, -0.5, 200.0]])  # montage px -> stage µm


def test_real_atlas_counts(shared_data):
    src = read_epu_atlas(shared_data / "epu")
    assert src.format == "epu"
    # 37 TileXml entries, 29 of them nil: 8 tiles name an image file.
    assert len(src.tiles) == 8
    assert len(src.known_squares) == 47
    assert len({s.square_id for s in src.known_squares}) == 47
    assert src.pixel_size_A is None  # no tile XML beside the atlas, none in Atlas.dm
    assert src.tiles[0].path.name == "Tile_4590157_0_4590151.mrc"
    assert len(src.missing_tiles()) == 8


def test_real_atlas_fields_and_units(shared_data):
    src = read_epu_atlas(shared_data / "epu" / "Atlas.dm")
    t = src.tiles[0]
    assert (t.x_px, t.y_px, t.width, t.height) == (1584, 1687, 833, 592)
    sq = next(s for s in src.known_squares if s.square_id == "4590306")
    assert sq.x_px == pytest.approx(2236.751)
    assert sq.y_px == pytest.approx(1741.15442)
    assert sq.stage_x_um == pytest.approx(-117.46241943910718)  # metres -> µm
    assert sq.stage_y_um == pytest.approx(-109.44153473246843)
    assert sq.size_px == pytest.approx((134.156143 + 143.233978) / 2)
    assert src.montage_shape == (1687 + 562 + 592, 2376 + 833)


def test_real_microscope_image_xml(shared_data):
    meta = read_microscope_image_xml(shared_data / "epu" / "GridSquare_20250108_151151.xml")
    assert meta["pixel_size_A"] == pytest.approx(415.62760344504568)
    assert meta["stage_x_um"] == pytest.approx(-98.805664700000079)
    assert meta["stage_y_um"] == pytest.approx(-164.71620799999985)
    assert meta["magnification"] == 470


def test_session_file_is_refused_with_a_hint(shared_data):
    with pytest.raises(InputError, match="session file") as err:
        read_epu_atlas(shared_data / "epu" / "EpuSession.dm")
    assert err.value.path.endswith("EpuSession.dm")


def _small_atlas(tmp_path, squares=True):
    rng = np.random.default_rng(1)
    tiles = [rng.random((40, 50)).astype(np.float32) for _ in range(4)]
    pos = [(0, 0), (45, 0), (0, 36), (45, 36)]
    table = pd.DataFrame(
        {
            "square_id": [11, 12, 13],
            "x_px": [10.0, 60.5, 80.0],
            "y_px": [12.0, 20.0, 60.0],
            "size_px": [8.0, 9.0, 10.0],
        }
    )
    path = write_epu_atlas(tmp_path / "atlas", tiles, pos, 4500.0, A, table if squares else None)
    return path, tiles, pos, table


def test_write_then_read_round_trip(tmp_path):
    path, _tiles, pos, _table = _small_atlas(tmp_path)
    assert path.name == "Atlas.dm"
    assert "\n" not in path.read_text().strip()  # one line, as full-size EPU files are
    src = read_epu_atlas(path.parent)
    assert src.pixel_size_A == pytest.approx(4500.0)
    assert [(t.x_px, t.y_px) for t in src.tiles] == pos
    assert all(t.path.is_file() for t in src.tiles)
    assert src.montage_shape == (76, 95)
    t = src.tiles[3]
    sx, sy = A @ [45 + 24.5, 36 + 19.5, 1]
    assert (t.stage_x_um, t.stage_y_um) == (pytest.approx(sx), pytest.approx(sy))
    got = {s.square_id: s for s in src.known_squares}
    assert sorted(got) == ["11", "12", "13"]
    s12 = got["12"]
    assert (s12.x_px, s12.y_px, s12.size_px) == (60.5, 20.0, 9.0)
    assert s12.stage_x_um == pytest.approx(A[0] @ [60.5, 20.0, 1])
    # The tile XML beside each tile mimics EPU's MicroscopeImage layout.
    meta = read_microscope_image_xml(src.tiles[3].path.with_suffix(".xml"))
    assert meta["pixel_size_A"] == pytest.approx(4500.0)
    assert meta["stage_x_um"] == pytest.approx(sx)


def test_writer_is_deterministic(tmp_path):
    p1, *_ = _small_atlas(tmp_path / "a")
    p2, *_ = _small_atlas(tmp_path / "b")
    assert p1.read_bytes() == p2.read_bytes()
    x1 = sorted(p1.parent.glob("*.xml"))[0].read_bytes()
    x2 = sorted(p2.parent.glob("*.xml"))[0].read_bytes()
    assert x1 == x2


def test_reader_ignores_namespaces_and_order(tmp_path):
    """A hand-written atlas with other prefixes and element order still parses."""
    xml = """<?xml version="1.0"?>
<AtlasSessionXml xmlns="urn:other-epu-version" xmlns:q="urn:drawing">
 <Atlas><TilesEfficient><_items>
  <TileXml><TileImageReference><BaseFileName>C:\\data\\Tile_1</BaseFileName>
   <FileFormat>Mrc</FileFormat></TileImageReference>
   <AtlasPixelPosition><q:y>5</q:y><q:x>7</q:x><q:width>10</q:width><q:height>12</q:height>
   </AtlasPixelPosition></TileXml>
 </_items></TilesEfficient></Atlas></AtlasSessionXml>"""
    (tmp_path / "Atlas.dm").write_text(xml)
    src = read_epu_atlas(tmp_path / "Atlas.dm")
    assert src.tiles[0].path == tmp_path / "Tile_1.mrc"
    assert (src.tiles[0].x_px, src.tiles[0].y_px, src.tiles[0].width) == (7, 5, 10)
    assert src.montage_shape == (17, 17)


def test_truncated_xml_is_an_input_error(shared_data, tmp_path):
    bad = tmp_path / "Atlas.dm"
    bad.write_bytes((shared_data / "epu" / "Atlas.dm").read_bytes()[:50_000])
    with pytest.raises(InputError, match="not a readable EPU atlas XML") as err:
        read_epu_atlas(tmp_path)
    assert err.value.path == str(bad)


def test_missing_atlas_pixel_position_names_file_and_field(tmp_path):
    path, *_ = _small_atlas(tmp_path, squares=False)
    from lxml import etree

    root = etree.parse(str(path)).getroot()
    node = next(e for e in root.iter() if etree.QName(e).localname == "AtlasPixelPosition")
    node.getparent().remove(node)
    path.write_bytes(etree.tostring(root))
    with pytest.raises(InputError, match="AtlasPixelPosition") as err:
        read_epu_atlas(path)
    assert err.value.path == str(path)


def test_missing_field_inside_position(tmp_path):
    path, *_ = _small_atlas(tmp_path, squares=False)
    text = path.read_text().replace("<b:width>50</b:width>", "", 1)
    path.write_text(text)
    with pytest.raises(InputError, match="AtlasPixelPosition/width"):
        read_epu_atlas(path)


def test_missing_pixel_size_in_image_xml(tmp_path):
    bad = tmp_path / "Tile.xml"
    bad.write_text("<MicroscopeImage><microscopeData/></MicroscopeImage>")
    with pytest.raises(InputError, match="pixelSize"):
        read_microscope_image_xml(bad)


def test_folder_without_atlas(tmp_path):
    with pytest.raises(InputError, match=r"no EPU Atlas\.dm"):
        read_epu_atlas(tmp_path)


def test_writer_accepts_known_squares(tmp_path):
    from cryoscout.io.atlas_source import KnownSquare

    squares = [
        KnownSquare("7", 10.0, 12.0, None, stage_x_um=-3.0, stage_y_um=4.0),
        KnownSquare("8", 30.0, 20.0, 9.5),
    ]
    tiles = [np.zeros((40, 50), np.float32)]
    path = write_epu_atlas(tmp_path, tiles, [(0, 0)], 4500.0, A, squares)
    got = {s.square_id: s for s in read_epu_atlas(path).known_squares}
    assert got["7"].size_px is None
    assert (got["7"].stage_x_um, got["7"].stage_y_um) == (pytest.approx(-3.0), pytest.approx(4.0))
    assert got["8"].size_px == 9.5
    assert got["8"].stage_x_um == pytest.approx(A[0] @ [30.0, 20.0, 1])
