"""The toy world (scenes, rendering, ground-truth edits, an attribute reader) and the bundled toy
text-to-image model built on it."""

from .reader import ATTRIBUTES, ReadResult, attribute_accuracy, read_scene
from .world import (
    BACKGROUNDS,
    COLORS,
    FILLS,
    SHAPES,
    Scene,
    all_captions,
    caption,
    caption_words,
    render,
    sample_scenes,
    shape_mask,
    style_truth,
    with_changes,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "COLORS",
    "FILLS",
    "SHAPES",
    "ReadResult",
    "Scene",
    "all_captions",
    "attribute_accuracy",
    "caption",
    "caption_words",
    "read_scene",
    "render",
    "sample_scenes",
    "shape_mask",
    "style_truth",
    "with_changes",
]
