"""Hours of use in one process: does laspa keep working, and does its memory stay flat?

Four stages on the bundled models (mini; mini-flow for flowedit), one after another in
this process, each counting its failures (an exception, or a result of the wrong shape):

- ``--edits`` edits, each with a prompt never seen before, over every method in turn (a
  few steps each: the point is the number of distinct prompts, caches and batches, not
  the pictures);
- ``--requests`` requests to the web API (``/edit`` of ``laspa.web.build_app`` served on
  a loopback port in this process), sent ``--concurrent`` at a time through
  gradio_client, each with its own prompt and seed;
- one clip of ``--frames`` frames edited by ``laspa.video.edit_video``;
- a ``--manifest-lines`` line manifest (distinct prompts over a few images) run as
  ``laspa batch`` runs it in this process (laspa.batch.jobs).

It prints the process's resident memory (RSS, from /proc) as it goes, and at the end
the failures of each stage (expected: 0) and RSS over time: after the warm-up (the first
tenth of the edits) it should stay flat, a growth of a few MB at most.

    python benchmarks/soak.py                       # the full soak (an hour or more)
    python benchmarks/soak.py --edits 200 --requests 40 --frames 60 --manifest-lines 1000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: options a method needs beyond the prompt (the source caption is filled in per edit)
NEEDS = {
    "diffedit": {"source_prompt": "{caption}"},
    "flowedit": {"source_prompt": "{caption}", "n_max": 1},
    "laspa-local": {"source_prompt": "{caption}"},
    "laspa-mix": {"subject": "{subject}"},
    "fpe": {"source_prompt": ""},  # real-image mode: the inversion's empty prompt
}

STAGES = ("edits", "requests", "video", "manifest")

COLOURS = ("red", "green", "blue", "yellow", "pink", "purple", "orange", "white", "black")


def rss_mb() -> float:
    """This process's resident set size in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Log:
    """RSS samples over the run, and the failures of each stage."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.samples: list[tuple[float, str, float]] = []
        self.failures: dict[str, list[str]] = {}

    def sample(self, where: str) -> None:
        """``where``: "stage: progress", e.g. "edits: 120"."""
        seconds = time.perf_counter() - self.start
        self.samples.append((seconds, where, rss_mb()))
        print(f"  {seconds:7.1f} s  {where:<28} RSS {self.samples[-1][2]:7.1f} MB", flush=True)

    def stage_samples(self, stage: str) -> list[tuple[float, str, float]]:
        return [sample for sample in self.samples if sample[1].startswith(f"{stage}:")]

    def fail(self, stage: str, error: BaseException | str) -> None:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        self.failures.setdefault(stage, []).append(f"{type(error).__name__}: {reason}"[:200])


def prompt_for(caption: str, index: int) -> str:
    """A prompt no earlier edit used: the caption with a colour and a number of its own."""
    return caption.replace("background", f"{COLOURS[index % len(COLOURS)]} background {index}")


def scenes(resolution: int, count: int = 4) -> list[tuple[object, str]]:
    from laspa.world import caption, render, sample_scene

    made = []
    for seed in range(count):
        scene = sample_scene(np.random.default_rng(seed))
        made.append((render(scene, size=resolution), caption(scene)))
    return made


def options_for(method: str, caption: str, steps: int) -> dict:
    subject = next(w for w in caption.split() if w in ("circle", "square", "triangle"))
    extra = {
        name: value.format(caption=caption, subject=subject) if isinstance(value, str) else value
        for name, value in NEEDS.get(method, {}).items()
    }
    return {"steps": steps, **extra}


# ------------------------------------------------------------------------ stages
def soak_edits(log: Log, editors: dict, count: int, steps: int, every: int) -> None:
    """``count`` edits with distinct prompts, every method in turn, two edits per call
    (one prompt new, the other the previous call's: cached or just evicted)."""
    from laspa import METHODS

    pictures = scenes(editors["unet"].resolution)
    methods = list(METHODS)
    done, index, previous = 0, 0, None
    while done < count:
        method = methods[index % len(methods)]
        kind = "flow" if "unet" not in METHODS[method].kinds else "unet"
        picture, caption = pictures[index % len(pictures)]
        prompt = prompt_for(caption, index)
        prompts = [prompt] + ([previous] if previous else [])
        variants = [
            {"prompt": p, "seed": index, **options_for(method, caption, steps)} for p in prompts
        ]
        try:
            results = editors[kind].edit_many(picture, variants, method=method)
            if len(results) != len(variants) or results[0].image.size != picture.size:
                log.fail("edits", f"{method}: {len(results)} results for {len(variants)}")
        except Exception as error:  # a soak counts every failure and goes on
            log.fail("edits", error)
        previous = prompt
        done += len(variants)
        index += 1
        if index % every == 0:
            log.sample(f"edits: {done}")
    log.sample(f"edits: {done} (end)")


def soak_requests(log: Log, editor, count: int, concurrent: int, steps: int, folder: Path):
    """``count`` /edit requests to the web app in this process, ``concurrent`` at a time."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from gradio_client import Client, handle_file

    from laspa.web import build_app
    from laspa.web.app import launch

    pictures = scenes(editor.resolution)
    files = []
    for number, (picture, caption) in enumerate(pictures):
        path = folder / f"scene-{number}.png"
        picture.save(path)
        files.append((path, caption))
    demo = build_app(editor)
    url = launch(demo, port=_free_port(), block=False, quiet=True)
    client = Client(url, verbose=False, download_files=str(folder / "downloads"))
    sent = 0
    try:
        while sent < count:
            jobs = []
            for index in range(sent, min(count, sent + concurrent)):
                path, caption = files[index % len(files)]
                jobs.append(
                    client.submit(
                        image=handle_file(str(path)),
                        prompt=prompt_for(caption, 10**6 + index),
                        method="laspa-x0",
                        seed=index,
                        options={"steps": steps},
                        api_name="/edit",
                    )  # fmt: skip
                )
            for job in jobs:
                try:
                    result = job.result(timeout=600)
                    if "UNet evaluations" not in result[2]:
                        log.fail("requests", f"unexpected timing line {result[2]!r}")
                except Exception as error:
                    log.fail("requests", error)
            sent += len(jobs)
            _prune(folder / "downloads")
            log.sample(f"requests: {sent}")
    finally:
        demo.close()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _prune(folder: Path) -> None:
    """The client's downloads: not the server's memory, so not kept on disk either."""
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()


def soak_video(log: Log, editor, frames: int, steps: int, folder: Path) -> None:
    from web_video import write_clip  # benchmarks/, this script's folder

    from laspa import video

    clip = folder / "clip.mp4"
    prompt = write_clip(clip, frames)
    output = folder / "edited.webm"
    done = [0]

    def progress(count: int) -> None:  # RSS every tenth of the clip
        before, done[0] = done[0], done[0] + count
        if before // max(1, frames // 10) != done[0] // max(1, frames // 10):
            log.sample(f"video: {done[0]} frames")

    try:
        summary = video.edit_video(editor, clip, prompt, output, steps=steps, progress=progress)
        if summary.frames != frames:
            log.fail("video", f"{summary.frames} frames edited of {frames}")
    except Exception as error:
        log.fail("video", error)
    log.sample(f"video: {frames} frames (end)")


def soak_manifest(log: Log, editor, lines: int, steps: int, folder: Path) -> None:
    from laspa.batch import jobs

    pictures = scenes(editor.resolution)
    for number, (picture, _) in enumerate(pictures):
        picture.save(folder / f"scene-{number}.png")
    manifest = folder / "manifest.jsonl"
    with open(manifest, "w") as stream:
        for index in range(lines):
            number = index % len(pictures)
            entry = {
                "image": f"scene-{number}.png",
                "prompt": prompt_for(pictures[number][1], index),
            }
            stream.write(json.dumps({**entry, "seed": index}) + "\n")
    outdir = folder / "out"
    job = jobs.plan(jobs.manifest_entries(manifest, jobs.Defaults(options={"steps": steps})),
                    outdir, batch_size=8)  # fmt: skip
    outdir.mkdir()
    outputs = [item.output for group in job.groups for item in group.items]
    done = [0]

    def progress(count: int) -> None:
        before, done[0] = done[0], done[0] + count
        if before // max(1, lines // 10) != done[0] // max(1, lines // 10):
            log.sample(f"manifest: {done[0]} lines")

    try:
        records = jobs.run_local(editor, job, outdir, progress)
        counts = jobs.finish(outdir, records, outputs)
        for record in records:  # refused lines and failed edits, each with its reason
            if record["status"] == "failed":
                log.fail("manifest", f"line {record['line']}: {record['reason']}")
        if counts.get("done", 0) != lines:
            log.fail("manifest", f"{counts.get('done', 0)} of {lines} lines done")
    except Exception as error:
        log.fail("manifest", error)


# --------------------------------------------------------------------------- main
def report(log: Log) -> None:
    print("\nfailures:")
    for stage in STAGES:
        failed = log.failures.get(stage, [])
        print(f"  {stage:<9} {len(failed)}" + (f"  first: {failed[0]}" if failed else ""))
    print(f"  in all    {sum(len(f) for f in log.failures.values())}")
    print("\nRSS over time (MB):")
    for seconds, where, rss in log.samples:
        print(f"  {seconds:7.1f} s  {rss:7.1f}  {where}")
    # each stage warms up on its own (gradio's import, the video codec): its first tenth
    # of samples (at least the first) is its warm-up, and after it RSS should stay flat
    print("\nRSS after each stage's warm-up (MB):")
    for stage in STAGES:
        samples = log.stage_samples(stage)
        warm = samples[max(1, len(samples) // 10) :] if len(samples) > 1 else samples
        if warm:
            first, last = warm[0][2], warm[-1][2]
            print(
                f"  {stage:<9} {first:7.1f} -> {last:7.1f} ({last - first:+.1f}; "
                f"highest {max(r for *_, r in warm):.1f}) over {len(warm)} samples"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=5000, help="edits with distinct prompts")
    parser.add_argument("--requests", type=int, default=500, help="web API requests")
    parser.add_argument("--concurrent", type=int, default=8, help="requests sent at once")
    parser.add_argument("--frames", type=int, default=300, help="frames of the clip")
    parser.add_argument("--manifest-lines", type=int, default=10_000, help="manifest lines")
    parser.add_argument("--steps", type=int, default=2, help="sampler steps of every edit")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    from laspa import Editor

    torch.set_num_threads(args.threads)
    log = Log()
    log.sample("start")
    editors = {"unet": Editor.mini(), "flow": Editor.mini("flow")}
    log.sample("models loaded")
    every = max(1, args.edits // 40)
    stages: list[tuple[str, Callable[[Path], None]]] = [
        ("edits", lambda _: soak_edits(log, editors, args.edits, args.steps, every)),
        ("requests", lambda folder: soak_requests(
            log, editors["unet"], args.requests, args.concurrent, args.steps, folder)),
        ("video", lambda folder: soak_video(log, editors["unet"], args.frames, args.steps, folder)),
        ("manifest", lambda folder: soak_manifest(
            log, editors["unet"], args.manifest_lines, args.steps, folder)),
    ]  # fmt: skip
    for name, stage in stages:
        print(f"{name}:", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"laspa-soak-{name}-") as folder:
            stage(Path(folder))
    report(log)


if __name__ == "__main__":
    main()
