"""Single stitched images: .mrc, .tif, .png, and format detection."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile
from PIL import Image

from cryoscout.errors import InputError
from cryoscout.io.atlas_reader import detect_format, load_tile, open_atlas
from cryoscout.io.images import read_image_pixels, read_single_image
from cryoscout.io.mrc import write_mrc


@pytest.fixture
def image():
    return np.random.default_rng(3).integers(0, 255, (20, 30)).astype(np.float32)


def test_mrc_with_and_without_pixel_size(tmp_path, image):
    write_mrc(tmp_path / "a.mrc", image, 4500.0)
    write_mrc(tmp_path / "b.mrc", image, 1.0)  # what microscope software writes when unsure
    a, b = read_single_image(tmp_path / "a.mrc"), read_single_image(tmp_path / "b.mrc")
    assert a.format == "image" and a.pixel_size_A == pytest.approx(4500.0)
    assert b.pixel_size_A is None
    assert read_single_image(tmp_path / "b.mrc", pixel_size_A=3000.0).pixel_size_A == 3000.0
    assert a.montage_shape == (20, 30)
    np.testing.assert_array_equal(load_tile(a, a.tiles[0]), image)


def test_real_leginon_square_has_no_pixel_size(shared_data):
    src = open_atlas(shared_data / "squares" / "leginon_08mar13e_00010gr_00004sq.mrc")
    assert src.format == "image" and src.pixel_size_A is None
    assert src.montage_shape == (512, 512)
    pixels = load_tile(src, src.tiles[0])
    assert pixels.dtype == np.float32 and pixels.shape == (512, 512)


def test_tiff_and_png(tmp_path, image):
    tifffile.imwrite(tmp_path / "a.tif", image)
    rgb = np.stack([image, image, image], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    tif, _ = read_image_pixels(tmp_path / "a.tif")
    png, pixel = read_image_pixels(tmp_path / "a.png")
    np.testing.assert_array_equal(tif, image)
    assert png.ndim == 2 and pixel is None
    np.testing.assert_allclose(png, image, atol=1.0)  # gray from equal RGB channels
    assert read_single_image(tmp_path / "a.png").pixel_size_A is None


def test_non_mrc_file_named_mrc(tmp_path):
    bad = tmp_path / "atlas.mrc"
    bad.write_bytes(b"this is not an MRC file at all" * 3)
    with pytest.raises(InputError) as err:
        src = open_atlas(bad)
        load_tile(src, src.tiles[0])
    assert err.value.path == str(bad)


def test_truncated_mrc(tmp_path, image):
    write_mrc(tmp_path / "t.mrc", image, 100.0)
    data = (tmp_path / "t.mrc").read_bytes()
    (tmp_path / "t.mrc").write_bytes(data[: len(data) - 500])
    with pytest.raises(InputError) as err:
        src = open_atlas(tmp_path / "t.mrc")
        load_tile(src, src.tiles[0])
    assert err.value.path == str(tmp_path / "t.mrc")


def test_detect_formats(tmp_path, image, shared_data):
    assert detect_format(shared_data / "epu")[0] == "epu"
    assert detect_format(shared_data / "serialem")[0] == "serialem"
    write_mrc(tmp_path / "atlas.mrc", image, 100.0)
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / "preview.png")
    assert detect_format(tmp_path) == ("image", tmp_path / "atlas.mrc")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="unknown atlas format"):
        detect_format(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such file"):
        open_atlas(tmp_path / "absent.mrc")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no atlas here"):
        open_atlas(empty)


def test_bad_pixel_size_option(tmp_path, image):
    write_mrc(tmp_path / "a.mrc", image, 100.0)
    with pytest.raises(InputError, match="positive"):
        open_atlas(tmp_path / "a.mrc", pixel_size_A=-2.0)


def test_volume_is_not_an_atlas(tmp_path):
    with mrcfile.new(tmp_path / "v.mrc") as mrc:
        mrc.set_data(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(InputError, match="sections"):
        open_atlas(tmp_path / "v.mrc")
