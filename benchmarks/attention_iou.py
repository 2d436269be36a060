"""How well one aligned pass's cross-attention maps segment real (rendered) objects.

For scenes of the procedural world, the map of each object's shape word, from one LASPA
pass with the scene's caption, is thresholded and compared (IoU) with the object's exact
footprint. Measured side by side in one run:

- ``aligned``: the default LASPA x0 alignment (the paper's claim: alignment makes the UNet
  see the input, so its maps segment the input's objects);
- ``unaligned``: the same pass with beta = 0 (plain generation from the caption: the map
  is of a generated image, not of the input);
- ``chance``: the aligned map against the footprint the object would have in another,
  randomly chosen free cell.

    python benchmarks/attention_iou.py --scenes 40 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
from PIL import Image


def iou(predicted: np.ndarray, exact: np.ndarray) -> float:
    union = np.logical_or(predicted, exact).sum()
    return float(np.logical_and(predicted, exact).sum() / union) if union else 1.0


def upsampled(heat: np.ndarray, size: int, threshold: float) -> np.ndarray:
    picture = Image.fromarray((heat * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(picture) / 255.0 > threshold


def measure(editor, scenes: int, steps: int, threshold: float, seed: int) -> dict:
    from laspa.world import footprint, render, sample_scene
    from laspa.world.scene import caption

    rng = np.random.default_rng(seed)
    size = editor.resolution
    scores: dict[str, list[float]] = {"aligned": [], "unaligned": [], "chance": []}
    for _ in range(scenes):
        scene = sample_scene(rng, int(rng.integers(1, 3)))
        shapes = [o.shape for o in scene.objects]
        unique = [o for o in scene.objects if shapes.count(o.shape) == 1]
        if not unique:
            continue
        image, prompt = render(scene, size=size), caption(scene)
        words = [o.shape for o in unique]
        aligned = editor.attention_maps(image, prompt, words, steps=steps)
        unaligned = editor.attention_maps(image, prompt, words, steps=steps, beta=0.0)
        for obj in unique:
            exact = footprint(obj, size)
            elsewhere = obj.replace(cell=str(rng.choice(scene.free_cells)))
            scores["aligned"].append(iou(upsampled(aligned[obj.shape], size, threshold), exact))
            scores["unaligned"].append(iou(upsampled(unaligned[obj.shape], size, threshold), exact))
            scores["chance"].append(
                iou(upsampled(aligned[obj.shape], size, threshold), footprint(elsewhere, size))
            )
    return {name: round(statistics.mean(values), 4) for name, values in scores.items()} | {
        "objects": len(scores["aligned"])
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--model", default=None, help="diffusers folder (default: bundled)")
    args = parser.parse_args()

    from laspa import Editor
    from laspa.loading import quiet_libraries

    quiet_libraries()
    editor = Editor.from_pretrained(args.model) if args.model else Editor.mini()
    result = measure(editor, args.scenes, args.steps, args.threshold, args.seed)
    # chance can be exactly 0 (no map reaches another cell): the ratio is then undefined
    chance = result["chance"]
    result["aligned_over_chance"] = round(result["aligned"] / chance, 2) if chance else None
    result["aligned_over_unaligned"] = round(result["aligned"] / max(result["unaligned"], 1e-6), 2)
    print(json.dumps({"steps": args.steps, "threshold": args.threshold, **result}))


if __name__ == "__main__":
    main()
