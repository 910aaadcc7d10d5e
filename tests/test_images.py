"""Image reading: EXIF orientation, alpha, grayscale, 16-bit, bad files; PNG parameters."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddim_edit.errors import ImageError
from ddim_edit.images import fit_size, load_image, read_parameters, save_png
from tests.cli_helpers import SOURCE
from tests.output_helpers import FAST, refused
from tests.output_helpers import photo  # noqa: F401 (pytest fixtures)


def test_modes_become_rgb8(tmp_path):
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 0  # transparent → white
    rgba[:, 2:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (6, 5, 3) and image.dtype == np.uint8
    assert (image[:, :2] == 255).all() and (image[:, 2:] == (200, 0, 0)).all()

    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert (load_image(tmp_path / "g.png") == 77).all()

    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "w16.png")
    assert (load_image(tmp_path / "w16.png") == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((4, 8, 3), np.uint8)  # wide
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape[:2] == (8, 4)


def test_bad_files(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match="corrupt or unsupported"):
        load_image(tmp_path / "bad.png")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageError, match="corrupt or unsupported"):
        load_image(tmp_path / "text.jpg")


def test_huge_image_is_refused_before_decoding(tmp_path):
    Image.new("L", (8000, 6000)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="megapixels"):
        load_image(tmp_path / "big.png")


def test_fit_size_keeps_aspect_and_multiples():
    assert fit_size(640, 480, 512, 64) == (512, 384)
    assert fit_size(100, 1000, 64, 16) == (16, 64)


def test_png_parameters_round_trip(tmp_path):
    path = save_png(tmp_path / "o.png", np.zeros((4, 4, 3), np.uint8), {"prompt": "a cat", "steps": 5})
    assert read_parameters(path) == {"prompt": "a cat", "steps": 5}


def write_huge_png(path: Path, width: int, height: int) -> None:
    """A valid 1-bit PNG of ``width``×``height`` white pixels, compressed while it is generated (tiny file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    block = row * 1000
    body = b"".join(packer.compress(block) for _ in range(height // 1000))
    body += packer.compress(row * (height % 1000)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("role", ["image", "mask"])
def test_a_valid_400_megapixel_png_is_too_large_not_corrupt(tmp_path, photo, role):
    big = tmp_path / "big.png"
    write_huge_png(big, 20_000, 20_000)
    assert big.stat().st_size < 200_000
    args = {"image": ("invert", big, "-p", SOURCE, "-o", tmp_path / "t.traj.safetensors", *FAST),
            "mask": ("inpaint", photo, "--mask", big, "--source-prompt", SOURCE, "-o", tmp_path / "o.png", *FAST)}[role]
    line = refused(tmp_path, args, "20000x20000", "400 megapixels", "40-megapixel limit", "resize")
    assert "corrupt" not in line  # and no DecompressionBombWarning before it: refused() wants one stderr line
