"""Per-edit K / beta for LASPA x0 from target-free signals (issue #21, "--K auto").

Every candidate (K, beta) of a small grid edits the case in one batched ``edit_many``
call; each result is then scored without the target by two signals the model gives:

- **text**: how much better the edit prompt explains the result than the empty prompt
  does, by the UNet's own denoising error (a diffusion classifier's score), averaged over
  a few noise levels with noise shared across candidates:
  ``mean_t ||n - eps(x_t, "")||^2 - ||n - eps(x_t, prompt)||^2``;
- **change outside**: the mean absolute latent change against the input's latent,
  weighted by ``1 - m``, with ``m`` the prompt's content words' cross-attention map
  (recorded in the same pass).

``auto`` picks, per case, the candidate maximising ``z(text) - lam * z(change outside)``
(z: standardised over the case's candidates); ``lam`` is chosen on one set of cases and
reported on another. The fixed default and the oracle (the candidate the exact target
prefers: edit success first, then bg_psnr) are scored from the same runs.

    python benchmarks/auto_strength.py --cases 24 --seed 0 --json auto24.json
    python benchmarks/auto_strength.py --cases 70 --seed 1 --lam 1.0
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

GRID_K = (100, 200, 300, 400)
GRID_BETA = (0.7, 0.8, 0.9, 0.95)
DEFAULT = (200, 0.9)
NOISE_LEVELS = (300, 500, 700)
STOPWORDS = {"a", "an", "the", "on", "in", "at", "of", "and", "with", "to", "is"}


@torch.no_grad()
def text_scores(editor, latents: torch.Tensor, prompt: str, seed: int) -> np.ndarray:
    """Per latent row: the denoising error under "" minus that under ``prompt``."""
    denoiser = editor.engine.denoiser
    embeddings = editor.text_embeddings([prompt, ""])
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape[1:], generator=generator).expand_as(latents)
    rows = latents.shape[0]
    total = torch.zeros(rows)
    for t in NOISE_LEVELS:
        alpha = denoiser.alpha(t)
        noisy = alpha**0.5 * latents + (1 - alpha) ** 0.5 * noise
        batch = torch.cat([noisy, noisy])
        context = embeddings.repeat_interleave(rows, dim=0)  # prompt rows, then empty rows
        timesteps = torch.full((2 * rows,), t)
        eps = editor.unet(batch, timesteps, encoder_hidden_states=context).sample
        with_prompt, empty = eps[:rows], eps[rows:]
        error = lambda e: ((e - noise) ** 2).flatten(1).mean(1)  # noqa: E731
        total += error(empty) - error(with_prompt)
    return (total / len(NOISE_LEVELS)).numpy()


def content_map(result, prompt: str) -> np.ndarray:
    words = [w for w in result.attention if w.lower() not in STOPWORDS] or list(result.attention)
    heat = np.mean([np.asarray(result.attention[w], np.float32).squeeze() for w in words], 0)
    return heat / max(float(heat.max()), 1e-8)


def zscore(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else values * 0


def run_case(editor, case, seed: int, steps: int) -> list[dict]:
    from laspa import images
    from laspa.bench.metrics import background_metrics, edit_success, to_array

    grid = [(k, b) for k in GRID_K for b in GRID_BETA]
    variants = [
        {"prompt": case.target_prompt, "seed": seed, "K": k, "beta": b, "steps": steps}
        for k, b in grid
    ]
    results = editor.edit_many(case.source, variants, "laspa-x0", record_attention=True)
    pixels = images.to_tensor(case.source, editor.model_size(case.source))
    reference = editor.encode(pixels).cpu()
    latents = torch.cat([r.latent for r in results])
    heat = torch.from_numpy(content_map(results[grid.index(DEFAULT)], case.target_prompt))
    outside = ((latents - reference).abs().mean(1) * (1 - heat)).flatten(1).mean(1).numpy()
    text = text_scores(editor, latents, case.target_prompt, seed)
    target = to_array(case.target)
    rows = []
    for (k, b), result, t, o in zip(grid, results, text, outside, strict=True):
        output = to_array(result.image)
        rows.append({
            "K": k, "beta": b, "text": float(t), "outside": float(o),
            "bg_psnr": background_metrics(output, target, case.mask)["bg_psnr"],
            "edit_success": bool(edit_success(result.image, case.target_scene)),
        })  # fmt: skip
    return rows


def pick(rows: list[dict], lam: float) -> dict:
    text = zscore(np.array([r["text"] for r in rows]))
    outside = zscore(np.array([r["outside"] for r in rows]))
    return rows[int(np.argmax(text - lam * outside))]


def summary(chosen: list[dict]) -> dict:
    return {
        "bg_psnr": round(float(np.mean([r["bg_psnr"] for r in chosen])), 2),
        "edit_success": round(float(np.mean([r["edit_success"] for r in chosen])), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lam", default="0,0.5,1,2,4", help="lam values reported")
    parser.add_argument("--json", default=None, help="write every candidate's scores here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from laspa import Editor
    from laspa.bench.cases import load_cases
    from laspa.bench.runner import case_seed
    from laspa.loading import quiet_libraries

    quiet_libraries()
    editor = Editor.mini()
    cases = load_cases("shapes-brief", size=editor.resolution, n=args.cases, seed=args.seed)
    start = time.perf_counter()
    per_case = [
        run_case(editor, case, case_seed(args.seed, index), args.steps)
        for index, case in enumerate(cases)
    ]  # each case's noise seed as laspa bench draws it
    seconds = (time.perf_counter() - start) / len(cases)
    report = {
        "cases": len(cases), "seed": args.seed, "steps": args.steps,
        "candidates": len(per_case[0]), "seconds_per_case": round(seconds, 2),
        "default": summary([next(r for r in rows if (r["K"], r["beta"]) == DEFAULT)
                            for rows in per_case]),
        "oracle": summary([max(rows, key=lambda r: (r["edit_success"], r["bg_psnr"]))
                           for rows in per_case]),
    }  # fmt: skip
    for k, b in ((k, b) for k in GRID_K for b in GRID_BETA):
        fixed = [next(r for r in rows if (r["K"], r["beta"]) == (k, b)) for rows in per_case]
        report[f"fixed K={k} beta={b}"] = summary(fixed)
    for lam in (float(v) for v in args.lam.split(",")):
        report[f"auto lam={lam:g}"] = summary([pick(rows, lam) for rows in per_case])
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"report": report, "per_case": per_case}, stream)


if __name__ == "__main__":
    main()
