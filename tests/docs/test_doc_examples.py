"""docs/architecture.md's worked examples (docs/examples/*.py) run on the tiny model and do
what the document says; what they register is taken back afterwards."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from laspa import engine as engine_module
from laspa.methods.base import METHODS
from laspa.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs/examples"


@pytest.fixture()
def example(monkeypatch):
    """Loads docs/examples/NAME.py; the registries it adds to are restored after the test
    (other tests walk every registered method)."""
    registries = (METHODS, SAMPLERS, engine_module._FAMILIES)
    saved = [dict(registry) for registry in registries]

    def load(name: str):
        path = EXAMPLES / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"docs_example_{name}", path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look it up
        spec.loader.exec_module(module)
        return module

    yield load
    for registry, before in zip(registries, saved, strict=True):
        registry.clear()
        registry.update(before)


def test_architecture_names_every_example():
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    for path in EXAMPLES.glob("*.py"):
        assert f"docs/examples/{path.name}" in text


def test_the_method_example_batches_per_row_weights_and_skips_the_unet_at_weight_one(example):
    shared, alone = example("method").main()
    assert shared == [6.0, 6.0, 6.0]  # three weights, one batch: 3 of 4 steps x 2 rows each
    assert alone == 0  # weight 1 in every row: needs_unet is False at every step


def test_the_sampler_example_adds_half_the_ancestral_noise(example):
    from laspa.samplers import ancestral_sigma
    from laspa.testing import tiny_editor

    latents = example("sampler").main()
    assert torch.isfinite(latents).all()
    steps = SAMPLERS["half-ancestral"].steps(tiny_editor().engine.denoiser, 4)
    first = steps[0]
    assert first.sigma == pytest.approx(0.5 * ancestral_sigma(first.alpha, first.alpha_prev))
    assert steps[-1].sigma == 0.0 and steps[-1].alpha_prev == 1.0  # lands on the clean latent


def test_the_attention_hook_example_reports_a_share_per_step(example):
    shares = example("attention_hook").main()
    assert len(shares) == 3
    assert all(0 < share < 1 and math.isfinite(share) for share in shares)


def test_the_family_example_generates_through_its_own_text_encoder(example):
    latents = example("family").main()
    assert latents.shape == (1, 4, 16, 16)
    assert torch.isfinite(latents).all()
