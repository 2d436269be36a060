"""Tiny random Stable Diffusion components, for tests and plumbing benchmarks.

They have the real architecture (AutoencoderKL, CLIP text encoder, UNet2DConditionModel
with cross- and self-attention at two resolutions, DDIM scheduler) at a few thousand
parameters, like diffusers' own tests build. They say nothing about editing quality.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

#: words the tiny tokenizer keeps whole besides the scene world's (others: characters)
TINY_WORDS = ("photo", "of", "cat", "dog")


@functools.lru_cache(maxsize=1)
def _tokenizer_folder() -> Path:
    from .mini.tokenizer import write_tokenizer
    from .world import VOCABULARY

    folder = Path(tempfile.mkdtemp(prefix="laspa-tiny-tokenizer-"))
    return write_tokenizer((*VOCABULARY, *TINY_WORDS), folder, max_length=40)


def tiny_components(
    seed: int = 0, prediction_type: str = "epsilon", set_alpha_to_one: bool = False
):
    """(vae, text_encoder, tokenizer, unet, scheduler), random but seeded; 32 px images."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(_tokenizer_folder())
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            projection_dim=32,
            vocab_size=len(tokenizer),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=set_alpha_to_one,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    return vae, text_encoder, tokenizer, unet, scheduler


def tiny_editor(final_step: str = "clean", **kwargs):
    """An Editor on tiny random components, on the CPU in float32."""
    from .editor import Editor

    components = tiny_components(**kwargs)
    return Editor(
        *components, device="cpu", dtype=torch.float32, name="tiny", final_step=final_step
    )


def save_tiny_model(folder: str | Path, seed: int = 0) -> Path:
    """Write tiny random components as a diffusers StableDiffusionPipeline folder."""
    from diffusers import StableDiffusionPipeline

    vae, text_encoder, tokenizer, unet, scheduler = tiny_components(seed)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)
