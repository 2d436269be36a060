"""Each family's defaults are its own: the steps and guidance of its diffusers pipeline
(read here from the pipeline's signature, independently of laspa), except on SD 1.x /
2.x, where the methods' papers ran (LASPA's guidance 10, InstDiffEdit's 7.5); a FLUX
without a guidance embedding (schnell) runs unguided, one row per step, as FluxPipeline
does; an edit's own values win."""

from __future__ import annotations

import inspect

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from laspa.editor import Editor
from laspa.testing import (
    save_tiny_flux_model,
    save_tiny_model,
    save_tiny_sd3_model,
    save_tiny_sdxl_model,
)

SAVERS = {
    "sd": save_tiny_model,
    "sdxl": save_tiny_sdxl_model,
    "sd3": save_tiny_sd3_model,
    "flux": save_tiny_flux_model,
    "flux-schnell": lambda folder: save_tiny_flux_model(folder, guidance_embeds=False),
}


def call_default(pipeline: str, name: str):
    return inspect.signature(getattr(diffusers, pipeline).__call__).parameters[name].default


@pytest.fixture(scope="module")
def editors(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        name: Editor.from_pretrained(save(root / name), device="cpu", dtype=torch.float32)
        for name, save in SAVERS.items()
    }


def params(editor: Editor, method: str = "laspa-x0", **options):
    return editor._row(method, {"prompt": "a red cat", **options}).params


def test_every_familys_defaults_are_its_pipelines(editors):
    expected = {
        "sdxl": "StableDiffusionXLPipeline",
        "sd3": "StableDiffusion3Pipeline",
        "flux": "FluxPipeline",
    }
    for family, pipeline in expected.items():
        for method in ("laspa-x0", "laspa-local", "instdiffedit", "sdedit"):
            got = params(editors[family], method)
            assert got.steps == call_default(pipeline, "num_inference_steps"), (family, method)
            assert got.guidance == call_default(pipeline, "guidance_scale"), (family, method)
    # without an embedding FLUX's pipeline guides only through true_cfg_scale (1: none)
    schnell = params(editors["flux-schnell"])
    assert schnell.guidance == call_default("FluxPipeline", "true_cfg_scale") == 1.0


def test_sd_keeps_the_papers_defaults(editors):
    sd = editors["sd"]
    assert params(sd).guidance == 10.0 and params(sd).steps == 50  # LASPA's paper, on SD 1.x
    instdiffedit = params(sd, "instdiffedit")
    assert instdiffedit.guidance == call_default("StableDiffusionPipeline", "guidance_scale")


def test_an_edits_own_values_win_and_flowedit_keeps_its_published_ones(editors):
    sd3 = editors["sd3"]
    assert params(sd3, guidance=4.0, steps=12).guidance == 4.0
    assert params(sd3, steps=12).steps == 12
    flowedit = params(sd3, "flowedit", source_prompt="a cat")
    assert flowedit.steps is None  # filled from FlowEdit's published table at run time


def test_schnell_runs_one_row_per_step_at_its_defaults(editors):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    result = editors["flux-schnell"].edit(image, "a red cat", steps=3)
    assert result.unet_evals == 3


def test_the_web_page_proposes_the_familys_own(editors):
    from laspa.web.session import suggested_options, suggested_steps

    assert suggested_steps(editors["sd3"]) == 28 and suggested_steps(editors["sd"]) is None
    assert suggested_options(editors["sd3"], 28)["guidance"] == 7.0
    assert suggested_options(editors["flux-schnell"], 28)["guidance"] == 1.0
    assert suggested_options(editors["sd"], None) == {"K": 200, "K_in": 200, "guidance": 10.0}
