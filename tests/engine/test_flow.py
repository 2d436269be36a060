"""Flow models (SD3) through the same engine: tiny random SD3 components saved as a
diffusers folder, the flow sampler against diffusers' SD3 pipelines, LASPA's identities
in flow terms, and FlowEdit against a transcription of the published algorithm."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import laspa
from laspa.editor import Editor
from laspa.errors import ParameterError
from laspa.flow import FlowStep
from laspa.images import to_tensor
from laspa.loop import sample
from laspa.methods.base import EditBatch, EditRow, make_params
from laspa.methods.laspa import EpsAlignment, InputAlignment, X0Alignment
from laspa.samplers import SAMPLERS, RowNoise
from laspa.testing import run_cli, save_tiny_flux_model, save_tiny_sd3_model, tiny_editor

PROMPT = "a photo of a red cat"
SOURCE = "a photo of a cat"


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return save_tiny_sd3_model(tmp_path_factory.mktemp("sd3") / "tiny-sd3")


@pytest.fixture(scope="module")
def sd3(sd3_folder):
    return Editor.from_pretrained(sd3_folder, device="cpu", dtype=torch.float32)


def picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def batch_of(prompt: str = PROMPT, seed: int = 3, method: str = "generate", **options) -> EditBatch:
    row = EditRow(prompt, seed, make_params(method, options))
    return EditBatch(None, [row], pixels=torch.zeros(1, 3, 32, 32))


def pipeline(ed: Editor, cls_name: str = "StableDiffusion3Pipeline"):
    """diffusers' own pipeline on the editor's components (a fresh scheduler)."""
    import diffusers

    pipe = getattr(diffusers, cls_name)(
        transformer=ed.unet, scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(
            ed.engine.scheduler.config), vae=ed.vae,
        text_encoder=ed.text_encoder, tokenizer=ed.tokenizer,
        text_encoder_2=ed.text_encoder_2, tokenizer_2=ed.engine._text.tokenizers[1],
        text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def as_pipeline_embeds(ed: Editor, embeddings: torch.Tensor) -> torch.Tensor:
    """Our SD3 embeddings as the pipeline's: without T5 the last (zero) token repeated to
    the pipeline's 256 (StableDiffusion3Text.last_token_repeats)."""
    repeats = ed.engine._text.last_token_repeats
    return torch.cat([embeddings, embeddings[:, -1:].expand(-1, repeats - 1, -1)], dim=1)


def test_the_folder_loads_as_a_flow_model(sd3):
    assert sd3.engine.kind == "flow" and sd3.engine.sampler() == "flow"
    assert type(sd3.unet).__name__ == "SD3Transformer2DModel"
    assert sd3.vae.config.shift_factor == 0.0609  # SD3's centred latents, from its config
    assert sd3.size_multiple == 4  # VAE 2 x patch 2
    steps = sd3.engine.steps(4)
    assert all(isinstance(step, FlowStep) for step in steps)
    # SD3's schedule: from pure noise, shifted by the config's shift 3, to the clean latent
    assert steps[0].s == 1.0 and steps[-1].s_prev == 0.0
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    assert [s.s for s in steps] + [0.0] == [float(s) for s in scheduler.sigmas]
    assert [s.t for s in steps] == [float(t) for t in scheduler.timesteps]
    assert steps[1].s > 0.8  # shift 3 keeps the middle steps noisy (0.67 unshifted)


def test_conditioning_equals_the_pipelines_prompt_encoding(sd3):
    cond = sd3.engine.conditioning(batch_of(guidance=5.0))
    pipe = pipeline(sd3)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPT, None, None, do_classifier_free_guidance=True
    )
    # T5's 256 zero tokens as one, counted 256 times by the attention
    assert cond.cond.shape == (1, sd3.tokenizer.model_max_length + 1, 64)
    assert sd3.engine._text.last_token_repeats == sd3.denoiser.last_token_repeats == 256
    torch.testing.assert_close(as_pipeline_embeds(sd3, cond.cond), embeds)
    torch.testing.assert_close(as_pipeline_embeds(sd3, cond.uncond), negative)
    torch.testing.assert_close(cond.added["pooled_projections"], pooled)
    torch.testing.assert_close(cond.uncond_added["pooled_projections"], negative_pooled)


def test_an_sd3_folder_with_t5_conditions_on_it_as_the_pipeline_does(tmp_path):
    folder = save_tiny_sd3_model(tmp_path / "sd3-t5", t5=True)
    ed = Editor.from_pretrained(folder, device="cpu", dtype=torch.float32)
    assert type(ed.text_encoder_3).__name__ == "T5EncoderModel"
    assert ed.engine._text.last_token_repeats == 1  # T5's tokens differ: none merged
    cond = ed.engine.conditioning(batch_of(guidance=5.0))
    pipe = pipeline(ed)
    pipe.text_encoder_3, pipe.tokenizer_3 = ed.text_encoder_3, ed.engine._text.tokenizer_3
    embeds, negative, pooled, _ = pipe.encode_prompt(
        PROMPT, None, None, do_classifier_free_guidance=True
    )
    torch.testing.assert_close(cond.cond, embeds)
    torch.testing.assert_close(cond.uncond, negative)
    assert cond.cond[:, 40:].abs().sum() > 0  # T5's tokens, not zeros
    torch.testing.assert_close(cond.added["pooled_projections"], pooled)


def test_flow_sampler_equals_diffusers_sd3_pipeline(sd3):
    engine = sd3.engine
    batch = batch_of(guidance=5.0, steps=6)
    x_T = engine.noise(engine.generators(batch), (1, 16, 16, 16))
    cond = engine.conditioning(batch)
    ours = engine.sample(x_T, engine.steps(batch), cond)
    theirs = pipeline(sd3)(
        prompt_embeds=as_pipeline_embeds(sd3, cond.cond),
        negative_prompt_embeds=as_pipeline_embeds(sd3, cond.uncond),
        pooled_prompt_embeds=cond.added["pooled_projections"],
        negative_pooled_prompt_embeds=cond.uncond_added["pooled_projections"],
        latents=x_T.clone(), num_inference_steps=6, guidance_scale=5.0, height=32, width=32,
        output_type="latent",
    ).images  # fmt: skip
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_generate_equals_the_pipeline_from_the_same_seed(sd3):
    ours = sd3.edit(picture(), PROMPT, method="generate", steps=4, guidance=4.0, seed=11)
    theirs = pipeline(sd3)(
        PROMPT, num_inference_steps=4, guidance_scale=4.0, height=32, width=32,
        generator=torch.Generator().manual_seed(11), output_type="latent",
    ).images  # fmt: skip
    torch.testing.assert_close(ours.latent, theirs, rtol=1e-5, atol=1e-5)


def test_sdedit_equals_diffusers_sd3_img2img_from_the_same_latent(sd3):
    image = picture(2)
    ours = sd3.edit(image, PROMPT, method="sdedit", steps=8, strength=0.6, guidance=5.0, seed=4)
    reference = sd3.encode(to_tensor(image, image.size))
    theirs = pipeline(sd3, "StableDiffusion3Img2ImgPipeline")(
        PROMPT, image=reference, strength=0.6, num_inference_steps=8, guidance_scale=5.0,
        generator=torch.Generator().manual_seed(4), output_type="latent",
    ).images  # fmt: skip
    torch.testing.assert_close(ours.latent, theirs, rtol=1e-5, atol=1e-5)


def test_encode_centres_and_decode_restores_with_the_vaes_shift(sd3):
    pixels = to_tensor(picture(), (32, 32))
    with torch.no_grad():
        mean = sd3.vae.encode(pixels).latent_dist.mean
    latent = sd3.encode(pixels)
    torch.testing.assert_close(latent, (mean - 0.0609) * 1.5305)
    with torch.no_grad():
        expected = sd3.vae.decode(latent / 1.5305 + 0.0609).sample
    torch.testing.assert_close(sd3.decode(latent), expected)


def unit_weight(t) -> torch.Tensor:
    return torch.ones(1, 1, 1, 1)


ALIGNMENTS = {
    "input": lambda ref, gens: InputAlignment(ref, unit_weight, RowNoise(gens, ref, False)),
    "eps": lambda ref, gens: EpsAlignment(ref, unit_weight, ["exact"]),
    "x0 consistent": lambda ref, gens: X0Alignment(ref, unit_weight, ["consistent"]),
    "x0 asymmetric": lambda ref, gens: X0Alignment(ref, unit_weight, ["asymmetric"]),
}


@pytest.mark.parametrize("alignment", sorted(ALIGNMENTS))
def test_every_alignment_at_weight_one_reproduces_the_input_on_the_flow_sampler(sd3, alignment):
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn((1, 16, 16, 16), generator=generator)
    x_T = torch.randn((1, 16, 16, 16), generator=generator)
    hooks = ALIGNMENTS[alignment](reference, [generator])
    steps = SAMPLERS["flow"].steps(sd3.denoiser, 4)
    out = sample(sd3.denoiser, x_T, steps, sd3.engine.conditioning(batch_of(guidance=5.0)), hooks)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_beta_one_from_k_zero_reproduces_the_reference_on_sd3(sd3):
    image = picture(1)
    result = sd3.edit(image, PROMPT, method="laspa-x0", K=0, beta=1.0, steps=8)
    reference = sd3.encode(to_tensor(image, image.size))
    torch.testing.assert_close(result.latent, reference, atol=1e-5, rtol=1e-5)


def test_flow_alignments_in_flow_terms():
    """eps* makes x0 the reference, the consistent direction is v' = (x_s - x0') / s, and
    the Euler step is x_s + (s' - s) v, all at a level between the ends."""
    step = FlowStep(1, 4, 600.0, 300.0, 0.0, 0.0, s=0.6, s_prev=0.3)
    generator = torch.Generator().manual_seed(0)
    x, v, z_I = (torch.randn(1, 4, 2, 2, generator=generator) for _ in range(3))
    eps, x0 = step.eps_of(x, v), step.x0_from(x, step.eps_of(x, v), v, changed=False)
    torch.testing.assert_close(eps - x0, v)  # v = eps - x0
    torch.testing.assert_close(step.update(x0, eps), x + (0.3 - 0.6) * v)
    torch.testing.assert_close(step.x0(x, step.eps_for(x, z_I)), z_I)
    torch.testing.assert_close(step.eps_for(x, z_I) - z_I, (x - z_I) / 0.6)
    torch.testing.assert_close(step.noised(z_I, v), 0.4 * z_I + 0.6 * v)
    # at s = 1 eps is x itself: x0 comes from the velocity whatever a hook did to eps
    first = FlowStep(0, 4, 1000.0, 600.0, 0.0, 0.0, s=1.0, s_prev=0.6)
    torch.testing.assert_close(first.x0_from(x, x * 2, v, changed=True), x - v)


NEEDED = {"laspa-mix": {"subject": "cat"}, "flowedit": {"source_prompt": SOURCE, "n_max": 3}}
FLOW_METHODS = [m for m in laspa.METHODS if "flow" in laspa.METHODS[m].kinds]
UNET_ONLY = [m for m in laspa.METHODS if "flow" not in laspa.METHODS[m].kinds]


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_every_flow_method_runs_on_sd3_and_repeats_its_bytes(sd3, method):
    options = dict(method=method, steps=4, seed=5, **NEEDED.get(method, {}))
    first = sd3.edit(picture(), PROMPT, **options)
    assert first.image.size == (32, 32) and first.latent.shape == (1, 16, 16, 16)
    assert torch.isfinite(first.latent).all()
    again = sd3.edit(picture(), PROMPT, **options)
    assert torch.equal(first.latent, again.latent)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))


def test_the_methods_that_do_not_run_on_flow_models_are_named():
    assert set(UNET_ONLY) == {"fpe", "ddim-inversion", "diffedit"}
    assert "flowedit" in FLOW_METHODS and "laspa-x0" in FLOW_METHODS


@pytest.mark.parametrize("method", UNET_ONLY)
def test_unet_only_methods_refuse_a_flow_model_in_one_line(sd3, method):
    with pytest.raises(ParameterError, match=rf"^{method} runs on UNet \(eps / v\) models only"):
        sd3.edit(picture(), PROMPT, method=method, steps=2, **NEEDED.get(method, {}))


def test_samplers_refuse_the_other_kind(sd3):
    with pytest.raises(ParameterError, match="sampler ddim runs on UNet"):
        sd3.edit(picture(), PROMPT, steps=2, sampler="ddim")
    with pytest.raises(ParameterError, match="sampler flow runs on flow models only"):
        tiny_editor().edit(picture(), PROMPT, steps=2, sampler="flow")


def test_a_batch_of_edits_equals_the_edits_alone(sd3):
    variants = [{"prompt": PROMPT, "seed": 1}, {"prompt": "a dog", "seed": 2, "beta": 0.5}]
    together = sd3.edit_many(picture(), variants, method="laspa-x0")
    for variant, result in zip(variants, together, strict=True):
        alone = sd3.edit(picture(), method="laspa-x0", **variant)
        torch.testing.assert_close(result.latent, alone.latent, rtol=1e-5, atol=1e-5)


def test_word_maps_from_sd3s_joint_attention(sd3):
    maps = sd3.attention_maps(picture(), PROMPT, words=["cat", "red"], steps=4)
    assert set(maps) == {"cat", "red"} and maps["cat"].shape == (16, 16)  # the patch grid: 8
    assert maps["cat"].min() == 0 and maps["cat"].max() == 1
    assert not np.array_equal(maps["cat"], maps["red"])
    # recording reads the attention beside the fused layer: the edit is the same bytes
    plain = sd3.edit(picture(), PROMPT, steps=4)
    recorded = sd3.edit(picture(), PROMPT, steps=4, record_attention=True)
    assert torch.equal(plain.latent, recorded.latent) and set(recorded.attention) >= {"cat"}


def test_the_joint_attention_processor_equals_diffusers_without_hooks(sd3):
    """laspa's processor on every joint layer gives the transformer's own output."""
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 16, 16, generator=generator)
    cond = sd3.engine.conditioning(batch_of(guidance=5.0))
    embeddings, added = cond.unet_inputs(torch.float32)
    timestep = torch.tensor([500.0, 500.0])
    run = lambda: sd3.unet(  # noqa: E731
        hidden_states=x, timestep=timestep, encoder_hidden_states=embeddings,
        pooled_projections=added["pooled_projections"], return_dict=False,
    )[0]  # fmt: skip
    ours = run()
    processors = sd3.unet.attn_processors
    sd3.unet.set_attn_processor(JointAttnProcessor2_0())
    try:
        theirs = run()
    finally:
        sd3.unet.set_attn_processor(processors)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_laspa_mix_on_sd3_swaps_the_image_to_text_attention(sd3):
    options = dict(method="laspa-mix", subject="cat", steps=4, K=0)
    on, off = (
        sd3.edit(picture(), PROMPT, **options),
        sd3.edit(picture(), PROMPT, swap="off", **options),
    )
    assert on.mask.shape == (1, 16, 16) and torch.equal(on.mask, off.mask)
    assert not torch.equal(on.latent, off.latent)


def test_instdiffedit_on_sd3_masks_from_the_joint_attention(sd3):
    result = sd3.edit(picture(), PROMPT, method="instdiffedit", steps=8, final_pass="inpaint")
    assert result.mask.shape == (1, 16, 16) and result.notes["index_word"]
    for options, message in [
        ({"smoothing": "snap"}, "self-attention maps runs on UNet"),
        ({"inpaint_model": "some/inpainting"}, "inpaint_model is an SD inpainting checkpoint"),
    ]:
        with pytest.raises(ParameterError, match=message):
            sd3.edit(picture(), PROMPT, method="instdiffedit", steps=4, **options)


def test_word_maps_from_fluxs_double_stream_attention(flux):
    maps = flux.attention_maps(picture(), PROMPT, words=["cat", "red"], steps=4)
    assert maps["cat"].shape == (16, 16) and maps["cat"].max() == 1
    assert not np.array_equal(maps["cat"], maps["red"])
    plain = flux.edit(picture(), PROMPT, steps=4)
    assert torch.equal(
        plain.latent, flux.edit(picture(), PROMPT, steps=4, record_attention=True).latent
    )
    with pytest.raises(
        ParameterError, match="^laspa-mix's cross-attention swap does not run on FLUX"
    ):
        flux.edit(picture(), PROMPT, method="laspa-mix", subject="cat", steps=2)


# ---------------------------------------------------------------------------- FlowEdit


def published_flowedit(pipe, x_src, generator, T, n_max, n_min, n_avg, src_scale, tar_scale):
    """FlowEditSD3 of fallenshock/FlowEdit (FlowEdit_utils.py), transcribed on diffusers'
    pipeline; its noise drawn from ``generator`` (theirs: the global one), and its n_min
    branch with the target velocity it means (the released code names an unset variable)."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(T)
    timesteps = scheduler.timesteps
    encode = lambda prompt: pipe.encode_prompt(  # noqa: E731
        prompt, None, None, negative_prompt="", do_classifier_free_guidance=True
    )
    src, tar = encode(SOURCE), encode(PROMPT)
    embeds = torch.cat([src[1], src[0], tar[1], tar[0]])
    pooled = torch.cat([src[3], src[2], tar[3], tar[2]])

    def velocities(latents, t):
        out = pipe.transformer(
            hidden_states=latents, timestep=t.expand(4), encoder_hidden_states=embeds,
            pooled_projections=pooled, return_dict=False,
        )[0]  # fmt: skip
        src_u, src_c, tar_u, tar_c = out.chunk(4)
        return src_u + src_scale * (src_c - src_u), tar_u + tar_scale * (tar_c - tar_u)

    zt_edit = x_src.clone()
    for i, t in enumerate(timesteps):
        if T - i > n_max:
            continue
        t_i = t / 1000
        t_im1 = timesteps[i + 1] / 1000 if i + 1 < len(timesteps) else torch.zeros_like(t_i)
        if T - i > n_min:
            v_delta = torch.zeros_like(x_src)
            for _ in range(n_avg):
                noise = torch.randn(x_src.shape, generator=generator)
                zt_src = (1 - t_i) * x_src + t_i * noise
                zt_tar = zt_edit + zt_src - x_src
                v_src, v_tar = velocities(torch.cat([zt_src, zt_src, zt_tar, zt_tar]), t)
                v_delta += (1 / n_avg) * (v_tar - v_src)
            zt_edit = zt_edit + (t_im1 - t_i) * v_delta
        else:
            if i == T - n_min:
                noise = torch.randn(x_src.shape, generator=generator)
                xt_tar = zt_edit + (t_i * noise + (1 - t_i) * x_src) - x_src
            _, v_tar = velocities(torch.cat([xt_tar] * 4), t)
            xt_tar = xt_tar + (t_im1 - t_i) * v_tar
    return zt_edit if n_min == 0 else xt_tar


@pytest.mark.parametrize(
    "options",
    [
        {"n_max": 6, "n_min": 0, "n_avg": 1},
        {"n_max": 5, "n_min": 2, "n_avg": 2},
        {"n_max": 99, "n_min": 0, "n_avg": 1},
    ],
)
def test_flowedit_equals_the_published_algorithm(sd3, options):
    image = picture(3)
    scales = {"src_guidance_scale": 3.5, "tar_guidance_scale": 7.0}
    ours = sd3.edit(
        image, PROMPT, method="flowedit", source_prompt=SOURCE, steps=8, seed=9,
        **options, **scales,
    )  # fmt: skip
    assert ours.params["n_max"] == options["n_max"]
    x_src = sd3.encode(to_tensor(image, image.size))
    theirs = published_flowedit(
        pipeline(sd3), x_src, torch.Generator().manual_seed(9), 8, options["n_max"],
        options["n_min"], options["n_avg"], 3.5, 7.0,
    )  # fmt: skip
    torch.testing.assert_close(ours.latent, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "family, published",
    [("sd3", (50, 33, 0, 1, 3.5, 13.5)), ("flux", (28, 24, 0, 1, 1.5, 5.5)),
     ("sd", (50, 33, 0, 1, 3.5, 13.5))],
)  # fmt: skip
def test_flowedit_defaults_are_the_published_ones(family, published):
    from laspa.methods.flowedit import with_published_defaults

    batch = batch_of(method="flowedit")
    params = with_published_defaults(batch, family).rows[0].params
    names = ("steps", "n_max", "n_min", "n_avg", "src_guidance_scale", "tar_guidance_scale")
    assert tuple(getattr(params, name) for name in names) == published
    chosen = with_published_defaults(batch_of(method="flowedit", n_max=7), "flux").rows[0]
    assert chosen.params.n_max == 7 and chosen.params.steps == 28


def test_flowedit_with_the_source_as_target_keeps_the_input(sd3):
    """V_delta is zero when both branches are the same: Z_edit stays X_src."""
    image = picture(4)
    same = {"src_guidance_scale": 5.0, "tar_guidance_scale": 5.0}
    result = sd3.edit(image, SOURCE, method="flowedit", source_prompt=SOURCE, steps=6, **same)
    reference = sd3.encode(to_tensor(image, image.size))
    torch.testing.assert_close(result.latent, reference, rtol=1e-5, atol=1e-5)
    untouched = sd3.edit(image, PROMPT, method="flowedit", source_prompt=SOURCE, steps=4, n_max=0)
    assert torch.equal(untouched.latent, reference) and untouched.unet_evals == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"guidance": 5.0}, "flowedit takes src_guidance_scale and tar_guidance_scale"),
        ({"n_min": 5, "n_max": 3}, r"n_min \(5\) must be at most n_max \(3\)"),
        ({"n_avg": 0}, r"n_avg must be in \[1, 64\]"),
    ],
)
def test_flowedit_refuses_bad_options_before_running(options, message):
    with pytest.raises(ParameterError, match=message):
        make_params("flowedit", options)


def test_flowedit_refuses_n_min_past_the_published_n_max(sd3):
    with pytest.raises(ParameterError, match=r"n_min \(40\) must be at most n_max \(33\)"):
        sd3.edit(picture(), PROMPT, method="flowedit", n_min=40)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_flowedit_on_a_unet_runs_in_flow_coordinates(sampler):
    """On an eps UNet the same edit runs through x_t = c ((1 - s) x0 + s eps); with the
    source as target it keeps the input, as on a flow model."""
    ed = tiny_editor()
    image = picture(5)
    options = dict(method="flowedit", source_prompt=SOURCE, steps=6, n_max=5, sampler=sampler)
    edited = ed.edit(image, PROMPT, **options)
    assert torch.isfinite(edited.latent).all()
    same = ed.edit(image, SOURCE, src_guidance_scale=3.5, tar_guidance_scale=3.5, **options)
    reference = ed.encode(to_tensor(image, image.size))
    # (x_src + z_src - x_src) != z_src in float32: rounding, scaled by c up to 1.4
    torch.testing.assert_close(same.latent, reference, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(edited.latent, reference, atol=1e-3)


# ---------------------------------------------------------------------------- the command


def test_the_command_edits_with_flowedit_and_refuses_fpe_on_sd3(
    sd3_folder, tmp_path, capsys, monkeypatch
):
    image = tmp_path / "in.png"
    picture().save(image)
    out = tmp_path / "out.png"
    common = ["edit", image, PROMPT, "--model", sd3_folder, "--steps", 4, "-q", "--threads", 1]
    code, _, err = run_cli(capsys, *common, "-o", out, "-m", "flowedit",
                           "--source-prompt", SOURCE, "--set", "n_max=3")  # fmt: skip
    assert code == 0, err
    assert Image.open(out).size == (32, 32)
    # refused from the folder's configs, before the model loads
    monkeypatch.setattr(Editor, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    refused = tmp_path / "fpe.png"
    for args, message in [
        (
            ("-m", "fpe"),
            "fpe runs on UNet (eps / v) models only; this is a flow model (SD3 or FLUX)",
        ),
        (("--sampler", "ddim"), "sampler ddim runs on UNet (eps / v) models only"),
    ]:
        code, out_text, err = run_cli(capsys, *common, "-o", refused, *args)
        assert code == 2 and not out_text and len(err.strip().splitlines()) == 1
        assert message in err
        assert not refused.exists()


# ---------------------------------------------------------------------------- FLUX


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    return save_tiny_flux_model(tmp_path_factory.mktemp("flux") / "tiny-flux")


@pytest.fixture(scope="module")
def flux(flux_folder):
    return Editor.from_pretrained(flux_folder, device="cpu", dtype=torch.float32)


def flux_pipeline(ed: Editor, cls_name: str = "FluxPipeline"):
    import diffusers

    pipe = getattr(diffusers, cls_name)(
        transformer=ed.unet, scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(
            ed.engine.scheduler.config), vae=ed.vae,
        text_encoder=ed.text_encoder, tokenizer=ed.tokenizer,
        text_encoder_2=ed.text_encoder_2, tokenizer_2=ed.engine._text.t5_tokenizer,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unpacked(pipe, latents: torch.Tensor) -> torch.Tensor:
    return pipe._unpack_latents(latents, 32, 32, pipe.vae_scale_factor)


def test_flowedit_says_the_published_values_it_took(flux):
    result = flux.edit(picture(), PROMPT, method="flowedit", source_prompt=SOURCE, n_max=2)
    expected = {"steps": 28, "src_guidance_scale": 1.5, "tar_guidance_scale": 5.5}
    assert result.notes == {"published_defaults": expected}


def test_the_flux_folder_loads_as_a_flow_model(flux):
    assert flux.engine.kind == "flow" and flux.engine.family == "flux"
    assert type(flux.unet).__name__ == "FluxTransformer2DModel"
    assert flux.engine.denoiser.guidance_embeds and flux.engine.denoiser.latent_channels == 16
    assert flux.size_multiple == 4 and flux.resolution == 32  # packing 2 x 2; the VAE's size
    cond = flux.engine.conditioning(batch_of(guidance=3.5))
    assert cond.uncond is None  # FLUX-dev: the scale is an input, no unconditional rows
    assert cond.added["guidance"].tolist() == [3.5]
    assert cond.cond.shape == (1, 512, 32) and cond.added["pooled_projections"].shape == (1, 32)


def test_generate_equals_diffusers_flux_pipeline(flux):
    ours = flux.edit(picture(), PROMPT, method="generate", steps=4, guidance=3.5, seed=11)
    pipe = flux_pipeline(flux)
    theirs = pipe(
        PROMPT, num_inference_steps=4, guidance_scale=3.5, height=32, width=32,
        generator=torch.Generator().manual_seed(11), output_type="latent",
    ).images  # fmt: skip
    torch.testing.assert_close(ours.latent, unpacked(pipe, theirs), rtol=1e-5, atol=1e-5)


def test_sdedit_equals_diffusers_flux_img2img_from_the_same_latent(flux):
    image = picture(2)
    ours = flux.edit(image, PROMPT, method="sdedit", steps=8, strength=0.6, guidance=3.5, seed=4)
    reference = flux.encode(to_tensor(image, image.size))
    pipe = flux_pipeline(flux, "FluxImg2ImgPipeline")
    theirs = pipe(
        PROMPT, image=reference, strength=0.6, num_inference_steps=8, guidance_scale=3.5,
        height=32, width=32, generator=torch.Generator().manual_seed(4), output_type="latent",
    ).images  # fmt: skip
    torch.testing.assert_close(ours.latent, unpacked(pipe, theirs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alignment", sorted(ALIGNMENTS))
def test_every_alignment_at_weight_one_reproduces_the_input_on_flux(flux, alignment):
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn((1, 16, 16, 16), generator=generator)
    x_T = torch.randn((1, 16, 16, 16), generator=generator)
    hooks = ALIGNMENTS[alignment](reference, [generator])
    steps = SAMPLERS["flow"].steps(flux.denoiser, 4)
    conditioning = flux.engine.conditioning(batch_of(guidance=3.5))
    out = sample(flux.denoiser, x_T, steps, conditioning, hooks)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


#: FLUX's laspa-mix runs without the attention swap (not on FLUX yet)
FLUX_NEEDED = {**NEEDED, "laspa-mix": {"subject": "cat", "swap": "off"}}


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_every_flow_method_runs_on_flux_and_repeats_its_bytes(flux, method):
    options = dict(method=method, steps=4, seed=5, **FLUX_NEEDED.get(method, {}))
    first = flux.edit(picture(), PROMPT, **options)
    assert first.latent.shape == (1, 16, 16, 16) and torch.isfinite(first.latent).all()
    assert torch.equal(first.latent, flux.edit(picture(), PROMPT, **options).latent)


def test_flowedit_on_flux_equals_the_published_algorithm(flux):
    """FlowEditFLUX of fallenshock/FlowEdit, transcribed: packed latents, the guidance
    embedding's scales per branch, levels linspace(1, 1/T, T) shifted by the image size;
    the noise drawn unpacked (as the edit's generator draws it), then packed."""
    pipe = flux_pipeline(flux)
    image, T, n_max = picture(3), 6, 5
    ours = flux.edit(image, PROMPT, method="flowedit", source_prompt=SOURCE, steps=T,
                     n_max=n_max, seed=9)  # fmt: skip
    x_src = flux.encode(to_tensor(image, image.size))
    generator = torch.Generator().manual_seed(9)
    pack = lambda x: pipe._pack_latents(x, 1, 16, 16, 16)  # noqa: E731
    x_packed = pack(x_src)
    ids = pipe._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32)
    sigmas = np.linspace(1.0, 1 / T, T)
    mu = (0.65 / 3840) * 64 + (0.5 - 0.65 / 3840 * 256)  # calculate_shift for 64 tokens
    pipe.scheduler.set_timesteps(T, sigmas=sigmas, mu=mu)
    src, tar = pipe.encode_prompt(SOURCE, None), pipe.encode_prompt(PROMPT, None)

    def velocity(latents, encoded, scale, t):
        return pipe.transformer(
            hidden_states=latents, timestep=t.expand(1) / 1000,
            guidance=torch.tensor([scale]), pooled_projections=encoded[1],
            encoder_hidden_states=encoded[0], txt_ids=encoded[2], img_ids=ids,
            return_dict=False,
        )[0]  # fmt: skip

    zt_edit = x_packed.clone()
    for i, t in enumerate(pipe.scheduler.timesteps):
        if T - i > n_max:
            continue
        t_i, t_im1 = pipe.scheduler.sigmas[i], pipe.scheduler.sigmas[i + 1]
        noise = pack(torch.randn(x_src.shape, generator=generator))
        zt_src = (1 - t_i) * x_packed + t_i * noise
        zt_tar = zt_edit + zt_src - x_packed
        v_delta = velocity(zt_tar, tar, 5.5, t) - velocity(zt_src, src, 1.5, t)
        zt_edit = zt_edit + (t_im1 - t_i) * v_delta
    torch.testing.assert_close(ours.latent, unpacked(pipe, zt_edit), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ half precision, second device


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_every_flow_method_runs_in_half_precision_and_on_a_second_device(
    family, sd3_folder, flux_folder
):
    """float16 on the CPU, and float32 "on" a second device (laspa.testing.SecondDevice:
    any tensor left on the CPU fails as on CUDA)."""
    from laspa.testing import SecondDevice

    folder = sd3_folder if family == "sd3" else flux_folder
    half = Editor.from_pretrained(folder, device="cpu", dtype=torch.float16)
    with SecondDevice() as device:
        elsewhere = Editor.from_pretrained(folder, device=device, dtype=torch.float32)
    for method in FLOW_METHODS:
        needed = NEEDED if family == "sd3" else FLUX_NEEDED
        options = dict(method=method, steps=3, **needed.get(method, {}))
        assert torch.isfinite(half.edit(picture(), PROMPT, **options).latent).all()
        with SecondDevice():
            result = elsewhere.edit(picture(), PROMPT, **options)
        assert result.latent.device.type == "cpu" and torch.isfinite(result.latent).all()


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_bench_runs_diffusers_flow_img2img_as_the_sdedit_peer(family, tmp_path, capsys):
    from laspa.testing import run_cli, save_tiny_flux_model, save_tiny_sd3_model

    save = save_tiny_sd3_model if family == "sd3" else save_tiny_flux_model
    folder = save(tmp_path / family)
    report = tmp_path / "bench.json"
    args = [
        "bench", "--model", folder, "--cases", 1, "--steps", 4, "-q", "--json", report,
        "--methods", "sdedit,peer-sdedit",
    ]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["methods"]["peer-sdedit"]["unet_evals"] > 0
    # from the same latent, our flow SDEdit is diffusers' img2img pipeline of the family
    assert result["checks"]["sdedit_vs_peer_sdedit"]["same_latent_min_psnr"] >= 60
