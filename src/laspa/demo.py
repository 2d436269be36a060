"""`laspa demo`: the main job on a fresh machine, in one command.

Renders a scene of the procedural world, picks an edit, runs every editing method on it
with the bundled miniature (or ``--model``), and writes a labelled grid (input, exact
target, each method) with a small table: seconds, background PSNR, and whether the scene
reader finds exactly the requested edit. It is a one-case ``laspa bench``, so the figures
mean the same as there.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .cli import DeviceOption, ModelOption, ThreadsOption, done, load_editor
from .errors import LaspaError, OutputError
from .files import check_writable, output_checks


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    output: Path = typer.Option(Path("laspa-demo"), "-o", "--output", help="output folder"),
    seed: int = typer.Option(0, "--seed", help="scene, edit and noise seed"),
    kind: str | None = typer.Option(None, "--kind", help="edit kind (default: drawn by seed)"),
    steps: int = typer.Option(50, "--steps", help="DDIM steps"),
    methods: str | None = typer.Option(None, "--methods", help="comma-separated (default: all)"),
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    threads: int | None = ThreadsOption,
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON lines"),
) -> None:
    """Edit a generated scene with every method; write a labelled grid and print a table."""
    import numpy as np

    from . import images
    from .bench.cases import scene_case
    from .bench.runner import make_specs, run_bench
    from .methods.base import METHODS
    from .samplers import SAMPLERS
    from .visual import labelled_grid
    from .world import EDIT_KINDS, sample_edit, sample_scene

    if kind is not None and kind not in EDIT_KINDS:
        raise LaspaError(f"--kind must be one of {', '.join(EDIT_KINDS)}, got {kind!r}")
    if seed < 0 or steps < 1:
        raise LaspaError("--seed must be >= 0 and --steps >= 1")
    with output_checks(output):
        if output.exists() and not output.is_dir():
            raise OutputError(f"output {output} exists and is not a folder")
        if not output.parent.is_dir():
            raise OutputError(f"output folder's parent does not exist: {output.parent}")
        check_writable(output / "demo.png" if output.is_dir() else output)
    names = [m for m in (methods.split(",") if methods else METHODS) if m]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise LaspaError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")

    editor = load_editor(model, device, threads)
    overrides = {}
    if not methods:  # every method this model can run; inverting ones on DDIM if need be
        names = [m for m in names if editor.engine.kind in METHODS[m].kinds]
        if not SAMPLERS[editor.engine.default_sampler].deterministic:
            overrides = {m: {"sampler": "ddim"} for m in names
                         if METHODS[m].needs_deterministic_sampler}  # fmt: skip
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng)
    while kind is not None:  # a scene on which the requested kind is possible
        try:
            edit = sample_edit(rng, scene, kind)
            break
        except ValueError:
            scene = sample_scene(rng)
    else:
        edit = sample_edit(rng, scene)
    case = scene_case(f"demo-{seed}", scene, edit, editor.resolution)
    result = run_bench(
        editor, [case], make_specs(names, overrides, steps), suite="demo", seed=seed, steps=steps
    )

    output.mkdir(exist_ok=True)
    shown = result.samples[case.id]
    grid = labelled_grid([list(shown.values())], [""], list(shown))
    images.save_image(grid, output / "demo.png")
    for name, picture in shown.items():
        images.save_image(picture, output / f"{name}.png")
    rows = [
        {
            "method": record["method"],
            "seconds": round(record["seconds"], 3),
            "bg_psnr": round(record["bg_psnr"], 2),
            "edit_read_back": bool(record["edit_success"]),
        }
        for record in result.records
    ]
    print(f"{case.source_prompt}\n  -> {case.target_prompt}  ({case.kind})")
    for row in rows:
        if as_json:
            print(json.dumps(row))
        else:
            read_back = "yes" if row["edit_read_back"] else "no"
            print(
                f"  {row['method']:<15} {row['seconds']:>7.2f} s   background "
                f"{row['bg_psnr']:6.2f} dB   edit read back: {read_back}"
            )
    done(model, f"wrote {output / 'demo.png'}")
