"""Architecture of the miniature Stable Diffusion: one place for every config.

Sizes were chosen by measurement on a 2-core CPU (see weights/README.md):
64x64 RGB images, a VAE that downsamples 4x to 16x16x4 latents (SD's 8x would
leave an 8x8 latent, too coarse for 3x3-cell scenes), a small CLIP text
encoder and a UNet with cross- and self-attention at 16x16 and 8x8, the
resolutions the editing methods read and replace attention maps at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

IMAGE_SIZE = 64
LATENT_SIZE = 16
LATENT_CHANNELS = 4
TEXT_HIDDEN = 64

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "latent_channels": LATENT_CHANNELS,
    "norm_num_groups": 16,
    "sample_size": IMAGE_SIZE,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": LATENT_SIZE,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_HIDDEN,
    # diffusers' legacy name: this is the number of heads (as in SD 1.x configs).
    "attention_head_dim": 4,
    "norm_num_groups": 16,
}

TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 4 * TEXT_HIDDEN,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "hidden_act": "quick_gelu",
    "projection_dim": TEXT_HIDDEN,
}

# Stable Diffusion 1.x's noise schedule, so the editing code sees the same
# timesteps and alphas on the miniature as on a real checkpoint.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def make_vae(scaling_factor: float = 1.0) -> AutoencoderKL:
    return AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)


def make_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """Text encoder whose ids and positions agree with the tokenizer."""
    config = CLIPTextConfig(
        **TEXT_CONFIG,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def make_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(**UNET_CONFIG)


def make_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULER_CONFIG)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assemble_pipeline(
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    unet: UNet2DConditionModel,
) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline(pipe: StableDiffusionPipeline, folder: Path) -> None:
    """Write the diffusers folder (safetensors only)."""
    pipe.save_pretrained(str(folder), safe_serialization=True)
