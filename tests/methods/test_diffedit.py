"""DiffEdit on the loop (laspa.methods.diffedit): the mask, the inversion, the blend, and
agreement with diffusers' own pipeline, on the tiny random model."""

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import ParameterError, images
from laspa.methods.diffedit import difference_mask, outside_levels
from laspa.testing import tiny_components, tiny_editor

STEPS = 10  # mask at step 5 (strength 0.5), inversion and denoising over 8 steps (0.8)


def picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def edit(ed, prompt="a red cat", **options):
    options = {"steps": STEPS, "source_prompt": "a dog", **options}
    return ed.edit(picture(), prompt, method="diffedit", **options)


# ------------------------------------------------------------------ the mask, by hand
def test_the_mask_is_where_the_predictions_differ_beyond_the_relative_threshold():
    source = torch.zeros(2 * 3, 4, 8, 8)  # two edits, three draws each
    target = source.clone()
    target[:3, :, 2:4, 2:4] = 1.0  # edit 0: a 2x2 square differs
    target[3:, :, :, :4] = 1.0  # edit 1: the left half
    masks = difference_mask(source, target, draws=3, ratio=3.0)
    assert masks.shape == (2, 1, 8, 8)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert masks[0, 0, 2:4, 2:4].all() and masks[0].sum() == 4
    # half the image differs: the clamp at 3 x mean (1.5) leaves 1 / 1.5 > 0.5 on it
    assert masks[1, 0, :, :4].all() and masks[1].sum() == 32


def test_guidance_cancels_so_the_conditional_rows_give_diffusers_guided_mask():
    generator = torch.Generator().manual_seed(0)
    uncond, source, target = (torch.randn(4, 4, 8, 8, generator=generator) for _ in range(3))
    scale = 7.5
    guided_source = uncond + scale * (source - uncond)
    guided_target = uncond + scale * (target - uncond)
    assert torch.equal(
        difference_mask(source, target, 4, 3.0),
        difference_mask(guided_source, guided_target, 4, 3.0),
    )


def test_predictions_that_agree_everywhere_give_an_empty_mask():
    same = torch.randn(2, 4, 8, 8)
    assert difference_mask(same, same, 2, 3.0).sum() == 0


def test_the_blend_levels_of_diffusers_lag_one_step_and_the_papers_end_on_the_input():
    trajectory = ["x_start", "x_1", "x_2", "input"]
    assert outside_levels(trajectory, "paper") == ["x_1", "x_2", "input"]
    assert outside_levels(trajectory, "diffusers") == ["x_start", "x_1", "x_2"]


# ------------------------------------------------------------------ on the tiny model
def test_the_mask_is_binary_at_latent_size(editor):
    result = edit(editor)
    assert result.mask.shape == (1, *result.latent.shape[-2:])
    assert set(result.mask.unique().tolist()) <= {0.0, 1.0}
    assert result.image.size == picture().size


@pytest.mark.parametrize("posterior", ["sample", "mean"])
def test_the_same_seed_gives_the_same_bytes(editor, posterior):
    first, again = (edit(editor, seed=3, posterior=posterior) for _ in range(2))
    assert first.image.tobytes() == again.image.tobytes()
    assert torch.equal(first.mask, again.mask)
    other = edit(editor, seed=4, posterior=posterior)
    assert not torch.equal(other.latent, first.latent)


def test_a_batch_of_edits_equals_each_edit_alone(editor):
    variants = [
        {"prompt": "a red cat", "seed": 1, "steps": STEPS, "source_prompt": "a dog"},
        {"prompt": "a cat", "seed": 2, "steps": STEPS, "source_prompt": "a dog"},
    ]
    together = editor.edit_many(picture(), variants, method="diffedit")
    for variant, result in zip(variants, together, strict=True):
        alone = edit(editor, variant["prompt"], seed=variant["seed"])
        assert torch.allclose(alone.latent, result.latent, atol=1e-4)  # batched kernels
        assert torch.equal(alone.mask, result.mask)


def test_unet_rows_and_calls(editor):
    """Mask: source and target rows of every draw in one call; the inversion (guided, a
    source prompt) and the denoising: 8 steps each, two rows a step."""
    calls = []
    editor.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    result = edit(editor, num_maps_per_mask=4)
    assert calls[0] == 2 * 4 and len(calls) == 1 + 8 + 8
    assert result.unet_evals == 8 + 8 * 2 + 8 * 2
    calls.clear()
    unguided = edit(editor, source_prompt="", num_maps_per_mask=4)
    assert unguided.unet_evals == 8 + 8 + 8 * 2  # the empty prompt: guidance changes nothing


def test_the_inversion_cache_serves_other_prompts_and_seeds_with_the_posterior_mean(editor):
    edit(editor, seed=1, posterior="mean")
    hits = editor.inversion_cache_hits
    second = edit(editor, "a cat", seed=2, posterior="mean")
    assert editor.inversion_cache_hits == hits + 1
    assert second.unet_evals == 2 * 10 + 8 * 2  # mask and denoising only
    edit(editor, seed=2)  # posterior samples: a new draw, a new inversion
    assert editor.inversion_cache_hits == hits + 1
    edit(editor, seed=2)  # the same seed draws the same sample
    assert editor.inversion_cache_hits == hits + 2


def test_a_partial_inversion_is_the_tail_of_the_full_one_and_is_served_from_it(editor):
    reference = editor.encode(images.to_tensor(picture(), (32, 32)))
    full = editor.engine.invert(reference, "a dog", STEPS, guidance=7.5)
    hits = editor.inversion_cache_hits
    tail = editor.engine.invert(reference, "a dog", STEPS, guidance=7.5, first_step=2)
    assert editor.inversion_cache_hits == hits + 1
    assert len(tail) == STEPS - 2 + 1 and all(a is b for a, b in zip(tail, full[2:], strict=True))
    editor.clear_inversion_cache()
    alone = editor.engine.invert(reference, "a dog", STEPS, guidance=7.5, first_step=2)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(alone, tail, strict=True))
    unguided = editor.engine.invert(reference, "a dog", STEPS, first_step=2)
    assert not torch.allclose(unguided[0], alone[0])  # the guidance is part of the key


@pytest.mark.parametrize("blend", ["paper", "diffusers"])
def test_outside_the_mask_the_output_is_the_inversion(editor, blend):
    """paper: the input's latent itself; diffusers: the first inverted latent (the level
    above the input), as the pipeline's last ``image_latents[i]`` is."""
    result = edit(editor, posterior="mean", blend=blend)
    outside = result.mask[0] == 0
    assert outside.any() and not outside.all()
    reference = editor.encode(images.to_tensor(picture(), (32, 32)))
    first = STEPS - int(STEPS * 0.8)
    trajectory = editor.engine.invert(reference, "a dog", STEPS, guidance=7.5, first_step=first)
    expected = trajectory[-1] if blend == "paper" else trajectory[-2]
    assert torch.allclose(result.latent[0][:, outside], expected[0][:, outside], atol=1e-6)
    assert not torch.allclose(result.latent[0][:, ~outside], expected[0][:, ~outside])


def test_posterior_samples_move_the_latent_and_the_mean_does_not():
    ed = tiny_editor()
    pixels = images.to_tensor(picture(), (32, 32))
    noise = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    samples = ed.engine.encode(pixels, noise)
    assert samples.shape == (3, 4, 16, 16)
    assert not torch.allclose(samples[0], samples[1])
    assert torch.allclose(ed.engine.encode(pixels, torch.zeros(1, 4, 16, 16)), ed.encode(pixels))


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("sampler", ["ancestral", "lcm", "tcd"])
def test_a_stochastic_sampler_is_refused(editor, sampler):
    with pytest.raises(ParameterError, match="diffedit inverts the image.*--sampler ddim"):
        edit(editor, sampler=sampler)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mask_encode_strength": 0.05}, "mask_encode_strength 0.05 with 10 steps leaves no step"),
        ({"inpaint_strength": 0.09}, "inpaint_strength 0.09 with 10 steps leaves no step"),
        ({"num_maps_per_mask": 0}, "num_maps_per_mask must be in"),
        ({"mask_thresholding_ratio": 0.0}, "mask_thresholding_ratio must be > 0"),
        ({"blend": "average"}, "blend must be one of diffusers, paper"),
        ({"posterior": "mode"}, "posterior must be one of sample, mean"),
        ({"source_prompt": "a red cat"}, "give a source_prompt other than the prompt"),
    ],
)
def test_bad_options_are_refused(editor, options, message):
    with pytest.raises(ParameterError, match=message):
        edit(editor, **options)


# ------------------------------------------------------------------ against diffusers
@pytest.mark.parametrize("final_step", ["clean", "scheduler"])
def test_at_its_defaults_it_is_diffusers_pipeline(final_step):
    """diffusers' StableDiffusionDiffEditPipeline on the same components, its DDIM
    scheduler ending and its inverse scheduler starting where the loop's last step lands
    (alpha 1; with ``final_step="scheduler"`` the config's alphas_cumprod[0], i.e. the
    pipeline exactly as built from the model's config): the same masks and, to float
    rounding, the same latents."""
    one = final_step == "clean"
    diffusers = pytest.importorskip("diffusers")
    if not hasattr(diffusers, "StableDiffusionDiffEditPipeline"):
        pytest.skip("this diffusers no longer ships StableDiffusionDiffEditPipeline")
    vae, text_encoder, tokenizer, unet, scheduler = tiny_components()
    pipe = diffusers.StableDiffusionDiffEditPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=diffusers.DDIMScheduler.from_config(scheduler.config, set_alpha_to_one=one),
        inverse_scheduler=diffusers.DDIMInverseScheduler.from_config(
            scheduler.config, set_alpha_to_one=one
        ),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    image, seed = picture(), 7
    generator = torch.Generator().manual_seed(seed)
    common = {"num_inference_steps": STEPS, "generator": generator}
    with torch.no_grad():
        mask = pipe.generate_mask(
            image=image, source_prompt="a dog", target_prompt="a red cat", **common
        )
        latents = pipe.invert(prompt="a dog", image=image, **common).latents
        theirs = pipe(
            prompt="a red cat", mask_image=mask, image_latents=latents, output_type="latent",
            **common,
        ).images  # fmt: skip
    ours = edit(tiny_editor(final_step=final_step), seed=seed)
    assert np.array_equal(ours.mask.numpy(), mask.astype(np.float32))
    assert torch.allclose(ours.latent, theirs.float(), atol=1e-4)
