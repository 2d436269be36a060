"""mini-flow: the SD3 transformer laspa trains by flow matching loads as a diffusers
StableDiffusion3Pipeline checkpoint (without T5), draws what captions name, runs the flow
sampler under laspa, and stays small."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import Editor
from laspa.mini import FLOW_DIR, MODEL_NAMES, model_dir
from laspa.testing import run_cli
from laspa.world import caption, render, sample_scene


def border_colour(image: Image.Image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    border = np.concatenate([a[:3].reshape(-1, 3), a[-3:].reshape(-1, 3),
                             a[:, :3].reshape(-1, 3), a[:, -3:].reshape(-1, 3)])  # fmt: skip
    return np.median(border, axis=0)


@pytest.fixture(scope="module")
def flow() -> Editor:
    return Editor.mini("flow", device="cpu")


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(FLOW_DIR, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def scene() -> tuple[Image.Image, str]:
    scene = sample_scene(np.random.default_rng(5), 2)
    return render(scene), caption(scene)


def test_the_folder_is_an_sd3_checkpoint_sharing_the_bundled_components(pipe):
    assert model_dir("flow") == FLOW_DIR and MODEL_NAMES["mini-flow"] == "flow"
    for part in ("tokenizer", "tokenizer_2"):  # links: no second copy
        assert (FLOW_DIR / part).resolve() == (model_dir() / "tokenizer").resolve()
    vae = FLOW_DIR / "vae" / "diffusion_pytorch_model.safetensors"
    assert vae.resolve() == (model_dir() / "vae" / vae.name).resolve()
    assert (FLOW_DIR / "text_encoder_2").resolve() == (FLOW_DIR / "text_encoder").resolve()
    assert type(pipe.transformer).__name__ == "SD3Transformer2DModel"
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.text_encoder_3 is None


def test_its_own_files_stay_under_fifteen_megabytes():
    own = [p for p in FLOW_DIR.rglob("*") if p.is_file()]
    own = [p for p in own if not any(part.is_symlink() for part in (p, *p.parents))]
    assert sum(p.stat().st_size for p in own) < 15 * 2**20


def test_text_to_image_draws_the_background_the_caption_names(pipe, scene):
    rendered, prompt = scene
    kwargs = {"num_inference_steps": 10, "height": 64, "width": 64, "guidance_scale": 5.0}
    image = pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).images[0]
    assert image.size == (64, 64)
    assert np.abs(border_colour(image) - border_colour(rendered)).max() < 24
    other = pipe("a small red circle on a teal background",
                 generator=torch.Generator().manual_seed(0), **kwargs).images[0]  # fmt: skip
    assert np.abs(border_colour(other) - border_colour(rendered)).max() > 60


def test_it_runs_the_flow_sampler_deterministically(flow, scene):
    image, prompt = scene
    assert flow.name == "mini-flow" and flow.engine.default_sampler == "flow"
    result = flow.edit(image, prompt, steps=6, seed=1)
    again = flow.edit(image, prompt, steps=6, seed=1)
    assert result.image.tobytes() == again.image.tobytes()


def test_x0_alignment_at_beta_one_returns_the_input_latent(flow, scene):
    image, prompt = scene
    result = flow.edit(image, prompt, steps=6, beta=1.0, K=0)
    reference = flow.encode(torch.as_tensor(np.asarray(image)).permute(2, 0, 1)[None] / 127.5 - 1)
    torch.testing.assert_close(result.latent, reference, rtol=1e-4, atol=1e-4)


def test_the_cli_names_it_mini_flow(tmp_path, capsys, scene):
    image, prompt = scene
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    image.save(source)
    code, _, err = run_cli(capsys, "edit", source, prompt, "-o", out, "--model", "mini-flow",
                           "--steps", 4, "-q")  # fmt: skip
    assert code == 0, err
    assert "mini-flow" in err and Image.open(out).size == image.size
