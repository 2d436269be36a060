"""Scene descriptions, their captions, JSON form and random sampling.

A `Scene` is always valid: the constructor checks every word against the
vocabulary and the cell layout, so any scene that exists can be rendered,
captioned and edited.  Objects are stored in caption order (left to right,
then top to bottom), which makes equal scenes compare equal regardless of
the order their objects were given in.

Caption grammar (regular on purpose, a tiny text encoder must learn it)::

    caption  := object ( " and " object )* " on a " BGCOLOR " background"
    object   := "a " SIZE " " COLOR " " SHAPE " " place
    place    := "in the center" | "at the " CELL      (CELL != center)

e.g. ``a large red circle at the top left and a small blue star in the center
on a gray background``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .vocab import (
    BACKGROUND_COLORS,
    CELLS,
    MAX_OBJECTS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    cell_row_col,
)


def _check_word(kind: str, value: object, allowed: tuple[str, ...] | dict) -> None:
    """Raise a ValueError that names the field, the bad value and the choices."""
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(allowed)
        raise ValueError(f"unknown {kind} {value!r}; expected one of: {choices}")


@dataclass(frozen=True)
class SceneObject:
    """One object: a shape of one colour and size, centred in a grid cell."""

    shape: str
    color: str
    size: str
    cell: str

    def __post_init__(self) -> None:
        _check_word("shape", self.shape, SHAPES)
        _check_word("object color", self.color, OBJECT_COLORS)
        _check_word("size", self.size, SIZES)
        _check_word("cell", self.cell, CELLS)

    def replace(self, **changes: str) -> SceneObject:
        """A copy with some fields changed (validated like any new object)."""
        fields = {**self.to_dict(), **changes}
        return SceneObject(**fields)

    def to_dict(self) -> dict[str, str]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "cell": self.cell}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneObject:
        if not isinstance(data, dict):
            raise ValueError(f"an object must be a JSON object, got {type(data).__name__}")
        expected = {"shape", "color", "size", "cell"}
        if set(data) != expected:
            raise ValueError(
                f"an object needs exactly the keys {sorted(expected)}, got {sorted(data)}"
            )
        return cls(**data)


def _caption_order(obj: SceneObject) -> tuple[int, int]:
    """Sort key: left to right, then top to bottom."""
    row, col = cell_row_col(obj.cell)
    return (col, row)


@dataclass(frozen=True)
class Scene:
    """A background colour and 1-3 objects in distinct cells (caption order)."""

    background: str
    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        _check_word("background color", self.background, BACKGROUND_COLORS)
        objects = tuple(self.objects)
        if not all(isinstance(o, SceneObject) for o in objects):
            raise ValueError("scene objects must be SceneObject instances")
        if not 1 <= len(objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(objects)}")
        cells = [o.cell for o in objects]
        duplicates = sorted({c for c in cells if cells.count(c) > 1})
        if duplicates:
            raise ValueError(f"two objects share the cell {duplicates[0]!r}; cells must differ")
        object.__setattr__(self, "objects", tuple(sorted(objects, key=_caption_order)))

    @property
    def occupied_cells(self) -> frozenset[str]:
        return frozenset(o.cell for o in self.objects)

    @property
    def free_cells(self) -> tuple[str, ...]:
        """Cells with no object, in grid order."""
        return tuple(c for c in CELLS if c not in self.occupied_cells)

    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background, "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        if not isinstance(data, dict):
            raise ValueError(f"a scene must be a JSON object, got {type(data).__name__}")
        if set(data) != {"background", "objects"}:
            raise ValueError(
                f"a scene needs exactly the keys ['background', 'objects'], got {sorted(data)}"
            )
        if not isinstance(data["objects"], list | tuple):
            raise ValueError("scene 'objects' must be a list")
        return cls(data["background"], tuple(SceneObject.from_dict(o) for o in data["objects"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"scene JSON is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def place_phrase(cell: str) -> str:
    """The caption phrase of a position: 'in the center' or 'at the <cell>'."""
    return "in the center" if cell == "center" else f"at the {cell}"


def object_phrase(obj: SceneObject) -> str:
    """'a <size> <color> <shape> <place>', e.g. 'a small blue star in the center'."""
    return f"a {obj.size} {obj.color} {obj.shape} {place_phrase(obj.cell)}"


def caption(scene: Scene) -> str:
    """The one canonical caption of a scene (see the module docstring)."""
    objects = " and ".join(object_phrase(o) for o in scene.objects)
    return f"{objects} on a {scene.background} background"


def named_caption(scene: Scene, named: Sequence[SceneObject]) -> str:
    """The caption of ``scene`` that names only the objects ``named`` (and the background):
    a brief caption, as users write prompts."""
    return caption(Scene(scene.background, tuple(named)))


def sample_scene(rng: np.random.Generator, n_objects: int | None = None) -> Scene:
    """A uniformly random scene; `n_objects` None draws 1-3 uniformly.

    Every choice is uniform and independent, so the training distribution
    covers each (shape, colour, size, cell) combination evenly.
    """
    if n_objects is None:
        n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    if not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be between 1 and {MAX_OBJECTS}, got {n_objects}")
    background = BACKGROUND_COLORS_LIST[int(rng.integers(len(BACKGROUND_COLORS_LIST)))]
    cells = rng.choice(len(CELLS), size=n_objects, replace=False)
    objects = tuple(
        SceneObject(
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            color=OBJECT_COLORS_LIST[int(rng.integers(len(OBJECT_COLORS_LIST)))],
            size=SIZES[int(rng.integers(len(SIZES)))],
            cell=CELLS[int(c)],
        )
        for c in cells
    )
    return Scene(background, objects)


BACKGROUND_COLORS_LIST: tuple[str, ...] = tuple(BACKGROUND_COLORS)
OBJECT_COLORS_LIST: tuple[str, ...] = tuple(OBJECT_COLORS)
