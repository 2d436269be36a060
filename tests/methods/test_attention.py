"""Attention processors and hooks, attention maps, laspa-mix, InstDiffEdit and FPE plumbing."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image

from laspa import ParameterError
from laspa.attention import (
    CrossAttentionStore,
    LayerInfo,
    ProbabilityReplacement,
    SelfAttentionReplace,
    StepInfo,
    coarse_cross_levels,
    describe_layers,
    self_attention_level,
)
from laspa.images import to_tensor
from laspa.loop import Conditioning, sample
from laspa.masks import DEFAULT_PHI
from laspa.methods import EditBatch, EditRow, make_params
from laspa.methods.fpe import FPE, replaced_layers
from laspa.methods.instdiffedit import MaskedDenoising
from laspa.methods.mixing import SemanticMixing
from laspa.testing import tiny_components, tiny_editor
from laspa.tokens import positions_of, token_alignment, word_tokens


def picture(seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def test_processor_without_hooks_equals_diffusers_default():
    ed = tiny_editor()
    x = torch.randn(2, 4, 16, 16)
    text = ed.text_embeddings(["a red cat", "a dog"])
    with torch.no_grad():
        ours = ed.unet(x, 500, encoder_hidden_states=text).sample
        _, _, _, unet, _ = tiny_components()
        unet.set_attn_processor(AttnProcessor2_0())
        theirs = unet(x, 500, encoder_hidden_states=text).sample
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_explicit_probabilities_path_equals_the_fused_path():
    """A hook that only looks forces softmax(QK^T) in every layer: same output."""
    ed = tiny_editor()
    x = torch.randn(1, 4, 16, 16)
    cond = Conditioning(ed.text_embeddings(["a red cat"]), ed.text_embeddings([""]), 5.0)
    fused = ed.denoiser.eps(x, 700, cond, StepInfo())

    class LookEverywhere(ProbabilityReplacement):
        def wants(self, layer, step):
            return True

        def replace_probabilities(self, layer, step, probs):
            return probs

    ed.attention.hooks = [LookEverywhere()]
    explicit = ed.denoiser.eps(x, 700, cond, StepInfo())
    ed.attention.hooks = []
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)


def test_layers_are_described_in_forward_order():
    ed = tiny_editor()
    layers = sorted(describe_layers(ed.unet).values(), key=lambda info: info.order)
    assert [info.place for info in layers][:4] == ["down"] * 4
    assert layers[0].is_self and layers[1].is_cross and layers[0].downsample == 1
    assert {info.downsample for info in layers if info.place == "mid"} == {2}
    assert [info.kind_order for info in layers if info.is_self] == list(range(len(layers) // 2))


def test_stored_maps_are_probabilities_over_tokens():
    ed = tiny_editor()
    store = ed.engine.attention_store()
    ed.attention.hooks = [store]
    cond = Conditioning(ed.text_embeddings(["a red cat"] * 2), ed.text_embeddings([""] * 2), 5.0)
    for index in range(3):
        ed.denoiser.eps(torch.randn(2, 4, 16, 16), 900 - index * 100, cond, StepInfo(index=index))
    ed.attention.hooks = []
    maps = store.mean()
    assert maps.shape == (2, 8, 8, ed.tokenizer.model_max_length)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 8, 8))
    assert store.steps_recorded == 3


def test_stored_self_attention_is_an_affinity_one_level_finer_than_the_maps():
    ed = tiny_editor()
    layers = describe_layers(ed.unet)
    assert coarse_cross_levels(layers) == {2}
    assert self_attention_level(layers, {2}) == 1  # the 16x16 level under the 8x8 maps
    assert self_attention_level(layers, {1}) == 1  # nothing finer: the map level itself
    store = ed.engine.self_attention_store()
    ed.attention.hooks = [store]
    cond = Conditioning(ed.text_embeddings(["a red cat"] * 2), ed.text_embeddings([""] * 2), 5.0)
    step = StepInfo(rows=2, uncond_rows=2, latent_hw=(16, 16))
    for index in range(2):
        step.index = index
        ed.denoiser.eps(torch.randn(2, 4, 16, 16), 900 - index * 100, cond, step)
    ed.attention.hooks = []
    affinity = store.mean()
    assert affinity.shape == (2, 256, 256) and store.grid((16, 16)) == (16, 16)
    torch.testing.assert_close(affinity.sum(-1), torch.ones(2, 256))
    assert store.steps_recorded == 2


def test_an_observer_keeps_fused_attention_and_sees_the_explicit_probabilities():
    """The self-attention store only observes: the UNet output is bit-identical to a run
    without hooks, and what it records equals the conditional rows' probabilities that
    the explicit path computes."""

    class ExplicitRecorder(ProbabilityReplacement):  # takes the explicit path
        def __init__(self, level):
            self.level, self.maps = level, []

        def wants(self, layer, step):
            return layer.is_self and layer.downsample == self.level

        def replace_probabilities(self, layer, step, probs):
            self.maps.append(probs[step.half(probs.shape[0])].mean(1))
            return probs

    ed = tiny_editor()
    x = torch.randn(2, 4, 16, 16)
    cond = Conditioning(ed.text_embeddings(["a red cat"] * 2), ed.text_embeddings([""] * 2), 5.0)
    step = StepInfo(rows=2, uncond_rows=2, latent_hw=(16, 16))
    plain = ed.denoiser.eps(x, 700, cond, step)
    store = ed.engine.self_attention_store()
    ed.attention.hooks = [store]
    observed = ed.denoiser.eps(x, 700, cond, step)
    recorder = ExplicitRecorder(store.level)
    ed.attention.hooks = [recorder]
    ed.denoiser.eps(x, 700, cond, step)
    ed.attention.hooks = []
    assert torch.equal(observed, plain)
    torch.testing.assert_close(store.current(), torch.stack(recorder.maps).mean(0))


def test_word_to_token_mapping_with_multi_token_words():
    ed = tiny_editor()
    tokenizer = ed.tokenizer  # knows "cat" and "red" as one token each, not "zebra"
    prompt = "a red zebra, cat"
    words = word_tokens(tokenizer, prompt)
    assert [w.word for w in words] == ["a", "red", "zebra", ",", "cat"]
    zebra = len(tokenizer("zebra", add_special_tokens=False).input_ids)
    assert zebra > 1 and len(words[2].positions) == zebra
    flat = [p for w in words for p in w.positions]
    assert flat == list(range(1, len(flat) + 1))
    ids = tokenizer(prompt).input_ids
    assert len(ids) == len(flat) + 2
    assert positions_of(tokenizer, prompt, "cat") == (len(flat),)
    assert positions_of(tokenizer, prompt, "red zebra") == (2, *words[2].positions)
    with pytest.raises(ValueError, match="does not occur"):
        positions_of(tokenizer, prompt, "dog")
    mapping = token_alignment(tokenizer, "a photo of a cat", "a photo of a red dog")
    assert mapping[:5] == [0, 1, 2, 3, 4] and mapping[5] == mapping[6] == -1


def test_attention_maps_of_every_word_and_of_chosen_words():
    ed = tiny_editor()
    maps = ed.attention_maps(picture(), "a red cat on a blue background", steps=4)
    assert list(maps) == ["a", "red", "cat", "on", "blue", "background"]
    for m in maps.values():
        assert m.shape == (16, 16) and m.min() == 0 and m.max() == pytest.approx(1)
    chosen = ed.attention_maps(picture(), "a red cat", words=["cat", "red cat"], steps=4)
    assert list(chosen) == ["cat", "red cat"]
    with pytest.raises(ParameterError, match="does not occur"):
        ed.attention_maps(picture(), "a red cat", words=["dog"], steps=4)


def test_laspa_mix_runs_two_branches_and_returns_a_mask():
    ed = tiny_editor()
    result = ed.edit(picture(), "a red cat on a blue background", method="laspa-mix",
                     subject="cat", steps=5, K=100)  # fmt: skip
    assert result.unet_evals == 20  # 5 steps x 2 branches x CFG
    assert result.mask.shape == (1, 16, 16) and 0 <= result.mask.min() <= result.mask.max() <= 1
    with pytest.raises(ParameterError, match="subject"):
        ed.edit(picture(), "a red cat", method="laspa-mix", subject="dog", steps=2)
    with pytest.raises(ParameterError, match=r"needs a subject word \(--subject\) or a change"):
        ed.edit(picture(), "a red cat", method="laspa-mix", steps=2)


def test_laspa_mix_keeps_the_subject_region_or_all_but_the_changed_region():
    """The free rows take the aligned latent where the subject's map is (the paper), or
    everywhere but the changed word's map (keep=rest)."""
    token_maps = torch.zeros(2, 4, 4, 3)
    token_maps[:, :2, :, 1] = 1.0  # word 1 covers the top half

    class Store:
        def current(self):
            return token_maps

    hooks = SemanticMixing(
        reference=torch.zeros(1, 1, 4, 4), weight=None, direction=[], store=Store(),
        mask_words=[(1,), (1,)],
        K=torch.tensor([0, 0]), hard=torch.tensor([False, False]),
        threshold=torch.tensor([0.5, 0.5]), rest=torch.tensor([False, True]),
    )  # fmt: skip
    aligned, free = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    step = SimpleNamespace(t=520, t_prev=500)
    mixed = hooks.after_step(step, torch.cat([aligned, free]))[2:]
    top = torch.zeros(4, 4)
    top[:2] = 1
    assert torch.equal(mixed[0, 0], top)  # subject: keep its region from the aligned branch
    assert torch.equal(mixed[1, 0], 1 - top)  # rest: keep all but the changed region
    assert torch.equal(hooks.mask[1, 0], top)  # the mask shown is the word's region


def test_laspa_mix_change_word_checks():
    ed = tiny_editor()
    result = ed.edit(picture(), "a red cat on a blue background", method="laspa-mix",
                     keep="rest", change="background", steps=3, K=100)  # fmt: skip
    assert result.mask.shape == (1, 16, 16)
    with pytest.raises(ParameterError, match="needs a change word"):
        ed.edit(picture(), "a red cat", method="laspa-mix", keep="rest", steps=2)
    with pytest.raises(ParameterError, match="subject acts only with keep=subject"):
        ed.edit(picture(), "a red cat", method="laspa-mix", keep="rest", subject="cat", steps=2)
    with pytest.raises(ParameterError, match="change: the word 'dog' does not occur"):
        ed.edit(picture(), "a red cat", method="laspa-mix", keep="rest", change="dog", steps=2)


def test_laspa_mix_with_k_at_the_top_is_plain_ddim_on_the_prompt():
    """No step has t > K: no alignment, mixing or swap; the free branch is plain DDIM."""
    ed = tiny_editor()
    mixed = ed.edit(picture(), "a red cat", method="laspa-mix", subject="cat", K=1000, steps=5)
    plain = ed.edit(picture(), "a red cat", method="generate", steps=5)
    torch.testing.assert_close(mixed.latent, plain.latent, atol=1e-4, rtol=1e-4)


def test_blending_with_an_all_zero_mask_returns_the_source():
    ed = tiny_editor()
    reference = ed.encode(torch.rand(1, 3, 32, 32) * 2 - 1)
    noise = torch.randn_like(reference)
    hooks = MaskedDenoising(reference, noise, torch.zeros(1, 1, 16, 16))
    cond = Conditioning(ed.text_embeddings(["a cat"]), ed.text_embeddings([""]), 7.5)
    out = sample(ed.denoiser, torch.randn_like(reference), ed.denoiser.steps(5), cond, hooks)
    torch.testing.assert_close(out, reference)


def test_instdiffedit_returns_a_binary_mask_and_costs_what_the_table_says():
    ed = tiny_editor()
    result = ed.edit(picture(), "a red cat", method="instdiffedit", steps=10,
                     final_pass="inpaint")  # fmt: skip
    # mask loop: 5 steps x 3 seeds x CFG; inpainting at strength 1: 10 steps x CFG
    assert result.unet_evals == 5 * 3 * 2 + 10 * 2
    assert set(result.mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("smoothing", ["blur", "snap", "spread"])
@pytest.mark.parametrize("seeds", [1, 3])
def test_instdiffedit_final_pass_loop_keeps_the_mask_loop_result(seeds, smoothing):
    ed = tiny_editor()
    result = ed.edit(picture(), "a red cat", method="instdiffedit", steps=10,
                     final_pass="loop", noise_seeds=seeds, smoothing=smoothing)  # fmt: skip
    assert result.unet_evals == 5 * seeds * 2  # no second pass
    assert set(result.mask.unique().tolist()) <= {0.0, 1.0}
    # phi = 1 masks nothing: the loop blends back to the input's latent exactly
    unmasked = ed.edit(picture(), "a red cat", method="instdiffedit", steps=10,
                       final_pass="loop", noise_seeds=seeds, phi=1.0,
                       smoothing=smoothing)  # fmt: skip
    assert not unmasked.mask.any()
    torch.testing.assert_close(unmasked.latent, ed.encode(to_tensor(picture(), (32, 32))))


@pytest.mark.parametrize("smoothing", ["blur", "snap", "spread"])
def test_instdiffedit_threshold_default_follows_the_smoothing(smoothing):
    ed = tiny_editor()
    common = dict(method="instdiffedit", steps=10, noise_seeds=1, smoothing=smoothing)
    default = ed.edit(picture(), "a red cat", **common)
    explicit = ed.edit(picture(), "a red cat", phi=DEFAULT_PHI[smoothing], **common)
    assert DEFAULT_PHI == {"blur": 0.2, "snap": 0.35, "spread": 0.35}
    assert torch.equal(default.mask, explicit.mask)
    assert torch.equal(default.latent, explicit.latent)
    assert default.params["phi"] == DEFAULT_PHI[smoothing]  # reported as used


def test_instdiffedit_reports_its_index_word_and_its_maps_on_request():
    ed = tiny_editor()
    seen = ed.edit(picture(), "a red cat", method="instdiffedit", steps=10, noise_seeds=2,
                   record_attention=True)  # fmt: skip
    assert seen.notes["index_word"] in {"red", "cat"}  # "a" is a function word
    assert set(seen.attention) == {"a", "red", "cat"}
    plain = ed.edit(picture(), "a red cat", method="instdiffedit", steps=10, noise_seeds=2)
    assert plain.attention == {} and plain.notes == seen.notes
    assert torch.equal(plain.mask, seen.mask) and torch.equal(plain.latent, seen.latent)


def test_instdiffedit_with_an_inpainting_checkpoint(tmp_path):
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    vae, text_encoder, tokenizer, unet, scheduler = tiny_components()
    config = dict(unet.config)
    config["in_channels"] = 9
    inpaint_unet = UNet2DConditionModel.from_config(config)
    StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=inpaint_unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(tmp_path / "inpaint", safe_serialization=True)  # fmt: skip
    ed = tiny_editor()
    result = ed.edit(picture(), "a red cat", method="instdiffedit", steps=10,
                     inpaint_model=str(tmp_path / "inpaint"))  # fmt: skip
    assert result.image.size == (32, 32)
    assert result.unet_evals == 5 * 3 * 2 + 10 * 2


def test_instdiffedit_guidance_sweep_with_an_inpainting_checkpoint_decodes_with_its_vae(
    tmp_path,
):
    """Issue #30: guidance is no batch key, yet the pipeline takes one scale; and the
    checkpoint's latents are decoded by the checkpoint's VAE, not the base model's."""
    from diffusers import AutoencoderKL

    from laspa.images import to_pil
    from laspa.testing import save_tiny_inpaint_model

    folder = save_tiny_inpaint_model(tmp_path / "inpaint")
    ed = tiny_editor()
    common = {"prompt": "a red cat", "steps": 4, "noise_seeds": 1, "inpaint_model": str(folder)}
    sweep = ed.edit_many(
        picture(), [{**common, "guidance": g} for g in (1.5, 7.5, 1.5)], "instdiffedit"
    )
    assert [r.params["guidance"] for r in sweep] == [1.5, 7.5, 1.5]
    assert torch.equal(sweep[0].latent, sweep[2].latent)  # one scale, one result
    assert not torch.equal(sweep[0].latent, sweep[1].latent)
    alone = ed.edit(picture(), method="instdiffedit", **{**common, "guidance": 7.5})
    assert torch.allclose(alone.latent, sweep[1].latent, atol=1e-5)

    theirs = AutoencoderKL.from_pretrained(folder / "vae")
    with torch.no_grad():
        pixels = theirs.decode(sweep[1].latent / theirs.config.scaling_factor).sample
    expected = np.asarray(to_pil(pixels, (32, 32))[0], float)
    shown = np.asarray(sweep[1].image, float)
    by_base = np.asarray(to_pil(ed.decode(sweep[1].latent), (32, 32))[0], float)
    assert np.abs(shown - expected).max() <= 1
    assert np.abs(shown - by_base).mean() > 1


def test_laspa_mix_mixes_the_latents_at_timesteps_above_k_only():
    """Eq. 10 mixes x_t for t > K: the step from t=220 to 180 with K=200 leaves the free
    latent x_180 alone (the maps of t=220 still steer its swap); from 240 to 220 it mixes."""
    token_maps = torch.ones(1, 4, 4, 2)
    token_maps[0, :2, :, 1] = 0  # the word covers the bottom half

    class Store:
        def current(self):
            return token_maps

    hooks = SemanticMixing(
        reference=torch.zeros(1, 1, 4, 4), weight=None, direction=[], store=Store(),
        mask_words=[(1,)],
        K=torch.tensor([200.0]), hard=torch.tensor([False]), threshold=torch.tensor([0.5]),
        rest=torch.tensor([False]),
    )  # fmt: skip
    latents = torch.cat([torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)])
    below = hooks.after_step(SimpleNamespace(t=220, t_prev=180), latents)
    assert torch.equal(below, latents)
    above = hooks.after_step(SimpleNamespace(t=240, t_prev=220), latents)
    assert torch.equal(above[1, 0], hooks.mask[0, 0]) and above[1].sum() > 0


def fpe_batch(ed, prompts, **params):
    reference = ed.encode(to_tensor(picture(), (32, 32)))
    rows = [EditRow(p, 0, make_params("fpe", params)) for p in prompts]
    return EditBatch(reference, rows)


def test_fpe_with_no_replacement_equals_ddim_inversion_with_the_target_prompt():
    ed = tiny_editor()
    fpe = ed.edit(picture(), "a red cat", method="fpe", steps=8, replace_fraction=0.0)
    inversion = ed.edit(picture(), "a red cat", method="ddim-inversion", steps=8, guidance=7.5)
    scale = inversion.latent.abs().max()
    assert (fpe.latent - inversion.latent).abs().max() <= 1e-4 * scale


def test_fpe_target_equal_to_source_reproduces_the_source_branch():
    ed = tiny_editor()
    batch = fpe_batch(ed, ["a red cat"], steps=6, source_prompt="a red cat")
    output = FPE().run(ed.engine, batch)
    torch.testing.assert_close(output.latents, output.extras["source_latents"])


@pytest.mark.parametrize("preset", ["code", "paper"])
def test_fpe_replaces_only_in_the_chosen_layers_and_steps(preset):
    ed = tiny_editor()
    batch = fpe_batch(ed, ["a red cat", "a dog"], steps=10, replace_fraction=0.5, layers=preset)
    output = FPE().run(ed.engine, batch)
    layers = replaced_layers(ed.engine.layers, preset)
    calls = output.extras["replacements"]
    assert {name for name, _ in calls} == layers
    assert sorted({step for _, step in calls}) == [0, 1, 2, 3, 4]
    assert len(calls) == len(layers) * 5
    self_layers = [info for info in describe_layers(ed.unet).values() if info.is_self]
    chosen = [info for info in self_layers if info.name in layers]
    if preset == "code":  # every layer coarser than the finest level
        assert chosen and all(info.downsample > 1 for info in chosen)
    else:  # the proportional range of SD's 4..14 of 16
        n = len(self_layers)
        expected = [i for i in range(n) if round(4 * n / 16) <= i <= round(14 * n / 16)]
        assert [info.kind_order for info in chosen] == expected


def test_fpe_counts_replacement_steps_with_int_like_the_released_code():
    """int(0.5 * 7) = 3 replaced steps (round would give 4)."""
    ed = tiny_editor()
    output = FPE().run(ed.engine, fpe_batch(ed, ["a dog"], steps=7, replace_fraction=0.5))
    assert sorted({step for _, step in output.extras["replacements"]}) == [0, 1, 2]


def test_self_attention_replacement_by_queries_and_keys_equals_replacing_the_maps():
    """softmax(Q_s K_s^T) V_t: FPE's fused replacement is the explicit one."""
    layer = LayerInfo("x", "down", 0, 0, False, 2)
    step = StepInfo(index=0, rows=3, uncond_rows=2, latent_hw=(8, 8))
    query, key, value = (torch.randn(5, 2, 16, 8) for _ in range(3))
    hook = SelfAttentionReplace({"x"}, last_step=1, sources=[0, 0], targets=[1, 2])
    assert hook.wants(layer, step)
    swapped_query, swapped_key = hook.query_key(layer, step, query, key)
    fused = torch.nn.functional.scaled_dot_product_attention(swapped_query, swapped_key, value)
    probs = (query @ key.transpose(-1, -2) / 8**0.5).softmax(-1)
    probs[[3, 4]] = probs[[2, 2]]  # conditional half starts at row 2 (2 uncond rows)
    torch.testing.assert_close(fused, probs @ value)
    torch.testing.assert_close(
        fused[:3], (query[:3] @ key[:3].transpose(-1, -2) / 8**0.5).softmax(-1) @ value[:3]
    )


def test_unguided_leading_rows_get_their_conditional_eps_and_the_rest_are_guided():
    ed = tiny_editor()
    x = torch.randn(3, 4, 16, 16)
    text = ed.text_embeddings(["", "a red cat", "a dog"])
    uncond = ed.text_embeddings([""]).expand_as(text)
    guidance = torch.tensor([1.0, 7.5, 3.0]).view(-1, 1, 1, 1)
    full = ed.denoiser.eps(x, 500, Conditioning(text, uncond, guidance), StepInfo())
    mixed = ed.denoiser.eps(x, 500, Conditioning(text, uncond, guidance, 1), StepInfo())
    alone = ed.denoiser.eps(x[:1], 500, Conditioning(text[:1]), StepInfo())
    torch.testing.assert_close(mixed[1:], full[1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixed[:1], alone, atol=1e-5, rtol=1e-4)


def test_fpe_inverts_once_per_image():
    ed = tiny_editor()
    first = ed.edit(picture(), "a red cat", method="fpe", steps=6)
    second = ed.edit(picture(), "a blue dog", method="fpe", steps=6)
    assert ed.inversion_cache_hits == 1
    # inversion: 1 row per step; then the source row (prompt "", no guidance) + 2 target rows
    assert first.unet_evals == 6 + 6 * 3 and second.unet_evals == 6 * 3
    reference = ed.encode(to_tensor(picture(), (32, 32)))
    trajectory = ed.engine.invert(reference, "", 6)
    assert ed.inversion_cache_hits == 2
    again = tiny_editor().engine.invert(reference, "", 6)
    for cached, new in zip(trajectory, again, strict=True):
        torch.testing.assert_close(cached, new)


def test_store_rows_and_conditional_half():
    store = CrossAttentionStore({2}, rows=slice(0, 1))
    step = StepInfo(index=0, rows=2, uncond_rows=2, latent_hw=(16, 16))
    layer = LayerInfo("x", "down", 1, 0, True, 2)
    probs = torch.zeros(4, 2, 64, 5)
    probs[..., 0] = 1  # uncond rows attend to token 0
    probs[2, ..., 0], probs[2, ..., 3] = 0, 1  # cond row 0 attends to token 3
    probs[3, ..., 0], probs[3, ..., 4] = 0, 1
    store.replace_probabilities(layer, step, probs)
    maps = store.current()
    assert maps.shape == (1, 8, 8, 5) and torch.all(maps[..., 3] == 1)
