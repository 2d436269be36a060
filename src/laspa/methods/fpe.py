"""FPE (Free-Prompt-Editing): replace the target's self-attention maps with the source's.

Real images: DDIM inversion of enc(I) with the empty prompt (cached by the Editor); the
source branch (prompt "") is pinned to the inversion trajectory, the target branch runs
from the inverted x_T with the target prompt, and for the first ``replace_fraction`` of
the steps, in the chosen self-attention layers, the target's conditional self-attention
probabilities are the source's. Generated images (``source_prompt`` given): both branches
start from the same noise, the source conditioned on the source prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention import LayerInfo, SelfAttentionReplace
from ..loop import SamplerHooks, Step
from . import base
from .base import CommonParams, EditBatch, Method, MethodOutput, option, register

#: Real images: 0.5 rather than the released code's 0.8, measured (docs/methods.md, "FPE");
#: generated images: the released code's 0.4.
REAL_REPLACE_FRACTION, GENERATED_REPLACE_FRACTION = 0.5, 0.4


@dataclass
class FPEParams(CommonParams):
    guidance: float = base.guidance_option(7.5)
    replace_fraction: float | None = option(
        None, low=0.0, high=1.0, help="fraction of steps with replacement (0.5 real, 0.4 generated)"
    )
    # the paper's layers rather than the released code's: measured (docs/methods.md, "FPE")
    layers: str = option(
        "paper", choices=("code", "paper"), help="paper: layers 4-14; code: all but the finest"
    )
    source_prompt: str = option("", help="given: generated-image mode (no inversion)")


def replaced_layers(unet_layers: dict[str, LayerInfo], preset: str) -> set[str]:
    """Names of the self-attention layers FPE replaces, among ``unet_layers`` (the
    engine's ``layers``).

    ``code``: every self-attention layer coarser than the finest level (the released
    code's rule: 32x32 and coarser on SD at 512 px). ``paper``: forward-order layers 4-14
    of SD 1.x's 16; a UNet with n self-attention layers takes the proportional range
    round(4n/16) .. round(14n/16).
    """
    layers = [info for info in unet_layers.values() if info.is_self]
    if preset == "code":
        finest = min(info.downsample for info in layers)
        return {info.name for info in layers if info.downsample > finest}
    n = len(layers)
    first, last = round(4 * n / 16), round(14 * n / 16)
    return {info.name for info in layers if first <= info.kind_order <= last}


class PinToTrajectory(SamplerHooks):
    """Overwrite the source rows with the stored inversion latent of each step."""

    def __init__(self, trajectory: list[torch.Tensor], rows: int):
        self.trajectory = trajectory
        self.rows = rows

    def before_unet(self, step: Step, x: torch.Tensor) -> torch.Tensor:
        pinned = self.trajectory[step.index].expand(self.rows, -1, -1, -1)
        return torch.cat([pinned, x[self.rows :]])


@register
class FPE(Method):
    name = "fpe"
    summary = "Free-Prompt-Editing: self-attention maps of the source replace the target's"
    Params = FPEParams
    # DDIM inversion and the UNet's self-attention layers: UNet models only
    kinds = ("unet",)
    batch_key = ("steps", "replace_fraction", "layers", "source_prompt")
    # the source row follows the inversion (or shares the target's path): no step noise
    needs_deterministic_sampler = True

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        num_steps, n = batch.shared("steps"), batch.size
        source_prompt = batch.shared("source_prompt")
        generated = bool(source_prompt)
        fraction = batch.shared("replace_fraction")
        if fraction is None:
            fraction = GENERATED_REPLACE_FRACTION if generated else REAL_REPLACE_FRACTION
        steps = engine.steps(batch)
        targets = [row.prompt for row in batch.rows]
        guidance = batch.column("guidance")
        if generated:  # one source row per edit: each seed draws its own noise
            x_T = engine.noise(engine.generators(batch), (n, *batch.reference.shape[1:]))
            x = torch.cat([x_T, x_T])
            sources, hooks = list(range(n)), SamplerHooks()
            prompts, guidance = [source_prompt] * n + targets, torch.cat([guidance, guidance])
            unguided = 0  # real source prompts: guided like the targets
        else:  # one source row pinned to the cached inversion serves every edit
            trajectory = engine.invert(batch.reference, "", num_steps)
            x = trajectory[0].expand(n + 1, -1, -1, -1)
            sources, hooks = [0] * n, PinToTrajectory(trajectory, 1)
            prompts, guidance = [""] + targets, torch.cat([guidance[:1], guidance])
            unguided = 1  # its prompt is "": the conditional pass alone gives its maps
        first_target = len(prompts) - n
        replace = SelfAttentionReplace(
            replaced_layers(engine.layers, batch.shared("layers")),
            last_step=int(fraction * num_steps),  # the released code's int()
            sources=sources,
            targets=list(range(first_target, first_target + n)),
        )
        conditioning = engine.conditioning(
            batch, prompts=prompts, guidance=guidance, unguided_rows=unguided
        )
        latents = engine.sample(x, steps, conditioning, hooks, attention=[replace])
        return MethodOutput(
            latents[first_target:],
            extras={"source_latents": latents[:first_target], "replacements": replace.calls},
        )
