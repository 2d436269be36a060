"""Every method with the model on a second device and in half precision, without a GPU.

:class:`laspa.testing.SecondDevice` runs the model "on" the meta device while keeping real
values on the CPU, and fails any operation that mixes its tensors with CPU tensors the way
a GPU does; so a tensor a method builds on the wrong device fails here as on CUDA.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import METHODS
from laspa.attention import AttentionObserver, ProbabilityReplacement
from laspa.editor import Editor
from laspa.loop import Conditioning
from laspa.methods.laspa import X0Alignment
from laspa.samplers import SAMPLERS
from laspa.testing import SecondDevice, tiny_components

PROMPT = "a red cat on a blue background"
#: what a method needs besides its defaults to run on PROMPT
NEEDS = {"laspa-mix": {"subject": "cat"}}
#: what a choice needs beside it: the options that act only with it (the others refused)
WITH = {
    ("keep", "rest"): {"subject": None, "change": "background"},
    ("region", "change"): {"change": "background"},
    ("step_noise", "fixed"): {"sampler": "ancestral"},
    ("step_noise", "fresh"): {"sampler": "ancestral"},
}
#: options that take another path through a method without being a choice
MORE = {
    "fpe": [{"source_prompt": "a blue cat"}],  # generated-image mode
    "laspa-x0": [{"beta_schedule": "linear", "K": 0}],
}


def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def refused(method: str, name: str, value) -> bool:
    """Choices a method refuses on this UNet (their errors are tested elsewhere)."""
    if name == "guidance_mode":  # the tiny UNet has no guidance embedding
        return value == "embedding"
    if name == "sampler" and value in SAMPLERS and "unet" not in SAMPLERS[value].kinds:
        return True  # flow: flow models only (tests/engine/test_flow.py)
    deterministic_only = METHODS[method].needs_deterministic_sampler
    if name == "step_noise":  # acts only with a sampler that adds noise
        return deterministic_only
    return name == "sampler" and deterministic_only and value != "ddim"


def variants(method: str) -> list[dict]:
    """The defaults, then every value of every choice option (and MORE), one edit each."""
    base = {"prompt": PROMPT, "steps": 2, **NEEDS.get(method, {})}
    found = [dict(base)]
    for spec in dataclasses.fields(METHODS[method].Params):
        for value in spec.metadata.get("choices") or ():
            if value != spec.default and not refused(method, spec.name, value):
                variant = {**base, spec.name: value, **WITH.get((spec.name, value), {})}
                found.append({k: v for k, v in variant.items() if v is not None})
    found += [{**base, **extra} for extra in MORE.get(method, [])]
    return found


@pytest.fixture(scope="module")
def elsewhere():
    with SecondDevice() as device:
        yield Editor(*tiny_components(), device=device, dtype=torch.float32)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_and_option_runs_with_the_model_on_a_second_device(elsewhere, method):
    assert next(elsewhere.unet.parameters()).device == SecondDevice.device
    with SecondDevice():
        results = elsewhere.edit_many(picture(), variants(method), method, record_attention=True)
    for result in results:
        assert np.isfinite(np.asarray(result.image, dtype=np.float32)).all()
        assert result.latent.device.type == "cpu" and torch.isfinite(result.latent).all()


def test_the_second_device_catches_a_flag_tensor_left_on_the_cpu(elsewhere):
    """The bug this guards against: per-row flags built on the CPU and used in torch.where
    against latents on the model's device (the first step of laspa-x0 failed on CUDA)."""

    class CpuFlags(X0Alignment):
        def __init__(self, reference, weight, direction):
            super().__init__(reference, weight, direction)
            self.consistent = torch.tensor([d == "consistent" for d in direction]).view(-1, 1, 1, 1)

    directions = ["consistent", "asymmetric"]  # mixed rows: the flags select per row
    with SecondDevice() as device:
        reference = torch.zeros(2, 4, 16, 16, device=device)
        x = torch.randn(2, 4, 16, 16, device=device)
        weight = lambda t: torch.full((2, 1, 1, 1), 0.5, device=device)  # noqa: E731
        steps = elsewhere.denoiser.steps(2)
        conditioning = Conditioning(elsewhere.text_embeddings(["a cat", "a dog"]))
        fixed = X0Alignment(reference, weight, directions)
        assert elsewhere.engine.sample(x, steps, conditioning, fixed).device == device
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            elsewhere.engine.sample(x, steps, conditioning, CpuFlags(reference, weight, directions))
        # what it lets through, as PyTorch does: 0-dim CPU tensors, copies, CPU indices
        assert (x * torch.tensor(2.0)).device == device
        assert x.cpu().device.type == "cpu" and x[torch.tensor([0])].device == device
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.ones(1, 4, 16, 16)


# ------------------------------------------------------------------ half precision


@pytest.fixture(scope="module")
def half_editor():
    """float16 on the CPU, on a UNet that upcasts its attention like SD 2.1's."""
    components = tiny_components(upcast_attention=True)
    return Editor(*components, device="cpu", dtype=torch.float16)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_and_option_runs_in_half_precision(half_editor, method):
    assert half_editor.unet.dtype == torch.float16
    results = half_editor.edit_many(picture(), variants(method), method, record_attention=True)
    for result in results:
        assert torch.isfinite(result.latent).all()
        for word_map in result.attention.values():
            assert np.isfinite(word_map).all()


class Recorder(ProbabilityReplacement):
    """An attention hook that asks for every layer's probabilities and keeps them."""

    def __init__(self):
        self.probs: dict[str, torch.Tensor] = {}

    def wants(self, layer, step):
        return True

    def replace_probabilities(self, layer, step, probs):
        self.probs[layer.name] = probs.clone()
        return probs


class Observer(AttentionObserver):
    """The same through the read-only path (fused output, maps of the conditional rows)."""

    def __init__(self):
        self.probs: dict[str, torch.Tensor] = {}

    def wants(self, layer, step):
        return True

    def observe(self, layer, step, probs):
        self.probs[layer.name] = probs.clone()


def diffusers_probabilities(modules, inputs):
    """Each layer's probabilities as diffusers' AttnProcessor computes them from the same
    inputs: heads into the batch, then the module's own get_attention_scores."""
    found = {}
    for name, module in modules.items():
        hidden, context = inputs[name]
        query = module.head_to_batch_dim(module.to_q(hidden))
        key = module.head_to_batch_dim(module.to_k(hidden if context is None else context))
        probs = module.get_attention_scores(query, key)
        found[name] = probs.view(hidden.shape[0], module.heads, *probs.shape[1:])
    return found


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("hook", [Recorder, Observer])
def test_explicit_attention_equals_diffusers_on_an_upcasting_unet(dtype, hook):
    from diffusers.models.attention_processor import Attention, AttnProcessor

    from laspa.attention import StepInfo, install_processors

    unet = tiny_components(upcast_attention=True)[3].to(dtype).eval()
    modules = {  # keyed like unet.attn_processors, which our LayerInfo names follow
        f"{name}.processor": module
        for name, module in unet.named_modules()
        if isinstance(module, Attention)
    }
    assert modules.keys() == unet.attn_processors.keys()
    inputs = {}

    def capture(name):
        def pre_hook(module, args, kwargs):
            inputs[name] = (args[0] if args else kwargs["hidden_states"],
                            kwargs.get("encoder_hidden_states"))  # fmt: skip

        return pre_hook

    for name, module in modules.items():
        module.register_forward_pre_hook(capture(name), with_kwargs=True)
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    text = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1)).to(dtype)
    state = install_processors(unet)
    recorder = hook()
    state.hooks = [recorder]
    state.step = StepInfo(rows=2, uncond_rows=0, latent_hw=(16, 16))
    with torch.no_grad():
        ours_out = unet(x, 500, encoder_hidden_states=text).sample
        expected = diffusers_probabilities(modules, inputs)
        unet.set_attn_processor(AttnProcessor())
        theirs_out = unet(x, 500, encoder_hidden_states=text).sample
    assert recorder.probs.keys() == expected.keys()
    tolerance = (
        {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-3, "rtol": 0}
    )
    for name, probs in recorder.probs.items():
        assert probs.dtype == dtype
        torch.testing.assert_close(probs, expected[name], **tolerance)
    out_tolerance = (
        {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 1e-2}
    )
    torch.testing.assert_close(ours_out, theirs_out, **out_tolerance)


def test_half_precision_scores_do_not_overflow_before_scaling():
    """q.k beyond float16's range (65504): diffusers' processor scales inside the matmul and,
    with upcast_attention, computes in float32; the explicit path must give its finite maps
    (computing q @ k^T in float16 first gives inf, then NaN probabilities)."""
    from diffusers.models.attention_processor import Attention

    from laspa.attention import AttentionState, LaspaAttnProcessor, LayerInfo, StepInfo

    attention = Attention(query_dim=8, heads=1, dim_head=8, upcast_attention=True)
    with torch.no_grad():
        for projection in (attention.to_q, attention.to_k):
            projection.weight.copy_(10 * torch.eye(8))
    attention = attention.half()
    hidden = torch.full((1, 4, 8), 30.0, dtype=torch.float16)
    hidden[0, 1] = -30.0
    assert torch.isinf(attention.to_q(hidden) @ attention.to_k(hidden).transpose(1, 2)).any()
    recorder = Recorder()
    state = AttentionState(StepInfo(rows=1, uncond_rows=0, latent_hw=(2, 2)), [recorder])
    attention.set_processor(LaspaAttnProcessor(LayerInfo("x", "down", 0, 0, False, 1), state))
    with torch.no_grad():
        out = attention(hidden)
        expected = attention.get_attention_scores(
            attention.head_to_batch_dim(attention.to_q(hidden)),
            attention.head_to_batch_dim(attention.to_k(hidden)),
        )
    probs = recorder.probs["x"]
    assert torch.isfinite(probs).all() and torch.isfinite(out).all()
    torch.testing.assert_close(probs[0], expected, atol=1e-3, rtol=0)
