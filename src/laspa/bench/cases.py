"""Benchmark cases: the scene-world suite, case files, and the PIE-Bench / TEdBench loaders.

Every suite yields :class:`BenchCase` objects: a source image and the two prompts,
plus whatever ground truth the suite has (exact target image and scene, edit mask).
Loaders validate everything before any model work and fail with one line naming the
case and the field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import images
from ..errors import ImageError, LaspaError
from ..world import (
    EDIT_KINDS,
    Edit,
    Scene,
    apply_edit,
    brief_captions,
    edit_scene,
    possible_kinds,
    sample_edit,
    sample_scene,
)
from ..world.detail import add_detail
from .metrics import decode_rle

SUITES = ("shapes", "shapes-brief", "shapes-detail", "piebench", "tedbench")
#: suites built from the scene world (exact targets, masks and the scene reader);
#: ``shapes-brief`` prompts name only what the edit touches (world.brief_captions),
#: ``shapes-detail`` adds uncaptioned lighting and texture (laspa.world.detail)
SCENE_SUITES = ("shapes", "shapes-brief", "shapes-detail")

#: PIE-Bench's ``editing_type_id`` -> a name for the per-type tables.
PIE_TYPES = {
    "0": "random",
    "1": "change_object",
    "2": "add_object",
    "3": "delete_object",
    "4": "change_content",
    "5": "change_pose",
    "6": "change_color",
    "7": "change_material",
    "8": "change_background",
    "9": "change_style",
}


class BenchDataError(LaspaError):
    """A benchmark case source (suite, case file, data folder) the user got wrong."""


@dataclass(eq=False)
class BenchCase:
    """One edit to run: the input, the prompts and the ground truth the suite has."""

    id: str
    kind: str  # edit type, for the per-type tables
    source: Image.Image
    source_prompt: str
    target_prompt: str
    target: Image.Image | None = None  # exact target image (scene world only)
    mask: np.ndarray | None = None  # bool H x W at the source size, True = may change
    target_scene: Scene | None = None  # for edit_success through the scene reader
    #: values for method parameters of the same name (e.g. ``source_prompt`` for DDIM
    #: inversion and DiffEdit, ``subject`` for latent mixing) that the case determines
    hints: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ scene world
def _case_rng(seed: int, index: int) -> np.random.Generator:
    """Case ``index`` depends on (seed, index) alone, so the first cases of a long run
    are the cases of a short run with the same seed."""
    return np.random.default_rng([seed, index])


def _subject(scene: Scene, edit: Edit) -> str:
    """A shape word of the target caption for latent mixing to keep: the edited object's
    shape after the edit (the new one for reshape), or the first remaining object's when
    the edit removes it or concerns the background."""
    if edit.kind == "add":
        return edit.value.shape  # type: ignore[union-attr]
    if edit.kind == "reshape":
        return str(edit.value)
    if edit.index is None or edit.kind == "remove":
        return edit_scene(scene, edit).objects[0].shape
    return scene.objects[edit.index].shape


def _changed(scene: Scene, edit: Edit) -> str:
    """The words of the target caption that name what the edit changes, for latent
    mixing's ``keep=rest`` mode: the background for background edits and removals (the
    removed object's place becomes background), else the edited object's shape word."""
    if edit.kind in ("background", "remove"):
        return "background"
    return _subject(scene, edit)


def scene_case(
    case_id: str, scene: Scene, edit: Edit, size: int, suite: str = "shapes"
) -> BenchCase:
    """A case of a scene-world ``suite`` rendered at ``size`` pixels.

    ``shapes-brief``: both prompts name only what the edit touches.  ``shapes-detail``:
    source and target share lighting and texture the captions do not mention (seeded by
    the case id)."""
    built = apply_edit(scene, edit, size)
    source, target = built.source_image(), built.target_image()
    source_prompt, target_prompt = built.source_caption, built.target_caption
    if suite == "shapes-brief":
        source_prompt, target_prompt = brief_captions(scene, edit)
    detail = suite == "shapes-detail"
    if detail:
        detail_seed = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little")
        source, target = add_detail(source, detail_seed), add_detail(target, detail_seed)
    return BenchCase(
        id=case_id,
        kind=edit.kind,
        source=source,
        source_prompt=source_prompt,
        target_prompt=target_prompt,
        target=target,
        mask=np.asarray(built.mask, dtype=bool),
        target_scene=built.target,
        hints={
            "source_prompt": source_prompt,
            "subject": _subject(scene, edit),
            "change": _changed(scene, edit),
        },
    )


def sample_specs(
    n: int, seed: int, kinds: Sequence[str] = EDIT_KINDS
) -> list[tuple[str, Scene, Edit]]:
    """``n`` (id, scene, edit) triples, the edit ``kinds`` in turn so every kind gets
    n/len(kinds) cases (+1 for the first n mod len(kinds) kinds)."""
    if n < 1:
        raise BenchDataError(f"--cases must be >= 1, got {n}")
    unknown = [kind for kind in kinds if kind not in EDIT_KINDS]
    if unknown or not kinds:
        raise BenchDataError(
            f"unknown edit kind {unknown[0] if unknown else ''!r}; "
            f"choose from: {', '.join(EDIT_KINDS)}"
        )
    specs = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        rng = _case_rng(seed, index)
        scene = sample_scene(rng)
        while kind not in possible_kinds(scene):  # add needs room, remove a second object
            scene = sample_scene(rng)
        specs.append((f"s{seed}-{index:03d}-{kind}", scene, sample_edit(rng, scene, kind)))
    return specs


def shapes_cases(
    n: int, seed: int, size: int, suite: str = "shapes", kinds: Sequence[str] = EDIT_KINDS
) -> list[BenchCase]:
    return [scene_case(*spec, size, suite) for spec in sample_specs(n, seed, kinds)]


# ------------------------------------------------------------------ case files
CASE_KEYS = ("id", "source", "edit")


def read_case_file(path: str | Path) -> list[tuple[str, Scene, Edit]]:
    """Validate a case file: a JSON list of ``{"id", "source", "edit"}`` objects.

    ``source`` is a scene (``laspa world sample`` prints one), ``edit`` an edit
    ``{"kind", "index", "value"}`` that must apply to that scene. Errors name the file,
    the case (id, or position when the id itself is bad) and the field.
    """
    path = Path(path)
    data = _read_json(path, "cases file")
    if not isinstance(data, list) or not data:
        raise BenchDataError(f"cases file {path}: expected a non-empty JSON list of cases")
    specs: list[tuple[str, Scene, Edit]] = []
    seen: set[str] = set()
    for position, entry in enumerate(data):
        where = f"cases file {path}: case #{position}"
        if not isinstance(entry, dict):
            raise BenchDataError(f"{where}: expected an object with keys {', '.join(CASE_KEYS)}")
        unknown = sorted(set(entry) - set(CASE_KEYS))
        if unknown:
            raise BenchDataError(f"{where}: unknown field {unknown[0]!r}")
        case_id = entry.get("id")
        if not isinstance(case_id, str) or not case_id.strip():
            raise BenchDataError(f"{where}, field 'id': must be a non-empty string")
        where = f"cases file {path}: case {case_id!r}"
        if case_id in seen:
            raise BenchDataError(f"{where}, field 'id': duplicate id")
        seen.add(case_id)
        for key in ("source", "edit"):
            if key not in entry:
                raise BenchDataError(f"{where}, field {key!r}: missing")
        try:
            scene = Scene.from_dict(entry["source"])
        except (ValueError, TypeError) as error:
            raise BenchDataError(f"{where}, field 'source': {error}") from None
        try:
            edit = Edit.from_dict(entry["edit"])
            apply_edit(scene, edit)  # the edit must be possible on this scene
        except (ValueError, TypeError) as error:
            raise BenchDataError(f"{where}, field 'edit': {error}") from None
        specs.append((case_id, scene, edit))
    return specs


def write_case_file(specs: Sequence[tuple[str, Scene, Edit]]) -> str:
    """The JSON text of a case file (the inverse of :func:`read_case_file`)."""
    entries = [{"id": i, "source": s.to_dict(), "edit": e.to_dict()} for i, s, e in specs]
    return json.dumps(entries, indent=1)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise BenchDataError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BenchDataError(f"{what} {path} is not valid JSON: {error}") from None


def _load(path: Path, where: str) -> Image.Image:
    try:
        return images.load_image(path)
    except ImageError as error:
        raise BenchDataError(f"{where}: {error}") from None


def _data_dir(data: str | Path | None, suite: str) -> Path:
    if data is None:
        raise BenchDataError(f"--suite {suite} needs --data DIR (the benchmark's folder)")
    folder = Path(data)
    if not folder.is_dir():
        raise BenchDataError(f"{suite} data folder not found: {folder}")
    return folder


# ------------------------------------------------------------------ PIE-Bench
def strip_brackets(prompt: str) -> str:
    """PIE-Bench marks changed words with [] in its prompts; the model sees them without."""
    return prompt.replace("[", "").replace("]", "")


def bracketed_words(prompt: str) -> str:
    """The words PIE-Bench marks as changed, e.g. 'a [red] cat' -> 'red'."""
    words, inside, current = [], False, []
    for char in prompt:
        if char == "[":
            inside, current = True, []
        elif char == "]" and inside:
            inside = False
            words.append("".join(current).strip())
        elif inside:
            current.append(char)
    return " ".join(w for w in words if w)


def load_piebench(data: str | Path | None, limit: int | None = None) -> list[BenchCase]:
    """PIE-Bench from its folder: ``mapping_file.json`` (id -> entry) and the images under
    ``annotation_images/`` (or beside the mapping file).

    Entry fields used: ``image_path``, ``original_prompt``, ``editing_prompt`` (``[]``
    stripped), ``editing_type_id``, ``mask`` (RLE over the image, border forced to 1).
    """
    folder = _data_dir(data, "piebench")
    mapping_path = folder / "mapping_file.json"
    mapping = _read_json(mapping_path, "PIE-Bench mapping file")
    if not isinstance(mapping, dict) or not mapping:
        raise BenchDataError(f"{mapping_path}: expected a JSON object of id -> case")
    image_root = folder / "annotation_images"
    if not image_root.is_dir():
        image_root = folder
    cases = []
    for case_id in sorted(mapping)[:limit]:
        entry = mapping[case_id]
        where = f"PIE-Bench case {case_id!r}"
        if not isinstance(entry, dict):
            raise BenchDataError(f"{where}: expected an object")
        text = {}
        for key in ("image_path", "original_prompt", "editing_prompt"):
            if not isinstance(entry.get(key), str):
                raise BenchDataError(f"{where}, field {key!r}: missing or not a string")
            text[key] = entry[key]
        source = _load(image_root / text["image_path"], f"{where}, field 'image_path'")
        counts = entry.get("mask")
        if not isinstance(counts, list):
            raise BenchDataError(f"{where}, field 'mask': missing or not an RLE list")
        try:
            mask = decode_rle(counts, (source.height, source.width))
        except ValueError as error:
            raise BenchDataError(f"{where}, field 'mask': {error}") from None
        type_id = str(entry.get("editing_type_id", "0"))
        cases.append(
            BenchCase(
                id=case_id,
                kind=PIE_TYPES.get(type_id, f"type_{type_id}"),
                source=source,
                source_prompt=strip_brackets(text["original_prompt"]),
                target_prompt=strip_brackets(text["editing_prompt"]),
                mask=mask,
                hints={
                    "source_prompt": strip_brackets(text["original_prompt"]),
                    "words": bracketed_words(text["editing_prompt"]),
                },
            )
        )
    return cases


# ------------------------------------------------------------------ TEdBench
def load_tedbench(data: str | Path | None, limit: int | None = None) -> list[BenchCase]:
    """TEdBench (Imagic): ``input_list.json``, a list of ``{"img_name", "target_text"}``,
    with the images in ``originals/`` (or beside the list). There is no source prompt,
    target image or mask: only preservation against the input and text alignment apply.
    """
    folder = _data_dir(data, "tedbench")
    list_path = folder / "input_list.json"
    entries = _read_json(list_path, "TEdBench input list")
    if not isinstance(entries, list) or not entries:
        raise BenchDataError(f"{list_path}: expected a non-empty JSON list")
    image_root = folder / "originals"
    if not image_root.is_dir():
        image_root = folder
    cases = []
    for position, entry in enumerate(entries[:limit]):
        where = f"TEdBench case #{position}"
        if not isinstance(entry, dict):
            raise BenchDataError(f"{where}: expected an object with img_name and target_text")
        for key in ("img_name", "target_text"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise BenchDataError(f"{where}, field {key!r}: missing or not a string")
        name = entry["img_name"]
        source = _load(image_root / name, f"TEdBench case {name!r}, field 'img_name'")
        cases.append(
            BenchCase(
                id=f"{position:03d}-{Path(name).stem}",
                kind="tedbench",
                source=source,
                source_prompt="",
                target_prompt=entry["target_text"],
            )
        )
    return cases


def load_cases(
    suite: str,
    *,
    size: int,
    n: int | None = None,
    seed: int = 0,
    cases_file: str | Path | None = None,
    data: str | Path | None = None,
    kinds: Sequence[str] = EDIT_KINDS,
) -> list[BenchCase]:
    """The cases of a suite; ``size`` is the render size of scene-world cases, ``kinds``
    the edit kinds sampled for the scene-world suites."""
    if suite not in SUITES:
        raise BenchDataError(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
    if n is not None and n < 1:
        raise BenchDataError(f"--cases must be >= 1, got {n}")
    if suite in SCENE_SUITES:
        if cases_file is not None:
            specs = read_case_file(cases_file)[:n]
            return [scene_case(*spec, size, suite) for spec in specs]
        return shapes_cases(24 if n is None else n, seed, size, suite, kinds)
    if cases_file is not None:
        raise BenchDataError(
            "--cases-file holds scene-world cases: use it with --suite " + ", ".join(SCENE_SUITES)
        )
    if suite == "piebench":
        return load_piebench(data, n)
    return load_tedbench(data, n)
