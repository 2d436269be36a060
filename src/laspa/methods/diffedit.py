"""DiffEdit (Couairon et al. 2023): a mask from where the source and target prompts'
noise predictions differ, DDIM inversion to the edit strength, masked denoising back.

The options and their defaults are those of diffusers' (deprecated)
``StableDiffusionDiffEditPipeline``, and so are its three stages (docs/methods.md,
"DiffEdit"):

1. mask: enc(I) forward-noised to ``mask_encode_strength`` with ``num_maps_per_mask``
   draws; |eps(target) - eps(source)|, averaged over draws and channels, clamped at
   ``mask_thresholding_ratio`` times its mean, scaled to [0, 1], above 0.5. diffusers
   guides both predictions with the same unconditional row, which cancels in their
   difference, and the guidance scale cancels in the relative threshold: the
   conditional rows alone give the same mask for half the UNet rows, all draws of
   source and target in one UNet call;
2. the input DDIM-inverted with ``source_prompt`` (guided like diffusers' ``invert``) up
   to ``inpaint_strength``, through the Editor's inversion cache;
3. denoising from there with the edit prompt; after each step the latent outside the
   mask is the inversion's. ``blend="diffusers"`` takes it as diffusers does, one level
   noisier than the step landed on (its list index is off by one) and, after the last
   step, the first inverted latent rather than the input; ``blend="paper"`` takes the
   inversion at the step's own level and the input itself at the end.

``posterior="sample"`` (default) draws enc(I) from the VAE posterior with the seed's
generator, in the pipeline's order (the mask draws' posterior samples, their noise, then
the inversion's sample): at the defaults an edit is diffusers' to 70-100 dB, the same
algorithm (docs/methods.md, "DiffEdit"). ``"mean"`` uses the posterior mean like every
other method, so one inversion serves every seed of an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .. import ddim
from ..errors import ParameterError
from ..loop import SamplerHooks, Step
from . import base
from .base import CommonParams, EditBatch, Method, MethodOutput, option, register
from .sdedit import start_index

if TYPE_CHECKING:
    from ..engine import Engine


@dataclass
class DiffEditOptions(CommonParams):
    """DiffEdit's options as diffusers' pipeline names them (shared with peer-diffedit)."""

    guidance: float = base.guidance_option(7.5)
    source_prompt: str = option("", help="prompt of the mask's source branch and the inversion")
    mask_encode_strength: float = option(
        0.5, low=0.0, high=1.0, low_open=True, help="noise level of the mask estimate"
    )
    num_maps_per_mask: int = option(10, low=1, high=100, help="noise draws averaged per mask")
    mask_thresholding_ratio: float = option(
        3.0, low=0.0, low_open=True, help="mask threshold, in units of the mean difference"
    )
    inpaint_strength: float = option(
        0.8, low=0.0, high=1.0, low_open=True, help="fraction of the schedule inverted"
    )

    def check_together(self) -> None:
        """Each strength must leave at least one step (diffusers' int(steps x strength))."""
        for name in ("mask_encode_strength", "inpaint_strength"):
            value = getattr(self, name)
            if int(self.steps * value) < 1:
                raise ParameterError(
                    f"{name} {value} with {self.steps} steps leaves no step "
                    "(int(steps x strength) = 0); raise it or the steps"
                )


@dataclass
class DiffEditParams(DiffEditOptions):
    blend: str = option(
        "diffusers",
        choices=("diffusers", "paper"),
        help="the latent kept outside the mask after each step: the inversion one level "
        "noisier and no input at the end (diffusers' pipeline), or at the same level and "
        "the input at the end (paper)",
    )
    posterior: str = option(
        "sample",
        choices=("sample", "mean"),
        help="enc(I): VAE posterior samples drawn in diffusers' order (its masks and "
        "inversion draw for draw), or the posterior mean (one inversion for every seed)",
    )


def difference_mask(
    eps_source: torch.Tensor, eps_target: torch.Tensor, draws: int, ratio: float
) -> torch.Tensor:
    """DiffEdit's binary mask from the noise predictions of ``draws`` noisy copies of each
    edit's latent, (N * draws, C, h, w) each: |target - source| averaged over draws and
    channels, clamped at ``ratio`` x its mean, scaled to [0, 1] and above 0.5; (N, 1, h, w).
    A map that is zero everywhere (the prompts read the same) gives an empty mask."""
    guide = (eps_target - eps_source).abs()
    guide = guide.reshape(-1, draws, *guide.shape[-3:]).mean(dim=(1, 2))
    magnitude = guide.mean(dim=(1, 2), keepdim=True) * ratio
    # diffusers' clamp(0, magnitude) / magnitude (guide >= 0); 0 / 0 is NaN, not > 0.5
    return (torch.minimum(guide, magnitude) / magnitude > 0.5).float()[:, None]


class KeepInversionOutside(SamplerHooks):
    """After each step, the inversion's latent outside the mask (``levels[i]`` after the
    run's i-th step)."""

    def __init__(self, levels: list[torch.Tensor], masks: torch.Tensor, first_index: int):
        self.levels, self.masks, self.first_index = levels, masks, first_index

    def after_step(self, step: Step, x_prev: torch.Tensor) -> torch.Tensor:
        return ddim.blend(x_prev, self.levels[step.index - self.first_index], self.masks)


def outside_levels(trajectory: list[torch.Tensor], blend: str) -> list[torch.Tensor]:
    """The latent kept outside the mask after each denoising step, from the inversion
    ``trajectory`` (the start level first, the input last): ``paper`` the level each step
    lands on, ending on the input; ``diffusers`` the level before it, as the pipeline's
    ``image_latents[i]`` reads, ending one level above the input."""
    return trajectory[1:] if blend == "paper" else trajectory[:-1]


@register
class DiffEdit(Method):
    name = "diffedit"
    summary = "DiffEdit: mask from source vs target noise predictions, inversion, masked denoising"
    Params = DiffEditParams
    makes_mask = True
    case_inputs = ("source_prompt",)
    batch_key = (
        "steps", "guidance", "source_prompt", "mask_encode_strength", "num_maps_per_mask",
        "inpaint_strength", "blend", "posterior",
    )  # fmt: skip
    needs_deterministic_sampler = True
    # DDIM inversion of an eps / v model
    kinds = ("unet",)

    def run(self, engine: Engine, batch: EditBatch) -> MethodOutput:
        source = batch.shared("source_prompt")
        for row in batch.rows:
            if row.prompt.strip() == source.strip():
                raise ParameterError(
                    "diffedit's mask is where the prompt and source_prompt differ: give a "
                    "source_prompt other than the prompt"
                )
        generators = engine.generators(batch)
        sampled = batch.shared("posterior") == "sample"
        draws = batch.shared("num_maps_per_mask")
        mask_latents = self.latents(engine, batch, generators, draws, sampled)
        masks = self.masks(engine, batch, generators, mask_latents, draws)
        references = self.latents(engine, batch, generators, 1, sampled)
        return MethodOutput(self.denoise(engine, batch, references, masks), masks=masks)

    @staticmethod
    def latents(engine: Engine, batch: EditBatch, generators, draws: int, sampled: bool):
        """Each edit's enc(I) ``draws`` times: the posterior mean, or samples drawn from
        the edit's generator (diffusers' ``latent_dist.sample`` order)."""
        rows = batch.reference.expand(batch.size * draws, -1, -1, -1)
        if not sampled:
            return rows
        shape = (draws, *batch.reference.shape[1:])
        noise = torch.cat([engine.noise([g] * draws, shape) for g in generators])
        return engine.encode(batch.pixels, noise)  # one encoding, len(noise) samples

    @staticmethod
    def masks(engine: Engine, batch: EditBatch, generators, latents, draws: int) -> torch.Tensor:
        """Stage 1: every draw of every edit, source and target, in one UNet call."""
        num_steps = batch.shared("steps")
        step = engine.steps(batch)[start_index(num_steps, batch.shared("mask_encode_strength"))]
        shape = (draws, *batch.reference.shape[1:])
        noise = torch.cat([engine.noise([g] * draws, shape) for g in generators])
        x = ddim.forward_noise(latents, noise, step.alpha)
        source = batch.shared("source_prompt")
        targets = [row.prompt for row in batch.rows for _ in range(draws)]
        conditioning = engine.conditioning(
            batch, prompts=[source] * len(targets) + targets, guided=False
        )
        predictions: list[torch.Tensor] = []
        # one step of the loop for its UNet call: the callback keeps eps, the update is dropped
        engine.sample(
            torch.cat([x, x]), [step], conditioning, phase="mask",
            callback=lambda _step, _x, _x0, eps: predictions.append(eps),
        )  # fmt: skip
        eps_source, eps_target = predictions[0].chunk(2)
        return difference_mask(
            eps_source, eps_target, draws, batch.shared("mask_thresholding_ratio")
        )

    @staticmethod
    def denoise(engine: Engine, batch: EditBatch, references, masks) -> torch.Tensor:
        """Stages 2 and 3: the (cached) partial inversion, then denoising that keeps the
        inversion outside the mask."""
        num_steps, source = batch.shared("steps"), batch.shared("source_prompt")
        first = start_index(num_steps, batch.shared("inpaint_strength"))
        # with the empty source prompt (or a scale of at most 1) guidance changes nothing:
        # share the unguided inversion (ddim-inversion's and fpe's)
        guidance = batch.shared("guidance")
        guidance = guidance if source and guidance > 1.0 else 1.0
        if batch.shared("posterior") == "mean":  # one enc(I): one inversion for all edits
            references = references[:1]
        trajectories = [
            engine.invert(reference[None], source, num_steps, guidance=guidance, first_step=first)
            for reference in references
        ]
        levels = [
            torch.cat(level).expand(batch.size, -1, -1, -1)
            for level in zip(*trajectories, strict=True)
        ]
        hooks = KeepInversionOutside(outside_levels(levels, batch.shared("blend")), masks, first)
        steps = engine.steps(batch)[first:]
        return engine.sample(levels[0], steps, engine.conditioning(batch), hooks)
