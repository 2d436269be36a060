"""Where each method's output stops being finite as the guidance scale grows.

The engine accepts guidance in ``laspa.methods.base.GUIDANCE_RANGE``; this script edits
one scene-world image with every method at growing scales beyond that range (the range
check is switched off here, and only here) and prints, per method, the last scale whose
edited latent and image are finite and the first that is not.

    python benchmarks/guidance_range.py --dtype float16 --scales 100,1e3,3e3,5e3,1e4,1e5
    python benchmarks/guidance_range.py --dtype float32 --scales 1e3,1e10,1e15,1e20,1e25
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def finite_edit(editor, picture, prompt: str, method: str, scale: float, steps: int) -> bool:
    extra = {"change": "background", "keep": "rest"} if method == "laspa-mix" else {}
    result = editor.edit(picture, prompt, method=method, guidance=scale, steps=steps, **extra)
    return bool(torch.isfinite(result.latent).all()) and np.asarray(result.image).std() > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--scales", default="100,1e3,3e3,5e3,1e4,1e5,1e6")
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--scene", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import laspa.methods.base as base
    from laspa import METHODS, Editor
    from laspa.world import caption, render, sample_scene

    base.validate = lambda params: None  # measure beyond the range the engine accepts
    editor = Editor.mini(device=args.device, dtype=getattr(torch, args.dtype))
    scene = sample_scene(np.random.default_rng(args.scene))
    picture = render(scene, size=editor.resolution)
    prompt = caption(scene).replace("background", "red background")
    scales = [float(value) for value in args.scales.split(",")]
    for method in args.methods.split(",") if args.methods else METHODS:
        last, first_bad = None, None
        for scale in scales:
            if not finite_edit(editor, picture, prompt, method, scale, args.steps):
                first_bad = scale
                break
            last = scale
        print(f"{args.dtype} {method}: finite up to {last:g}, first non-finite {first_bad}")


if __name__ == "__main__":
    main()
