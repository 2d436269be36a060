"""Exact, deterministic, antialiased rendering of scenes.

Shapes are defined analytically in a unit box (u, v in [-1, 1], v pointing
down) and rasterised by supersampling: each pixel's coverage is the fraction
of an ss x ss grid of sub-pixel sample points inside the shape.  This is pure
numpy arithmetic on fixed sample positions, so renders are byte-identical
across runs and machines, sub-pixel object centres are exact (no rounding of
polygon vertices), and a pixel an object does not touch is exactly the
background colour -- which is what makes the edit masks exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

from .scene import Scene, SceneObject
from .vocab import BACKGROUND_COLORS, OBJECT_COLORS, SIZE_FRACTION, cell_center

InsideFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _inside_polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd crossing test of points against a closed polygon."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        x0, y0 = verts[i]
        x1, y1 = verts[(i + 1) % n]
        crosses = (y0 > v) != (y1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


def _star_vertices(points: int = 5, inner: float = 0.5) -> np.ndarray:
    """A point-up star, shifted vertically so its bounding box is centred."""
    angles = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    verts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    verts[:, 1] -= (verts[:, 1].max() + verts[:, 1].min()) / 2
    return verts


_STAR = _star_vertices()
_TRIANGLE = np.array([(0.0, -0.95), (1.0, 0.85), (-1.0, 0.85)])
# Half side of the square: sqrt(pi)/2 gives it the circle's area, so that
# size is read from extent and shape from outline, not from area alone.
_SQUARE_HALF = math.sqrt(math.pi) / 2
_CROSS_HALF_WIDTH = 0.33
_CROSS_HALF_LENGTH = 0.95


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= _SQUARE_HALF) & (np.abs(v) <= _SQUARE_HALF)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _inside_polygon(u, v, _TRIANGLE)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _inside_polygon(u, v, _STAR)


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The classic implicit heart (x^2+y^2-1)^3 = x^2 y^3, scaled to the unit box."""
    x = u * 1.139
    y = 0.11825 - v * 1.11825
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    w, h = _CROSS_HALF_WIDTH, _CROSS_HALF_LENGTH
    return ((au <= w) & (av <= h)) | ((av <= w) & (au <= h))


SHAPE_FUNCTIONS: dict[str, InsideFn] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "heart": _heart,
    "cross": _cross,
}


def supersampling(size: int) -> int:
    """Sub-samples per pixel side: 8 for training-size images, 4 above 128 px."""
    return 8 if size <= 128 else 4


def object_radius(size_word: str, image_size: int) -> float:
    """Half the object's extent in pixels."""
    return SIZE_FRACTION[size_word] * image_size / 2.0


def _bbox(cx: float, cy: float, r: float, size: int) -> tuple[int, int, int, int]:
    x0 = max(0, math.floor(cx - r))
    y0 = max(0, math.floor(cy - r))
    x1 = min(size, math.ceil(cx + r) + 1)
    y1 = min(size, math.ceil(cy + r) + 1)
    return x0, y0, x1, y1


@lru_cache(maxsize=512)
def _coverage_patch(
    shape: str, size_word: str, cell: str, size: int
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Coverage in [0, 1] of one object over its pixel bounding box (cached, read-only)."""
    cx, cy = cell_center(cell, size)
    r = object_radius(size_word, size)
    x0, y0, x1, y1 = _bbox(cx, cy, r, size)
    ss = supersampling(size)
    offsets = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    u = (xs[None, :] - cx) / r
    v = (ys[:, None] - cy) / r
    u, v = np.broadcast_arrays(u, v)
    inside = SHAPE_FUNCTIONS[shape](u, v)
    cov = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    cov.setflags(write=False)
    return (x0, y0, x1, y1), cov


def coverage(obj: SceneObject, size: int = 64) -> np.ndarray:
    """Float HxW map of the fraction of each pixel the object covers."""
    _check_size(size)
    (x0, y0, x1, y1), patch = _coverage_patch(obj.shape, obj.size, obj.cell, size)
    out = np.zeros((size, size), dtype=np.float64)
    out[y0:y1, x0:x1] = patch
    return out


def footprint(obj: SceneObject, size: int = 64) -> np.ndarray:
    """Bool HxW: every pixel the object touches at all (coverage > 0)."""
    return coverage(obj, size) > 0


def _check_size(size: int) -> None:
    if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 16:
        raise ValueError(f"image size must be an integer >= 16, got {size!r}")


def render_array(scene: Scene, size: int = 64) -> np.ndarray:
    """uint8 HxWx3 render of a scene (the array behind `render`)."""
    _check_size(size)
    bg = np.asarray(BACKGROUND_COLORS[scene.background], dtype=np.float64)
    img = np.empty((size, size, 3), dtype=np.float64)
    img[:] = bg
    for obj in scene.objects:
        (x0, y0, x1, y1), cov = _coverage_patch(obj.shape, obj.size, obj.cell, size)
        color = np.asarray(OBJECT_COLORS[obj.color], dtype=np.float64)
        a = cov[..., None]
        region = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = region * (1.0 - a) + color * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Render a scene to an RGB PIL image of `size` x `size` pixels.

    Deterministic (byte-identical on every call) and antialiased; the layout
    scales with `size`, so 64, 128, 256 and 512 px renders show the same scene.
    """
    return Image.fromarray(render_array(scene, size), mode="RGB")
