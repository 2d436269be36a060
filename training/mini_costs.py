"""Measure the miniature's training-step and sampling costs on this machine.

    PYTHONPATH=training python training/mini_costs.py [--threads 2] [--json]

Run it alone: on 2 cores any other torch job makes the numbers meaningless.
The sizes in laspa_train.components were chosen from this table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

from laspa_train.components import UNET_CONFIG, VAE_CONFIG, count_params


def _time(step: Callable[[], None], n: int = 8, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def unet_step(batch: int, **overrides) -> tuple[int, float]:
    config = {**UNET_CONFIG, **overrides}
    unet = UNet2DConditionModel(**config)
    opt = torch.optim.AdamW(unet.parameters(), 1e-3)
    hidden = torch.randn(batch, 40, config["cross_attention_dim"])
    x = torch.randn(batch, 4, 16, 16)

    def step() -> None:
        t = torch.randint(0, 1000, (batch,))
        loss = F.mse_loss(unet(x, t, hidden).sample, x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return count_params(unet), _time(step)


def vae_step(batch: int, **overrides) -> tuple[int, float]:
    vae = AutoencoderKL(**{**VAE_CONFIG, **overrides})
    opt = torch.optim.AdamW(vae.parameters(), 1e-3)
    x = torch.randn(batch, 3, 64, 64)

    def step() -> None:
        loss = F.mse_loss(vae(x, sample_posterior=True).sample, x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return count_params(vae), _time(step)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, overrides in [
        ("unet (32,64,64) bundled", {}),
        ("unet (64,128,128)", {"block_out_channels": (64, 128, 128)}),
    ]:
        params, seconds = unet_step(32, **overrides)
        rows.append({"part": name, "batch": 32, "params": params, "step_s": round(seconds, 3)})
    for batch in (8, 16, 32):
        params, seconds = vae_step(batch)
        rows.append(
            {
                "part": "vae (16,32,64) bundled",
                "batch": batch,
                "params": params,
                "step_s": round(seconds, 3),
            }
        )
    for row in rows:
        print(
            json.dumps(row)
            if args.json
            else f"{row['part']:26s} bs {row['batch']:3d} {row['params']:>9,d} params "
            f"{row['step_s']:.3f} s/step"
        )


if __name__ == "__main__":
    main()
