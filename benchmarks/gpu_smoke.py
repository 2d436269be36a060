"""The first thing to run on a GPU with a real checkpoint: every method once, at few steps.

    python benchmarks/gpu_smoke.py --model runwayml/stable-diffusion-v1-5 --device cuda
    python benchmarks/gpu_smoke.py --model path/to/sd-folder --device cuda --dtype float32
    python benchmarks/gpu_smoke.py                  # the bundled miniature, on this machine

For every method it edits one synthetic image twice with the same seed and checks that
the output is finite and that both runs give the same image; it prints the seconds of
each run and the peak memory: CUDA's peak allocation during the method on a GPU, the
process's peak resident memory so far on the CPU. Exit status 0 when every check passes,
1 when one fails, 2 on a usage or model error (one line on stderr).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from laspa import METHODS, Editor, LaspaError

PROMPT = "a red circle on a blue background"
#: what a method needs besides its defaults to run on PROMPT
NEEDS = {"laspa-mix": {"subject": "circle"}}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class Outcome:
    method: str
    first_seconds: float
    second_seconds: float
    peak_mb: float
    problems: list[str]


def smoke_image(size: tuple[int, int]) -> Image.Image:
    """A fixed picture with structure at the model's size: a disc on a gradient."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    picture = np.stack([x / width, y / height, 0.5 + 0 * x], axis=-1) * 255
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(size) / 4) ** 2
    picture[disc] = (220, 40, 40)
    return Image.fromarray(picture.astype(np.uint8))


def problems_of(first: np.ndarray, second: np.ndarray, latent: torch.Tensor) -> list[str]:
    """What is wrong with two same-seed results of one method (empty when nothing)."""
    found = []
    if not torch.isfinite(latent).all():
        found.append("output latent not finite")
    if not np.array_equal(first, second):
        found.append("same seed, different image")
    return found


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # kB on Linux


def smoke(editor: Editor, methods: list[str], steps: int) -> list[Outcome]:
    image = smoke_image(editor.model_size(Image.new("RGB", (512, 512))))
    outcomes = []
    for method in methods:
        if editor.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(editor.device)
        params = {"steps": steps, **NEEDS.get(method, {})}
        seconds, results = [], []
        for _ in range(2):
            start = time.perf_counter()
            results.append(editor.edit(image, PROMPT, method, seed=0, **params))
            if editor.device.type == "cuda":
                torch.cuda.synchronize(editor.device)
            seconds.append(time.perf_counter() - start)
        first, second = (np.asarray(r.image) for r in results)
        problems = problems_of(first, second, results[0].latent)
        outcomes.append(Outcome(method, *seconds, peak_mb(editor.device), problems))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="diffusers SD folder or hub id (default: the miniature)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu... (default: cuda if present)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: float16 on CUDA")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps per edit (4)")
    parser.add_argument("--methods", help="comma-separated (default: every method)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",") if args.methods else sorted(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or args.steps < 1:
        problem = f"unknown method {unknown[0]!r}" if unknown else "--steps must be >= 1"
        print(f"gpu_smoke: {problem}", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype] if args.dtype else None
    try:
        if args.model:
            editor = Editor.from_pretrained(args.model, device=args.device, dtype=dtype)
        else:
            editor = Editor.mini(device=args.device, dtype=dtype)
        editor.progress = None
        outcomes = smoke(editor, methods, args.steps)
    except (LaspaError, RuntimeError) as error:  # RuntimeError: e.g. no such CUDA device
        print(f"gpu_smoke: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    memory = "peak CUDA MB" if editor.device.type == "cuda" else "peak RSS MB"
    print(f"{editor.name} on {editor.device} in {str(editor.dtype).removeprefix('torch.')}, "
          f"{args.steps} steps")  # fmt: skip
    print(f"{'method':<16}{'first s':>9}{'again s':>9}{memory:>14}  checks")
    for o in outcomes:
        verdict = "ok" if not o.problems else "FAILED: " + "; ".join(o.problems)
        print(f"{o.method:<16}{o.first_seconds:>9.2f}{o.second_seconds:>9.2f}{o.peak_mb:>14.0f}"
              f"  {verdict}")  # fmt: skip
    return 1 if any(o.problems for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
