"""The sampler loop and methods on tiny random models: exactness, determinism, batching."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import ParameterError, ddim
from laspa.loop import Conditioning, SamplerHooks, invert, sample
from laspa.methods.laspa import EpsAlignment, InputAlignment, RowNoise, X0Alignment
from laspa.testing import tiny_editor


def picture(seed: int = 0, size=(32, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def always_one(t: int) -> torch.Tensor:
    return torch.ones(1, 1, 1, 1)


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def exact_editor(request):
    """SD's scheduler config (set_alpha_to_one=False); the loop's clean final step lands on
    alpha 1, so that an x0 of r is output exactly as r."""
    return tiny_editor(prediction_type=request.param)


def test_the_scheduler_final_step_adds_the_last_eps():
    """With final_step="scheduler" the output is sqrt(a_0) r + sqrt(1 - a_0) eps, not r."""
    ed = tiny_editor(final_step="scheduler")
    reference, cond = reference_and_conditioning(ed)
    hooks = X0Alignment(reference, always_one, ["asymmetric"])
    out = sample(ed.denoiser, torch.randn(1, 4, 16, 16), ed.denoiser.steps(5), cond, hooks)
    assert not torch.allclose(out, reference, atol=1e-3)
    assert ed.denoiser.final_alpha == float(ed.scheduler.final_alpha_cumprod) < 1


def reference_and_conditioning(ed):
    reference = ed.encode(torch.rand(1, 3, 32, 32) * 2 - 1)
    cond = Conditioning(ed.text_embeddings(["a red cat"]), ed.text_embeddings([""]), 7.5)
    return reference, cond


@pytest.mark.parametrize("alignment", ["input", "eps", "x0-asymmetric", "x0-consistent"])
def test_weight_one_at_every_step_reproduces_the_reference(exact_editor, alignment):
    ed = exact_editor
    reference, cond = reference_and_conditioning(ed)
    if alignment == "input":
        generator = [torch.Generator().manual_seed(3)]
        hooks = InputAlignment(reference, always_one, RowNoise(generator, reference, [False]))
    elif alignment == "eps":
        hooks = EpsAlignment(reference, always_one, ["exact"])
    else:
        hooks = X0Alignment(reference, always_one, [alignment.split("-")[1]])
    x_T = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    out = sample(ed.denoiser, x_T, ed.denoiser.steps(10), cond, hooks)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["laspa-x0", "laspa-eps"])
def test_beta_one_from_k_zero_reproduces_the_reference_through_the_editor(exact_editor, method):
    ed = exact_editor
    image = picture(1)
    result = ed.edit(image, "a red cat", method=method, K=0, beta=1.0, steps=8)
    reference = ed.encode(ed.__class__.__dict__ and _pixels(image))
    torch.testing.assert_close(result.latent, reference, atol=1e-5, rtol=1e-5)


def _pixels(image):
    from laspa.images import to_tensor

    return to_tensor(image, image.size)


def test_input_alignment_with_weight_one_walks_the_stochastic_inverse():
    ed = tiny_editor()
    reference, cond = reference_and_conditioning(ed)
    z = torch.randn(1, 4, 16, 16)
    seen = []

    def watch(step, x, x0, eps):  # x: the latent the UNet saw, after before_unet
        seen.append((step.alpha, x))

    hooks = InputAlignment(reference, always_one, lambda: z)
    steps = ed.denoiser.steps(5)
    sample(ed.denoiser, torch.randn(1, 4, 16, 16), steps, cond, hooks, callback=watch)
    assert len(seen) == len(steps)
    for alpha, x in seen:
        torch.testing.assert_close(x, alpha**0.5 * reference + (1 - alpha) ** 0.5 * z)


def test_the_callback_sees_each_step_and_changes_nothing():
    """callback(step, x, x0, eps) after the hooks: x0 is the hooks' x0 (the reference under
    full x0 alignment), x and eps imply the UNet's own x0, and the output is unchanged."""
    ed = tiny_editor()
    reference, cond = reference_and_conditioning(ed)
    x_T = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    steps = ed.denoiser.steps(4)
    hooks = X0Alignment(reference, always_one, ["asymmetric"])
    watched = []
    out = sample(ed.denoiser, x_T, steps, cond, hooks, callback=lambda *seen: watched.append(seen))
    assert [seen[0] for seen in watched] == steps
    for step, x, x0, eps in watched:
        torch.testing.assert_close(x0, reference, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(ddim.predict_x0(x, eps, step.alpha), reference, atol=1e-3)
    step, x, x0, eps = watched[-1]
    assert torch.equal(out, ddim.ddim_step(x0, eps, step.alpha_prev))
    assert torch.equal(out, sample(ed.denoiser, x_T, steps, cond, hooks))


def test_ddim_inversion_then_sampling_round_trips():
    """Inversion's one approximation is evaluating eps at the next timestep; with a UNet
    whose eps does not depend on x (output weights zeroed, bias kept) that approximation
    vanishes, so the round trip must be exact: this pins the steps' order and alphas.
    (A random UNet's eps changes too much between timesteps for a meaningful tolerance;
    the trained miniature's round trip is measured in the slow tests.)"""
    ed = tiny_editor()
    with torch.no_grad():
        ed.unet.conv_out.weight.zero_()
        ed.unet.conv_out.bias.normal_()
    reference, _ = reference_and_conditioning(ed)
    cond = Conditioning(ed.text_embeddings(["a cat"]))
    steps = ed.denoiser.steps(50)
    trajectory = invert(ed.denoiser, reference, steps, cond)
    assert len(trajectory) == len(steps) + 1
    torch.testing.assert_close(trajectory[-1], reference)
    back = sample(ed.denoiser, trajectory[0], steps, cond)
    torch.testing.assert_close(back, reference, atol=1e-4, rtol=1e-4)


def test_plain_hooks_equal_diffusers_ddim_scheduler():
    """The loop with no hook is DDIMScheduler.step (eta = 0), step for step, when it ends
    where the scheduler config says (final_step="scheduler")."""
    ed = tiny_editor(final_step="scheduler")
    cond = Conditioning(ed.text_embeddings(["a cat"]), ed.text_embeddings([""]), 5.0)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = sample(ed.denoiser, x.clone(), ed.denoiser.steps(6), cond, SamplerHooks())
    scheduler = ed.scheduler
    scheduler.set_timesteps(6)
    theirs = x.clone()
    for t in scheduler.timesteps:
        eps = ed.denoiser.eps(theirs, int(t), cond, __import__("laspa").attention.StepInfo())
        theirs = scheduler.step(eps, t, theirs).prev_sample
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inversion_equals_diffusers_ddim_inverse_scheduler(prediction_type):
    """DDIM inversion is DDIMInverseScheduler.step, step for step, for both prediction types:
    a v-prediction becomes eps with the alpha of the latent being inverted (the level it is
    at), not that of the timestep the UNet is given."""
    from diffusers import DDIMInverseScheduler

    ed = tiny_editor(final_step="scheduler", prediction_type=prediction_type)
    reference, _ = reference_and_conditioning(ed)
    cond = Conditioning(ed.text_embeddings(["a cat"]))
    steps = ed.denoiser.steps(5)
    ours = invert(ed.denoiser, reference, steps, cond)
    inverse = DDIMInverseScheduler.from_config(ed.scheduler.config)
    inverse.set_timesteps(5)
    assert [int(t) for t in inverse.timesteps] == [s.t for s in reversed(steps)]
    x = reference
    for t, expected in zip(inverse.timesteps, reversed(ours[:-1]), strict=True):
        with torch.no_grad():
            out = ed.unet(x, t, encoder_hidden_states=cond.cond).sample
        x = inverse.step(out, t, x).prev_sample
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "method", ["laspa-x0", "laspa-input", "laspa-eps", "sdedit", "ddim-inversion"]
)
def test_same_seed_same_bytes_different_seed_different_image(editor, method):
    image = picture(2)

    def png(seed):
        buffer = io.BytesIO()
        editor.edit(image, "a blue dog", method=method, seed=seed, steps=6).image.save(
            buffer, "PNG"
        )
        return buffer.getvalue()

    first = png(0)
    assert png(0) == first
    if method != "ddim-inversion":  # deterministic by construction: no noise is drawn
        assert png(1) != first


@pytest.mark.parametrize(
    "method", ["laspa-x0", "laspa-input", "laspa-eps", "sdedit", "ddim-inversion"]
)
def test_a_batch_equals_its_edits_run_alone(editor, method):
    image = picture(3)
    variants = [
        {"prompt": "a red cat", "seed": 0, "guidance": 7.5},
        {"prompt": "a blue dog", "seed": 5, "guidance": 3.0},
        {"prompt": "a red cat", "seed": 9, "guidance": 10.0},
    ]
    if method.startswith("laspa"):
        variants[0].update(K=100, beta=0.5)
        variants[1].update(K=600, beta_schedule="linear")
    if method == "laspa-input":
        variants[2]["noise"] = "fresh"
    for v in variants:
        v["steps"] = 6
    batched = editor.edit_many(image, variants, method=method)
    for variant, result in zip(variants, batched, strict=True):
        alone = editor.edit(image, method=method, **variant)
        # batched convolutions round differently; a random UNet amplifies that, so the
        # tolerance is relative to the latents' scale
        scale = alone.latent.abs().max()
        assert (result.latent - alone.latent).abs().max() <= 1e-4 * scale
    if method.startswith("laspa"):
        assert batched[0].unet_evals == 12  # 6 steps x (uncond + cond) per edit


def test_unet_evals_match_the_cost_table(editor):
    image = picture(4)
    assert editor.edit(image, "a cat", method="laspa-x0", steps=10).unet_evals == 20
    assert editor.edit(image, "a cat", method="sdedit", strength=0.5, steps=10).unet_evals == 10
    assert (
        editor.edit(image, "a cat", method="ddim-inversion", steps=10, source_prompt="x").unet_evals
        == 30
    )


def test_inversion_is_cached_per_image_prompt_and_steps(editor):
    image = picture(5)
    editor.edit(image, "a cat", method="ddim-inversion", steps=5)
    hits = editor.inversion_cache_hits
    second = editor.edit(image, "a dog", method="ddim-inversion", steps=5)
    assert editor.inversion_cache_hits == hits + 1
    assert second.unet_evals == 10  # no inversion cost the second time
    editor.edit(picture(6), "a dog", method="ddim-inversion", steps=5)
    assert editor.inversion_cache_hits == hits + 1


def test_output_has_the_input_size_and_any_mode_is_accepted(editor):
    grey = Image.new("L", (45, 30), 128)
    rgba = Image.new("RGBA", (20, 40), (255, 0, 0, 0))
    assert editor.edit(grey, "a cat", steps=2).image.size == (45, 30)
    result = editor.edit(rgba, "a cat", steps=2)
    assert result.image.size == (20, 40) and result.image.mode == "RGB"


def test_bad_parameters_raise_parameter_error(editor):
    image = picture(0)
    for kwargs, message in [
        ({"K": 1001}, "K must be in"),
        ({"beta": -0.1}, "beta must be in"),
        ({"steps": 0}, "steps must be in"),
        ({"guidance": -1.0}, "guidance must be in"),
        ({"guidance": float("inf")}, "guidance must be a finite number"),
        ({"beta_schedule": "cosine"}, "beta_schedule must be one of"),
        ({"strength": 0.5}, "does not take strength"),
    ]:
        with pytest.raises(ParameterError, match=message):
            editor.edit(image, "a cat", **kwargs)
    with pytest.raises(ParameterError, match="strength must be in"):
        editor.edit(image, "a cat", method="sdedit", strength=0.0)
    with pytest.raises(ParameterError, match="no denoising step"):
        editor.edit(image, "a cat", method="sdedit", strength=0.05, steps=10)
    with pytest.raises(ParameterError, match="non-empty"):
        editor.edit(image, "  ")
    with pytest.raises(ParameterError, match="unknown method"):
        editor.edit(image, "a cat", method="imagic")


def test_x0_alignment_with_consistent_direction_is_exact_error_alignment():
    """x0 <- b r + (1-b) x0 with the direction recomputed from it gives the eps
    b e_rec + (1-b) eps: the same update as error alignment in both terms (measured on
    the miniature, both rows of the bench are identical)."""
    ed = tiny_editor()
    reference, cond = reference_and_conditioning(ed)

    def weight(t):
        return torch.full((1, 1, 1, 1), 0.4)

    x_T = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    steps = ed.denoiser.steps(6)
    via_x0 = sample(ed.denoiser, x_T, steps, cond, X0Alignment(reference, weight, ["consistent"]))
    via_eps = sample(ed.denoiser, x_T, steps, cond, EpsAlignment(reference, weight, ["exact"]))
    torch.testing.assert_close(via_x0, via_eps, atol=1e-4, rtol=1e-4)
