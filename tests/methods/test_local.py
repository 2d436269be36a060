"""Mask-aware LASPA (laspa.methods.local) on the tiny random model: the region's soft edge,
exactness at weight 1, reduction to laspa-x0, determinism, batching, every sampler."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import ParameterError, images
from laspa.methods.local import _InstantOptions, instant_region, soft_edge
from laspa.samplers import SAMPLERS
from laspa.testing import tiny_editor

STEPS = 6


def picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def ed():
    return tiny_editor()


def edit(ed, prompt="a red cat", **options):
    return ed.edit(picture(), prompt, method="laspa-local", **{"steps": STEPS, **options})


# ------------------------------------------------------------------ the soft edge, by hand
def test_the_soft_edge_keeps_the_region_at_one_and_fades_outward():
    mask = torch.zeros(1, 1, 12, 12)
    mask[..., 4:8, 4:8] = 1
    soft = soft_edge(mask, 1)
    assert soft.shape == mask.shape
    assert (soft[..., 4:8, 4:8] == 1).all()
    assert 0 < soft[0, 0, 3, 5] < 1 and 0 < soft[0, 0, 5, 8] < 1  # next to the region
    assert soft[0, 0, 0, 0] == 0 and soft[0, 0, 11, 11] == 0  # far from it
    assert torch.equal(soft_edge(mask, 0), mask)  # edge 0: the hard region


# ------------------------------------------------------------------ changed words, by hand
def scene_maps() -> torch.Tensor:
    """(h, w, tokens) maps of "<start> cat snowy": the start token and "snowy" on the
    background, "cat" on an object in the middle."""
    background = torch.ones(12, 12)
    background[4:8, 4:8] = 0
    return torch.stack([background, 1 - background, background + 0.1], dim=-1)


@pytest.mark.parametrize(
    ("changed", "covers"),
    [
        ([], "object"),  # no caption: the instant mask, the index word's object
        ([1], "everything"),  # only the background word changes: the background joins
        ([0], "object"),  # an object word: its own map joins (the same object here)
        ([0, 1], "object"),  # a mixed change: the background word is not taken to change
    ],
)
def test_the_changed_words_set_what_joins_the_instant_region(changed, covers):
    words, texts = [(1,), (2,)], ["cat", "snowy"]
    region = instant_region(words, texts, _InstantOptions(0.2, 0.9, 0.6), changed)
    mask = region(scene_maps(), (12, 12))
    assert mask[4:8, 4:8].all()  # the object is always in the region
    assert bool(mask[0, 0]) == (covers == "everything")


def test_the_background_decision_is_kept_from_the_first_call():
    region = instant_region([(1,), (2,)], ["cat", "snowy"], _InstantOptions(0.2, 0.9, 0.6), [1])
    assert region(scene_maps(), (12, 12)).all()
    swapped = scene_maps()
    swapped[..., 2] = swapped[..., 1]  # "snowy" now on the object: decided already
    assert region(swapped, (12, 12))[0, 0] == 1  # the background still joins


# ------------------------------------------------------------------ the method
@pytest.mark.parametrize("region", ["instant", "change"])
def test_the_mask_is_one_latent_sized_map_in_zero_one(ed, region):
    result = edit(ed, region=region, change="cat")
    assert result.mask.shape == (1, *result.latent.shape[-2:])
    assert float(result.mask.min()) >= 0 and float(result.mask.max()) == 1
    assert torch.isfinite(result.latent).all()


def test_weight_one_everywhere_reproduces_the_input(ed):
    image = picture()
    result = ed.edit(
        image, "a red cat", method="laspa-local", steps=8,
        beta_out=1.0, K_out=0, beta_in=1.0, K_in=0,
    )  # fmt: skip
    reference = ed.encode(images.to_tensor(image, image.size))
    torch.testing.assert_close(result.latent, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["ddim", "tcd"])
def test_equal_strength_inside_and_out_is_laspa_x0_bit_for_bit(ed, sampler):
    image = picture(1)
    common = {"steps": STEPS, "seed": 3, "sampler": sampler}
    x0 = ed.edit(image, "a blue dog", method="laspa-x0", K=300, beta=0.7, **common)
    local = ed.edit(
        image, "a blue dog", method="laspa-local",
        beta_out=0.7, K_out=300, beta_in=0.7, K_in=300, **common,
    )  # fmt: skip
    assert torch.equal(local.latent, x0.latent)
    assert not local.mask.any()  # the region was never read


def test_a_source_prompt_that_changes_nothing_is_no_source_prompt(ed):
    plain = edit(ed, seed=1)
    for caption in ("a red cat", "A Red Cat"):
        assert torch.equal(edit(ed, seed=1, source_prompt=caption).latent, plain.latent)
    changed = edit(ed, seed=1, source_prompt="a green dog")
    assert torch.isfinite(changed.latent).all() and changed.mask.max() == 1


def test_a_weaker_inside_changes_the_edit(ed):
    same = edit(ed, beta_in=1.0, K_in=0)
    weak = edit(ed, beta_in=0.0)
    assert not torch.equal(same.latent, weak.latent)


def test_same_seed_same_bytes(ed):
    def png(seed):
        buffer = io.BytesIO()
        edit(ed, "a blue dog", seed=seed).image.save(buffer, "PNG")
        return buffer.getvalue()

    first = png(0)
    assert png(0) == first
    assert png(1) != first


def test_a_batch_equals_its_edits_run_alone(ed):
    image = picture(3)
    variants = [
        {"prompt": "a red cat", "seed": 0, "guidance": 7.5},
        {"prompt": "a blue dog", "seed": 5, "beta_in": 0.3, "K_in": 500, "edge": 0},
        {"prompt": "a red cat on grass", "seed": 9, "region": "change", "change": "grass"},
    ]
    for v in variants:
        v["steps"] = STEPS
    batched = ed.edit_many(image, variants, method="laspa-local")
    for variant, result in zip(variants, batched, strict=True):
        alone = ed.edit(image, method="laspa-local", **variant)
        # batched convolutions round differently; relative to the latents' scale
        scale = alone.latent.abs().max()
        assert (result.latent - alone.latent).abs().max() <= 1e-4 * scale
        assert torch.equal(result.mask, alone.mask)
        assert result.unet_evals == 2 * STEPS  # one generation's cost: uncond + cond


# the flow sampler runs on flow models: tests/engine/test_flow.py runs laspa-local on SD3
@pytest.mark.parametrize("sampler", sorted(s for s in SAMPLERS if "unet" in SAMPLERS[s].kinds))
def test_every_sampler_runs(ed, sampler):
    result = edit(ed, sampler=sampler, seed=2)
    assert torch.isfinite(result.latent).all()
    assert result.mask is not None


def test_the_change_region_needs_a_word_of_the_prompt(ed):
    with pytest.raises(ParameterError, match="change word"):
        edit(ed, region="change")
    with pytest.raises(ParameterError, match="change"):
        edit(ed, region="change", change="zebra")


def test_the_change_option_selects_the_change_region():
    from laspa.methods.options import mix_words

    assert mix_words("laspa-local", None, "sofa") == {"change": "sofa", "region": "change"}
