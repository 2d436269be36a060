"""SDXL through the same engine: tiny random SDXL components saved as a diffusers folder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import laspa
from laspa.attention import coarse_cross_levels
from laspa.editor import Editor
from laspa.images import to_tensor
from laspa.testing import run_cli, save_tiny_sdxl_model

PROMPT = "a photo of a cat"
#: options a method needs beyond its defaults
NEEDED = {"laspa-mix": {"subject": "cat"}}


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return save_tiny_sdxl_model(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")


@pytest.fixture(scope="module")
def sdxl(sdxl_folder):
    return Editor.from_pretrained(sdxl_folder, device="cpu", dtype=torch.float32)


def picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def test_the_folder_loads_as_sdxl(sdxl):
    assert sdxl.text_encoder_2.config.projection_dim == 32
    assert sdxl.vae.config.scaling_factor == 0.13025  # SDXL's, read from its config
    crosses = [info for info in sdxl.engine.layers.values() if info.is_cross]
    assert len(crosses) == 8  # two transformer blocks per attention, all recognised
    assert coarse_cross_levels(sdxl.engine.layers) == {2}


def test_conditioning_carries_pooled_embeds_and_time_ids_for_both_branches(sdxl):
    from laspa.methods.base import EditBatch, EditRow, make_params

    rows = [EditRow(p, 0, make_params("generate", {})) for p in (PROMPT, "a dog")]
    pixels = torch.zeros(1, 3, 32, 48)
    cond = sdxl.engine.conditioning(EditBatch(None, rows, pixels=pixels))
    assert cond.cond.shape == (2, sdxl.tokenizer.model_max_length, 64)
    assert cond.added["text_embeds"].shape == cond.uncond_added["text_embeds"].shape == (2, 32)
    expected = torch.tensor([[32.0, 48, 0, 0, 32, 48]] * 2)
    torch.testing.assert_close(cond.added["time_ids"], expected)
    torch.testing.assert_close(cond.uncond_added["time_ids"], expected)
    # the checkpoint's pipeline defines the empty prompt's condition as zeros
    assert not cond.uncond.any() and not cond.uncond_added["text_embeds"].any()
    assert cond.added["text_embeds"][0].ne(cond.added["text_embeds"][1]).any()


@pytest.mark.parametrize("method", list(laspa.METHODS))
def test_every_method_runs_on_sdxl(sdxl, method):
    result = sdxl.edit(picture(), PROMPT, method=method, steps=4, **NEEDED.get(method, {}))
    assert result.image.size == (32, 32)
    assert torch.isfinite(result.latent).all()
    assert result.latent.shape == (1, 4, 16, 16)


def test_word_maps_on_sdxl(sdxl):
    maps = sdxl.attention_maps(picture(), PROMPT, words=["cat"], steps=4)
    assert set(maps) == {"cat"} and maps["cat"].shape == (16, 16)
    assert maps["cat"].min() == 0 and maps["cat"].max() == 1


def test_beta_one_from_k_zero_reproduces_the_reference_on_sdxl(sdxl):
    image = picture(1)
    result = sdxl.edit(image, "a red cat", method="laspa-x0", K=0, beta=1.0, steps=8)
    reference = sdxl.encode(to_tensor(image, image.size))
    torch.testing.assert_close(result.latent, reference, atol=1e-5, rtol=1e-5)


def test_generation_equals_diffusers_sdxl_pipeline(sdxl_folder):
    """Our loop with no alignment is diffusers' SDXL pipeline: same noise, DDIM, guidance."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    ours = Editor.from_pretrained(
        sdxl_folder, device="cpu", dtype=torch.float32, final_step="scheduler"
    )
    result = ours.edit(picture(), PROMPT, method="generate", seed=5, steps=6, guidance=6.0)
    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_folder)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator("cpu").manual_seed(5))
    theirs = pipe(
        PROMPT, num_inference_steps=6, guidance_scale=6.0, latents=noise,
        height=32, width=32, output_type="latent",
    ).images  # fmt: skip
    torch.testing.assert_close(result.latent, theirs, atol=1e-5, rtol=1e-5)


def test_the_cli_edits_with_an_sdxl_folder(sdxl_folder, tmp_path, capsys):
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    picture().save(source)
    args = ["edit", source, PROMPT, "-o", out, "--model", sdxl_folder, "--steps", 3, "-q"]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert Image.open(out).size == (32, 32)


def test_half_precision_keeps_the_sdxl_vae_in_float32_as_its_config_asks():
    from laspa.testing import tiny_sdxl_components

    components = tiny_sdxl_components()
    assert components["vae"].config.force_upcast
    editor = Editor(**components, device="cpu", dtype=torch.float16)
    assert editor.vae.dtype == torch.float32 and editor.unet.dtype == torch.float16
    result = editor.edit(picture(), PROMPT, method="laspa-x0", steps=3)
    assert torch.isfinite(result.latent).all()


def test_the_bench_runs_diffusers_sdxl_img2img_as_the_sdedit_peer(sdxl_folder, tmp_path, capsys):
    report = tmp_path / "bench.json"
    args = [
        "bench", "--model", sdxl_folder, "--cases", 1, "--steps", 2, "-q", "--json", report,
        "--methods", "sdedit,peer-sdedit",
    ]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["methods"]["peer-sdedit"]["unet_evals"] == 2  # strength 0.8 of 2 steps, CFG
    # from the same latent, our sdedit is diffusers' SDXL img2img
    assert result["checks"]["sdedit_vs_peer_sdedit"]["same_latent_min_psnr"] >= 60
