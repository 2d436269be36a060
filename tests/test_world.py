"""Tests of laspa.world: vocabulary, scenes, captions, rendering, edits, reader, CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from laspa.world import (
    BACKGROUND_COLORS,
    CELLS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    VOCABULARY,
    Scene,
    SceneObject,
    caption,
    coverage,
    render,
    sample_scene,
)


def obj(shape="circle", color="red", size="large", cell="center") -> SceneObject:
    return SceneObject(shape, color, size, cell)


# --- vocabulary -------------------------------------------------------------------------


def test_vocabulary_sizes_and_words():
    assert SHAPES == ("circle", "square", "triangle", "star", "heart", "cross")
    assert SIZES == ("small", "large")
    assert len(OBJECT_COLORS) == 8 and len(BACKGROUND_COLORS) == 8 and len(CELLS) == 9
    assert not set(OBJECT_COLORS) & set(BACKGROUND_COLORS)
    assert len(set(VOCABULARY)) == len(VOCABULARY)
    assert all(w.isalpha() and w.islower() for w in VOCABULARY)


def test_palette_is_well_separated():
    colors = list(OBJECT_COLORS.values()) + list(BACKGROUND_COLORS.values())
    for a, b in itertools.combinations(colors, 2):
        assert np.linalg.norm(np.subtract(a, b)) >= 80


def test_every_caption_word_is_in_vocabulary():
    rng = np.random.default_rng(0)
    for _ in range(300):
        assert set(caption(sample_scene(rng)).split()) <= set(VOCABULARY)


# --- scenes and captions ----------------------------------------------------------------


def test_caption_examples():
    scene = Scene(
        "gray",
        (obj("star", "blue", "small", "center"), obj("circle", "red", "large", "top left")),
    )
    assert caption(scene) == (
        "a large red circle at the top left and a small blue star in the center "
        "on a gray background"
    )
    one = Scene("black", (obj("heart", "pink", "small", "bottom right"),))
    assert caption(one) == "a small pink heart at the bottom right on a black background"


def test_objects_are_stored_left_to_right_then_top_to_bottom():
    a, b, c = obj(cell="right"), obj(cell="bottom left"), obj(cell="top left")
    scene = Scene("teal", (a, b, c))
    assert [o.cell for o in scene.objects] == ["top left", "bottom left", "right"]
    assert scene == Scene("teal", (c, a, b))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sample_scene_object_count(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        scene = sample_scene(rng, n)
        assert len(scene.objects) == n and len(scene.occupied_cells) == n


def test_sample_scene_default_draws_one_to_three_and_is_seeded():
    counts = {len(sample_scene(np.random.default_rng(s)).objects) for s in range(60)}
    assert counts == {1, 2, 3}
    assert sample_scene(np.random.default_rng(7)) == sample_scene(np.random.default_rng(7))
    with pytest.raises(ValueError, match="n_objects"):
        sample_scene(np.random.default_rng(0), 4)


def test_json_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(50):
        scene = sample_scene(rng)
        assert Scene.from_json(scene.to_json()) == scene
        assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"background": "plaid", "objects": [obj().to_dict()]}, "unknown background color"),
        (
            {"background": "gray", "objects": [{**obj().to_dict(), "color": "navy"}]},
            "unknown object color",
        ),
        (
            {"background": "gray", "objects": [{**obj().to_dict(), "shape": "moon"}]},
            "unknown shape",
        ),
        ({"background": "gray", "objects": [{**obj().to_dict(), "size": "huge"}]}, "unknown size"),
        (
            {"background": "gray", "objects": [{**obj().to_dict(), "cell": "middle"}]},
            "unknown cell",
        ),
        (
            {"background": "gray", "objects": [obj().to_dict(), obj(color="blue").to_dict()]},
            "share the cell",
        ),
        ({"background": "gray", "objects": []}, "1 to 3 objects"),
        (
            {"background": "gray", "objects": [obj(cell=c).to_dict() for c in CELLS[:4]]},
            "1 to 3 objects",
        ),
        ({"background": "gray"}, "keys"),
    ],
)
def test_invalid_scene_dicts_raise_clear_errors(data, message):
    with pytest.raises(ValueError, match=message):
        Scene.from_dict(data)


def test_from_json_rejects_malformed_text():
    with pytest.raises(ValueError, match="not valid JSON"):
        Scene.from_json("{nope")


# --- rendering --------------------------------------------------------------------------


def test_render_is_deterministic_and_byte_identical():
    scene = sample_scene(np.random.default_rng(11), 3)
    for size in (64, 128):
        assert render(scene, size).tobytes() == render(scene, size).tobytes()
        assert render(scene, size).size == (size, size) and render(scene, size).mode == "RGB"


@pytest.mark.parametrize("size", [64, 128, 256, 512])
def test_render_sizes_show_background_and_object_colors(size):
    scene = Scene("navy", (obj("square", "yellow", "large", "center"),))
    arr = np.asarray(render(scene, size))
    assert tuple(arr[0, 0]) == BACKGROUND_COLORS["navy"]
    assert tuple(arr[size // 2, size // 2]) == OBJECT_COLORS["yellow"]


def test_render_is_antialiased():
    scene = Scene("black", (obj("circle", "white", "large", "center"),))
    values = set(np.asarray(render(scene))[..., 0].ravel().tolist())
    assert len(values) > 10  # intermediate edge values, not just 0 and 255


def test_objects_stay_inside_their_cells():
    for shape, size, cell in itertools.product(SHAPES, SIZES, CELLS):
        cov = coverage(obj(shape, "red", size, cell), 64) > 0
        ys, xs = np.nonzero(cov)
        row, col = divmod(CELLS.index(cell), 3)
        cell_px = 64 / 3
        assert xs.min() >= col * cell_px - 0.5 and xs.max() + 1 <= (col + 1) * cell_px + 0.5
        assert ys.min() >= row * cell_px - 0.5 and ys.max() + 1 <= (row + 1) * cell_px + 0.5


def test_distinct_cells_never_overlap():
    for a, b in itertools.combinations(CELLS, 2):
        ca = coverage(obj("square", size="large", cell=a))
        cb = coverage(obj("square", size="large", cell=b))
        assert not np.any((ca > 0) & (cb > 0))
