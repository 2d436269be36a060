"""The miniature trainer's attention-supervision loss, on tiny random components."""

from __future__ import annotations

import numpy as np
import torch

from laspa.attention import describe_layers
from laspa.testing import tiny_components
from laspa.world import Scene, SceneObject, caption, named_caption, sample_scene
from laspa.world.render import footprint
from laspa_train.data import brief_selection, caption_regions, make_batch
from laspa_train.train import (
    AttentionLoss,
    AttentionTargets,
    attention_region_loss,
    attention_targets,
    diffusion_loss,
    unet_loss,
)

SCENE = Scene(
    "gray",
    (
        SceneObject("circle", "red", "large", "top left"),
        SceneObject("star", "blue", "small", "center"),
    ),
)


def _batch(n: int = 3, seed: int = 0):
    vae, text_encoder, tokenizer, unet, scheduler = tiny_components(seed)
    rng = np.random.default_rng(seed)
    scenes = [SCENE] + [sample_scene(rng) for _ in range(n - 1)]
    ids = tokenizer(
        [caption(s) for s in scenes],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    latents = torch.randn(n, 4, 16, 16)
    return text_encoder, tokenizer, unet, scheduler, scenes, ids, latents


def test_caption_regions_name_the_right_words() -> None:
    words = caption(SCENE).split()
    regions = caption_regions(SCENE, 64)
    assert [(words[i], w) for i, w, _ in regions] == [(w, w) for _, w, _ in regions]
    assert [w for _, w, _ in regions] == ["large", "red", "circle", "small", "blue", "star", "gray"]
    circle = footprint(SCENE.objects[0], 64)
    np.testing.assert_array_equal(regions[2][2] > 0, circle)
    background = regions[-1][2] > 0
    assert not (background & circle).any() and background.sum() > 0.8 * 64 * 64


def test_brief_caption_regions_follow_the_named_objects() -> None:
    circle, star = SCENE.objects
    regions = caption_regions(SCENE, 64, named=(star,))
    words = named_caption(SCENE, (star,)).split()
    assert words[:4] == ["a", "small", "blue", "star"] and "circle" not in words
    assert [(words[i], w) for i, w, _ in regions] == [(w, w) for _, w, _ in regions]
    assert [w for _, w, _ in regions] == ["small", "blue", "star", "gray"]
    # the unnamed circle is still not background
    assert not (regions[-1][2] > 0)[footprint(circle, 64)].any()


def test_brief_selection_names_a_proper_subset_or_everything() -> None:
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, n) for n in (1, 2, 3) for _ in range(40)]
    never = brief_selection(np.random.default_rng(1), scenes, 0.0, frozenset())
    assert never == [s.objects for s in scenes]
    named = brief_selection(np.random.default_rng(1), scenes, 1.0, frozenset())
    for scene, objects in zip(scenes, named, strict=True):
        assert objects and set(objects) <= set(scene.objects)
        assert len(objects) < len(scene.objects) or len(scene.objects) == 1
        assert list(objects) == [o for o in scene.objects if o in objects]  # caption order
    held_out = frozenset(named_caption(s, n) for s, n in zip(scenes, named, strict=True))
    fallback = brief_selection(np.random.default_rng(1), scenes, 1.0, held_out)
    assert fallback == [s.objects for s in scenes]
    pair, pair_named = scenes[40:42], named[40:42]  # two-object scenes, so brief
    batch = make_batch(pair, named=pair_named)
    assert batch.captions == [named_caption(s, n) for s, n in zip(pair, pair_named, strict=True)]
    assert batch.captions != [caption(s) for s in pair]


def test_targets_skip_dropped_captions() -> None:
    _, tokenizer, *_ = _batch()
    rng = np.random.default_rng(1)
    scenes = [SCENE, sample_scene(rng), SCENE]
    targets = attention_targets(tokenizer, scenes, [True, False, True])
    assert set(targets.rows.tolist()) == {0, 2}
    # seven supervised one-token words per copy of SCENE; "circle" is token 4
    assert len(targets) == 14 and targets.positions[2] == 4


def test_start_token_target_is_the_background() -> None:
    _, tokenizer, *_ = _batch()
    plain = attention_targets(tokenizer, [SCENE], [True])
    with_start = attention_targets(tokenizer, [SCENE], [True], start_token="inside")
    assert len(with_start) == len(plain) + 1 and with_start.positions[-1] == 0
    background = caption_regions(SCENE, 64)[-1][2]
    np.testing.assert_array_equal(with_start.regions[-1].numpy(), background)
    skipped = attention_targets(tokenizer, [SCENE], [False], start_token="inside")
    assert len(skipped) == 0


def test_spread_loss_wants_the_map_even_over_the_region() -> None:
    region = torch.zeros(1, 16, 16)
    region[0, 8:, :] = 1.0  # the bottom half
    even = torch.zeros(1, 64, 4)
    even[0, 32:, 0] = 1.0  # the start token (position 0), even over the bottom half on 8x8
    peaked = torch.zeros(1, 64, 4)
    peaked[0, 40, 0] = 1.0  # one cell inside the region
    inside_only = AttentionTargets(torch.tensor([0]), torch.tensor([0]), region)
    spread = AttentionTargets(
        torch.tensor([0]), torch.tensor([0]), region, spread=torch.tensor([True])
    )
    assert attention_region_loss(peaked, (8, 8), inside_only) < 1e-5  # inside: accepted
    assert attention_region_loss(even, (8, 8), spread) < 1e-5
    assert attention_region_loss(peaked, (8, 8), spread) > 3.0  # log(32) = 3.47
    _, tokenizer, *_ = _batch()
    targets = attention_targets(tokenizer, [SCENE], [True], start_token="spread")
    assert targets.spread is not None and targets.spread.tolist() == [False] * 7 + [True]


def test_loss_is_lower_for_attention_inside_the_region() -> None:
    region = torch.zeros(1, 16, 16)
    region[0, :8, :8] = 1.0  # the top-left quarter
    targets = AttentionTargets(torch.tensor([0]), torch.tensor([3]), region)
    grid = (8, 8)

    def maps(inside: bool) -> torch.Tensor:
        m = torch.full((1, 8, 8, 5), 0.01)
        if inside:
            m[0, :4, :4, 3] = 1.0
        else:
            m[0, 4:, 4:, 3] = 1.0
        return m.flatten(1, 2)

    inside = attention_region_loss(maps(True), grid, targets)
    outside = attention_region_loss(maps(False), grid, targets)
    assert torch.isfinite(inside) and torch.isfinite(outside)
    assert inside < 0.1 < 2.0 < outside
    # uniform attention: the region is a quarter of the grid, so -log(1/4)
    uniform = attention_region_loss(torch.ones(1, 64, 5), grid, targets)
    torch.testing.assert_close(uniform, torch.tensor(np.log(4.0), dtype=torch.float32))
    empty = AttentionTargets(torch.zeros(0, dtype=torch.long), torch.zeros(0).long(), region[:0])
    assert attention_region_loss(maps(True), grid, empty) == 0


def test_attention_loss_is_finite_and_differentiable() -> None:
    text_encoder, tokenizer, unet, scheduler, scenes, ids, latents = _batch()
    attention = AttentionLoss.install(unet, 0.5)
    targets = attention_targets(tokenizer, scenes, [True, True, False])
    total, diffusion, supervised = unet_loss(
        latents, ids, unet, text_encoder, scheduler, attention, targets
    )
    assert torch.isfinite(total) and supervised > 0
    torch.testing.assert_close(total.detach(), diffusion + 0.5 * supervised)
    total.backward()
    # the supervision reaches the cross-attention keys and the text encoder
    grads = [p.grad for n, p in unet.named_parameters() if "attn2.to_k" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    token_grad = text_encoder.get_input_embeddings().weight.grad
    assert token_grad is not None and token_grad.abs().sum() > 0
    # one term per cross-attention layer, all levels by default
    cross = [info for info in describe_layers(unet).values() if info.is_cross]
    assert len(cross) >= 2 and attention.hook.terms == []


def test_weight_zero_keeps_the_old_loss() -> None:
    text_encoder, tokenizer, unet, scheduler, scenes, ids, latents = _batch()
    targets = attention_targets(tokenizer, scenes, [True] * len(scenes))
    torch.manual_seed(5)
    old = diffusion_loss(latents, ids, unet, text_encoder, scheduler)
    for attention in (None, AttentionLoss.install(unet, 0.0)):
        torch.manual_seed(5)
        total, diffusion, supervised = unet_loss(
            latents, ids, unet, text_encoder, scheduler, attention, targets
        )
        assert torch.equal(total, old) and torch.equal(diffusion, old) and supervised == 0
    # with supervision on, the diffusion part is the same loss (probabilities untouched)
    torch.manual_seed(5)
    _, diffusion, _ = unet_loss(
        latents, ids, unet, text_encoder, scheduler, AttentionLoss.install(unet, 1.0), targets
    )
    torch.testing.assert_close(diffusion, old.detach(), rtol=1e-4, atol=1e-6)


def test_loss_cannot_be_escaped_by_shrinking_the_attention_mass() -> None:
    region = torch.zeros(1, 16, 16)
    region[0, :8, :8] = 1.0
    targets = AttentionTargets(torch.tensor([0]), torch.tensor([1]), region)
    maps = torch.rand(1, 64, 3)
    full = attention_region_loss(maps, (8, 8), targets)
    for scale in (1e-3, 1e-9, 1e-20):
        scaled = maps.clone()
        scaled[..., 1] *= scale
        torch.testing.assert_close(attention_region_loss(scaled, (8, 8), targets), full)
