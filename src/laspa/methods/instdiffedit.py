"""InstDiffEdit: an instant mask from cross-attention while denoising; only it changes.

The released code's algorithm (docs/methods.md, "InstDiffEdit"): enc(I) is forward-noised to
strength r with B noise seeds (one batch); during the last r-fraction of the steps the
conditional cross-attention of the target text is averaged (seeds, layers, heads, running
mean over steps), the word closest to the inverted start-token map is the index word,
words alike to it are the object and unlike words the background (both chosen at the
first step and kept), and the refined map, blurred and thresholded, blends every step
towards the forward-noised input; checked against the released code on the same inputs
(benchmarks/parity.py, docs/results.md "Parity with the released code"). The released
code then inpaints the image inside the last mask (``final_pass="inpaint"``: the base
model's blended latent diffusion, or an inpainting checkpoint when one is named); by
default the mask loop's own result is the output (``final_pass="loop"``), measured to keep
more at the same edit success for 60% of the UNet work (docs/results.md, "Final pass").
Both passes run on DDIM, where the released code samples with the LMS scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .. import ddim
from ..errors import ParameterError
from ..loop import SamplerHooks, Step
from ..masks import DEFAULT_PHI, instant_mask, seed_mean
from . import base
from .base import CommonParams, EditBatch, Method, MethodOutput, option, register
from .sdedit import start_index

if TYPE_CHECKING:
    from ..engine import Engine


@dataclass
class InstDiffEditParams(CommonParams):
    guidance: float = base.guidance_option(7.5)
    strength: float = option(0.5, low=0.0, high=1.0, low_open=True, help="r: mask-loop strength")
    noise_seeds: int = option(3, low=1, high=16, help="B: noise seeds averaged for the mask")
    object_threshold: float = option(0.9, low=-1.0, high=1.0, help="object words: similarity >=")
    background_threshold: float = option(0.6, low=-1.0, high=1.0, help="background: similarity <=")
    # snap and spread (our additions) read the image's self-attention (docs/methods.md)
    smoothing: str = option(
        "blur",
        choices=("blur", "snap", "spread"),
        help="mask from the map by Gaussian blur (released code), or snapped to / spread "
        "along self-attention",
    )  # fmt: skip
    spread_steps: int = option(
        4, low=1, high=32, help="snap / spread: times the map is carried along self-attention"
    )
    phi: float | None = option(
        None, low=0.0, high=1.0, help="mask threshold (default 0.2 for blur, 0.35 for snap "
        "and spread)"
    )  # fmt: skip
    weighting: str = option("hard", choices=("hard", "soft"), help="word aggregation weights")
    # bilinear rather than the released code's bicubic: measured (docs/methods.md)
    word_resize: str = option(
        "bilinear",
        choices=("bilinear", "bicubic"),
        help="word maps to latent size: bilinear, or Pillow's bicubic clipped to [0, 1] "
        "(released code)",
    )
    # content rather than the released code's all: measured (docs/methods.md, "InstDiffEdit")
    index_words: str = option(
        "content",
        choices=("all", "content"),
        help="index-word candidates: content words only, or every word (released code)",
    )
    # loop rather than the released code's inpaint: measured (docs/methods.md); naming an
    # inpaint_model always runs the inpainting pass with that checkpoint
    final_pass: str = option(
        "loop",
        choices=("loop", "inpaint"),
        help="keep the mask loop's result, or inpaint inside the last mask (released code; "
        "always with an inpaint_model)",
    )
    inpaint_strength: float = option(
        1.0, low=0.0, high=1.0, low_open=True, help="strength of the inpainting pass, if one runs"
    )
    inpaint_model: str = option("", help="SD inpainting checkpoint for the final pass (optional)")

    def __post_init__(self) -> None:
        # phi's default depends on the smoothing; resolved here so results and --json
        # report the threshold that was used (an unknown smoothing is left to validate)
        if self.phi is None:
            self.phi = DEFAULT_PHI.get(self.smoothing)


class InstantMask(SamplerHooks):
    """Recompute every edit's mask from the running-mean attention after each UNet call,
    and blend the B seed rows towards the forward-noised input outside it."""

    def __init__(
        self, store, reference, noise, words, params, seeds: int, affinities=None, starts=None
    ):  # fmt: skip
        self.store = store
        self.affinities = affinities  # a SelfAttentionStore, for snap and spread
        self.reference = reference  # (N * B, C, h, w)
        self.noise = noise  # (N * B, C, h, w), the seeds' noise
        self.words = [[w.positions for w in edit] for edit in words]  # token positions
        self.word_texts = [[w.word for w in edit] for edit in words]
        # per edit: the columns of the start token's map (laspa.masks.prepared_word_maps)
        self.starts = starts or [(0,)] * len(words)
        self.params = params  # per edit
        self.seeds = seeds
        # per edit: the index word and word weights, chosen at the first step
        self.chosen: list | None = None
        self.masks: torch.Tensor | None = None  # (N, 1, h, w)

    def edit_maps(self) -> torch.Tensor:
        """Each edit's running-mean token maps, its seeds averaged: (N, h, w, tokens)."""
        return seed_mean(self.store.mean(), self.seeds)

    def compute_masks(self, size) -> torch.Tensor:
        per_edit = self.edit_maps()
        affinities, grid = [None] * len(per_edit), None
        if self.affinities is not None:  # (N, q, q) running-mean self-attention
            affinities = seed_mean(self.affinities.mean(), self.seeds)
            grid = self.affinities.grid(size)
        chosen = self.chosen or [None] * len(per_edit)
        made = [
            instant_mask(per_edit[i], words, size, params, chosen[i], self.word_texts[i],
                         affinities[i], grid, self.starts[i])
            for i, (words, params) in enumerate(zip(self.words, self.params, strict=True))
        ]  # fmt: skip
        self.chosen = [kept for _, kept in made]
        return torch.stack([mask for mask, _ in made])[:, None]

    def after_step(self, step: Step, x_prev: torch.Tensor) -> torch.Tensor:
        self.masks = self.compute_masks(tuple(x_prev.shape[-2:]))
        mask = self.masks.repeat_interleave(self.seeds, dim=0)
        # the last step lands on the input itself: the output with final_pass="loop"
        return keep_input_outside(step, x_prev, self.reference, self.noise, mask)


class MaskedDenoising(SamplerHooks):
    """Blended latent diffusion: outside the mask, the input forward-noised to the same
    timestep; at the end, the input's latent itself."""

    def __init__(self, reference, noise, masks):
        self.reference, self.noise, self.masks = reference, noise, masks

    def after_step(self, step: Step, x_prev: torch.Tensor) -> torch.Tensor:
        return keep_input_outside(step, x_prev, self.reference, self.noise, self.masks)


def keep_input_outside(step: Step, x_prev, reference, noise, mask) -> torch.Tensor:
    """``x_prev`` inside ``mask``; outside, the input forward-noised to the next timestep,
    or after the last step the input's latent itself."""
    outside = reference if step.is_last else step.noised_prev(reference, noise)
    return ddim.blend(x_prev, outside, mask)


@register
class InstDiffEdit(Method):
    name = "instdiffedit"
    summary = "InstDiffEdit: an instant cross-attention mask while denoising; only it changes"
    Params = InstDiffEditParams
    makes_mask = True
    records_attention = True
    batch_key = (
        "steps", "strength", "noise_seeds", "final_pass", "inpaint_strength", "inpaint_model"
    )  # fmt: skip

    def run(self, engine: Engine, batch: EditBatch) -> MethodOutput:
        num_steps, seeds = batch.shared("steps"), batch.shared("noise_seeds")
        flow = engine.kind == "flow"
        if flow and batch.shared("inpaint_model"):
            raise ParameterError(
                "inpaint_model is an SD inpainting checkpoint, which an edit on a flow model "
                "cannot use: leave it out (final_pass inpaint runs on this model)"
            )
        steps = engine.steps(batch)[start_index(num_steps, batch.shared("strength"), flow) :]
        if not steps:
            raise ParameterError("strength x steps leaves no mask step; raise strength or steps")
        words = [engine.word_tokens(row.prompt) for row in batch.rows]
        if not all(words):
            raise ParameterError("instdiffedit needs a prompt with at least one word")
        generators = engine.generators(batch)
        shape = batch.reference.shape[1:]
        noise = torch.cat([engine.noise([g] * seeds, (seeds, *shape)) for g in generators])
        reference = batch.reference.expand(batch.size * seeds, -1, -1, -1)
        params = [row.params for row in batch.rows]
        store = engine.attention_store()
        snap_or_spread = any(p.smoothing != "blur" for p in params)
        affinities = engine.self_attention_store() if snap_or_spread else None
        starts = [engine.start_positions(row.prompt) for row in batch.rows]
        hooks = InstantMask(store, reference, noise, words, params, seeds, affinities, starts)
        stores = [store] if affinities is None else [store, affinities]
        prompts = [row.prompt for row in batch.rows for _ in range(seeds)]
        guidance = batch.column("guidance").repeat_interleave(seeds)
        conditioning = engine.conditioning(batch, prompts=prompts, guidance=guidance)
        x = steps[0].noised(reference, noise)
        per_row = [g for g in generators for _ in range(seeds)]
        step_noise = engine.step_noise(batch, per_row, x)
        looped = engine.sample(
            x, steps, conditioning, hooks, attention=stores, phase="mask", noise=step_noise
        )
        pixels = None
        if batch.shared("inpaint_model"):
            latents, pixels = inpaint_with_checkpoint(engine, batch, hooks.masks, generators)
        elif batch.shared("final_pass") == "inpaint":
            latents = inpaint(engine, batch, hooks.masks, generators)
        else:
            latents = looped[::seeds]  # each edit's first seed, blended every step
        return MethodOutput(
            latents,
            masks=hooks.masks,
            pixels=pixels,
            # the maps the masks were made from
            token_maps=hooks.edit_maps() if batch.record_attention else None,
            notes=[
                {"index_word": texts[index]}
                for texts, (index, _) in zip(hooks.word_texts, hooks.chosen, strict=True)
            ],
        )


def inpaint(engine: Engine, batch: EditBatch, masks, generators) -> torch.Tensor:
    """The final pass on the base model: blended latent diffusion inside ``masks``."""
    num_steps = batch.shared("steps")
    start = start_index(num_steps, batch.shared("inpaint_strength"), engine.kind == "flow")
    steps = engine.steps(batch)[start:]
    reference = batch.reference.expand(batch.size, -1, -1, -1)
    noise = engine.noise(generators, reference.shape)
    x = steps[0].noised(reference, noise)
    hooks = MaskedDenoising(reference, noise, masks)
    step_noise = engine.step_noise(batch, generators, x)
    conditioning = engine.conditioning(batch)
    return engine.sample(x, steps, conditioning, hooks, phase="inpaint", noise=step_noise)


def inpaint_with_checkpoint(
    engine: Engine, batch: EditBatch, masks, generators
) -> tuple[torch.Tensor, torch.Tensor]:
    """The final pass on an SD inpainting checkpoint (``inpaint_model``) with diffusers'
    inpainting pipeline, inside ``masks``; returns its latents and their images in
    [-1, 1], decoded by the checkpoint's own VAE (its latents are not the base model's).

    The pipeline takes one guidance scale, and guidance is no batch key (the mask loop
    guides each row on its own): rows are inpainted in one call per guidance value.
    """
    from diffusers import StableDiffusionInpaintPipeline

    pipe = engine.pipeline(
        StableDiffusionInpaintPipeline, batch.shared("inpaint_model"), "inpainting",
        unet_channels=9, safety_checker=None, requires_safety_checker=False,
    )  # fmt: skip
    height, width = batch.pixels.shape[-2:]
    mask_pixels = F.interpolate(masks.float(), size=(height, width), mode="nearest")
    image = ((batch.pixels + 1) / 2).expand(batch.size, -1, -1, -1)
    latents: list[torch.Tensor | None] = [None] * batch.size
    guidance = batch.param("guidance")
    for scale in dict.fromkeys(guidance):
        rows = [i for i, value in enumerate(guidance) if value == scale]
        inpainted = pipe(
            prompt=[batch.rows[i].prompt for i in rows],
            image=image[rows].to(engine.device, engine.dtype),
            mask_image=mask_pixels[rows].to(engine.device, engine.dtype),
            height=height,
            width=width,
            num_inference_steps=batch.shared("steps"),
            guidance_scale=scale,
            strength=batch.shared("inpaint_strength"),
            generator=[generators[i] for i in rows],
            output_type="latent",
        ).images.float()
        for position, i in enumerate(rows):
            latents[i] = inpainted[position : position + 1]
    stacked = torch.cat(latents)  # type: ignore[arg-type]
    return stacked, decode_with(pipe.vae, stacked)


def decode_with(vae, latents: torch.Tensor) -> torch.Tensor:
    """``latents`` decoded by ``vae`` (an SD VAE) as images in [-1, 1]."""
    scaled = latents / vae.config.scaling_factor
    with torch.no_grad():
        return vae.decode(scaled.to(vae.device, vae.dtype)).sample.float()
