"""Fast tests of the toy world: deterministic rendering, captions, sampling, ground-truth edits."""

import hashlib

import numpy as np
import pytest

from ddim_edit.toy.world import (
    all_captions,
    BACKGROUNDS,
    caption,
    caption_words,
    COLORS,
    FILLS,
    render,
    sample_scenes,
    Scene,
    shape_mask,
    SHAPES,
    style_truth,
    with_changes,
)


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_palettes_are_large_and_distinct():
    assert len(SHAPES) >= 5 and len(COLORS) >= 6 and len(FILLS) >= 3 and len(BACKGROUNDS) >= 4
    assert not set(COLORS) & set(BACKGROUNDS)
    for color in COLORS.values():
        for background in BACKGROUNDS.values():
            assert np.linalg.norm(np.subtract(color, background, dtype=float)) > 100
    names = list(COLORS.values())
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert np.linalg.norm(np.subtract(names[i], names[j], dtype=float)) > 100


def test_sample_scenes_and_captions_are_pinned():
    scenes = sample_scenes(0, 3)
    assert [caption(s) for s in scenes] == [
        "a striped yellow cross on a black background",
        "a striped cyan star on a gray background",
        "an outlined magenta square on a white background",
    ]
    assert scenes[0] == Scene("cross", "yellow", "striped", "black", 19.628, 40.017, 34.41)
    assert sample_scenes(0, 3) == scenes
    assert sample_scenes(1, 3) != scenes


def test_render_is_deterministic_and_pinned():
    scene = sample_scenes(0, 1)[0]
    image = render(scene)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert _sha(image) == "2e0adcd460d59c3f137ec7b6fcfb880cbe67f24fc7efddd2f2a6c3d1ea23a8a3"
    assert _sha(render(scene, 128)) == (
        "ff01d91c68b82f291b24e79346791558d23e407fe1ee3c691abdb8edb267b13f"
    )
    np.testing.assert_array_equal(render(scene), image)


def test_render_draws_inside_the_image_with_named_colours():
    for scene in sample_scenes(3, 40):
        image = render(scene)
        mask = shape_mask(scene)
        assert mask.sum() > 300  # big enough to read
        assert not mask[0].any() and not mask[-1].any()
        assert not mask[:, 0].any() and not mask[:, -1].any()
        np.testing.assert_array_equal(image[0, 0], BACKGROUNDS[scene.background])
        is_color = np.all(image == np.array(COLORS[scene.color], dtype=np.uint8), axis=2)
        assert is_color.sum() > 80
        assert not (is_color & ~mask).any()


def test_fills_differ_and_outline_is_thick():
    base = Scene("square", "red", "solid", "white", 32, 32, 40)
    solid, striped, outlined = (render(with_changes(base, fill=f)) for f in FILLS)
    red = np.array(COLORS["red"], dtype=np.uint8)
    count = {name: np.all(im == red, axis=2).sum() for name, im in
             [("solid", solid), ("striped", striped), ("outlined", outlined)]}
    assert count["solid"] > count["striped"] > count["outlined"] > 0
    row = np.all(outlined[32] == red, axis=1)  # a horizontal line through the centre
    assert row[: 32].sum() >= 3 and row[32:].sum() >= 3 and not row[28:36].any()
    column = np.all(striped[:, 32] == red, axis=1)  # stripes alternate down the middle
    assert 0 < column[20:44].sum() < 24


def test_with_changes_keeps_geometry():
    scene = sample_scenes(9, 1)[0]
    changed = with_changes(scene, color="cyan" if scene.color != "cyan" else "red", shape="star")
    assert (changed.cx, changed.cy, changed.size) == (scene.cx, scene.cy, scene.size)
    assert changed.shape == "star" and changed.fill == scene.fill
    assert changed.background == scene.background
    assert scene.shape == sample_scenes(9, 1)[0].shape  # frozen, unchanged


def test_with_changes_rejects_invalid_changes():
    scene = Scene("circle", "red", "solid", "white")
    with pytest.raises(ValueError, match="geometry"):
        with_changes(scene, cx=10.0)
    with pytest.raises(ValueError, match="unknown colour"):
        with_changes(scene, color="mauve")
    with pytest.raises(ValueError, match="unknown background"):
        with_changes(scene, background="blue")  # shape colours are never backgrounds
    with pytest.raises(ValueError, match="invisible"):
        with_changes(scene, background="red")
    with pytest.raises(ValueError, match="unknown shape"):
        with_changes(scene, shape="hexagon")
    with pytest.raises(ValueError, match="invisible"):
        Scene("circle", "white", "solid", "white")


def test_style_truth_takes_geometry_and_shape_from_content():
    content = Scene("triangle", "red", "solid", "white", 30, 28, 40)
    style = Scene("circle", "blue", "striped", "black", 20, 44, 35)
    truth = style_truth(content, style)
    assert truth == Scene("triangle", "blue", "striped", "black", 30, 28, 40)


def test_caption_words_cover_every_caption():
    words = set(caption_words())
    captions = all_captions()
    assert len(captions) == len(SHAPES) * len(COLORS) * len(FILLS) * len(BACKGROUNDS)
    assert len(set(captions)) == len(captions)
    for text in captions:
        assert set(text.split()) <= words
