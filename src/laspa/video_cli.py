"""``laspa video``: edit every frame of a clip with one prompt, with fixed noise (mounted by
laspa.cli through ``register``)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .cli import (
    DeviceOption,
    ModelOption,
    RayAddressOption,
    SamplerOption,
    SetOption,
    ThreadsOption,
    WorkersOption,
    note,
)


def register(app: typer.Typer) -> None:
    app.command("video")(video)


def video(
    source: Path = typer.Argument(
        ..., help="input clip: a video file (mp4, webm, gif, ...) or a folder of frames"
    ),
    prompt: str = typer.Argument(..., help="text describing the wanted result"),
    output: Path = typer.Option(
        ..., "-o", "--output", help="output: a .mp4, .webm or .gif file, or a folder of PNG frames"
    ),
    method: str = typer.Option("laspa-x0", "--method", "-m", help="editing method"),
    K: int | None = typer.Option(None, "--K", help="LASPA: align while t > K"),
    beta: float | None = typer.Option(None, "--beta", help="LASPA: alignment strength"),
    steps: int | None = typer.Option(None, "--steps", help="sampler steps"),
    strength: float | None = typer.Option(
        None, "--strength", help="sdedit: re-noised fraction; instdiffedit: r"
    ),
    guidance: float | None = typer.Option(None, "--guidance", help="guidance scale"),
    sampler: str | None = SamplerOption,
    settings: list[str] = SetOption,
    noise: str = typer.Option(
        "fixed",
        "--noise",
        help="fixed: one x_T (and z) for every frame; fresh: frame i gets seed + i",
    ),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    batch_size: int = typer.Option(4, "--batch-size", help="frames edited in one UNet batch"),
    fps: float | None = typer.Option(
        None, "--fps", help="output frame rate (default: a video file's own; 24 for a folder)"
    ),
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    threads: int | None = ThreadsOption,
    ray: bool = typer.Option(
        False,
        "--ray",
        help="shard the frames over Ray workers (a local cluster unless --ray-address)",
    ),
    ray_address: str | None = RayAddressOption,
    workers: int | None = WorkersOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="redo frames in the output that other settings made"
    ),
) -> None:
    """Edit every frame of SOURCE towards PROMPT into -o, keeping the frame rate and size.
    A rerun of the same command resumes: the frames already edited (in the output folder,
    or in OUTPUT.frames beside a video file until it is written) are skipped. Frames
    there that other settings made are refused unless --overwrite."""
    from . import provenance
    from . import video as video_lib
    from .batch.cli import check_ray_request
    from .batch.on_ray import map_with_editors
    from .cli import load_editor, method_options, model_description
    from .editor import check_method_fits
    from .errors import LaspaError
    from .methods.base import check_prompt, check_seed

    given = {"K": K, "beta": beta, "steps": steps, "strength": strength, "guidance": guidance}
    options = method_options(method, {**given, "sampler": sampler}, settings)
    check_prompt(prompt)
    check_seed(seed)
    video_lib.check_noise(noise)
    if batch_size < 1:
        raise LaspaError(f"--batch-size must be >= 1, got {batch_size}")
    info = video_lib.probe(source, fps)
    kind = video_lib.check_output(output, source, info)
    use_ray = check_ray_request(ray, ray_address, workers, model, threads)
    check_method_fits(method, options.get("sampler"), model)  # FPE on a flow model, ...
    settings = video_lib.settings_record(
        provenance.model_identity(model), source, info, prompt, method, seed, noise, options
    )
    video_lib.frame_folder(output, kind, settings, overwrite)  # refuses frames of other settings
    from tqdm import tqdm

    editor = None if use_ray else load_editor(model, device, threads)
    bar = tqdm(
        total=info.frames, desc="video", unit="frame", file=sys.stderr, disable=quiet, leave=False
    )
    try:
        if use_ray:
            summary = video_lib.edit_video_on_ray(
                source, prompt, output, info, method=method, seed=seed, frame_noise=noise,
                batch_size=batch_size, params=options, model=model, device=device,
                threads=threads, workers=workers, address=ray_address, progress=bar.update,
                overwrite=overwrite,
                map_with_editors=map_with_editors,
            )  # fmt: skip
        else:
            summary = video_lib.edit_video(
                editor, source, prompt, output, method=method, seed=seed, frame_noise=noise,
                batch_size=batch_size, progress=bar.update, info=info, overwrite=overwrite,
                **options,
            )  # fmt: skip
    finally:
        bar.close()
    what = "frames" if kind == "folder" else "a video"
    rate = f", {summary.frames_per_second:.2f} frames/s" if summary.edited else ""
    note(
        f"laspa: wrote {what} to {output}: {summary.frames} frames "
        f"{summary.size[0]}x{summary.size[1]} at {float(summary.fps):g} fps, "
        f"{summary.edited} edited, {summary.skipped} already there ({method}, "
        f"{noise} noise{rate}); used "
        + ("Ray workers" if editor is None else model_description(model))
    )
