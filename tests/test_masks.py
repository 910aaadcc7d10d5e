"""Mask files of every supported type, binarising, dilation, feathering, the latent grid, the paste."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from ddim_edit.masks import (
    MaskError,
    MaskOptions,
    binarise,
    dilate,
    feather,
    latent_mask,
    paste,
    prepare_mask,
    read_mask,
)

SIZE = (40, 32)  # (width, height), a non-square working size


def reference_mask() -> np.ndarray:
    """bool [32, 40]: a rectangle plus a disc."""
    mask = np.zeros((SIZE[1], SIZE[0]), bool)
    mask[4:14, 6:20] = True
    yy, xx = np.mgrid[: SIZE[1], : SIZE[0]]
    mask |= (yy - 22) ** 2 + (xx - 28) ** 2 <= 25
    return mask


def write_cv2(path, array, params=()):
    assert cv2.imwrite(str(path), array, list(params)), path
    return path


def mask_files(tmp_path):
    """One file per supported kind, all holding reference_mask()."""
    mask = reference_mask()
    u8 = mask.astype(np.uint8) * 255
    files = {
        "png8": write_cv2(tmp_path / "m8.png", u8),
        "png16": write_cv2(tmp_path / "m16.png", mask.astype(np.uint16) * 65535),
        "jpeg": write_cv2(tmp_path / "m.jpg", u8, (cv2.IMWRITE_JPEG_QUALITY, 95)),
        "bmp": write_cv2(tmp_path / "m.bmp", u8),
        "tiff": write_cv2(tmp_path / "m.tif", u8),
        "webp": write_cv2(tmp_path / "m.webp", u8, (cv2.IMWRITE_WEBP_QUALITY, 101)),
        "rgb_png": write_cv2(tmp_path / "rgb.png", np.repeat(u8[..., None], 3, axis=2)),
    }
    # RGBA: a stroke layer on a transparent canvas (colour is irrelevant, alpha = mask).
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[..., :3] = (30, 200, 90)
    rgba[..., 3] = u8
    files["rgba_alpha"] = write_cv2(tmp_path / "rgba.png", rgba)
    Image.fromarray(u8, mode="L").save(tmp_path / "gray_pil.png")
    files["grayscale_pil"] = tmp_path / "gray_pil.png"
    Image.fromarray(u8).convert("1").save(tmp_path / "bilevel.png")
    files["one_bit_png"] = tmp_path / "bilevel.png"
    Image.fromarray(u8, mode="L").convert("P").save(tmp_path / "palette.png")
    files["palette_png"] = tmp_path / "palette.png"
    return files


def test_every_supported_file_type_loads_to_the_same_mask(tmp_path):
    expected = reference_mask()
    for kind, path in mask_files(tmp_path).items():
        values = read_mask(path)
        assert values.shape == expected.shape, kind
        assert values.dtype == np.float32 and 0.0 <= values.min() and values.max() <= 1.0, kind
        binary = binarise(values)
        mismatched = int((binary != expected).sum())
        # JPEG is lossy: a few edge pixels may flip; every lossless format is exact.
        assert mismatched <= (12 if kind == "jpeg" else 0), (kind, mismatched)


def test_sixteen_bit_values_are_scaled_by_65535(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (4, 1))
    values = read_mask(write_cv2(tmp_path / "ramp16.png", ramp))
    np.testing.assert_allclose(values[0], np.linspace(0, 1, 16), atol=1e-6)


def test_opaque_rgba_is_read_by_luminance_not_alpha(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[2:5, 2:5, :3] = 255
    values = read_mask(write_cv2(tmp_path / "opaque.png", rgba))
    assert binarise(values).sum() == 9


@pytest.mark.parametrize("name, content, message", [
    ("missing.png", None, "does not exist"),
    ("empty.png", b"", "empty file"),
    ("notes.png", b"not an image at all", "cannot read"),
    ("truncated.png", cv2.imencode(".png", np.full((8, 8), 255, np.uint8))[1].tobytes()[:20], "cannot read"),
])
def test_unreadable_masks_give_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MaskError, match=message):
        read_mask(path)


def test_empty_and_full_masks_are_refused(tmp_path):
    black = write_cv2(tmp_path / "black.png", np.zeros((SIZE[1], SIZE[0]), np.uint8))
    white = write_cv2(tmp_path / "white.png", np.full((SIZE[1], SIZE[0]), 255, np.uint8))
    with pytest.raises(MaskError, match="empty .*nothing to inpaint"):
        prepare_mask(black, SIZE, 4)
    with pytest.raises(MaskError, match="whole image: that is plain generation"):
        prepare_mask(white, SIZE, 4)
    # A mask that dilation grows over the whole image is full too.
    dot = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    dot[16, 20] = 255
    with pytest.raises(MaskError, match="plain generation"):
        prepare_mask(dot, SIZE, 4, MaskOptions(dilate=40))
    # --invert-mask turns the all-black mask into a full one.
    with pytest.raises(MaskError, match="plain generation"):
        prepare_mask(black, SIZE, 4, MaskOptions(invert=True))


def test_wrong_size_is_an_error_unless_resizing_is_allowed(tmp_path):
    big = cv2.resize(reference_mask().astype(np.uint8) * 255, (80, 64), interpolation=cv2.INTER_NEAREST)
    path = write_cv2(tmp_path / "big.png", big)
    with pytest.raises(MaskError, match=r"80x64 but the image is 40x32.*--resize-mask"):
        prepare_mask(path, SIZE, 4)
    prepared = prepare_mask(path, SIZE, 4, MaskOptions(resize=True))
    assert prepared.binary.shape == (32, 40)
    assert (prepared.binary != reference_mask()).sum() <= 6
    # The size of the image *file* is accepted without --resize-mask (resized as the image was).
    prepared = prepare_mask(path, SIZE, 4, image_size=(80, 64))
    assert prepared.binary.shape == (32, 40)


def test_threshold_and_invert():
    values = np.array([[0.0, 0.3, 0.5, 0.9]], np.float32)
    assert binarise(values, 0.5).tolist() == [[False, False, True, True]]
    assert binarise(values, 0.25).tolist() == [[False, True, True, True]]
    assert binarise(values, 0.5, invert=True).tolist() == [[True, True, False, False]]
    with pytest.raises(MaskError, match="threshold"):
        binarise(values, 0.0)


def test_dilation_grows_by_the_given_radius():
    binary = np.zeros((21, 21), bool)
    binary[10, 10] = True
    grown = dilate(binary, 3)
    ys, xs = np.nonzero(grown)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (7, 13, 7, 13)
    assert not grown[7, 7]  # elliptical, not square
    with pytest.raises(MaskError):
        dilate(binary, -1)


def test_feather_is_one_inside_and_zero_beyond_its_width():
    binary = np.zeros((32, 32), bool)
    binary[10:20, 10:20] = True
    soft = feather(binary, 4)
    assert (soft[binary] == 1.0).all()
    distance = cv2.distanceTransform((~binary).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert (soft[distance >= 4.5] == 0.0).all()
    ring = (distance >= 1) & (distance <= 4)
    assert ((soft[ring] > 0) & (soft[ring] < 1)).all()
    # Monotone away from the mask along a row.
    row = soft[15, 19:25]  # column 19 is the mask's edge, 20..23 the ramp, 24 beyond it
    assert row[0] == 1.0 and np.all(np.diff(row[:5]) < 0) and row[5] == 0.0
    np.testing.assert_array_equal(feather(binary, 0), binary.astype(np.float32))


def test_latent_mask_averages_areas_and_covers_touched_cells():
    binary = np.zeros((32, 32), bool)
    binary[:, :13] = True  # 13 px: cell 3 (px 12..15) is touched by one pixel column
    soft = feather(binary, 4)
    latent = latent_mask(soft, binary, (8, 8))
    assert (latent[:, :4] == 1.0).all()  # cells 0..3, incl. the one touched by a single column
    assert 0.0 < latent[0, 4] < 1.0  # the feather ring: a soft cell, no hard step
    assert (latent[:, 5:] == 0.0).all()
    # Area averaging, not nearest: a soft ramp gives each cell the mean of its pixels.
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))
    averaged = latent_mask(ramp, np.zeros_like(binary), (8, 8))
    np.testing.assert_allclose(averaged[0], ramp[0].reshape(8, 4).mean(axis=1), atol=1e-6)


def test_prepared_mask_from_array_and_coverage():
    prepared = prepare_mask(reference_mask(), SIZE, 4, MaskOptions(feather=2))
    assert prepared.latent.shape == (8, 10)
    assert prepared.feather == 2
    assert prepared.coverage == pytest.approx(reference_mask().mean())
    default = prepare_mask(reference_mask(), SIZE, 4)
    assert default.feather == 4  # one latent cell


def test_paste_keeps_unmasked_pixels_exactly():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    generated = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    prepared = prepare_mask(reference_mask(), SIZE, 4, MaskOptions(feather=3))
    out = paste(generated, source, prepared.soft)
    outside = prepared.soft == 0
    np.testing.assert_array_equal(out[outside], source[outside])
    np.testing.assert_array_equal(out[prepared.binary], generated[prepared.binary])
    ring = (prepared.soft > 0) & (prepared.soft < 1)
    assert ring.any()


def test_exif_orientation_matches_the_image_reader(tmp_path):
    from ddim_edit.images import load_image

    array = np.zeros((20, 40), np.uint8)
    array[2:8, 3:30] = 255
    for name, pixels in (("gray.jpg", array), ("rgb.jpg", np.repeat(array[..., None], 3, axis=2))):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = 6  # rotate 90° clockwise on display
        image.save(tmp_path / name, exif=exif, quality=95)
        mask = read_mask(tmp_path / name)
        shown = load_image(tmp_path / name)
        assert mask.shape == shown.shape[:2] == (40, 20)
        np.testing.assert_array_equal(mask >= 0.5, shown[..., 0] >= 128)
