"""Accuracy of the analytic scene reader (laspa.world.read_scene), printed as JSON.

Exact-scene read-back rate on random rendered scenes, clean and degraded the
way generated images are (Gaussian blur, pixel noise, colour shift, other
sizes), plus per-attribute accuracies so a failure can be traced.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/world_reader.py --n 1000 --seed 0
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from laspa.world import Scene, render, sample_scene
from laspa.world.reader import read_scene_scores

Degrade = Callable[[Image.Image, np.random.Generator], Image.Image]


def _noise(image: Image.Image, rng: np.random.Generator, std: float) -> Image.Image:
    arr = np.asarray(image, dtype=np.float64) + rng.normal(0.0, std, (*image.size[::-1], 3))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def _shift(image: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    arr = np.asarray(image, dtype=np.float64) + rng.uniform(-amount, amount, 3)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def _gain(image: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    """Per-channel multiplicative colour cast, e.g. 0.2 -> gains in [0.8, 1.2]."""
    arr = np.asarray(image, dtype=np.float64) * rng.uniform(1 - amount, 1 + amount, 3)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _offset(image: Image.Image, rng: np.random.Generator, pixels: int) -> Image.Image:
    """Translate the whole image by up to `pixels` in x and y (edge pixels repeat)."""
    dx, dy = (int(d) for d in rng.integers(-pixels, pixels + 1, 2))
    arr = np.asarray(image)
    arr = np.pad(arr, ((pixels, pixels), (pixels, pixels), (0, 0)), mode="edge")
    h, w = image.size[1], image.size[0]
    arr = arr[pixels - dy : pixels - dy + h, pixels - dx : pixels - dx + w]
    return Image.fromarray(np.ascontiguousarray(arr))


def _blur(image: Image.Image, radius: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


CONDITIONS: dict[str, tuple[int, Degrade]] = {
    "clean_64": (64, lambda im, rng: im),
    "clean_256": (256, lambda im, rng: im),
    "blur1_noise8_64": (64, lambda im, rng: _noise(_blur(im, 1.0), rng, 8.0)),
    "blur1_noise8_shift20_64": (
        64,
        lambda im, rng: _shift(_noise(_blur(im, 1.0), rng, 8.0), rng, 20.0),
    ),
    "blur2_noise8_256": (256, lambda im, rng: _noise(_blur(im, 2.0 * 4), rng, 8.0)),
    "blur1.5_noise12_64": (64, lambda im, rng: _noise(_blur(im, 1.5), rng, 12.0)),
    # Stress conditions, harsher than the miniature model is expected to be.
    "blur2_noise16_shift30_64": (
        64,
        lambda im, rng: _shift(_noise(_blur(im, 2.0), rng, 16.0), rng, 30.0),
    ),
    "blur3_noise8_64": (64, lambda im, rng: _noise(_blur(im, 3.0), rng, 8.0)),
    "gain_noise8_64": (64, lambda im, rng: _noise(_gain(im, rng, 0.2), rng, 8.0)),
    "jpeg20_64": (64, lambda im, rng: _jpeg(im, 20)),
    "offset1_blur1_noise8_64": (
        64,
        lambda im, rng: _noise(_blur(_offset(im, rng, 1), 1.0), rng, 8.0),
    ),
    "offset2_64": (64, lambda im, rng: _offset(im, rng, 2)),
}


def _score(truth: Scene, image: Image.Image) -> dict[str, bool]:
    reading = read_scene_scores(image)
    got = {c.cell: c.object for c in reading.cells if c.object is not None}
    want = {o.cell: o for o in truth.objects}
    same_cells = set(got) == set(want)
    pairs = [(want[c], got[c]) for c in want if c in got]
    return {
        "exact": same_cells and reading.background == truth.background and got == want,
        "background": reading.background == truth.background,
        "cells": same_cells,
        "color": same_cells and all(a.color == b.color for a, b in pairs),
        "shape": same_cells and all(a.shape == b.shape for a, b in pairs),
        "size": same_cells and all(a.size == b.size for a, b in pairs),
    }


def measure(n: int, seed: int, conditions: list[str]) -> dict[str, object]:
    """Rates per condition over the same n random scenes."""
    scenes = [sample_scene(np.random.default_rng([seed, i])) for i in range(n)]
    results: dict[str, object] = {"n_scenes": n, "seed": seed}
    for name in conditions:
        size, degrade = CONDITIONS[name]
        rng = np.random.default_rng([seed, 10_000])
        start = time.perf_counter()
        scores = [_score(s, degrade(render(s, size), rng)) for s in scenes]
        rates = {k: float(np.mean([sc[k] for sc in scores])) for k in scores[0]}
        rates["seconds_per_image"] = (time.perf_counter() - start) / n
        results[name] = rates
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="random scenes per condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    args = parser.parse_args()
    names = [c for c in args.conditions.split(",") if c]
    unknown = [c for c in names if c not in CONDITIONS]
    if unknown:
        parser.error(f"unknown condition(s) {unknown}; choose from {list(CONDITIONS)}")
    print(json.dumps(measure(args.n, args.seed, names)))


if __name__ == "__main__":
    main()
