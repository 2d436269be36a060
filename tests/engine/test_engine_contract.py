"""The Engine is the one way methods reach the model: every method runs on its interface."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import ModelError
from laspa.engine import METHOD_INTERFACE
from laspa.methods import METHODS
from laspa.testing import tiny_editor


class OnlyTheInterface:
    """An Engine seen through METHOD_INTERFACE: anything else is an AttributeError."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        if name not in METHOD_INTERFACE:
            raise AttributeError(f"methods may not use engine.{name}")
        return getattr(self._engine, name)


def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


RUNS = {
    "laspa-x0": {},
    "laspa-input": {"noise": "fresh"},
    "laspa-eps": {},
    "laspa-mix": {"subject": "cat"},
    "laspa-local": {},
    "laspa-local change": {"change": "cat"},
    "laspa-local source": {"source_prompt": "a green dog"},
    "instdiffedit": {"smoothing": "snap", "final_pass": "inpaint"},
    "fpe": {},
    "fpe generated": {"source_prompt": "a red dog"},
    "sdedit": {},
    "ddim-inversion": {"source_prompt": "a dog"},
    "diffedit": {"source_prompt": "a dog"},
    "diffedit mean-paper": {"posterior": "mean", "blend": "paper"},
    "generate": {},
    "flowedit": {"source_prompt": "a cat", "n_max": 3},
}


@pytest.mark.parametrize("run", list(RUNS))
def test_every_method_runs_on_the_engine_interface_alone(run):
    method = run.split()[0]
    ed = tiny_editor()
    options = dict(method=method, steps=4, record_attention=True, **RUNS[run])
    plain = ed.edit(picture(), "a red cat", **options)
    ed.engine = OnlyTheInterface(ed.engine)
    narrow = ed.edit(picture(), "a red cat", **options)
    assert torch.equal(narrow.latent, plain.latent)


def test_every_registered_method_is_run_above_and_the_interface_is_enforced():
    assert {run.split()[0] for run in RUNS} == set(METHODS)
    narrow = OnlyTheInterface(tiny_editor().engine)
    for hidden in ("unet", "_unet", "tokenizer", "denoiser", "scheduler"):
        with pytest.raises(AttributeError, match=hidden):
            getattr(narrow, hidden)
    assert narrow.num_train_timesteps == 1000 and len(narrow.steps(4)) == 4


def test_pipelines_load_once_with_their_unet_rows_counted(tmp_path):
    from diffusers import StableDiffusionPipeline

    from laspa.testing import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny")
    engine = tiny_editor().engine
    pipe = engine.pipeline(StableDiffusionPipeline, str(folder), "test", safety_checker=None)
    assert engine.pipeline(StableDiffusionPipeline, str(folder), "test") is pipe
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    before = engine.unet_evals
    pipe("a cat", num_inference_steps=3, guidance_scale=5.0, output_type="latent",
         height=32, width=32)  # fmt: skip
    assert engine.unet_evals - before == 3 * 2
    with pytest.raises(ModelError, match="model folder not found"):
        engine.pipeline(StableDiffusionPipeline, str(tmp_path / "missing"), "test")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match=r"^cannot load test model .*broken: [^\n]+$"):
        engine.pipeline(StableDiffusionPipeline, str(broken), "test")
