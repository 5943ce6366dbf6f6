"""SerialEM montage .mdoc reading (real file) and writing (round trip)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscout.errors import InputError
from cryoscout.io.serialem import mdoc_for, read_serialem_montage, write_serialem_montage

A = np.array([[-0.06, 0.004, 900.0], [0.004, 0.06, -800.0]])


def test_real_montage_mdoc(shared_data):
    src = read_serialem_montage(shared_data / "serialem" / "montage_section.mdoc")
    assert src.format == "serialem"
    # 7 x 9 frames are planned (FullMontNumFrames) but the file holds 62 [ZValue] pieces;
    # the closing [MontSection] is not a piece.
    assert len(src.tiles) == 62
    assert [t.section for t in src.tiles] == list(range(62))
    assert src.pixel_size_A == pytest.approx(656.139)
    t0 = src.tiles[0]
    assert (t0.width, t0.height) == (5064, 3976)  # ImageSize: the stack is absent
    assert (t0.stage_x_um, t0.stage_y_um) == (pytest.approx(919.141), pytest.approx(849.945))
    assert t0.path.name == "LMM.mrc"  # ImageFile, resolved beside the .mdoc
    assert not t0.path.exists()
    # AlignedPieceCoordsVS is preferred over the nominal PieceCoordinates, shifted to 0.
    xs = np.array([t.x_px for t in src.tiles])
    ys = np.array([t.y_px for t in src.tiles])
    assert xs.min() == 0 and ys.min() == 0
    import mdocfile

    df = mdocfile.read(shared_data / "serialem" / "montage_section.mdoc")
    aligned = np.array([c[:2] for c in df["AlignedPieceCoordsVS"].dropna()])
    assert (t0.x_px, t0.y_px) == (38 - aligned[:, 0].min(), -65 - aligned[:, 1].min())
    assert src.montage_shape == (int(ys.max()) + 3976, int(xs.max()) + 5064)


def test_write_then_read_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    tiles = [rng.random((30, 40)).astype(np.float32) for _ in range(6)]
    pos = [(x, y) for y in (0, 26) for x in (0, 36, 72)]
    path = write_serialem_montage(tmp_path / "LMM.mrc", tiles, pos, 650.0, A)
    assert mdoc_for(path).name == "LMM.mrc.mdoc"
    text = mdoc_for(path).read_text()
    for key in (
        "PixelSpacing",
        "ImageSize",
        "PieceCoordinates",
        "StagePosition",
        "[ZValue = 5]",
        "[MontSection = 0]",
    ):
        assert key in text
    for given in (path, mdoc_for(path)):
        src = read_serialem_montage(given)
        assert [(t.x_px, t.y_px) for t in src.tiles] == pos
        assert src.pixel_size_A == pytest.approx(650.0)
        assert src.montage_shape == (56, 112)
        t = src.tiles[4]
        assert t.path == path and t.section == 4
        assert t.stage_x_um == pytest.approx(A[0] @ [36 + 19.5, 26 + 14.5, 1], abs=1e-5)


def test_aligned_coordinates_preferred(tmp_path):
    tiles = [np.zeros((10, 10), np.float32)] * 2
    path = write_serialem_montage(tmp_path / "m.mrc", tiles, [(0, 0), (8, 0)], 100.0, A)
    mdoc = mdoc_for(path)
    text = mdoc.read_text()
    for nominal, aligned in (("8 0 0", "9 1 0"), ("0 0 0", "0 0 0")):
        line = f"PieceCoordinates = {nominal}"
        text = text.replace(line, f"{line}\nAlignedPieceCoords = {aligned}")
    mdoc.write_text(text)
    src = read_serialem_montage(mdoc)
    assert (src.tiles[1].x_px, src.tiles[1].y_px) == (9, 1)


def test_stack_without_mdoc(tmp_path):
    path = tmp_path / "lonely.mrc"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="no SerialEM metadata"):
        read_serialem_montage(path)


def test_mdoc_without_pieces(tmp_path):
    bad = tmp_path / "x.mrc.mdoc"
    bad.write_text("PixelSpacing = 5\nImageSize = 10 10\n")
    with pytest.raises(InputError, match="ZValue") as err:
        read_serialem_montage(bad)
    assert err.value.path == str(bad)
