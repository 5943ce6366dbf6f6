"""Inputs users have: EPU's JPEG images, and a square image given where an atlas belongs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cryoscout.errors import InputError
from cryoscout.io.atlas_reader import detect_format, open_atlas
from cryoscout.io.images import read_image_pixels


def test_jpeg_reads_as_a_gray_image(tmp_path):
    yy, xx = np.mgrid[0:120, 0:160]
    gray = (100 + 80 * np.sin(xx / 9.0) * np.cos(yy / 7.0)).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "atlas.jpg", quality=95)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "rgb.jpeg", quality=95)
    for name in ("atlas.jpg", "rgb.jpeg"):
        image, pixel = read_image_pixels(tmp_path / name)
        assert image.shape == (120, 160) and pixel is None
        assert np.abs(image - gray).mean() < 3  # JPEG is lossy, but only slightly at q95
    assert detect_format(tmp_path / "atlas.jpg") == ("image", tmp_path / "atlas.jpg")
    (tmp_path / "rgb.jpeg").unlink()
    assert detect_format(tmp_path) == ("image", tmp_path / "atlas.jpg")  # a folder of one
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(InputError, match=r"bad\.jpg: not a readable JPEG"):
        read_image_pixels(tmp_path / "bad.jpg")


def test_epu_jpeg_takes_its_pixel_size_from_the_xml_beside_it(shared_data):
    jpg = shared_data / "epu" / "GridSquare_20250108_151151.jpg"
    source = open_atlas(jpg)
    assert source.format == "image" and source.montage_shape == (364, 512)
    # 41.56 nm per pixel of the 2880-pixel camera readout, shown 512 pixels wide.
    assert source.pixel_size_A == pytest.approx(415.6276 * 2880 / 512, rel=1e-4)


def test_a_square_image_is_not_taken_for_an_atlas(shared_data, run_cli, tmp_path):
    square = shared_data / "squares" / "leginon_08mar13e_00010gr_00004sq.mrc"
    res = run_cli("extract", square, "-o", tmp_path / "o1")
    assert res.code == 1 and res.err.count("\n") == 1
    assert square.name in res.err and "no grid lattice found" in res.err
    assert "single grid square at higher magnification, not an atlas" in res.err

    jpg = shared_data / "epu" / "GridSquare_20250108_151151.jpg"
    res = run_cli("extract", jpg, "-o", tmp_path / "o2")
    assert res.code == 1 and jpg.name in res.err
    assert "single grid square" in res.err and "spans only 120 x 85 µm" in res.err


def test_noise_is_not_called_a_grid_square(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(path)
    res = run_cli("extract", path, "-o", tmp_path / "out")
    assert res.code == 1 and "no grid lattice found" in res.err
    assert "grid square" not in res.err
