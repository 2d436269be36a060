"""Where one edit's time goes, beside diffusers' own text-to-image pipeline.

For each thread count, every runner (``diffusers``: StableDiffusionPipeline with diffusers'
AttnProcessor2_0; ``loop-generate``: laspa's loop generating; then the methods asked for)
runs the same image and prompt in interleaved rounds, and three tables are printed as
markdown:

- wall time per edit (median of uninstrumented rounds) and its ratio to diffusers;
- the regions of an edit (median of instrumented rounds, timed by module hooks): per step
  the UNet, the attention modules inside it, and everything outside the models (the loop
  and its hooks or the scheduler, with the image conversions spread over the steps); once
  per edit the VAE encoder, decoder and text encoder;
- torch.profiler's operator table of one edit: self CPU time and calls per step of the
  operators that cost most. Call counts do not depend on the machine's load.

    python benchmarks/profile_edit.py --threads 1,2
    python benchmarks/profile_edit.py --threads 1 --methods laspa-x0 --rounds 5 --top 20

Timings on a shared machine are noisy; the call counts and the regions' shares are not.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
import torch
from speed import diffusers_attention, diffusers_generate, load

REGIONS = ("unet", "attention", "vae-encoder", "vae-decoder", "text-encoder")


class RegionTimer:
    """Wall time spent inside chosen modules, accumulated by forward hooks."""

    def __init__(self, editor):
        from diffusers.models.attention_processor import Attention

        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.enabled = False
        modules = [
            ("unet", editor.unet),
            ("vae-encoder", editor.vae.encoder),
            ("vae-decoder", editor.vae.decoder),
            ("text-encoder", editor.text_encoder),
        ]
        modules += [("attention", m) for m in editor.unet.modules() if isinstance(m, Attention)]
        self.handles = []
        for region, module in modules:
            self.handles.append(module.register_forward_pre_hook(self._start))
            self.handles.append(module.register_forward_hook(self._stop(region)))

    def _start(self, module, args) -> None:
        module._profile_start = time.perf_counter()

    def _stop(self, region: str):
        def stop(module, args, output) -> None:
            if self.enabled:
                self.seconds[region] += time.perf_counter() - module._profile_start
                self.calls[region] += 1

        return stop

    def measure(self, work) -> dict[str, float]:
        self.seconds.clear()
        self.calls.clear()
        self.enabled = True
        start = time.perf_counter()
        try:
            work()
        finally:
            self.enabled = False
        return {"total": time.perf_counter() - start, **self.seconds}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def runners(editor, image, prompt, steps: int, guidance: float, methods: list[str]):
    """name -> function(seed) running one edit (or diffusers' generation)."""
    generate = diffusers_generate(editor, prompt, steps, guidance, image.size)
    table = {"diffusers": generate}
    for method in ["loop-generate", *methods]:
        name = "generate" if method == "loop-generate" else method

        def run(seed: int, name=name) -> None:
            editor.edit(image, prompt, method=name, seed=seed, steps=steps, guidance=guidance)

        table[method] = run
    return table


def operator_table(run, editor, diffusers: bool) -> dict[str, tuple[float, int]]:
    """operator -> (self CPU seconds, calls) over one edit, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    def work():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(0)
        return prof

    if diffusers:  # the processor swap happens outside the profiled call
        with diffusers_attention(editor.unet):
            prof = work()
    else:
        prof = work()
    return {e.key: (e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()}


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini", help="mini, tiny, or a model folder/hub id")
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default="laspa-x0", help="laspa methods beside the loop")
    parser.add_argument("--top", type=int, default=15, help="operators shown")
    args = parser.parse_args()
    counts = [int(part) for part in args.threads.split(",") if part.strip()]

    from laspa.loading import quiet_libraries
    from laspa.world import apply_edit, render, sample_edit, sample_scene

    quiet_libraries()
    editor, name = load(args.model)
    rng = np.random.default_rng(0)
    scene = sample_scene(rng, 2)
    case = apply_edit(scene, sample_edit(rng, scene, kind="recolor"))
    image = render(scene, size=editor.resolution)
    prompt = case.target_caption
    methods = [m for m in args.methods.split(",") if m]
    table = runners(editor, image, prompt, args.steps, args.guidance, methods)
    steps = args.steps
    print(f"# {name}, {steps} steps, guidance {args.guidance}, prompt {prompt!r}\n")

    for threads in counts:
        torch.set_num_threads(threads)
        for run in table.values():  # warm-up
            run(0)
        walls: dict[str, list[float]] = defaultdict(list)
        regions: dict[str, list[dict[str, float]]] = defaultdict(list)
        timer = RegionTimer(editor)
        try:
            for round_index in range(args.rounds):
                order = list(table) if round_index % 2 == 0 else list(table)[::-1]
                for runner in order:
                    start = time.perf_counter()
                    table[runner](round_index)
                    walls[runner].append(time.perf_counter() - start)
                for runner in order:
                    regions[runner].append(
                        timer.measure(lambda r=runner, s=round_index: table[r](s))
                    )
        finally:
            timer.remove()

        print(f"## {threads} thread{'s' if threads > 1 else ''}\n")
        reference = statistics.median(walls["diffusers"])
        rows = []
        for runner in table:
            wall = statistics.median(walls[runner])
            rows.append([runner, f"{wall:.3f}", f"{wall / reference:.3f}"])
        print(markdown(["runner", "s per edit", "ratio to diffusers"], rows) + "\n")

        rows = []
        for runner in table:
            med = {k: statistics.median(r.get(k, 0.0) for r in regions[runner])
                   for k in ("total", *REGIONS)}  # fmt: skip
            once = med["vae-encoder"] + med["vae-decoder"] + med["text-encoder"]
            between = med["total"] - med["unet"] - once
            rows.append([
                runner, f"{med['unet'] / steps * 1e3:.2f}",
                f"{med['attention'] / steps * 1e3:.2f}", f"{between / steps * 1e3:.3f}",
                f"{med['vae-encoder'] * 1e3:.1f}", f"{med['vae-decoder'] * 1e3:.1f}",
                f"{med['text-encoder'] * 1e3:.1f}",
            ])  # fmt: skip
        header = ["runner", "UNet ms/step", "of which attention", "outside the models ms/step",
                  "VAE encoder ms", "VAE decoder ms", "text encoder ms"]  # fmt: skip
        print(markdown(header, rows) + "\n")

        ops = {
            runner: operator_table(table[runner], editor, runner == "diffusers") for runner in table
        }
        totals = {r: sum(s for s, _ in o.values()) for r, o in ops.items()}
        calls = {r: sum(c for _, c in o.values()) for r, o in ops.items()}
        names = sorted(
            set().union(*ops.values()),
            key=lambda op: -max(o.get(op, (0.0, 0))[0] for o in ops.values()),
        )[: args.top]
        header = ["operator"] + [f"{r} ms/step (calls/step)" for r in table]
        rows = []
        for op in names:
            cells = []
            for runner in table:
                seconds, count = ops[runner].get(op, (0.0, 0))
                cells.append(f"{seconds / steps * 1e3:.3f} ({count / steps:g})")
            rows.append([op, *cells])
        rows.append(
            ["all operators"]
            + [f"{totals[r] / steps * 1e3:.3f} ({calls[r] / steps:g})" for r in table]
        )
        print(markdown(header, rows) + "\n")


if __name__ == "__main__":
    main()
