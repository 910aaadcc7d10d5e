"""The toy world's scene reader (ddim_edit/toy/reader.py): exact on clean renders, robust to blur and noise."""

import cv2
import numpy as np

from ddim_edit.toy.reader import attribute_accuracy, ATTRIBUTES, read_scene
from ddim_edit.toy.world import BACKGROUNDS, render, sample_scenes, Scene, shape_mask


def test_reader_is_exact_on_clean_renders():
    scenes = sample_scenes(123, 320)
    accuracy = attribute_accuracy([render(s) for s in scenes], scenes)
    for name in ATTRIBUTES:
        assert accuracy[name] >= 0.99, accuracy


def test_reader_survives_blur_and_noise():
    rng = np.random.default_rng(5)
    scenes = sample_scenes(77, 60)
    images = []
    for scene in scenes:
        blurred = cv2.GaussianBlur(render(scene).astype(np.float64), (5, 5), 1.0)
        noisy = blurred + rng.normal(0.0, 10.0, blurred.shape)
        images.append(np.clip(noisy, 0, 255).astype(np.uint8))
    accuracy = attribute_accuracy(images, scenes)
    for name in ATTRIBUTES:
        assert accuracy[name] >= 0.95, accuracy


def test_reader_mask_matches_silhouette_and_float_input():
    scene = Scene("star", "blue", "outlined", "beige", 30.0, 33.0, 42.0)
    result = read_scene(render(scene).astype(np.float32) / 255.0)
    assert (result.shape, result.color, result.fill, result.background) == (
        "star", "blue", "outlined", "beige")
    truth = shape_mask(scene)
    iou = (result.mask & truth).sum() / (result.mask | truth).sum()
    assert iou > 0.9
    assert abs(result.cx - 30.0) < 1.5 and abs(result.cy - 33.0) < 1.5
    assert abs(result.size - 42.0) < 3.0


def test_reader_on_empty_image():
    image = np.full((64, 64, 3), BACKGROUNDS["gray"], dtype=np.uint8)
    result = read_scene(image)
    assert result.background == "gray" and result.shape is None and not result.mask.any()
