"""Measure the bundled miniature: VAE fidelity and prompt faithfulness.

    PYTHONPATH=training python -m laspa_train.evaluate --json [--n 50] [--guidance 5.0]

prints one JSON line:
  vae_psnr          mean PSNR (dB) of VAE reconstructions of held-out scenes
  faithfulness_one  fraction of attributes (background colour, object count,
  faithfulness_two  each object's colour and shape) that `laspa.world.read_scene`
                    reads back from images generated for held-out one- and
                    two-object captions (diffusers StableDiffusionPipeline,
                    --steps of the folder's own pipeline (50 DDIM steps for the
                    bundled model; --model src/laspa/mini/lcm --steps 4 for
                    mini-lcm), classifier-free guidance --guidance)
  reader_accuracy   the same score for the reader on exactly rendered scenes,
                    i.e. the ceiling the faithfulness numbers are measured against
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment

from laspa.world import Scene, caption, render
from laspa_train.data import eval_scenes, make_batch

DEFAULT_GUIDANCE = 5.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of [-1, 1] images, on the 0-255 scale after quantisation."""
    qa = ((a.clamp(-1, 1) + 1) * 127.5).round()
    qb = ((b.clamp(-1, 1) + 1) * 127.5).round()
    mse = ((qa - qb) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(255.0**2 / mse)


@torch.no_grad()
def vae_psnr(vae: torch.nn.Module, scenes: Sequence[Scene], batch_size: int = 64) -> float:
    """Mean PSNR of decode(mode(encode(x))) over the scenes."""
    values = []
    for start in range(0, len(scenes), batch_size):
        x = make_batch(list(scenes[start : start + batch_size])).images
        z = vae.encode(x).latent_dist.mode()
        values.append(psnr(vae.decode(z).sample, x))
    return float(torch.cat(values).mean())


def _pair_score(truth, read) -> float:
    # Colour and shape decide the match; the cell only breaks ties, so a
    # slightly misplaced object still counts for its colour and shape.
    same_cell = truth.cell == read.cell
    return float(truth.color == read.color) + float(truth.shape == read.shape) + 0.5 * same_cell


def score_scene(truth: Scene, read: Scene | None) -> tuple[int, int]:
    """(correct, total) attributes: background, count, each object's colour and shape."""
    total = 2 + 2 * len(truth.objects)
    if read is None:
        return 0, total
    correct = int(read.background == truth.background)
    correct += int(len(read.objects) == len(truth.objects))
    if read.objects:
        scores = np.array([[_pair_score(t, r) for r in read.objects] for t in truth.objects])
        rows, cols = linear_sum_assignment(-scores)
        for i, j in zip(rows, cols, strict=True):
            t, r = truth.objects[i], read.objects[j]
            correct += int(t.color == r.color) + int(t.shape == r.shape)
    return correct, total


def _reader() -> Callable[[Image.Image], Scene] | None:
    try:
        from laspa.world import read_scene
    except ImportError:
        return None
    return read_scene


def _safe_read(reader: Callable[[Image.Image], Scene], image: Image.Image) -> Scene | None:
    # A generated image may be unreadable (e.g. no object found): that is a
    # faithfulness failure, not an evaluation crash.
    try:
        return reader(image)
    except Exception:  # noqa: BLE001
        return None


def reader_accuracy(scenes: Sequence[Scene]) -> float | None:
    reader = _reader()
    if reader is None:
        return None
    pairs = [score_scene(s, _safe_read(reader, render(s))) for s in scenes]
    return sum(c for c, _ in pairs) / sum(t for _, t in pairs)


@torch.no_grad()
def generate(
    pipe, prompts: Sequence[str], steps: int, guidance: float, seed: int, batch_size: int = 25
) -> list[Image.Image]:
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        generator = torch.Generator().manual_seed(seed + start)
        out = pipe(
            chunk,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            height=64,
            width=64,
        )
        images.extend(out.images)
    return images


def faithfulness(
    pipe,
    scenes: Sequence[Scene],
    steps: int = 50,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
) -> float | None:
    """Fraction of attributes the reader finds in images generated from the captions."""
    if _reader() is None:
        return None
    images = generate(pipe, [caption(s) for s in scenes], steps, guidance, seed)
    return scene_faithfulness(scenes, images)


def scene_faithfulness(scenes: Sequence[Scene], images: Sequence[Image.Image]) -> float | None:
    """Fraction of the scenes' attributes the reader finds in the images drawn for them."""
    reader = _reader()
    if reader is None:
        return None
    pairs = [score_scene(s, _safe_read(reader, im)) for s, im in zip(scenes, images, strict=True)]
    return sum(c for c, _ in pairs) / sum(t for _, t in pairs)


def load_pipeline(folder: Path):
    """The folder's own pipeline class (model_index.json): Stable Diffusion for the bundled
    model, LatentConsistencyModelPipeline (LCM sampling, guidance embedded) for mini-lcm,
    StableDiffusion3Pipeline for mini-flow. Components the index leaves empty (SD3's T5,
    a safety checker) are passed as None, as diffusers asks for them to be dropped."""
    from diffusers import DiffusionPipeline

    index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    empty = {
        name: None
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and value[0] is None
    }
    if "safety_checker" in index:
        empty["requires_safety_checker"] = False
    pipe = DiffusionPipeline.from_pretrained(str(folder), **empty)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def evaluate(folder: Path, n: int, guidance: float, steps: int, seed: int) -> dict:
    start = time.time()
    pipe = load_pipeline(folder)
    result = {
        "vae_psnr": round(vae_psnr(pipe.vae, eval_scenes(max(n, 64))), 3),
        "faithfulness_one": faithfulness(pipe, eval_scenes(n, 1), steps, guidance, seed),
        "faithfulness_two": faithfulness(pipe, eval_scenes(n, 2), steps, guidance, seed),
        "reader_accuracy": reader_accuracy(eval_scenes(n)),
        "n": n,
        "guidance_scale": guidance,
        "steps": steps,
        "model": str(folder),
    }
    for key in ("faithfulness_one", "faithfulness_two", "reader_accuracy"):
        if result[key] is not None:
            result[key] = round(result[key], 4)
    result["seconds"] = round(time.time() - start, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from laspa.mini import model_dir

    parser = argparse.ArgumentParser(
        prog="python -m laspa_train.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--n", type=int, default=50, help="captions per one/two-object set")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    parser.add_argument(
        "--steps", type=int, default=50, help="sampling steps (the folder's scheduler)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--model", type=Path, default=None, help="diffusers folder (default: bundled)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        folder = args.model or model_dir()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = evaluate(folder, args.n, args.guidance, args.steps, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:18s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
