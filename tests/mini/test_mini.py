"""The bundled miniature model: loads offline as a genuine SD pipeline and runs
diffusers' own pipelines; its tokenizer covers the world vocabulary."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from laspa.mini import model_dir
from laspa.mini.tokenizer import learn_merges, write_tokenizer
from laspa.world import VOCABULARY, caption, render, sample_scene


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    p = StableDiffusionPipeline.from_pretrained(
        model_dir(), safety_checker=None, requires_safety_checker=False
    )
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def scene_image() -> tuple[Image.Image, str]:
    scene = sample_scene(np.random.default_rng(5), 2)
    return render(scene), caption(scene)


def test_model_dir_is_a_diffusers_folder() -> None:
    folder = model_dir()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert all((folder / name).is_dir() for name in ("unet", "vae", "text_encoder", "tokenizer"))
    assert not list(folder.rglob("*.bin")), "weights must be safetensors only"


def test_weights_folder_is_small() -> None:
    size = sum(f.stat().st_size for f in model_dir().rglob("*") if f.is_file())
    assert size <= 30 * 1024 * 1024


def test_model_dir_missing_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    import laspa.mini

    monkeypatch.setattr(laspa.mini, "WEIGHTS_DIR", tmp_path / "nowhere")
    with pytest.raises(RuntimeError, match="PYTHONPATH=training python -m laspa_train.train"):
        laspa.mini.model_dir()


def test_architecture_has_attention_at_16_and_8(pipe) -> None:
    unet = pipe.unet
    assert unet.config.sample_size == 16
    assert "CrossAttnDownBlock2D" in unet.config.down_block_types
    # attn1 = self-attention, attn2 = cross-attention, as the editing methods expect.
    names = list(unet.attn_processors)
    assert any(n.startswith("down_blocks.0") and "attn1" in n for n in names)
    assert any(n.startswith("down_blocks.1") and "attn2" in n for n in names)
    assert pipe.vae.config.latent_channels == 4
    assert pipe.text_encoder.config.eos_token_id == pipe.tokenizer.eos_token_id
    assert pipe.text_encoder.config.max_position_embeddings >= pipe.tokenizer.model_max_length
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"


def border_colour(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32)
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).mean(0)


def test_text_to_image_draws_the_background_the_caption_names(pipe, scene_image) -> None:
    """10 steps from the scene's caption: the border is the named background's colour
    (measured within 4 of 255 per channel), and another caption's background differs."""
    rendered, prompt = scene_image
    seed = torch.Generator().manual_seed(0)
    image = pipe(prompt, num_inference_steps=10, generator=seed).images[0]
    assert image.size == (64, 64) and image.mode == "RGB"
    assert np.abs(border_colour(image) - border_colour(rendered)).max() < 12
    seed = torch.Generator().manual_seed(0)
    other = pipe("a small red circle on a teal background", num_inference_steps=10,
                 generator=seed).images[0]  # fmt: skip
    assert np.abs(border_colour(other) - border_colour(rendered)).max() > 60


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def test_img2img_at_low_strength_keeps_the_input(pipe, scene_image) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    image, prompt = scene_image
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    out = img2img(
        prompt.replace("large", "small"),
        image=image,
        strength=0.3,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images[0].size == (64, 64)
    # a light re-noising keeps the input (measured 32.5 dB; text-to-image scores 7 dB)
    assert psnr(out.images[0], image) > 25


def test_diffedit_keeps_the_input_outside_its_mask(pipe, scene_image) -> None:
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import StableDiffusionDiffEditPipeline

        diffedit = StableDiffusionDiffEditPipeline(
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            unet=pipe.unet,
            scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
            inverse_scheduler=DDIMInverseScheduler.from_config(pipe.scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    diffedit.set_progress_bar_config(disable=True)
    image, prompt = scene_image
    target = prompt.rsplit(" on a ", 1)[0] + " on a teal background"
    mask = diffedit.generate_mask(
        image=image,
        source_prompt=prompt,
        target_prompt=target,
        num_maps_per_mask=2,
        generator=torch.Generator().manual_seed(0),
    )
    latents = diffedit.invert(
        prompt=prompt,
        image=image,
        num_inference_steps=3,
        inpaint_strength=0.7,
        generator=torch.Generator().manual_seed(0),
    ).latents
    out = diffedit(
        prompt=target,
        mask_image=mask,
        image_latents=latents,
        num_inference_steps=3,
        inpaint_strength=0.7,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images[0].size == (64, 64)
    assert mask.shape == (1, 16, 16) and set(np.unique(mask)) <= {0.0, 1.0}
    # the mask leaves the border out, and there the input's background stays
    assert mask[0, 0].max() == 0 and mask[0, -1].max() == 0
    assert np.abs(border_colour(out.images[0]) - border_colour(image)).max() < 12
    assert mask.shape == (1, 16, 16) and set(np.unique(mask)) <= {0.0, 1.0}
    # the mask leaves the border out, and there the input's background stays
    assert mask[0, 0].max() == 0 and mask[0, -1].max() == 0
    assert np.abs(border_colour(out.images[0]) - border_colour(image)).max() < 12


def test_every_vocabulary_word_is_one_token(pipe) -> None:
    tok = pipe.tokenizer
    for word in VOCABULARY:
        ids = tok(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, (word, tok.convert_ids_to_tokens(ids))


def test_unknown_words_fall_back_to_characters(pipe) -> None:
    tok = pipe.tokenizer
    ids = tok("a zebra wearing sunglasses, café 42!").input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == tok.bos_token and tokens[-1] == tok.eos_token
    assert tok.unk_token_id not in ids[1:-1]
    assert "z" in tokens


def test_longest_caption_fits(pipe) -> None:
    from laspa.world import MAX_OBJECTS

    rng = np.random.default_rng(0)
    longest = max(
        (caption(sample_scene(rng, MAX_OBJECTS)) for _ in range(200)),
        key=lambda c: len(pipe.tokenizer(c).input_ids),
    )
    assert len(pipe.tokenizer(longest).input_ids) <= pipe.tokenizer.model_max_length


def test_tokenizer_builds_from_any_word_list(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    words = ["aaa", "aab", "abab", "banana", "band"]
    write_tokenizer(words, tmp_path, max_length=16)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    for word in words:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1
    merges = (tmp_path / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) - 1 == len(learn_merges(words))
