"""mini-lcm: the LCM distilled from the bundled miniature loads as a diffusers LCM
checkpoint, runs on the LCM sampler with its guidance embedding, and stays small."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import Editor
from laspa.mini import LCM_DIR, MODEL_NAMES, model_dir
from laspa.testing import run_cli
from laspa.world import caption, render, sample_scene


@pytest.fixture(scope="module")
def lcm() -> Editor:
    return Editor.mini("lcm", device="cpu")


@pytest.fixture(scope="module")
def scene() -> tuple[Image.Image, str]:
    scene = sample_scene(np.random.default_rng(5), 2)
    return render(scene), caption(scene)


def test_the_folder_is_a_diffusers_lcm_checkpoint_sharing_the_bundled_components():
    from diffusers import LatentConsistencyModelPipeline

    assert model_dir("lcm") == LCM_DIR and MODEL_NAMES["mini-lcm"] == "lcm"
    for part in ("vae", "text_encoder", "tokenizer"):  # links: no second copy
        assert (LCM_DIR / part).resolve() == (model_dir() / part).resolve()
    pipe = LatentConsistencyModelPipeline.from_pretrained(LCM_DIR, safety_checker=None)
    assert pipe.unet.config.time_cond_proj_dim and type(pipe.scheduler).__name__ == "LCMScheduler"


def test_its_own_files_stay_under_ten_megabytes():
    own = [p for p in LCM_DIR.rglob("*") if p.is_file() and LCM_DIR in p.parents]
    own = [p for p in own if not any(part.is_symlink() for part in (p, *p.parents))]
    assert sum(p.stat().st_size for p in own) < 10 * 2**20


def test_it_runs_the_lcm_sampler_with_its_guidance_embedding(lcm, scene):
    image, prompt = scene
    assert lcm.name == "mini-lcm" and lcm.engine.default_sampler == "lcm"
    result = lcm.edit(image, prompt, steps=4, seed=1)
    assert result.unet_evals <= 4  # one row per step: no unconditional row
    again = lcm.edit(image, prompt, steps=4, seed=1)
    assert result.image.tobytes() == again.image.tobytes()


def test_x0_alignment_at_beta_one_returns_the_input_latent(lcm, scene):
    image, prompt = scene
    result = lcm.edit(image, prompt, steps=4, beta=1.0, K=0)
    reference = lcm.encode(torch.as_tensor(np.asarray(image)).permute(2, 0, 1)[None] / 127.5 - 1)
    torch.testing.assert_close(result.latent, reference, rtol=1e-4, atol=1e-4)


def test_the_cli_names_it_mini_lcm(tmp_path, capsys, scene):
    image, prompt = scene
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    image.save(source)
    code, _, err = run_cli(capsys, "edit", source, prompt, "-o", out, "--model", "mini-lcm",
                           "--steps", 4, "-q")  # fmt: skip
    assert code == 0, err
    assert "mini-lcm" in err and Image.open(out).size == image.size
