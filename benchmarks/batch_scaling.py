"""How ``laspa batch --ray`` scales with workers: items per second with 1 and 2 (or more)
workers of one thread each, and the ratio, measured side by side in one run.

A job of ``--images`` procedural scenes with ``--edits`` edits each (one UNet batch per
image) runs on a local Ray cluster once per worker count, through the same code as
``laspa batch --ray`` (laspa.batch.on_ray). Two figures per run:

- ``edit items/s``: items over the time edits were running (first group's start to the
  last group's end, across workers): the steady state, without starting Ray and loading
  one model per worker;
- ``job items/s``: items over the whole job's wall time, start-up included;
- ``cpu share``: the CPU time the workers spent editing over the workers' wall time
  (near 1 on an idle machine; well below 1, other processes held the cores).

An in-process run of the same job (``laspa batch`` without --ray, one thread) is the
reference, and every Ray run's outputs are checked byte-identical to it. The load
average before and after each run is printed: on a machine shared with other jobs the
ratio says more about them than about Ray.

    OMP_NUM_THREADS=1 python benchmarks/batch_scaling.py --images 24 --edits 4 --steps 20
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from functools import partial
from pathlib import Path


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def make_job(folder: Path, images: int, edits: int, steps: int, seed: int):
    """``images`` scenes of the procedural world, ``edits`` prompts each."""
    import numpy as np

    from laspa.batch import jobs
    from laspa.world import render, sample_scene

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    prompts = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
    lines = []
    for index in range(images):
        path = folder / "images" / f"scene{index}.png"
        render(sample_scene(rng, 2), size=64).save(path)
        for edit in range(edits):
            lines.append({
                "image": f"images/{path.name}", "prompt": prompts[edit % len(prompts)],
                "seed": index * 100 + edit, "steps": steps,
            })  # fmt: skip
    manifest = folder / "job.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return jobs.plan(jobs.manifest_entries(manifest, jobs.Defaults()), folder / "out", edits)


def timed_group(outdir: str, editor, payload: str) -> str:
    """laspa batch's handler, with the wall-clock span of the group."""
    from laspa.batch.on_ray import run_group_payload

    start, cpu = time.time(), time.process_time()
    records = json.loads(run_group_payload(outdir, editor, payload))
    end, cpu = time.time(), time.process_time() - cpu
    return json.dumps({"start": start, "end": end, "cpu": cpu, "records": records})


def run_ray(job, outdir: Path, workers: int, model: str | None) -> dict:
    from laspa.batch.on_ray import map_with_editors

    outdir.mkdir()
    start = time.perf_counter()
    results = map_with_editors(
        [group.to_json() for group in job.groups], partial(timed_group, str(outdir)),
        model=model, device="cpu", threads=1, workers=workers, address=None,
    )  # fmt: skip
    wall = time.perf_counter() - start
    spans = [json.loads(text) for text in results]
    items = sum(len(span["records"]) for span in spans)
    editing = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    ran = {r["worker"] for s in spans for r in s["records"]}
    # the share of a core each worker had while editing: near 1 on an idle machine; far
    # below it, other processes held the cores and the ratio measures them, not Ray
    share = sum(s["cpu"] for s in spans) / (editing * len(ran))
    return {"items": items, "edit_items_per_s": items / editing, "job_items_per_s": items / wall,
            "edit_seconds": editing, "job_seconds": wall, "workers_used": len(ran),
            "cpu_share": share}  # fmt: skip


def run_local(job, outdir: Path, model: str | None) -> dict:
    import torch

    from laspa.batch import jobs
    from laspa.loading import load_editor

    torch.set_num_threads(1)
    outdir.mkdir()
    start = time.perf_counter()
    editor = load_editor(model, "cpu", 1)
    loaded, cpu = time.perf_counter(), time.process_time()
    records = jobs.run_local(editor, job, outdir)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    items = len(records)
    return {"items": items, "edit_items_per_s": items / (end - loaded),
            "job_items_per_s": items / (end - start), "edit_seconds": end - loaded,
            "job_seconds": end - start, "workers_used": 1,
            "cpu_share": cpu / (end - loaded)}  # fmt: skip


def same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.png"))
    return names == sorted(p.name for p in b.glob("*.png")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--edits", type=int, default=4, help="edits per image (one batch)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    parser.add_argument("--model", default=None, help="default: the bundled miniature")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.disable(logging.WARNING)  # Ray Data's progress notes; the table is the output
    counts = [int(n) for n in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="laspa-batch-scaling-") as scratch:
        folder = Path(scratch)
        job = make_job(folder, args.images, args.edits, args.steps, args.seed)
        rows = {}
        before = load()
        rows["in-process"] = {**run_local(job, folder / "local", args.model), "load": before}
        for count in counts:
            before = load()
            row = run_ray(job, folder / f"ray{count}", count, args.model)
            row["load"] = f"{before} -> {load()}"
            row["identical"] = same_bytes(folder / "local", folder / f"ray{count}")
            rows[f"ray x{count}"] = row

    base = rows[f"ray x{counts[0]}"]
    print(f"{args.images} images x {args.edits} edits, {args.steps} steps, "
          f"{os.cpu_count()} cores, one thread per worker")  # fmt: skip
    print(f"{'run':<12}{'edit items/s':>14}{'ratio':>8}{'job items/s':>13}{'ratio':>8}"
          f"{'workers used':>14}{'cpu share':>11}  identical  load (1/5/15 min)")  # fmt: skip
    for name, row in rows.items():
        edit_ratio = row["edit_items_per_s"] / base["edit_items_per_s"]
        job_ratio = row["job_items_per_s"] / base["job_items_per_s"]
        print(f"{name:<12}{row['edit_items_per_s']:>14.2f}{edit_ratio:>8.2f}"
              f"{row['job_items_per_s']:>13.2f}{job_ratio:>8.2f}{row['workers_used']:>14}"
              f"{row['cpu_share']:>11.2f}"
              f"  {str(row.get('identical', '-')):<9}  {row['load']}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
