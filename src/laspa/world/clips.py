"""Scene-world clips: one edit applied to every frame of a short clip in which one object
slides continuously, so that every frame has an exact target and an exact mask.

The moving object is small and slides horizontally inside its own grid cell (from one
side of the cell to the other, with a pixel of clearance): the caption stays true in every
frame, the scene reader still reads the frame, and the motion is sub-cell and continuous
(fractions of a pixel per frame are rendered exactly, by supersampling, like every scene).
The edit (recolor, reshape, or background) is the same for every frame; when it touches
an object, that object is the one that moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .edits import Edit, brief_captions, edit_scene, sample_edit
from .render import SHAPE_FUNCTIONS, _bbox, _check_size, object_radius, supersampling
from .scene import Scene, SceneObject, sample_scene
from .vocab import BACKGROUND_COLORS, OBJECT_COLORS, cell_center

#: the edits a clip can carry: those that keep every object where it is
CLIP_KINDS: tuple[str, ...] = ("recolor", "reshape", "background")
_DILATION = np.ones((3, 3), dtype=bool)


def shifted_coverage(obj: SceneObject, size: int, dx: float) -> np.ndarray:
    """Float HxW coverage of ``obj`` moved ``dx`` pixels right of its cell's centre."""
    cx, cy = cell_center(obj.cell, size)
    cx += dx
    r = object_radius(obj.size, size)
    x0, y0, x1, y1 = _bbox(cx, cy, r, size)
    ss = supersampling(size)
    offsets = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    u, v = np.broadcast_arrays((xs[None, :] - cx) / r, (ys[:, None] - cy) / r)
    inside = SHAPE_FUNCTIONS[obj.shape](u, v)
    out = np.zeros((size, size))
    out[y0:y1, x0:x1] = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    return out


def render_shifted(scene: Scene, size: int, mover: int, dx: float) -> np.ndarray:
    """uint8 HxWx3 render of ``scene`` with object ``mover`` moved ``dx`` px right."""
    _check_size(size)
    image = np.empty((size, size, 3))
    image[:] = BACKGROUND_COLORS[scene.background]
    for index, obj in enumerate(scene.objects):
        a = shifted_coverage(obj, size, dx if index == mover else 0.0)[..., None]
        image = image * (1.0 - a) + np.asarray(OBJECT_COLORS[obj.color], float) * a
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def slide_range(size: int) -> float:
    """How far a small object can slide either way of its cell's centre and stay inside
    the cell with a pixel of clearance (3.7 px at 64 px)."""
    return size / 6.0 - object_radius("small", size) - size / 64.0


@dataclass(frozen=True, eq=False)
class ClipCase:
    """A clip: source scene, the edit, which object moves, and its offsets per frame."""

    id: str
    source: Scene
    edit: Edit
    mover: int
    shifts: tuple[float, ...]
    size: int

    @property
    def target(self) -> Scene:
        return edit_scene(self.source, self.edit)

    @property
    def prompts(self) -> tuple[str, str]:
        """(source, target) prompts naming only what the edit touches (shapes-brief)."""
        return brief_captions(self.source, self.edit)

    def source_frames(self) -> list[Image.Image]:
        return [self._frame(self.source, dx) for dx in self.shifts]

    def target_frames(self) -> list[Image.Image]:
        return [self._frame(self.target, dx) for dx in self.shifts]

    def masks(self) -> list[np.ndarray]:
        """Per frame, True where an ideal edit may change pixels (dilated by 1 px)."""
        return [self._mask(dx) for dx in self.shifts]

    def _frame(self, scene: Scene, dx: float) -> Image.Image:
        return Image.fromarray(render_shifted(scene, self.size, self.mover, dx), mode="RGB")

    def _mask(self, dx: float) -> np.ndarray:
        shift = {self.mover: dx}
        if self.edit.kind == "background":
            total = sum(
                (
                    shifted_coverage(o, self.size, shift.get(i, 0.0))
                    for i, o in enumerate(self.source.objects)
                ),
                np.zeros((self.size, self.size)),
            )
            changing = total < 1.0
        else:
            changing = shifted_coverage(self.source.objects[self.mover], self.size, dx) > 0
            changing |= shifted_coverage(self.target.objects[self.mover], self.size, dx) > 0
        return ndimage.binary_dilation(changing, structure=_DILATION)


def sample_clip(
    seed: int, index: int = 0, frames: int = 8, size: int = 64, kinds: Sequence[str] = CLIP_KINDS
) -> ClipCase:
    """Clip ``index`` of ``seed``: the edit kinds in turn, the mover made small."""
    if frames < 2:
        raise ValueError(f"a clip has at least 2 frames, got {frames}")
    unknown = [kind for kind in kinds if kind not in CLIP_KINDS]
    if unknown or not kinds:
        raise ValueError(f"clip edit kinds are {', '.join(CLIP_KINDS)}; got {', '.join(unknown)}")
    kind = kinds[index % len(kinds)]
    rng = np.random.default_rng([seed, index, 20])
    scene = sample_scene(rng)
    edit = sample_edit(rng, scene, kind)
    mover = edit.index if edit.index is not None else int(rng.integers(len(scene.objects)))
    objects = list(scene.objects)
    objects[mover] = objects[mover].replace(size="small")
    scene = Scene(scene.background, tuple(objects))
    mover = scene.objects.index(objects[mover])  # caption order is unchanged by size
    reach = slide_range(size)
    shifts = tuple(float(x) for x in np.linspace(-reach, reach, frames))
    return ClipCase(f"c{seed}-{index:03d}-{kind}", scene, edit, mover, shifts, size)
