"""Samplers behind the engine: DDIM, ancestral (DDPM) and LCM, checked against diffusers'
schedulers and pipelines step for step, with every LASPA alignment exact at weight 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import Editor
from laspa.attention import StepInfo
from laspa.errors import ParameterError
from laspa.loop import Conditioning, sample
from laspa.methods.base import EditBatch, EditRow, make_params
from laspa.methods.laspa import EpsAlignment, InputAlignment, X0Alignment
from laspa.samplers import SAMPLERS, UNET_SAMPLERS, RowNoise, ancestral_sigma
from laspa.testing import save_tiny_model, tiny_components, tiny_editor

PROMPT = "a red cat"


def editor(**kwargs) -> Editor:
    return Editor(*tiny_components(**kwargs), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny():
    return tiny_editor()


@pytest.fixture(scope="module")
def lcm():
    """A tiny UNet with LCM's guidance embedding, its folder naming LCMScheduler."""
    return editor(time_cond_proj_dim=32, scheduler_class="LCMScheduler")


def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def guided(ed: Editor, scale: float = 5.0) -> Conditioning:
    text = ed.engine.text_embeddings
    return Conditioning(text([PROMPT]), text([""]), scale)


def test_ancestral_equals_diffusers_ddpm_scheduler_step_for_step(tiny):
    from diffusers import DDPMScheduler

    cond = guided(tiny)
    generator = torch.Generator().manual_seed(7)
    x_T = torch.randn((1, 4, 16, 16), generator=generator)
    steps = SAMPLERS["ancestral"].steps(tiny.denoiser, 6)
    ours = sample(tiny.denoiser, x_T, steps, cond, noise=RowNoise([generator], x_T, True))

    scheduler = DDPMScheduler.from_config(tiny.scheduler.config)
    scheduler.set_timesteps(6)
    assert [int(t) for t in scheduler.timesteps] == [s.t for s in steps]
    generator = torch.Generator().manual_seed(7)
    x = torch.randn((1, 4, 16, 16), generator=generator)
    for t in scheduler.timesteps:
        eps = tiny.denoiser.eps(x, int(t), cond, StepInfo())
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


def test_ancestral_noise_is_ddims_eta_one_and_ends_clean(tiny):
    steps = SAMPLERS["ancestral"].steps(tiny.denoiser, 4)
    a, a_prev = steps[1].alpha, steps[1].alpha_prev
    # DDIM's sigma with eta 1 (Song et al. 2021, eq. 16)
    eta_one = ((1 - a_prev) / (1 - a)) ** 0.5 * (1 - a / a_prev) ** 0.5
    assert steps[1].sigma == pytest.approx(eta_one) == ancestral_sigma(a, a_prev)
    assert steps[-1].alpha_prev == 1.0 and steps[-1].sigma == 0.0
    assert all(s.sigma == 0 for s in SAMPLERS["ddim"].steps(tiny.denoiser, 4))


def test_lcm_equals_diffusers_latent_consistency_pipeline(lcm):
    from diffusers import LatentConsistencyModelPipeline

    pipe = LatentConsistencyModelPipeline(
        lcm.vae, lcm.text_encoder, lcm.tokenizer, lcm.unet, _lcm_scheduler(lcm), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        PROMPT, num_inference_steps=4, guidance_scale=7.5, height=32, width=32,
        generator=torch.Generator().manual_seed(3), output_type="latent",
    ).images  # fmt: skip

    params = make_params("generate", {"steps": 4, "guidance": 7.5, "step_noise": "fresh"})
    batch = EditBatch(None, [EditRow(PROMPT, 3, params)])
    engine = lcm.engine
    assert engine.sampler(batch) == "lcm" and engine.guidance_mode(batch) == "embedding"
    generators = engine.generators(batch)
    x_T = engine.noise(generators, (1, 4, 16, 16))
    steps = engine.steps(batch)
    assert [s.t for s in steps] == [999, 759, 499, 259]
    noise = engine.step_noise(batch, generators, x_T)
    ours = engine.sample(x_T, steps, engine.conditioning(batch), noise=noise)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def _lcm_scheduler(ed: Editor):
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(ed.engine.denoiser.scheduler_config)


def unit_weight(t) -> torch.Tensor:
    return torch.ones(1, 1, 1, 1)


ALIGNMENTS = {
    "input": lambda ref, gens: InputAlignment(ref, unit_weight, RowNoise(gens, ref, False)),
    "eps": lambda ref, gens: EpsAlignment(ref, unit_weight, ["exact"]),
    "x0 consistent": lambda ref, gens: X0Alignment(ref, unit_weight, ["consistent"]),
    "x0 asymmetric": lambda ref, gens: X0Alignment(ref, unit_weight, ["asymmetric"]),
}


# the flow sampler's identities run on a flow model: tests/engine/test_flow.py
@pytest.mark.parametrize("sampler", sorted(UNET_SAMPLERS))
@pytest.mark.parametrize("alignment", sorted(ALIGNMENTS))
def test_every_alignment_at_weight_one_reproduces_the_input_on_every_sampler(
    tiny, sampler, alignment
):
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn((1, 4, 16, 16), generator=generator)
    x_T = torch.randn((1, 4, 16, 16), generator=generator)
    hooks = ALIGNMENTS[alignment](reference, [generator])
    steps = SAMPLERS[sampler].steps(tiny.denoiser, 4)
    noise = RowNoise([generator], x_T, True)
    out = sample(tiny.denoiser, x_T, steps, guided(tiny), hooks, noise=noise)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_lcm_steps_carry_the_consistency_boundary_conditions(lcm):
    steps = lcm.engine.steps(4)
    for step in steps:
        scaled = step.t * 10.0
        assert step.c_skip == pytest.approx(0.25 / (scaled**2 + 0.25))
        assert step.c_out == pytest.approx(scaled / (scaled**2 + 0.25) ** 0.5)
    x, eps = torch.randn(2, 1, 4, 16, 16)
    # eps_for inverts x0 under the boundary conditions, as error alignment needs
    torch.testing.assert_close(steps[2].eps_for(x, steps[2].x0(x, eps)), eps)
    assert steps[-1].alpha_prev == 1.0 and steps[-1].sigma == 0.0
    assert steps[0].sigma == pytest.approx((1 - steps[0].alpha_prev) ** 0.5)


@pytest.mark.parametrize(
    ("scheduler_class", "expected"),
    [
        ("DDIMScheduler", "ddim"),
        ("PNDMScheduler", "ddim"),
        ("EulerDiscreteScheduler", "ddim"),
        ("EulerAncestralDiscreteScheduler", "ancestral"),
        ("DDPMScheduler", "ancestral"),
        ("LCMScheduler", "lcm"),
    ],
)
def test_auto_follows_the_checkpoint_scheduler(scheduler_class, expected):
    assert editor(scheduler_class=scheduler_class).engine.default_sampler == expected


def test_a_saved_folder_keeps_its_scheduler_class(tmp_path):
    folder = save_tiny_model(tmp_path / "lcm", scheduler_class="LCMScheduler")
    assert Editor.from_pretrained(folder, device="cpu").engine.default_sampler == "lcm"


@pytest.mark.parametrize("method", ["laspa-x0", "laspa-input", "sdedit", "generate"])
def test_lcm_and_ancestral_edits_are_deterministic_and_batch_independent(tiny, method):
    for sampler, noise in (("lcm", "fixed"), ("ancestral", "fresh")):
        variant = {"prompt": PROMPT, "steps": 4, "sampler": sampler, "step_noise": noise}
        alone = tiny.edit_many(picture(), [{**variant, "seed": 5}], method)[0]
        again = tiny.edit_many(picture(), [{**variant, "seed": 5}], method)[0]
        both = tiny.edit_many(picture(), [{**variant, "seed": 2}, {**variant, "seed": 5}], method)
        assert alone.image.tobytes() == again.image.tobytes()
        torch.testing.assert_close(both[1].latent, alone.latent, rtol=1e-4, atol=1e-4)


def test_fixed_and_fresh_step_noise_differ_on_a_stochastic_sampler(tiny):
    variant = {"prompt": PROMPT, "steps": 4, "sampler": "ancestral", "beta": 0.2}
    fixed, fresh = (
        tiny.edit(picture(), **variant, step_noise=kind).latent for kind in ("fixed", "fresh")
    )
    assert not torch.allclose(fixed, fresh)
    variant["sampler"] = "ddim"  # DDIM adds no noise: a step noise there cannot act
    with pytest.raises(ParameterError, match="step_noise acts only with a sampler that adds"):
        tiny.edit(picture(), **variant, step_noise="fresh")


def test_guidance_at_most_one_runs_the_conditional_branch_alone(tiny):
    variant = {"prompt": PROMPT, "method": "generate", "steps": 3, "sampler": "ddim"}
    off, one, on = (tiny.edit(picture(), guidance=scale, **variant) for scale in (0.0, 1.0, 5.0))
    assert off.unet_evals == one.unet_evals == 3 and on.unet_evals == 6
    assert torch.equal(off.latent, one.latent)


def test_the_guidance_embedding_replaces_the_unconditional_row(lcm):
    embedded = lcm.edit(picture(), PROMPT, method="generate", steps=2, guidance=7.5)
    cfg = lcm.edit(picture(), PROMPT, method="generate", steps=2, guidance=7.5, guidance_mode="cfg")
    assert embedded.unet_evals == 2 and cfg.unet_evals == 4
    assert not torch.allclose(embedded.latent, cfg.latent)


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("fpe", {"sampler": "lcm"}, "fpe inverts the image, which needs a deterministic sampler"),
        ("ddim-inversion", {"sampler": "ancestral"}, "use --sampler ddim, not ancestral"),
    ],
)
def test_inverting_methods_refuse_a_stochastic_sampler_before_running(method, options, message):
    with pytest.raises(ParameterError, match=message):
        make_params(method, options)


def test_an_inverting_method_refuses_a_model_whose_own_sampler_is_stochastic(lcm):
    with pytest.raises(ParameterError, match="fpe inverts the image.*not lcm"):
        lcm.edit(picture(), PROMPT, method="fpe", steps=2)
    assert lcm.edit(picture(), PROMPT, method="fpe", steps=2, sampler="ddim").latent is not None


def test_lcm_refuses_more_steps_than_it_was_distilled_for(lcm):
    with pytest.raises(ParameterError, match="^steps: "):
        lcm.edit(picture(), PROMPT, steps=51)


def test_the_guidance_embedding_needs_a_unet_that_has_one(tiny):
    with pytest.raises(ParameterError, match="guidance_mode embedding needs a UNet"):
        tiny.edit(picture(), PROMPT, steps=2, guidance_mode="embedding")


def test_a_turbo_model_runs_unguided_and_equals_diffusers_euler_pipeline():
    """SD-Turbo's recipe: EulerDiscreteScheduler with trailing timesteps, 1-4 steps,
    guidance 0. DDIM is Euler on the same ODE in x / sqrt(a), so the two agree, given the
    same start: with trailing timesteps diffusers scales x_T by sigma_max instead of
    sqrt(sigma_max^2 + 1) = 1 / sqrt(a_T) (0.2% less noise), so its start is set here."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    vae, text_encoder, tokenizer, unet, scheduler = tiny_components()
    turbo = EulerDiscreteScheduler.from_config(scheduler.config, timestep_spacing="trailing")
    ed = Editor(vae, text_encoder, tokenizer, unet, turbo, device="cpu", dtype=torch.float32)
    assert ed.engine.default_sampler == "ddim"
    pipe = StableDiffusionPipeline(
        vae, text_encoder, tokenizer, unet, turbo, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(4))
    for steps in (1, 4):
        turbo.set_timesteps(steps)
        sigma = float(turbo.sigmas[0])
        start = x_T * (sigma**2 + 1) ** 0.5 / turbo.init_noise_sigma  # the pipeline multiplies
        theirs = pipe(
            PROMPT, num_inference_steps=steps, guidance_scale=0.0, height=32, width=32,
            latents=start, output_type="latent",
        ).images  # fmt: skip
        ours = ed.edit(picture(), PROMPT, method="generate", steps=steps, guidance=0.0, seed=4)
        assert ours.unet_evals == steps  # no unconditional rows
        torch.testing.assert_close(ours.latent, theirs, rtol=1e-4, atol=1e-4)


def test_tcd_at_gamma_one_is_lcm_and_at_gamma_zero_adds_no_noise(lcm):
    denoiser = lcm.engine.denoiser
    assert SAMPLERS["tcd"].steps(denoiser, 4, gamma=1.0) == SAMPLERS["lcm"].steps(denoiser, 4)
    quiet = SAMPLERS["tcd"].steps(denoiser, 4, gamma=0.0)
    assert all(step.sigma == 0.0 for step in quiet) and SAMPLERS["tcd"].is_deterministic(0.0)
    assert not SAMPLERS["tcd"].is_deterministic(0.3)
    # in between: re-noised from s = floor((1 - gamma) t'), as TCDScheduler does
    step = SAMPLERS["tcd"].steps(denoiser, 4, gamma=0.3)[1]
    alpha_s = denoiser.alpha(int((1 - 0.3) * step.t_prev))
    assert step.sigma == pytest.approx((1 - step.alpha_prev / alpha_s) ** 0.5)
    assert 0 < step.sigma < SAMPLERS["lcm"].steps(denoiser, 4)[1].sigma


def test_tcd_at_gamma_zero_ignores_the_step_noise_and_aligns_exactly(lcm):
    variant = {"prompt": PROMPT, "steps": 4, "sampler": "tcd", "gamma": 0.0, "beta": 0.3}
    with pytest.raises(ParameterError, match="this edit's is tcd with gamma 0"):
        lcm.edit(picture(), **variant, step_noise="fixed")  # no noise to fix at gamma 0
    noisy = [lcm.edit(picture(), **variant | {"gamma": 0.5}, step_noise=k).latent
             for k in ("fixed", "fresh")]  # fmt: skip
    assert not torch.allclose(*noisy)
    generator = torch.Generator().manual_seed(1)
    reference, x_T = torch.randn((2, 1, 4, 16, 16), generator=generator)
    hooks = X0Alignment(reference, unit_weight, ["consistent"])
    steps = SAMPLERS["tcd"].steps(lcm.engine.denoiser, 4, gamma=0.5)
    out = sample(lcm.engine.denoiser, x_T, steps, guided(lcm), hooks,
                 noise=RowNoise([generator], x_T, True))  # fmt: skip
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_tcd_is_refused_by_inverting_methods_and_picked_for_a_tcd_scheduler():
    with pytest.raises(ParameterError, match="use --sampler ddim, not tcd"):
        make_params("fpe", {"sampler": "tcd"})
    assert editor(scheduler_class="TCDScheduler").engine.default_sampler == "tcd"


# ------------------------------------------------------------- few-step alignment ends


def test_few_step_schedules_leave_laspas_last_steps_free(lcm, tiny):
    """K = 200 aligns every step of LCM's 999, 759, 499, 259 (the output is 0.9 of the
    input): on a few-step schedule LASPA's K leaves the last step free, laspa-local's
    K_in the region from t = 500 on; the edit's own values win, other samplers keep 200."""
    lcm_t = [s.t for s in SAMPLERS["lcm"].steps(lcm.engine.denoiser, 4)]
    assert lcm_t == [999, 759, 499, 259]
    assert lcm._row("laspa-x0", {"prompt": PROMPT}).params.K == 300  # t = 259 free
    assert lcm._row("laspa-x0", {"prompt": PROMPT, "steps": 2}).params.K == 499
    assert lcm._row("laspa-eps", {"prompt": PROMPT, "steps": 8}).params.K == 300
    assert lcm._row("laspa-local", {"prompt": PROMPT}).params.K_in == 500
    assert lcm._row("laspa-x0", {"prompt": PROMPT, "K": 200}).params.K == 200
    assert lcm._row("laspa-x0", {"prompt": PROMPT, "sampler": "ddim"}).params.K == 200
    assert lcm._row("sdedit", {"prompt": PROMPT}).params.strength == 0.8  # no K: untouched
    assert tiny._row("laspa-x0", {"prompt": PROMPT}).params.K == 200
    tcd = tiny._row("laspa-x0", {"prompt": PROMPT, "sampler": "tcd", "gamma": 0.0})
    assert tcd.params.steps == 4 and tcd.params.K == 300


def test_at_two_lcm_steps_the_default_edit_is_not_the_input(lcm):
    """K = 200 aligns both of LCM's two steps (999, 499), as K = 0 does: the default now
    leaves the last one to the prompt."""
    aligned = lcm.edit(picture(), PROMPT, steps=2, K=0, seed=3)
    default = lcm.edit(picture(), PROMPT, steps=2, seed=3)
    assert not torch.equal(aligned.latent, default.latent)
