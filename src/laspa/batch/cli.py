"""``laspa batch``: many edits from a manifest (or a folder and one prompt), in this process
or on Ray (mounted by laspa.cli through ``register``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ..cli import (
    DeviceOption,
    ModelOption,
    RayAddressOption,
    SetOption,
    ThreadsOption,
    WorkersOption,
    note,
)
from ..errors import LaspaError, OutputError
from ..files import check_writable, output_checks, shortened


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)


def batch(
    source: Path = typer.Argument(
        ..., help="a JSON-lines manifest (one edit per line), or a folder of images with --prompt"
    ),
    outdir: Path = typer.Option(..., "-o", "--output", help="output folder (made if missing)"),
    prompt: str | None = typer.Option(
        None, "--prompt", help="folder jobs: the prompt of every image"
    ),
    method: str = typer.Option("laspa-x0", "--method", "-m", help="method of lines naming none"),
    steps: int | None = typer.Option(None, "--steps", help="sampler steps of lines naming none"),
    settings: list[str] = SetOption,
    seed: int = typer.Option(0, "--seed", help="seed of lines naming none"),
    batch_size: int = typer.Option(
        8, "--batch-size", help="at most this many edits of one image share one UNet batch"
    ),
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    threads: int | None = ThreadsOption,
    ray: bool = typer.Option(
        False, "--ray", help="run on Ray (a local cluster unless --ray-address)"
    ),
    ray_address: str | None = RayAddressOption,
    workers: int | None = WorkersOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="redo outputs in -o that other settings (or another run) made"
    ),
) -> None:
    """Run many edits: each manifest line names image, prompt and optionally method, seed,
    output and method options; outputs land in -o, with summary.jsonl saying what became
    of each line. A rerun skips what the same settings made, and refuses to go on over
    outputs made with other settings unless --overwrite. Exit status 1 when an item
    failed."""
    from ..cli import method_options
    from ..methods.base import check_prompt, check_seed
    from ..threads import check_threads
    from . import jobs

    check_threads(threads)
    check_seed(seed)
    if batch_size < 1:
        raise LaspaError(f"--batch-size must be >= 1, got {batch_size}")
    if workers is not None and not (ray or ray_address is not None):
        raise LaspaError("--workers is for --ray")

    options = method_options(method, {"steps": steps}, settings)
    defaults = jobs.Defaults(method, seed, options)
    if source.is_dir():
        if prompt is None:
            raise LaspaError(f"{shortened(source)} is a folder: give the edit's --prompt")
        check_prompt(prompt, "--prompt")
        entries = jobs.folder_entries(source, prompt, defaults)
    else:
        if prompt is not None:
            raise LaspaError("--prompt is for a folder of images; a manifest line has its own")
        entries = jobs.manifest_entries(source, defaults)
    check_outdir(outdir, None if source.is_dir() else source)
    use_ray = check_ray_request(ray, ray_address, workers, model, threads)
    job = jobs.plan(
        entries, outdir, batch_size, model=model, manifest=None if source.is_dir() else source
    )
    check_stale(job, outdir, overwrite)
    outputs = [item.output for group in job.groups for item in group.items]
    editor = None
    if not use_ray and job.groups:
        from ..cli import load_editor

        editor = load_editor(model, device, threads)
    made = not outdir.exists()
    outdir.mkdir(exist_ok=True)
    bar = _bar(job.items, quiet)
    bar.update(len(job.refused))
    try:
        if use_ray:
            from .on_ray import run_batch

            records = run_batch(
                job, outdir, model=model, device=device, threads=threads,
                workers=workers, address=ray_address, progress=bar.update,
            )  # fmt: skip
            where = "on Ray"
        else:
            records = jobs.run_local(editor, job, outdir, bar.update)
            where = "in this process"
    except LaspaError:  # refused (a cluster too small, ...): leave nothing behind
        if made and not any(outdir.iterdir()):
            outdir.rmdir()
        raise
    finally:
        bar.close()
    counts = jobs.finish(outdir, records, outputs)
    summary = outdir / jobs.SUMMARY_NAME
    note(
        f"laspa: batch of {job.items} edits {where}: {counts['done']} done, "
        f"{counts['exists']} already there, {counts['failed']} failed; see {summary}"
    )
    if counts["failed"]:
        raise typer.Exit(1)


def check_ray_request(ray: bool, address: str | None, workers: int | None, model, threads) -> bool:
    """Whether to run on Ray (--ray, or --ray-address alone), with what can be checked
    before a cluster starts: Ray installed, the address answering, the model folder."""
    from ..threads import check_threads

    check_threads(threads)
    use_ray = ray or address is not None
    if workers is not None and not use_ray:
        raise LaspaError("--workers is for --ray")
    if workers is not None and workers < 1:
        raise LaspaError(f"--workers must be >= 1, got {workers}")
    check_model(model)
    if use_ray:
        from .on_ray import check_address, check_ray_installed

        check_ray_installed()
        if address is not None:
            check_address(address)
    return use_ray


def check_model(model: str | None) -> None:
    """What can be told of --model from its folder's configs (no weights read): on Ray the
    workers load it, and a refusal there would come late and wrapped."""
    from ..mini import MODEL_NAMES
    from ..models import check_model_source

    if model is not None and model not in MODEL_NAMES:
        check_model_source(model)


def check_outdir(outdir: Path, manifest: Path | None = None) -> None:
    """An output folder that exists or can be made in an existing folder, and that takes
    new files, and whose summary would not overwrite the manifest; checked before any
    work (and before the folder is made)."""
    from .jobs import SUMMARY_NAME

    with output_checks(outdir):
        if outdir.exists() and not outdir.is_dir():
            raise OutputError(f"output {shortened(outdir)} exists and is not a folder")
        parent = outdir if outdir.exists() else outdir.parent
        if not parent.is_dir():
            raise OutputError(f"output folder's parent does not exist: {shortened(parent)}")
        summary = outdir / SUMMARY_NAME
        if manifest is not None and os.path.realpath(summary) == os.path.realpath(manifest):
            raise OutputError(
                f"the manifest is {shortened(summary)}, which the run's summary would "
                "overwrite: copy it elsewhere or choose another -o"
            )
        check_writable(parent / SUMMARY_NAME)


def check_stale(job, outdir: Path, overwrite: bool) -> None:
    """Refuse, before any model loads, a summary over a line's input, and to go on where
    outputs in OUTDIR were made with other settings (or by a run that recorded nothing),
    unless --overwrite redoes them."""
    from .jobs import SUMMARY_NAME, stale_outputs

    summary = os.path.realpath(outdir / SUMMARY_NAME)
    for item in (item for group in job.groups for item in group.items):
        if os.path.realpath(item.image) == summary:
            raise OutputError(
                f"the summary {shortened(outdir / SUMMARY_NAME)} would overwrite the input "
                f"of line {item.line}: choose another -o"
            )
    stale = stale_outputs(job, outdir) if outdir.is_dir() else []
    if stale and not overwrite:
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        raise OutputError(
            f"{shortened(outdir / stale[0])}{more} in -o {'were' if more else 'was'} made "
            "with other settings "
            "(or by another run): add --overwrite to redo them, or choose another -o"
        )


def _bar(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="batch", unit="edit", file=sys.stderr, disable=quiet, leave=False)
