"""The procedural scene world: scenes, captions, rendering, edits and a scene reader.

Every scene renders exactly, so every benchmark case built on it has an exact
target image and an exact edit mask.  See `scene.py` for the caption grammar.
"""

from .edits import (
    EDIT_KINDS,
    Edit,
    EditCase,
    apply_edit,
    brief_captions,
    edit_mask,
    edit_scene,
    possible_kinds,
    sample_edit,
)
from .reader import (
    CellReading,
    SceneReading,
    UnreadableSceneError,
    read_scene,
    read_scene_scores,
)
from .render import coverage, footprint, render, render_array
from .scene import (
    Scene,
    SceneObject,
    caption,
    named_caption,
    object_phrase,
    place_phrase,
    sample_scene,
)
from .vocab import (
    BACKGROUND_COLORS,
    CELLS,
    MAX_OBJECTS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    VOCABULARY,
)

__all__ = [
    "EDIT_KINDS",
    "Edit",
    "EditCase",
    "CellReading",
    "SceneReading",
    "UnreadableSceneError",
    "apply_edit",
    "brief_captions",
    "edit_mask",
    "edit_scene",
    "possible_kinds",
    "sample_edit",
    "BACKGROUND_COLORS",
    "CELLS",
    "MAX_OBJECTS",
    "OBJECT_COLORS",
    "SHAPES",
    "SIZES",
    "VOCABULARY",
    "Scene",
    "SceneObject",
    "caption",
    "named_caption",
    "coverage",
    "footprint",
    "object_phrase",
    "place_phrase",
    "read_scene",
    "read_scene_scores",
    "render",
    "render_array",
    "sample_scene",
]
