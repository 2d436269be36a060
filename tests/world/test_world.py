"""Tests of laspa.world: vocabulary, scenes, captions, rendering, edits, reader, CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy import ndimage
from typer.testing import CliRunner

from laspa.world import (
    BACKGROUND_COLORS,
    CELLS,
    EDIT_KINDS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    VOCABULARY,
    Edit,
    Scene,
    SceneObject,
    UnreadableSceneError,
    apply_edit,
    brief_captions,
    caption,
    coverage,
    footprint,
    object_phrase,
    possible_kinds,
    read_scene,
    read_scene_scores,
    render,
    sample_edit,
    sample_scene,
)
from laspa.world.cli import world_app
from laspa.world.detail import GAIN_AMPLITUDE, TEXTURE_AMPLITUDE, add_detail


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


# --- edits ------------------------------------------------------------------------------

CIRCLE = SceneObject("circle", "red", "large", "top left")
STAR = SceneObject("star", "blue", "small", "center")
BASE = Scene("gray", (CIRCLE, STAR))


def dilate(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool))


def test_recolor_target_and_mask():
    case = apply_edit(BASE, Edit("recolor", 0, "green"))
    assert case.target.objects[0] == CIRCLE.replace(color="green")
    assert case.target.objects[1] == STAR and case.target.background == "gray"
    assert case.target_caption.startswith("a large green circle at the top left and")
    assert np.array_equal(case.mask, dilate(footprint(CIRCLE)))
    assert not np.any(case.mask & footprint(STAR))
    assert case.mask.dtype == bool and case.mask.shape == (64, 64) and case.kind == "recolor"


def test_reshape_and_resize_masks_cover_both_footprints():
    case = apply_edit(BASE, Edit("reshape", 1, "heart"))
    heart = STAR.replace(shape="heart")
    assert case.target.objects[1] == heart
    assert np.array_equal(case.mask, dilate(footprint(STAR) | footprint(heart)))
    case = apply_edit(BASE, Edit("resize", 1, "large"), size=128)
    big = STAR.replace(size="large")
    assert case.target.objects[1] == big and case.mask.shape == (128, 128)
    assert np.array_equal(case.mask, dilate(footprint(STAR, 128) | footprint(big, 128)))


def test_move_mask_covers_old_and_new_cell_only():
    case = apply_edit(BASE, Edit("move", 0, "bottom right"))
    moved = CIRCLE.replace(cell="bottom right")
    assert moved in case.target.objects and CIRCLE not in case.target.objects
    assert case.target.objects == (STAR, moved)  # caption order follows the new cell
    assert case.mask[10, 10] and case.mask[53, 53]
    assert np.array_equal(case.mask, dilate(footprint(CIRCLE) | footprint(moved)))
    assert not np.any(case.mask & footprint(STAR))


def test_add_and_remove():
    new = SceneObject("cross", "white", "small", "right")
    case = apply_edit(BASE, Edit("add", None, new))
    assert case.target.objects == (CIRCLE, STAR, new)
    assert case.target_caption.endswith("and a small white cross at the right on a gray background")
    assert np.array_equal(case.mask, dilate(footprint(new)))
    case = apply_edit(BASE, Edit("remove", 0))
    assert case.target == Scene("gray", (STAR,))
    assert np.array_equal(case.mask, dilate(footprint(CIRCLE)))


def test_brief_captions_name_only_what_the_edit_touches():
    recolor = brief_captions(BASE, Edit("recolor", 1, "green"))
    assert recolor == (
        f"{object_phrase(STAR)} on a gray background",
        f"{object_phrase(STAR.replace(color='green'))} on a gray background",
    )
    moved = brief_captions(BASE, Edit("move", 0, "bottom right"))
    assert moved[1] == f"{object_phrase(CIRCLE.replace(cell='bottom right'))} on a gray background"
    new = SceneObject("cross", "white", "small", "right")
    # a scene the edit touches no object of is named by its first object (the grammar
    # needs one): the source of an add, the target of a remove, a background edit
    assert brief_captions(BASE, Edit("add", None, new)) == (
        f"{object_phrase(CIRCLE)} on a gray background",
        f"{object_phrase(new)} on a gray background",
    )
    assert brief_captions(BASE, Edit("remove", 0)) == (
        f"{object_phrase(CIRCLE)} on a gray background",
        f"{object_phrase(STAR)} on a gray background",
    )
    assert brief_captions(BASE, Edit("background", None, "navy")) == (
        f"{object_phrase(CIRCLE)} on a gray background",
        f"{object_phrase(CIRCLE)} on a navy background",
    )


def test_background_mask_excludes_object_interiors():
    case = apply_edit(BASE, Edit("background", None, "navy"))
    assert case.target == Scene("navy", BASE.objects)
    assert case.mask[0, 0] and case.mask[63, 63] and case.mask[32, 55]
    assert not case.mask[10, 10] and not case.mask[32, 32]  # object centres
    total = coverage(CIRCLE) + coverage(STAR)
    assert np.array_equal(case.mask, dilate(total < 1))
    interior = ndimage.binary_erosion(footprint(CIRCLE), np.ones((3, 3)), iterations=3)
    assert interior.any() and not np.any(case.mask & interior)


def test_pixels_outside_the_mask_never_change():
    rng = np.random.default_rng(5)
    for i in range(140):
        scene = sample_scene(rng)
        kind = EDIT_KINDS[i % len(EDIT_KINDS)]
        if kind not in possible_kinds(scene):
            continue
        for size in (64,) if i % 10 else (64, 128):
            case = apply_edit(scene, sample_edit(rng, scene, kind), size)
            src = np.asarray(case.source_image())
            tgt = np.asarray(case.target_image())
            changed = np.any(src != tgt, axis=-1)
            assert not np.any(changed & ~case.mask), (kind, scene)
            assert changed.any()


@pytest.mark.parametrize(
    ("scene", "edit", "message"),
    [
        (BASE, Edit("move", 0, "center"), "occupied"),
        (BASE, Edit("move", 0, "top left"), "no-op"),
        (BASE, Edit("add", None, SceneObject("heart", "red", "small", "center")), "occupied"),
        (BASE, Edit("recolor", 0, "red"), "no-op"),
        (BASE, Edit("reshape", 1, "star"), "no-op"),
        (BASE, Edit("resize", 0, "large"), "no-op"),
        (BASE, Edit("background", None, "gray"), "no-op"),
        (BASE, Edit("recolor", 0, "navy"), "unknown object color"),
        (BASE, Edit("reshape", 0, "moon"), "unknown shape"),
        (BASE, Edit("resize", 0, "huge"), "unknown size"),
        (BASE, Edit("move", 0, "middle"), "unknown cell"),
        (BASE, Edit("background", None, "red"), "unknown background color"),
        (BASE, Edit("recolor", 2, "blue"), "out of range"),
        (BASE, Edit("recolor", None, "blue"), "needs an object index"),
        (BASE, Edit("background", 0, "navy"), "takes no object index"),
        (Scene("gray", (CIRCLE,)), Edit("remove", 0), "last object"),
        (
            Scene("gray", (CIRCLE, STAR, SceneObject("square", "pink", "small", "bottom"))),
            Edit("add", None, SceneObject("heart", "red", "small", "right")),
            "already holds 3",
        ),
    ],
)
def test_impossible_edits_raise_clear_errors(scene, edit, message):
    with pytest.raises(ValueError, match=message):
        apply_edit(scene, edit)


def test_unknown_edit_kind_and_impossible_sampled_kind():
    with pytest.raises(ValueError, match="unknown edit kind"):
        Edit("rotate", 0, "left")
    with pytest.raises(ValueError, match="no remove edit"):
        sample_edit(np.random.default_rng(0), Scene("gray", (CIRCLE,)), "remove")


def test_sample_edit_covers_every_kind_and_is_valid():
    rng = np.random.default_rng(8)
    seen = set()
    for _ in range(200):
        scene = sample_scene(rng)
        edit = sample_edit(rng, scene)
        seen.add(edit.kind)
        case = apply_edit(scene, edit)
        assert case.target != case.source
        assert Edit.from_dict(json.loads(json.dumps(edit.to_dict()))) == edit
    assert seen == set(EDIT_KINDS)


# --- reader -----------------------------------------------------------------------------


def _degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur radius 1 plus pixel noise of std 8/255, like a blurry generation."""
    arr = np.asarray(image.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float64)
    arr = arr + rng.normal(0.0, 8.0, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def test_reader_reads_rendered_scenes_exactly():
    rng = np.random.default_rng(2024)
    scenes = [sample_scene(rng) for _ in range(200)]
    accuracy = np.mean([read_scene(render(s)) == s for s in scenes])
    assert accuracy >= 0.995


def test_reader_is_robust_to_blur_noise_and_other_sizes():
    rng = np.random.default_rng(99)
    scenes = [sample_scene(rng) for _ in range(60)]
    blurred = np.mean([read_scene(_degrade(render(s), rng)) == s for s in scenes])
    assert blurred >= 0.95
    assert all(read_scene(render(s, 256)) == s for s in scenes[:10])


def test_uncaptioned_detail_is_seeded_bounded_and_readable():
    rng = np.random.default_rng(11)
    for seed in range(40):
        scene = sample_scene(rng)
        image = render(scene, 64)
        detailed = add_detail(image, seed)
        assert np.array_equal(np.asarray(detailed), np.asarray(add_detail(image, seed)))
        change = np.abs(np.asarray(detailed, dtype=int) - np.asarray(image, dtype=int))
        assert 0 < change.max() <= 255 * GAIN_AMPLITUDE + TEXTURE_AMPLITUDE + 1 < 45
        assert read_scene(detailed) == scene
    assert not np.array_equal(np.asarray(add_detail(image, 1)), np.asarray(add_detail(image, 2)))


def test_reader_scores_and_unreadable_images():
    scene = Scene("teal", (obj("heart", "yellow", "small", "bottom left"),))
    reading = read_scene_scores(render(scene))
    assert reading.background == "teal" and len(reading.cells) == 9
    seen = {c.cell: c for c in reading.cells}
    assert seen["bottom left"].object == scene.objects[0] and seen["bottom left"].margin > 0
    assert all(c.object is None for c in reading.cells if c.cell != "bottom left")
    blank = Image.new("RGB", (64, 64), BACKGROUND_COLORS["gray"])
    with pytest.raises(UnreadableSceneError, match="0 object"):
        read_scene(blank)


# --- CLI --------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_sample_writes_png_and_prints_json(tmp_path):
    out = tmp_path / "scene.png"
    result = runner.invoke(world_app, ["sample", "--seed", "4", "--objects", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    scene = Scene.from_dict(payload["scene"])
    assert payload["caption"] == caption(scene) and len(scene.objects) == 2
    assert payload["scene"]["objects"][0]["shape"] in SHAPES
    with Image.open(out) as image:
        assert image.size == (64, 64)
        assert image.tobytes() == render(scene).tobytes()
    again = runner.invoke(world_app, ["sample", "--seed", "4", "--objects", "2", "-o", str(out)])
    assert again.exit_code == 0 and json.loads(again.stdout) == payload  # overwrite is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.png"]  # no temp files left


def test_cli_edit_writes_three_pngs(tmp_path):
    out = tmp_path / "case"
    result = runner.invoke(world_app, ["edit", "--seed", "1", "--kind", "add", "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["kind"] == "add" and payload["edit"]["kind"] == "add"
    source = Scene.from_dict(payload["source"])
    assert payload["source_caption"] == caption(source)
    assert payload["target_caption"] == caption(Scene.from_dict(payload["target"]))
    assert sorted(p.name for p in out.iterdir()) == ["mask.png", "source.png", "target.png"]
    with Image.open(out / "mask.png") as mask:
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) == {0, 255}


def test_cli_read_prints_the_scene(tmp_path):
    scene = sample_scene(np.random.default_rng(12), 3)
    render(scene, 128).save(tmp_path / "x.png")
    result = runner.invoke(world_app, ["read", str(tmp_path / "x.png")])
    assert result.exit_code == 0, result.output
    assert Scene.from_dict(json.loads(result.stdout)["scene"]) == scene


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--seed", "1", "--objects", "4", "-o", "{tmp}/a.png"],
        ["sample", "--seed", "1", "--size", "0", "-o", "{tmp}/a.png"],
        ["sample", "--seed", "-3", "-o", "{tmp}/a.png"],
        ["sample", "--seed", "1", "-o", "{tmp}/missing/a.png"],
        ["sample", "--seed", "1", "-o", "{tmp}"],
        ["edit", "--seed", "1", "--kind", "rotate", "-o", "{tmp}/case"],
        ["edit", "--seed", "1", "--kind", "remove", "--objects", "1", "-o", "{tmp}/case"],
        ["edit", "--seed", "1", "-o", "{tmp}/missing/case"],
        ["read", "{tmp}/nothing.png"],
        ["read", "{tmp}/bad.png"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args):
    (tmp_path / "bad.png").write_text("not an image")
    result = runner.invoke(world_app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")
    assert result.stdout == ""


def test_cli_type_errors_exit_2():
    assert runner.invoke(world_app, ["sample", "--seed", "abc", "-o", "x.png"]).exit_code == 2


def test_cli_errors_exit_2_even_when_mounted_non_standalone(tmp_path):
    # The `laspa` entry point runs apps with standalone_mode=False, where click
    # would return (not raise) a typer.Exit code; errors must still exit 2.
    args = ["sample", "--seed", "1", "--objects", "9", "-o", str(tmp_path / "a.png")]
    with pytest.raises(SystemExit) as stop:
        world_app(args, standalone_mode=False)
    assert stop.value.code == 2
