"""The best mask IoU a latent-size mask can reach on a bench suite, per edit kind.

``laspa bench`` scores a method's mask at latent size (16x16 for the 64-pixel miniature),
upsampled to the image and thresholded at 0.5, against the exact edit mask. This script
scores the best such mask: the exact mask area-averaged to the latent grid and
thresholded (the best of 0.3 / 0.4 / 0.5 / 0.6 per case). It also prints the ceiling of
a mask made from the target text alone, which cannot know where a removed object was
(IoU 0 on removals), and 1.5x a reference IoU (e.g. DiffEdit's), so a method's distance
to that multiple can be read off (docs/results.md, "The mask ceiling").

    python benchmarks/mask_ceiling.py --suite shapes-brief --cases 70 --seed 1 --reference 0.429
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F


def best_latent_mask_iou(exact: np.ndarray, grid: int) -> float:
    """The best IoU of a ``grid`` x ``grid`` binary mask with ``exact``, as the bench
    scores it (bilinear upsampling, then > 0.5)."""
    from laspa.bench.metrics import mask_iou

    area = F.adaptive_avg_pool2d(torch.tensor(exact, dtype=torch.float32)[None, None], grid)
    return max(
        mask_iou((area[0, 0] > threshold).float().numpy(), exact)
        for threshold in (0.3, 0.4, 0.5, 0.6)
    )


def main() -> None:
    from laspa.bench.cases import load_cases

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="shapes-brief")
    parser.add_argument("--cases", type=int, default=70)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=64, help="image size (the miniature's)")
    parser.add_argument("--latent-factor", type=int, default=4, help="image / latent size")
    parser.add_argument("--reference", type=float, default=None, help="an IoU to compare with")
    args = parser.parse_args()

    grid = args.size // args.latent_factor
    per_kind: dict[str, list[float]] = defaultdict(list)
    for case in load_cases(args.suite, size=args.size, n=args.cases, seed=args.seed):
        per_kind[case.kind].append(best_latent_mask_iou(case.mask, grid))
    values = [v for kind in per_kind.values() for v in kind]
    target_only = [0.0 if kind == "remove" else v for kind, vs in per_kind.items() for v in vs]
    report = {
        "suite": args.suite,
        "cases": len(values),
        "grid": grid,
        "ceiling": round(float(np.mean(values)), 3),
        "ceiling_target_text_only": round(float(np.mean(target_only)), 3),
        "per_kind": {kind: round(float(np.mean(vs)), 3) for kind, vs in per_kind.items()},
    }
    if args.reference is not None:
        report["reference"] = args.reference
        report["target_1.5x_reference"] = round(1.5 * args.reference, 3)
        report["target_share_of_ceiling_target_text_only"] = round(
            1.5 * args.reference / report["ceiling_target_text_only"], 3
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
