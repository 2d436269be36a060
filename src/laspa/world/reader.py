"""Analytic scene reader: recover the scene description from an image.

Used to score images produced by a small diffusion model, which are blurry
and colour-shifted, so every decision is a robust vote or a least-squares
fit rather than an exact pixel test:

1. resize to 64x64 (area averaging), the size the world is designed at;
2. background = majority of the border pixels snapped to the background palette;
3. per cell, each pixel is snapped to the nearest of {background} + object
   palette; the object colour is the majority non-background colour;
4. the pixel's opacity alpha is its projection on the background->object
   colour segment (exact for clean antialiased renders, graceful for blur);
5. shape and size = the rendered coverage template (6 shapes x 2 sizes at
   that cell's centre, plus "empty") with the least squared error to alpha,
   searched over Gaussian blurs (sigma 0-3 px) and small displacements
   (up to 2 px, lightly penalised), since generated objects are soft and
   may sit a pixel off their cell centre.

`benchmarks/world_reader.py` measures the read-back rate under such damage.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage

from .render import coverage
from .scene import Scene, SceneObject
from .vocab import BACKGROUND_COLORS, CELLS, MAX_OBJECTS, OBJECT_COLORS, SHAPES, SIZES

READ_SIZE = 64
_BORDER = 2
_BG_NAMES = tuple(BACKGROUND_COLORS)
_BG_RGB = np.array(list(BACKGROUND_COLORS.values()), dtype=np.float64)
_OBJ_NAMES = tuple(OBJECT_COLORS)
_OBJ_RGB = np.array(list(OBJECT_COLORS.values()), dtype=np.float64)
# Gaussian sigmas (px at 64x64) of the template bank: sharp renders to blurry samples.
_BLURS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
# Largest object displacement (px at 64x64) searched by the template matcher.
_MAX_OFFSET = 2
_OFFSET_COST = 0.003
_CANDIDATES: tuple[tuple[str, str], ...] = tuple((s, z) for s in SHAPES for z in SIZES)


class UnreadableSceneError(ValueError):
    """The image does not show a valid scene (no object, or more than allowed)."""


@dataclass(frozen=True)
class CellReading:
    """What the reader saw in one cell, with confidences.

    `object` is None for an empty cell.  `error` is the mean squared alpha
    error of the chosen template (plus its displacement penalty), `margin`
    the gap to the runner-up (larger is more confident), `fill` the fraction
    of non-background pixels and `color_share` the fraction of those that
    snapped to the chosen colour.
    """

    cell: str
    object: SceneObject | None
    error: float
    margin: float
    fill: float
    color_share: float


@dataclass(frozen=True)
class SceneReading:
    """The background and the nine per-cell readings of one image."""

    background: str
    background_share: float
    cells: tuple[CellReading, ...]

    @property
    def objects(self) -> tuple[SceneObject, ...]:
        return tuple(c.object for c in self.cells if c.object is not None)


def _to_array(image: Image.Image) -> np.ndarray:
    """Float RGB array at READ_SIZE x READ_SIZE (area-averaged when shrinking)."""
    rgb = image.convert("RGB")
    if rgb.size != (READ_SIZE, READ_SIZE):
        shrinking = min(rgb.size) >= READ_SIZE
        rgb = rgb.resize((READ_SIZE, READ_SIZE), Image.BOX if shrinking else Image.BILINEAR)
    return np.asarray(rgb, dtype=np.float64)


def _nearest(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for each pixel (..., 3) -> (...)."""
    d = ((pixels[..., None, :] - palette) ** 2).sum(axis=-1)
    return d.argmin(axis=-1)


def _read_background(arr: np.ndarray) -> tuple[str, float, np.ndarray]:
    """(name, vote share, measured colour) of the background from the border ring.

    The measured colour (median of the ring pixels that voted for the winner)
    is used for alpha estimation, which absorbs a global colour shift.
    """
    ring = np.ones(arr.shape[:2], dtype=bool)
    ring[_BORDER:-_BORDER, _BORDER:-_BORDER] = False
    pixels = arr[ring]
    labels = _nearest(pixels, _BG_RGB)
    votes = np.bincount(labels, minlength=len(_BG_NAMES))
    best = int(votes.argmax())
    measured = np.median(pixels[labels == best], axis=0)
    return _BG_NAMES[best], float(votes[best] / votes.sum()), measured


@lru_cache(maxsize=1)
def _cell_slices() -> tuple[tuple[slice, slice], ...]:
    """Pixel rows/columns whose centres fall in each cell, row-major like CELLS."""
    third = np.floor((np.arange(READ_SIZE) + 0.5) * 3 / READ_SIZE).astype(int)
    spans = []
    for k in range(3):
        members = np.flatnonzero(third == k)
        spans.append(slice(int(members[0]), int(members[-1]) + 1))
    return tuple((spans[r], spans[c]) for r in range(3) for c in range(3))


@lru_cache(maxsize=len(CELLS))
def _templates(cell: str) -> np.ndarray:
    """(B, 13, h, w) coverage templates in the cell, one set per blur in _BLURS.

    Index 0 of axis 1 is "empty", then SHAPES x SIZES.  Matching against
    blurred copies too lets a blurry generated shape find its own outline
    instead of the shape whose sharp template happens to be roundest.
    """
    ys, xs = _cell_slices()[CELLS.index(cell)]
    full = [np.zeros((READ_SIZE, READ_SIZE))]
    for shape, size in _CANDIDATES:
        full.append(coverage(SceneObject(shape, "red", size, cell), READ_SIZE))
    bank = [
        np.stack([ndimage.gaussian_filter(m, sigma) if sigma else m for m in full])[:, ys, xs]
        for sigma in _BLURS
    ]
    out = np.stack(bank)
    out.setflags(write=False)
    return out


def _alpha(pixels: np.ndarray, bg: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Opacity of `fg` over `bg` that best explains each pixel (projection, clipped)."""
    axis = fg - bg
    return np.clip(((pixels - bg) @ axis) / float(axis @ axis), 0.0, 1.0)


def _mixture_residuals(pixels: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Per object colour, the squared distance of pixels to the bg->colour segment.

    Antialiasing and blur mix an object with the background, so its pixels
    lie on that segment: the true colour leaves the least residual even when
    few pixels are pure enough to snap to it.
    """
    axes = _OBJ_RGB - bg  # (8, 3)
    diff = pixels - bg  # (n, 3)
    t = np.clip((diff @ axes.T) / (axes * axes).sum(axis=1), 0.0, 1.0)  # (n, 8)
    fitted = t[..., None] * axes[None]  # (n, 8, 3)
    return ((diff[:, None, :] - fitted) ** 2).sum(axis=(0, 2))


@lru_cache(maxsize=1)
def _offset_penalty() -> np.ndarray:
    """Error added per offset (flattened like the sliding windows): squared distance.

    Without it the extra freedom lets a wrong shape slide onto a very blurry
    object; with it an offset is taken only when it clearly fits better.
    """
    d = np.arange(-_MAX_OFFSET, _MAX_OFFSET + 1)
    return (_OFFSET_COST * (d[:, None] ** 2 + d[None, :] ** 2)).reshape(-1)


def _match(alpha_window: np.ndarray, cell: str) -> np.ndarray:
    """Least mean squared error of each candidate over blurs and small offsets.

    `alpha_window` is the cell's alpha map with _MAX_OFFSET px of context on
    every side; every (offset, blur) placement of each template is scored and
    the best kept, so an object drawn a pixel or two off its cell centre, or
    blurrier than a render, still matches its own shape.
    """
    bank = _templates(cell)  # (B, 13, h, w)
    h, w = bank.shape[-2:]
    windows = sliding_window_view(alpha_window, (h, w))  # (2R+1, 2R+1, h, w)
    windows = windows.reshape(-1, 1, 1, h, w)
    errors = ((bank[None] - windows) ** 2).mean(axis=(-2, -1))  # (offsets, B, 13)
    return (errors + _offset_penalty()[:, None, None]).min(axis=(0, 1))


def _read_cell(padded: np.ndarray, index: int, bg_name: str, bg_rgb: np.ndarray) -> CellReading:
    """Read one cell of the background-padded image (pad = _MAX_OFFSET px)."""
    cell = CELLS[index]
    ys, xs = _cell_slices()[index]
    r = _MAX_OFFSET
    patch = padded[ys.start + r : ys.stop + r, xs.start + r : xs.stop + r]
    palette = np.vstack([np.asarray(BACKGROUND_COLORS[bg_name], dtype=np.float64), _OBJ_RGB])
    labels = _nearest(patch, palette)
    fg_labels = labels[labels > 0] - 1
    fill = float(fg_labels.size / labels.size)
    if fg_labels.size == 0:
        return CellReading(cell, None, 0.0, float("inf"), 0.0, 0.0)
    color = int(_mixture_residuals(patch.reshape(-1, 3), bg_rgb).argmin())
    color_share = float(np.mean(fg_labels == color))
    window = padded[ys.start : ys.stop + 2 * r, xs.start : xs.stop + 2 * r]
    errors = _match(_alpha(window, bg_rgb, _OBJ_RGB[color]), cell)
    order = np.argsort(errors)
    best, second = int(order[0]), int(order[1])
    margin = float(errors[second] - errors[best])
    if best == 0:
        return CellReading(cell, None, float(errors[0]), margin, fill, color_share)
    shape, size = _CANDIDATES[best - 1]
    found = SceneObject(shape, _OBJ_NAMES[color], size, cell)
    return CellReading(cell, found, float(errors[best]), margin, fill, color_share)


def read_scene_scores(image: Image.Image) -> SceneReading:
    """Per-cell readings with confidences; never raises on a readable image."""
    arr = _to_array(image)
    background, share, bg_rgb = _read_background(arr)
    r = _MAX_OFFSET
    padded = np.empty((READ_SIZE + 2 * r, READ_SIZE + 2 * r, 3))
    padded[:] = bg_rgb
    padded[r:-r, r:-r] = arr
    cells = tuple(_read_cell(padded, i, background, bg_rgb) for i in range(len(CELLS)))
    return SceneReading(background, share, cells)


def read_scene(image: Image.Image) -> Scene:
    """Read the scene shown in `image` (any size; rendered or generated).

    Raises UnreadableSceneError (a ValueError) when no object or more than
    MAX_OBJECTS objects are seen, since no valid scene matches such an image.
    """
    reading = read_scene_scores(image)
    objects = reading.objects
    if not 1 <= len(objects) <= MAX_OBJECTS:
        raise UnreadableSceneError(
            f"the image shows {len(objects)} object(s); a scene holds 1 to {MAX_OBJECTS}"
        )
    return Scene(reading.background, objects)
