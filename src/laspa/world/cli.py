"""`laspa world`: sample scenes and edit cases from the command line.

Each command prints one JSON line on stdout, writes images atomically (through
laspa.images.save_image) and turns every user error into one line on stderr with
exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image, UnidentifiedImageError

from ..images import save_image
from .edits import EDIT_KINDS, apply_edit, sample_edit
from .reader import read_scene_scores
from .render import render
from .scene import Scene, caption, sample_scene
from .vocab import MAX_OBJECTS

world_app = typer.Typer(
    name="world",
    help="The procedural scene world: exact scenes, captions, edits and masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MAX_SIZE = 2048
#: names `laspa world clip -o` refuses: a clip is three frame folders, not a video file
VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi")

Seed = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same scene).")]
Size = Annotated[int, typer.Option("--size", help="Image side in pixels.")]


class UserError(Exception):
    """A mistake the user can fix; reported as one line, exit status 2."""


def _fail(message: str) -> SystemExit:
    """Print one error line; the caller raises the returned SystemExit(2).

    SystemExit rather than typer.Exit: click *returns* typer.Exit's code when
    an app runs with standalone_mode=False (as the mounting `laspa` CLI does),
    and a returned code is easily dropped, whereas SystemExit always ends the
    process with status 2.
    """
    typer.echo(f"error: {message}", err=True)
    return SystemExit(2)


def _emit(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload))


def _check_size(size: int) -> None:
    if not 16 <= size <= MAX_SIZE:
        raise UserError(f"--size must be between 16 and {MAX_SIZE}, got {size}")


def _check_objects(objects: int | None) -> None:
    if objects is not None and not 1 <= objects <= MAX_OBJECTS:
        raise UserError(f"--objects must be between 1 and {MAX_OBJECTS}, got {objects}")


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")


def _output_file(path: Path) -> Path:
    if not path.parent.is_dir():
        raise UserError(f"output directory does not exist: {path.parent}")
    if path.is_dir():
        raise UserError(f"output is a directory, expected a file name: {path}")
    return path


def _output_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise UserError(f"output exists and is not a directory: {path}")
    if not path.parent.is_dir():
        raise UserError(f"parent directory does not exist: {path.parent}")
    path.mkdir(exist_ok=True)
    return path


def _scene_for_edit(rng: np.random.Generator, kind: str | None, objects: int | None) -> Scene:
    """A random scene on which an edit of `kind` is possible."""
    low = 2 if kind == "remove" else 1
    high = MAX_OBJECTS - 1 if kind == "add" else MAX_OBJECTS
    if objects is not None:
        if not low <= objects <= high:
            raise UserError(f"a {kind} edit needs a scene with {low} to {high} objects")
        return sample_scene(rng, objects)
    return sample_scene(rng, int(rng.integers(low, high + 1)))


def _run(action: Any) -> None:
    """Run a command body, turning user errors into one stderr line and exit 2."""
    try:
        action()
    except UserError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


@world_app.command()
def sample(
    seed: Seed,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write.")],
    objects: Annotated[
        int | None, typer.Option("--objects", help="Number of objects (1-3); random if unset.")
    ] = None,
    size: Size = 64,
) -> None:
    """Render a random scene to a PNG and print its description as JSON."""

    def body() -> None:
        _check_seed(seed)
        _check_objects(objects)
        _check_size(size)
        path = _output_file(output)
        scene = sample_scene(np.random.default_rng(seed), objects)
        save_image(render(scene, size), path)
        _emit(
            {
                "caption": caption(scene),
                "scene": scene.to_dict(),
                "seed": seed,
                "size": size,
                "output": str(path),
            }
        )

    _run(body)


@world_app.command()
def edit(
    seed: Seed,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Directory for source/target/mask PNGs.")
    ],
    kind: Annotated[
        str | None, typer.Option("--kind", help=f"Edit kind: {', '.join(EDIT_KINDS)}.")
    ] = None,
    objects: Annotated[
        int | None, typer.Option("--objects", help="Objects in the source scene (1-3).")
    ] = None,
    size: Size = 64,
) -> None:
    """Sample a scene and an edit; write source.png, target.png, mask.png; print JSON."""

    def body() -> None:
        _check_seed(seed)
        _check_objects(objects)
        _check_size(size)
        if kind is not None and kind not in EDIT_KINDS:
            raise UserError(f"unknown --kind {kind!r}; expected one of: {', '.join(EDIT_KINDS)}")
        directory = _output_dir(output)
        rng = np.random.default_rng(seed)
        scene = _scene_for_edit(rng, kind, objects)
        case = apply_edit(scene, sample_edit(rng, scene, kind), size)
        files = {
            "source": directory / "source.png",
            "target": directory / "target.png",
            "mask": directory / "mask.png",
        }
        save_image(case.source_image(), files["source"])
        save_image(case.target_image(), files["target"])
        save_image(case.mask_image(), files["mask"])
        _emit(
            {
                "kind": case.kind,
                "source_caption": case.source_caption,
                "target_caption": case.target_caption,
                "edit": case.edit.to_dict(),
                "source": case.source.to_dict(),
                "target": case.target.to_dict(),
                "mask_fraction": float(case.mask.mean()),
                "seed": seed,
                "size": size,
                "files": {k: str(v) for k, v in files.items()},
            }
        )

    _run(body)


@world_app.command()
def clip(
    seed: Seed,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Directory for source/, target/, mask/ frame folders."),
    ],
    kind: Annotated[
        str | None, typer.Option("--kind", help="Edit kind: recolor, reshape or background.")
    ] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames in the clip (2-240).")] = 8,
    size: Size = 64,
) -> None:
    """A clip with exact ground truth: one small object slides across its cell, one edit on
    every frame; writes source/, target/ and mask/ frame_000000.png ... and prints JSON."""
    from .clips import CLIP_KINDS, sample_clip

    def body() -> None:
        _check_seed(seed)
        _check_size(size)
        if kind is not None and kind not in CLIP_KINDS:
            raise UserError(f"unknown --kind {kind!r}; expected one of: {', '.join(CLIP_KINDS)}")
        if not 2 <= frames <= 240:
            raise UserError(f"--frames must be in [2, 240], got {frames}")
        if output.suffix.lower() in VIDEO_SUFFIXES:
            raise UserError(
                f"-o {output} names a video file; a clip is written as a folder of source/, "
                "target/ and mask/ frame folders: give a folder name (laspa video takes "
                "its source/ folder)"
            )
        directory = _output_dir(output)
        case = sample_clip(seed, frames=frames, size=size, kinds=(kind,) if kind else CLIP_KINDS)
        parts = {
            "source": case.source_frames(),
            "target": case.target_frames(),
            "mask": [Image.fromarray(m.astype(np.uint8) * 255, mode="L") for m in case.masks()],
        }
        for name, pictures in parts.items():
            (directory / name).mkdir(exist_ok=True)
            for index, picture in enumerate(pictures):
                save_image(picture, directory / name / f"frame_{index:06d}.png")
        source_prompt, target_prompt = case.prompts
        _emit(
            {
                "id": case.id,
                "kind": case.edit.kind,
                "source_prompt": source_prompt,
                "target_prompt": target_prompt,
                "edit": case.edit.to_dict(),
                "source": case.source.to_dict(),
                "mover": case.mover,
                "shifts": case.shifts,
                "frames": frames,
                "size": size,
                "folders": {name: str(directory / name) for name in parts},
            }
        )

    _run(body)


@world_app.command()
def read(
    image: Annotated[Path, typer.Argument(help="Image to read the scene from.")],
) -> None:
    """Read the scene shown in an image (rendered or generated) and print it as JSON.

    "scene" is null when the image shows no object or more than three;
    "cells" always lists what was seen in each of the nine cells.
    """

    def body() -> None:
        if not image.is_file():
            raise UserError(f"no such image file: {image}")
        try:
            with Image.open(image) as handle:
                reading = read_scene_scores(handle)
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot read image {image}: {exc}") from None
        objects = reading.objects
        scene = Scene(reading.background, objects) if 1 <= len(objects) <= MAX_OBJECTS else None
        cells = [
            {
                "cell": c.cell,
                "object": c.object.to_dict() if c.object else None,
                "error": c.error,
                "margin": c.margin if np.isfinite(c.margin) else None,
            }
            for c in reading.cells
        ]
        payload = {
            "caption": caption(scene) if scene else None,
            "scene": scene.to_dict() if scene else None,
            "background": reading.background,
            "cells": cells,
        }
        _emit(payload)

    _run(body)
