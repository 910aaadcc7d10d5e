"""The toy world: scenes with one coloured shape on a plain background.

Every edit in the project has an exact right answer here:

* a prompt swap is an attribute change, whose ground truth is ``render(with_changes(scene, ...))``
  (the geometry is kept);
* inpainting's ground truth is the unmasked original;
* style transfer's ground truth is ``render(style_truth(content, style))``: the content's shape and
  geometry drawn with the style's colour, fill and background.

Geometry is given in the pixel units of a 64x64 image (``cx``, ``cy``: the centre of the shape's
bounding circle; ``size``: its diameter). ``render(scene, image_size=...)`` scales everything, so the
same scene can be drawn at any resolution. Rendering is pure numpy and deterministic: a 4x4
supersampled coverage count (integers) blended between two colours, rounded once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "FILLS",
    "SHAPES",
    "BASE_SIZE",
    "OUTLINE_WIDTH",
    "STRIPE_PERIOD",
    "SIZE_RANGE",
    "Scene",
    "caption",
    "render",
    "shape_mask",
    "sample_scenes",
    "with_changes",
    "style_truth",
    "all_captions",
    "caption_words",
]

# Named colours (RGB). Shape colours and background colours are disjoint palettes chosen so that every
# shape colour is at least ~115 (Euclidean, 0-255 RGB) away from every background colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 205, 35),
    "magenta": (210, 50, 210),
    "cyan": (40, 200, 220),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "beige": (225, 210, 170),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
FILLS: tuple[str, ...] = ("solid", "striped", "outlined")

BASE_SIZE = 64  # geometry units: pixels of a 64x64 image
OUTLINE_WIDTH = 4.0  # outline (and border of striped shapes) width, in 64-px units
STRIPE_PERIOD = 8  # horizontal stripes: 4 px of colour, 4 px of background, in 64-px units
SIZE_RANGE = (34.0, 44.0)  # diameter of the bounding circle, in 64-px units
MARGIN = 2.0  # minimum distance of the shape's bounding circle from the image border
_SUPERSAMPLE = 4
_MIN_COLOR_BACKGROUND_DISTANCE = 60.0


def _star_polygon(points: int = 5, inner: float = 0.55) -> np.ndarray:
    vertices = []
    for k in range(2 * points):
        radius = 1.0 if k % 2 == 0 else inner
        angle = -np.pi / 2 + k * np.pi / points
        vertices.append((radius * np.cos(angle), radius * np.sin(angle)))
    return np.array(vertices)


_ARM = 0.36  # half width of the cross's arms
# Shapes as polygons in units of the bounding-circle radius (y grows downwards); None: the circle.
_POLYGONS: dict[str, np.ndarray | None] = {
    "circle": None,
    "square": np.array([(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]),
    "triangle": np.array([(0.0, -1.0), (1.0, 0.9), (-1.0, 0.9)]),
    "star": _star_polygon(),
    "diamond": np.array([(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]),
    "cross": np.array(
        [
            (-_ARM, -1.0), (_ARM, -1.0), (_ARM, -_ARM), (1.0, -_ARM), (1.0, _ARM), (_ARM, _ARM),
            (_ARM, 1.0), (-_ARM, 1.0), (-_ARM, _ARM), (-1.0, _ARM), (-1.0, -_ARM), (-_ARM, -_ARM),
        ]
    ),
}


def shape_extent(shape: str) -> tuple[float, float, float, float]:
    """Bounding box ``(u_min, u_max, v_min, v_max)`` of a shape in units of its radius."""
    polygon = _POLYGONS[shape]
    if polygon is None:
        return (-1.0, 1.0, -1.0, 1.0)
    return (polygon[:, 0].min(), polygon[:, 0].max(), polygon[:, 1].min(), polygon[:, 1].max())


@dataclass(frozen=True)
class Scene:
    """One shape on a plain background.

    Args:
        shape: one of ``SHAPES``.
        color: the shape's colour, a key of ``COLORS``.
        fill: one of ``FILLS``.
        background: a key of ``BACKGROUNDS``.
        cx, cy: centre of the shape in pixels of a 64x64 image.
        size: diameter of the shape's bounding circle in pixels of a 64x64 image.
    """

    shape: str
    color: str
    fill: str
    background: str
    cx: float = 32.0
    cy: float = 32.0
    size: float = 40.0

    def __post_init__(self) -> None:
        _validate(self)


def _validate(scene: Scene) -> None:
    if scene.color == scene.background:
        raise ValueError(
            f"shape colour and background are both {scene.color!r}: the shape would be invisible; "
            "choose another colour or background"
        )
    if scene.shape not in SHAPES:
        raise ValueError(f"unknown shape {scene.shape!r}; choose one of {SHAPES}")
    if scene.color not in COLORS:
        raise ValueError(f"unknown colour {scene.color!r}; choose one of {tuple(COLORS)}")
    if scene.fill not in FILLS:
        raise ValueError(f"unknown fill {scene.fill!r}; choose one of {FILLS}")
    if scene.background not in BACKGROUNDS:
        raise ValueError(
            f"unknown background {scene.background!r}; choose one of {tuple(BACKGROUNDS)}"
        )
    distance = np.linalg.norm(
        np.subtract(COLORS[scene.color], BACKGROUNDS[scene.background], dtype=float)
    )
    if distance < _MIN_COLOR_BACKGROUND_DISTANCE:
        raise ValueError(
            f"shape colour {scene.color!r} cannot be told apart from background "
            f"{scene.background!r}; choose another colour or background"
        )
    if not scene.size > 0:
        raise ValueError(f"size must be positive, got {scene.size}")


def caption(scene: Scene) -> str:
    """The scene's caption, e.g. ``"a striped red circle on a white background"``."""
    article = "an" if scene.fill[0] in "aeiou" else "a"
    return f"{article} {scene.fill} {scene.color} {scene.shape} on a {scene.background} background"


def caption_words() -> list[str]:
    """Every word any caption can contain (the tokenizer's vocabulary), in a fixed order."""
    words = ["a", "an", "on", "background"]
    for group in (FILLS, tuple(COLORS), SHAPES, tuple(BACKGROUNDS)):
        words.extend(w for w in group if w not in words)
    return words


def all_captions() -> list[str]:
    """All distinct captions of the world, in a fixed order."""
    return [
        caption(Scene(shape=shape, color=color, fill=fill, background=background))
        for fill in FILLS
        for color in COLORS
        for shape in SHAPES
        for background in BACKGROUNDS
    ]


def _inside_polygon(polygon: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    count = len(polygon)
    for i in range(count):
        x_i, y_i = polygon[i]
        x_j, y_j = polygon[(i + 1) % count]
        if y_i == y_j:
            continue
        crosses = (y_i > v) != (y_j > v)
        x_cross = (x_j - x_i) * (v - y_i) / (y_j - y_i) + x_i
        inside ^= crosses & (u < x_cross)
    return inside


def _distance_to_boundary(polygon: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Distance from each point to the polygon's outline (same units as the polygon)."""
    best = np.full(u.shape, np.inf)
    count = len(polygon)
    for i in range(count):
        a = polygon[i]
        b = polygon[(i + 1) % count]
        ab = b - a
        t = ((u - a[0]) * ab[0] + (v - a[1]) * ab[1]) / float(ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        du = u - (a[0] + t * ab[0])
        dv = v - (a[1] + t * ab[1])
        best = np.minimum(best, np.sqrt(du * du + dv * dv))
    return best


def _coverage(
    scene: Scene, image_size: int, painted: bool, supersample: int = _SUPERSAMPLE
) -> np.ndarray:
    """Per-pixel count (0..supersample**2) of supersamples that are inside the silhouette
    (``painted=False``) or painted in the shape's colour (``painted=True``)."""
    scale = image_size / BASE_SIZE
    n = image_size * supersample
    # Sample positions in 64-px units at the centres of the supersamples.
    coords = (np.arange(n, dtype=np.float64) + 0.5) / (supersample * scale)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    radius = scene.size / 2.0
    u = (x - scene.cx) / radius
    v = (y - scene.cy) / radius
    polygon = _POLYGONS[scene.shape]
    if polygon is None:
        rho = np.sqrt(u * u + v * v)
        inside = rho <= 1.0
        edge_distance = (1.0 - rho) * radius
    else:
        inside = _inside_polygon(polygon, u, v)
        edge_distance = _distance_to_boundary(polygon, u, v) * radius
    if painted and scene.fill != "solid":
        border = edge_distance <= OUTLINE_WIDTH
        if scene.fill == "striped":
            stripe = (np.floor(y / (STRIPE_PERIOD / 2)) % 2) == 0
            inside = inside & (border | stripe)
        else:
            inside = inside & border
    counts = inside.reshape(image_size, supersample, image_size, supersample).sum(axis=(1, 3))
    return counts


def render(scene: Scene, image_size: int = BASE_SIZE) -> np.ndarray:
    """Draw a scene.

    Args:
        scene: the scene.
        image_size: side of the square image in pixels; geometry scales with it.

    Returns:
        ``uint8`` array of shape ``(image_size, image_size, 3)``.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    counts = _coverage(scene, image_size, painted=True).astype(np.int64)
    background = np.array(BACKGROUNDS[scene.background], dtype=np.int64)
    color = np.array(COLORS[scene.color], dtype=np.int64)
    total = _SUPERSAMPLE * _SUPERSAMPLE
    # Integer blend with rounding: exact and identical on every machine.
    mixed = background * (total - counts[..., None]) + color * counts[..., None]
    return ((2 * mixed + total) // (2 * total)).astype(np.uint8)


def shape_mask(scene: Scene, image_size: int = BASE_SIZE, exact: bool = True) -> np.ndarray:
    """Boolean ``(image_size, image_size)`` mask of the shape's silhouette (whatever its fill).

    Args:
        scene: the scene.
        image_size: side of the image in pixels.
        exact: ``True``: pixels at least half covered by the shape (4x4 supersampling, consistent
            with ``render``); ``False``: pixels whose centre is inside (16x faster).
    """
    supersample = _SUPERSAMPLE if exact else 1
    counts = _coverage(scene, image_size, painted=False, supersample=supersample)
    return counts * 2 >= supersample * supersample


def sample_scenes(seed: int, n: int) -> list[Scene]:
    """``n`` random scenes from ``numpy.random.default_rng(seed)``: the same on every machine.

    Discrete attributes are uniform; the size is uniform in ``SIZE_RANGE`` and the centre uniform
    among positions that keep the shape's bounding circle ``MARGIN`` px inside the image.
    """
    rng = np.random.default_rng(seed)
    color_names = tuple(COLORS)
    background_names = tuple(BACKGROUNDS)
    scenes = []
    for _ in range(n):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = color_names[int(rng.integers(len(color_names)))]
        fill = FILLS[int(rng.integers(len(FILLS)))]
        background = background_names[int(rng.integers(len(background_names)))]
        size = float(rng.uniform(*SIZE_RANGE))
        low = size / 2 + MARGIN
        high = BASE_SIZE - low
        cx = float(rng.uniform(low, high))
        cy = float(rng.uniform(low, high))
        scenes.append(
            Scene(
                shape=shape,
                color=color,
                fill=fill,
                background=background,
                cx=round(cx, 3),
                cy=round(cy, 3),
                size=round(size, 3),
            )
        )
    return scenes


_DISCRETE = ("shape", "color", "fill", "background")


def with_changes(scene: Scene, **attrs: str) -> Scene:
    """Ground truth of a prompt swap: the scene with some discrete attributes changed and the same
    geometry.

    Args:
        scene: the source scene.
        **attrs: new values for ``shape``, ``color``, ``fill`` and/or ``background``.

    Raises:
        ValueError: for an unknown attribute or value, or when the shape's colour would equal (or be
            indistinguishable from) the background colour.
    """
    unknown = sorted(set(attrs) - set(_DISCRETE))
    if unknown:
        raise ValueError(
            f"cannot change {unknown}: only {_DISCRETE} can change (geometry is kept)"
        )
    return dataclasses.replace(scene, **attrs)


def style_truth(content: Scene, style: Scene) -> Scene:
    """Ground truth of a style transfer: the content's shape and geometry with the style's colour,
    fill and background."""
    return dataclasses.replace(
        content, color=style.color, fill=style.fill, background=style.background
    )
