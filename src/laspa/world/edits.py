"""Edits of scene descriptions, with the exact target scene and the exact edit mask.

An edit is applied to the description, never to pixels, so the target image
is simply `render(target)` and the mask is computed from object coverage:
the pixels an ideal editor may change.  Everything outside the mask is
byte-identical between the source and target renders (a property the tests
check for every kind), which is what benchmark preservation metrics rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from .render import coverage, render
from .scene import Scene, SceneObject, caption, named_caption
from .vocab import BACKGROUND_COLORS, CELLS, MAX_OBJECTS, OBJECT_COLORS, SHAPES, SIZES

EDIT_KINDS: tuple[str, ...] = (
    "recolor",
    "reshape",
    "resize",
    "move",
    "add",
    "remove",
    "background",
)

# Edits that change one existing object's attribute: kind -> (field, allowed values).
_ATTRIBUTE_EDITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "recolor": ("color", tuple(OBJECT_COLORS)),
    "reshape": ("shape", SHAPES),
    "resize": ("size", SIZES),
    "move": ("cell", CELLS),
}

_DILATION = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Edit:
    """One edit: `kind`, the `index` of the object in `scene.objects`, and the new `value`.

    - recolor / reshape / resize / move: `index` and a colour / shape / size / cell word.
    - add: `value` is the new `SceneObject` (index None).
    - remove: `index` only (value None).
    - background: `value` is a background colour word (index None).
    """

    kind: str
    index: int | None = None
    value: str | SceneObject | None = None

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise ValueError(
                f"unknown edit kind {self.kind!r}; expected one of: {', '.join(EDIT_KINDS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        value = self.value.to_dict() if isinstance(self.value, SceneObject) else self.value
        return {"kind": self.kind, "index": self.index, "value": value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Edit:
        if not isinstance(data, dict) or "kind" not in data:
            raise ValueError("an edit must be a JSON object with at least a 'kind' key")
        unknown = set(data) - {"kind", "index", "value"}
        if unknown:
            raise ValueError(f"unknown edit keys {sorted(unknown)}")
        value = data.get("value")
        if isinstance(value, dict):
            value = SceneObject.from_dict(value)
        return cls(data["kind"], data.get("index"), value)


@dataclass(frozen=True, eq=False)
class EditCase:
    """A complete benchmark case: both scenes, both captions and the edit mask.

    `mask` is a bool (size, size) array, True where an ideal edit may change
    pixels; outside it `render(source)` and `render(target)` are identical.
    """

    source: Scene
    target: Scene
    source_caption: str
    target_caption: str
    mask: np.ndarray = field(repr=False)
    kind: str
    edit: Edit
    size: int

    def source_image(self) -> Image.Image:
        return render(self.source, self.size)

    def target_image(self) -> Image.Image:
        return render(self.target, self.size)

    def mask_image(self) -> Image.Image:
        """The mask as a black/white 'L' image (white = may change)."""
        return Image.fromarray(self.mask.astype(np.uint8) * 255, mode="L")


def _object_at(scene: Scene, index: object) -> SceneObject:
    n = len(scene.objects)
    if not isinstance(index, int | np.integer) or isinstance(index, bool):
        raise ValueError(f"this edit needs an object index (0 to {n - 1}), got {index!r}")
    if not 0 <= index < n:
        raise ValueError(f"object index {index} is out of range; the scene has {n} object(s)")
    return scene.objects[int(index)]


def _require_no_index(edit: Edit) -> None:
    if edit.index is not None:
        raise ValueError(f"a {edit.kind} edit takes no object index, got {edit.index!r}")


def _replace_object(scene: Scene, old: SceneObject, new: SceneObject) -> Scene:
    objects = tuple(new if o is old else o for o in scene.objects)
    return Scene(scene.background, objects)


def _edit_attribute(scene: Scene, edit: Edit) -> tuple[Scene, SceneObject, SceneObject]:
    """recolor / reshape / resize / move: returns (target, old object, new object)."""
    old = _object_at(scene, edit.index)
    name, allowed = _ATTRIBUTE_EDITS[edit.kind]
    word = "object color" if name == "color" else name
    if not isinstance(edit.value, str) or edit.value not in allowed:
        raise ValueError(
            f"unknown {word} {edit.value!r} for a {edit.kind} edit; "
            f"expected one of: {', '.join(allowed)}"
        )
    if getattr(old, name) == edit.value:
        raise ValueError(
            f"{edit.kind} is a no-op: object {edit.index} already has {name} {edit.value!r}"
        )
    if name == "cell" and edit.value in scene.occupied_cells:
        raise ValueError(f"cannot move to {edit.value!r}: the cell is occupied")
    new = old.replace(**{name: edit.value})
    return _replace_object(scene, old, new), old, new


def edit_scene(scene: Scene, edit: Edit) -> Scene:
    """The target scene of an edit (pure; raises ValueError if the edit is impossible)."""
    return _apply(scene, edit)[0]


def _apply(scene: Scene, edit: Edit) -> tuple[Scene, list[SceneObject]]:
    """(target scene, the objects whose footprints the edit touches)."""
    if edit.kind in _ATTRIBUTE_EDITS:
        target, old, new = _edit_attribute(scene, edit)
        return target, [old, new]
    if edit.kind == "add":
        _require_no_index(edit)
        new = edit.value
        if not isinstance(new, SceneObject):
            raise ValueError(f"an add edit needs a SceneObject value, got {new!r}")
        if len(scene.objects) >= MAX_OBJECTS:
            raise ValueError(f"cannot add an object: the scene already holds {MAX_OBJECTS}")
        if new.cell in scene.occupied_cells:
            raise ValueError(f"cannot add at {new.cell!r}: the cell is occupied")
        return Scene(scene.background, (*scene.objects, new)), [new]
    if edit.kind == "remove":
        old = _object_at(scene, edit.index)
        if edit.value is not None:
            raise ValueError(f"a remove edit takes no value, got {edit.value!r}")
        if len(scene.objects) == 1:
            raise ValueError("cannot remove the last object: a scene keeps at least one")
        return Scene(scene.background, tuple(o for o in scene.objects if o is not old)), [old]
    # background
    _require_no_index(edit)
    if not isinstance(edit.value, str) or edit.value not in BACKGROUND_COLORS:
        raise ValueError(
            f"unknown background color {edit.value!r}; "
            f"expected one of: {', '.join(BACKGROUND_COLORS)}"
        )
    if edit.value == scene.background:
        raise ValueError(f"background is a no-op: the background is already {edit.value!r}")
    return Scene(edit.value, scene.objects), []


def edit_mask(scene: Scene, edit: Edit, size: int = 64) -> np.ndarray:
    """Bool mask of the pixels an ideal edit may change, at `size` x `size`.

    Object edits: union of the edited object's source and target footprints
    (every pixel it touches), dilated by 1 px as slack for antialiasing.
    Background: every pixel that shows any background (object coverage < 1),
    dilated by 1 px into the objects, so object interiors are excluded.
    """
    _, touched = _apply(scene, edit)
    if edit.kind == "background":
        total = sum((coverage(o, size) for o in scene.objects), np.zeros((size, size)))
        changing = total < 1.0
    else:
        changing = np.zeros((size, size), dtype=bool)
        for o in touched:
            changing |= coverage(o, size) > 0
    return ndimage.binary_dilation(changing, structure=_DILATION)


def apply_edit(scene: Scene, edit: Edit, size: int = 64) -> EditCase:
    """Apply an edit and build the full case (scenes, captions, mask at `size`)."""
    target, _ = _apply(scene, edit)
    return EditCase(
        source=scene,
        target=target,
        source_caption=caption(scene),
        target_caption=caption(target),
        mask=edit_mask(scene, edit, size),
        kind=edit.kind,
        edit=edit,
        size=size,
    )


def brief_captions(scene: Scene, edit: Edit) -> tuple[str, str]:
    """(source, target) captions that name only what the edit touches, like a user's
    prompt: the edited object and the background.

    A scene in which the edit touches no object (the source of an add, the target of a
    remove, both scenes of a background edit) is named by its first object in caption
    order, because the grammar needs at least one.  Every other object goes unnamed,
    so text-to-image from the target caption cannot know it and an editor must keep
    it from the input image.
    """
    target, touched = _apply(scene, edit)

    def brief(described: Scene) -> str:
        named = tuple(o for o in described.objects if o in touched) or described.objects[:1]
        return named_caption(described, named)

    return brief(scene), brief(target)


def possible_kinds(scene: Scene) -> tuple[str, ...]:
    """The edit kinds that have at least one valid edit on this scene."""
    n = len(scene.objects)
    return tuple(
        k
        for k in EDIT_KINDS
        if not (k == "add" and n >= MAX_OBJECTS) and not (k == "remove" and n <= 1)
    )


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_edit(rng: np.random.Generator, scene: Scene, kind: str | None = None) -> Edit:
    """A uniformly random valid edit of `scene` (of `kind`, or of a random possible kind)."""
    kinds = possible_kinds(scene)
    if kind is None:
        kind = _pick(rng, kinds)
    elif kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of: {', '.join(EDIT_KINDS)}")
    elif kind not in kinds:
        n = len(scene.objects)
        raise ValueError(f"no {kind} edit is possible on a scene with {n} object(s)")
    if kind == "background":
        return Edit(kind, None, _pick(rng, [c for c in BACKGROUND_COLORS if c != scene.background]))
    if kind == "add":
        new = SceneObject(
            shape=_pick(rng, SHAPES),
            color=_pick(rng, tuple(OBJECT_COLORS)),
            size=_pick(rng, SIZES),
            cell=_pick(rng, scene.free_cells),
        )
        return Edit(kind, None, new)
    index = int(rng.integers(len(scene.objects)))
    if kind == "remove":
        return Edit(kind, index, None)
    name, allowed = _ATTRIBUTE_EDITS[kind]
    current = getattr(scene.objects[index], name)
    choices = scene.free_cells if kind == "move" else [v for v in allowed if v != current]
    return Edit(kind, index, _pick(rng, choices))
