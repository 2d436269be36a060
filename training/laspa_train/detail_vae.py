"""Fine-tune the miniature's VAE to keep detail the scene world's captions leave out.

The first VAE saw only flat, palette-coloured scenes, so it snaps every image back to
that palette: lighting, texture and even a uniform tint are lost in its latent (VAE PSNR
on `laspa.world.detail` images: 27.5 dB against 32.3 dB on plain ones), and no editing
method can preserve what the latent does not hold. Real SD's VAE keeps such detail.

This fine-tune trains encoder and decoder on plain and detailed scenes (random lighting,
texture and tint amplitudes), while an anchor term keeps the latents of *plain* scenes
where the frozen original puts them: the UNet, trained on plain latents, stays valid, and
detailed images become what real photos are to SD, inputs richer than its training set.
The scaling factor is kept.

    PYTHONPATH=training python -m laspa_train.detail_vae --minutes 25  # runs/mini/vae_detail/
    PYTHONPATH=training python -m laspa_train.detail_vae --minutes 0 --export  # into weights/
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from laspa.mini import WEIGHTS_DIR
from laspa.world import render
from laspa.world.detail import add_detail
from laspa_train.data import eval_scenes, make_batch, to_tensor, training_scenes
from laspa_train.evaluate import psnr

RUN_DIR = Path("runs/mini/vae_detail")


def detailed_images(scenes, rng: np.random.Generator, size: int = 64) -> torch.Tensor:
    """Scenes with a random detail field, scaled 0..1.5x, plus a uniform tint up to +-20."""
    images = [
        add_detail(
            render(scene, size),
            int(rng.integers(2**62)),
            strength=rng.uniform(0.0, 1.5),
            tint=tuple(rng.uniform(-20, 20, size=3)),
        )
        for scene in scenes
    ]
    return to_tensor(np.stack([np.asarray(image) for image in images]))


def reconstruction_loss(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    posterior = vae.encode(images).latent_dist
    err = vae.decode(posterior.sample()).sample - images
    return (err.abs() + err.square()).mean()


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, images: torch.Tensor) -> float:
    recon = vae.decode(vae.encode(images).latent_dist.mean).sample
    return float(psnr(recon, images).mean())


@torch.no_grad()
def anchor_drift(vae: AutoencoderKL, original: AutoencoderKL, images: torch.Tensor) -> float:
    """Mean |latent change| of plain scenes, in units of the latent std (scaling factor)."""
    scale = vae.config.scaling_factor
    a = vae.encode(images).latent_dist.mean * scale
    b = original.encode(images).latent_dist.mean * scale
    return float((a - b).abs().mean())


def evaluate(vae, original, seed: int = 5) -> dict[str, float]:
    plain = make_batch(eval_scenes(64)).images
    rng = np.random.default_rng(seed)
    detailed = detailed_images(eval_scenes(64), rng)
    return {
        "psnr_plain": round(reconstruction_psnr(vae, plain), 3),
        "psnr_detailed": round(reconstruction_psnr(vae, detailed), 3),
        "anchor_drift": round(anchor_drift(vae, original, plain), 4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--anchor-weight", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", action="store_true", help="copy the result into weights/")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    source = RUN_DIR / "final" if (RUN_DIR / "final").exists() else WEIGHTS_DIR / "vae"
    original = AutoencoderKL.from_pretrained(str(WEIGHTS_DIR / "vae")).eval().requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(str(source))
    log = RUN_DIR / "log.jsonl"
    before = evaluate(vae.eval(), original)
    print(json.dumps({"start": str(source), **before}), flush=True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed + 17)
    scale = vae.config.scaling_factor
    deadline, step, last = time.time() + args.minutes * 60, 0, time.time()
    vae.train()
    while time.time() < deadline:
        scenes = training_scenes(rng, args.batch_size, frozenset())
        plain = make_batch(scenes[: args.batch_size // 2]).images
        detailed = detailed_images(scenes[args.batch_size // 2 :], rng)
        loss = reconstruction_loss(vae, torch.cat([plain, detailed]))
        with torch.no_grad():
            target = original.encode(plain).latent_dist.mean * scale
        drift = (vae.encode(plain).latent_dist.mean * scale - target).square().mean()
        total = loss + args.anchor_weight * drift
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        if time.time() - last > 120:
            record = {"step": step, "rec": round(loss.item(), 5), "drift": round(drift.item(), 6)}
            log.open("a").write(json.dumps(record) + "\n")
            last = time.time()
    vae.eval()
    if step:
        vae.save_pretrained(str(RUN_DIR / "final"), safe_serialization=True)
    after = evaluate(vae, original)
    print(json.dumps({"steps": step, **after}), flush=True)
    log.open("a").write(json.dumps({"final": True, "steps": step, **after}) + "\n")
    if args.export:
        shutil.copy2(RUN_DIR / "final" / "diffusion_pytorch_model.safetensors", WEIGHTS_DIR / "vae")
        print(f"exported to {WEIGHTS_DIR / 'vae'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
