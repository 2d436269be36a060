"""Mask-aware LASPA (``laspa-local``, ours): x0 alignment whose strength follows the edit region.

One pass from noise with the edit prompt, as ``laspa-x0``. After each UNet call the edit
region M (h, w) is read from the same call's cross-attention (docs/methods.md, "Mask-aware
LASPA"): InstDiffEdit's instant mask of the running-mean maps (``region="instant"``, no word
needed; with a ``source_prompt``, a caption of the input, the words the prompt changes
join it: the background if only background words change, else the changed words' maps),
or the ``change`` word's map (``region="change"``, as laspa-mix's keep=rest). The
x0 alignment then weighs each pixel by

    b_t(p) = b_out(t) + M(p) * (b_in(t) - b_out(t)),

b_out from (beta_out, K_out) and b_in from (beta_in, K_in), each LASPA's alignment weight
(:func:`laspa.ddim.alignment_weight`): strong outside the region, weak inside. M's edge is
soft: the binary region grown by ``edge`` binomial blurs, kept at 1 inside. Where every
row's b_in(t) equals b_out(t) the mask is not read and the step is laspa-x0's, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import ddim
from .. import maps as maps_lib
from ..attention import CrossAttentionStore, coarse_cross_levels
from ..errors import ParameterError
from ..loop import Step
from ..masks import (
    background_mask,
    binarise,
    changed_words,
    instant_mask,
    on_background,
    prepared_word_maps,
)
from .base import CommonParams, EditBatch, MethodOutput, option, register
from .laspa import (
    AlignmentWeights,
    X0Alignment,
    _Laspa,
    beta_option,
    beta_schedule_option,
    direction_option,
)

#: On a few-step schedule the region is left free from t = 500 on (docs/results.md,
#: "Few-step editing: mini-lcm").
FEW_STEP_K_IN = 500


@dataclass
class LocalParams(CommonParams):
    # defaults measured on shapes-brief (docs/results.md, "Mask-aware LASPA")
    beta_out: float = beta_option(0.9)
    K_out: int = option(0, low=0, high=1000, help="outside the region: align while t > K_out")
    beta_in: float = option(0.9, low=0.0, high=1.0, help="alignment strength inside the region")
    K_in: int = option(200, low=0, high=1000, help="inside the region: align while t > K_in")
    beta_schedule: str = beta_schedule_option()
    direction: str = direction_option()
    region: str = option(
        "instant",
        choices=("instant", "change"),
        help="edit region: InstDiffEdit's instant mask, or the change word's map",
    )
    change: str = option("", help="region=change: the word of the region to redo")
    source_prompt: str = option(
        "", help="instant: a caption of the input; the words the prompt changes join the region"
    )
    phi: float = option(0.2, low=0.0, high=1.0, help="region threshold of the normalised map")
    edge: int = option(1, low=0, high=8, help="binomial blurs of the region's soft edge (0: hard)")
    region_steps: float = option(
        1.0, low=0.0, high=1.0, low_open=True,
        help="fraction of the steps whose attention updates the region (then it is kept)",
    )  # fmt: skip
    # InstDiffEdit's word split, for region=instant (its defaults)
    object_threshold: float = option(0.9, low=-1.0, high=1.0, help="instant: object words")
    background_threshold: float = option(0.6, low=-1.0, high=1.0, help="instant: background")

    @classmethod
    def few_step_defaults(cls, steps: list) -> dict[str, Any]:
        return {"K_in": FEW_STEP_K_IN}

    @classmethod
    def implied(cls, options: dict[str, Any]) -> dict[str, Any]:
        """A ``change`` word means ``region=change`` (its map is the region), as in
        laspa-mix."""
        options = super().implied(options)
        if options.get("change") and options.get("region", "instant") == "instant":
            options["region"] = "change"  # a default value is the same as none (make_params)
        return options

    def idle_options(self, sampler: str) -> dict[str, str]:
        idle = super().idle_options(sampler)
        if self.region == "instant":
            idle["change"] = "change acts only with region=change"
        else:
            for name in ("source_prompt", "object_threshold", "background_threshold"):
                idle[name] = f"{name} acts only with region=instant"
        return idle


def soft_edge(mask: torch.Tensor, blurs: int) -> torch.Tensor:
    """A binary mask (N, 1, h, w) with its edge softened outward: 1 inside, the binomial
    blur ``blurs`` times outside (so the whole region stays free)."""
    soft = mask
    for _ in range(blurs):
        soft = maps_lib.gaussian_blur(soft[:, 0])[:, None]
    return torch.maximum(mask, soft)


@dataclass
class _InstantOptions:
    """What :func:`laspa.masks.instant_mask` reads, from an edit's LocalParams."""

    phi: float
    object_threshold: float
    background_threshold: float
    smoothing: str = "blur"
    spread_steps: int = 4
    weighting: str = "hard"
    word_resize: str = "bilinear"
    index_words: str = "content"


class LocalAlignment(X0Alignment):
    """x0 alignment with a per-pixel weight: ``outside`` away from each edit's region,
    ``inside`` within it; the region is recomputed from the attention after every UNet call."""

    def __init__(
        self, reference, outside, inside, direction, store, regions, edges: list[int],
        region_steps: int,
    ):  # fmt: skip
        super().__init__(reference, outside, direction)
        self.inside = inside
        self.store = store
        self.regions = regions  # per edit: (token maps, size) -> (h, w) binary region
        self.edges = edges  # per edit: blurs of the soft edge
        self.region_steps = region_steps  # the region is kept from this step index on
        self.mask: torch.Tensor | None = None  # (N, 1, h, w), the last soft region

    def _differs(self, t: int) -> bool:
        return not torch.equal(self.weight(t), self.inside(t))

    def needs_unet(self, step: Step, next_step: Step | None) -> bool:
        return self._differs(step.t) or super().needs_unet(step, next_step)

    def after_x0(self, step: Step, x, eps, x0):
        if not self._differs(step.t):  # one strength everywhere: laspa-x0's step
            return super().after_x0(step, x, eps, x0)
        if self.mask is None or step.index < self.region_steps:
            self.mask = self.region(tuple(x0.shape[-2:]))
        outside, inside = self.weight(step.t), self.inside(step.t)
        weight = outside + self.mask * (inside - outside)
        return ddim.blend(self.reference, x0, weight)

    def region(self, size: tuple[int, int]) -> torch.Tensor:
        """Each edit's soft region (N, 1, h, w) from the running-mean maps so far."""
        maps = self.store.mean()
        return torch.cat([
            soft_edge(region(maps[i], size)[None, None], blurs)
            for i, (region, blurs) in enumerate(zip(self.regions, self.edges, strict=True))
        ])  # fmt: skip


def change_region(positions, phi: float):
    """The change word's running-mean map, min-max normalised, above ``phi``."""

    def region(token_maps: torch.Tensor, size) -> torch.Tensor:
        word = maps_lib.word_map(token_maps[None], positions)
        return (maps_lib.minmax(maps_lib.resize(word, size))[0] > phi).float()

    return region


def instant_region(
    words, texts, options: _InstantOptions, changed: list[int] = (), start: tuple[int, ...] = (0,)
):
    """InstDiffEdit's instant mask; the index word and word split kept from the first call.

    ``changed``: the words (indices) the prompt changes against a caption of the input
    (:func:`laspa.masks.changed_words`); each is sorted once, at the first call, into a
    background word (its map more alike the start token's than the foreground's:
    :func:`laspa.masks.on_background`) or an object word. If every changed word is a
    background word the background (the start token's map) joins the region: the instant
    mask is an object's, so a changed background would otherwise stay pinned by the
    outside's alignment. Otherwise each changed object word's own map (blurred and
    thresholded as the instant mask) joins it, so that the region covers what the new
    words name where the index word's map misses part of it; changed background words are
    then left out (a broad map, e.g. a position word's, is not taken to be the edit).
    ``start``: the start token's columns (laspa.masks.prepared_word_maps)."""
    chosen = None
    kinds: list[bool] | None = None

    def region(token_maps: torch.Tensor, size) -> torch.Tensor:
        nonlocal chosen, kinds
        mask, chosen = instant_mask(token_maps, words, size, options, chosen, texts, start=start)
        if not changed:
            return mask
        start_inverted, changed_maps = prepared_word_maps(
            token_maps, [words[i] for i in changed], size, options.word_resize, start
        )
        if kinds is None:
            kinds = [on_background(m, start_inverted) for m in changed_maps]
        if all(kinds):
            return torch.maximum(mask, background_mask(start_inverted, options.phi))
        for word_map, on_bg in zip(changed_maps, kinds, strict=True):
            if not on_bg:
                mask = torch.maximum(mask, binarise(word_map, options.phi))
        return mask

    return region


def row_weights(batch: EditBatch, beta: str, K: str, num_train_timesteps: int, device, timesteps):
    """Per-row b_t of the ``beta`` and ``K`` columns (e.g. beta_in, K_in), as AlignmentWeights."""
    betas, Ks = batch.column(beta, device), batch.column(K, device)
    linear = torch.tensor([s == "linear" for s in batch.param("beta_schedule")], device=device)

    def weight(t) -> torch.Tensor:
        return ddim.alignment_weight(t, betas, Ks, linear, num_train_timesteps)

    weights = AlignmentWeights(weight)
    column = torch.tensor(timesteps, dtype=betas.dtype, device=device)[:, None]
    weights.fill(timesteps, weight(column).view(len(timesteps), -1, 1, 1, 1))
    return weights


@register
class LaspaLocal(_Laspa):
    name = "laspa-local"
    summary = "Mask-aware LASPA: strong x0 alignment outside the edit region found in the pass"
    Params = LocalParams
    makes_mask = True
    case_inputs = ("change", "source_prompt")
    batch_key = ("steps", "region_steps")

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        regions = [self._region(engine, row) for row in batch.rows]
        steps = engine.steps(batch)
        reference = batch.reference.expand(batch.size, -1, -1, -1)
        generators = engine.generators(batch)
        x_T = engine.noise(generators, reference.shape)
        noise = engine.step_noise(batch, generators, x_T)
        timesteps = [step.t for step in steps] + [steps[-1].t_prev]
        args = (engine.num_train_timesteps, reference.device, timesteps)
        outside = row_weights(batch, "beta_out", "K_out", *args)
        inside = row_weights(batch, "beta_in", "K_in", *args)
        # where b_in = b_out at every step the region is never read: no store, so that
        # the run is laspa-x0's bit for bit (recording attention computes it explicitly)
        local = any(not torch.equal(outside(t), inside(t)) for t in timesteps)
        region_steps = max(1, round(batch.shared("region_steps") * len(steps)))
        store = None
        if local or batch.record_attention:
            # after the region is kept, recording (explicit attention) is only a cost
            store = CrossAttentionStore(
                coarse_cross_levels(engine.layers),
                record_step=None if batch.record_attention else (
                    lambda info: info.index < region_steps
                ),
            )  # fmt: skip
        hooks = LocalAlignment(
            reference, outside, inside, batch.param("direction"), store, regions,
            batch.param("edge"), region_steps,
        )  # fmt: skip
        latents = engine.sample(
            x_T, steps, engine.conditioning(batch), hooks,
            attention=[store] if store else [], noise=noise,
        )  # fmt: skip
        return MethodOutput(
            latents,
            # no region read (b_in = b_out at every step): no pixel is weighted apart
            masks=torch.zeros_like(latents[:, :1]) if hooks.mask is None else hooks.mask,
            token_maps=store.mean() if store and batch.record_attention else None,
        )

    @staticmethod
    def _region(engine, row):
        params = row.params
        if params.region == "change":
            if not params.change.strip():
                raise ParameterError("laspa-local region=change needs a change word (--change)")
            try:
                positions = engine.positions_of(row.prompt, params.change)
            except ValueError as error:
                raise ParameterError(f"change: {error}") from None
            return change_region(positions, params.phi)
        words = engine.word_tokens(row.prompt)
        if not words:
            raise ParameterError("laspa-local needs a prompt with at least one word")
        options = _InstantOptions(params.phi, params.object_threshold, params.background_threshold)
        texts = [w.word for w in words]
        source = [w.word for w in engine.word_tokens(params.source_prompt)]
        changed = changed_words(source, texts)
        start = engine.start_positions(row.prompt)
        return instant_region([w.positions for w in words], texts, options, changed, start)
