"""DDIM inversion baseline: invert enc(I) with the source prompt, denoise with the edit prompt."""

from __future__ import annotations

from dataclasses import dataclass

from .base import CommonParams, EditBatch, Method, MethodOutput, option, register


@dataclass
class InversionParams(CommonParams):
    source_prompt: str = option("", help="prompt the inversion is conditioned on")


@register
class DDIMInversion(Method):
    name = "ddim-inversion"
    summary = "DDIM inversion of the input with the source prompt, then DDIM with the edit prompt"
    case_inputs = ("source_prompt",)
    Params = InversionParams
    # DDIM inversion of an eps / v model
    kinds = ("unet",)
    batch_key = ("steps", "source_prompt")
    needs_deterministic_sampler = True

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        num_steps = batch.shared("steps")
        trajectory = engine.invert(batch.reference, batch.shared("source_prompt"), num_steps)
        x_T = trajectory[0].expand(batch.size, -1, -1, -1)
        steps = engine.steps(batch)
        return MethodOutput(engine.sample(x_T, steps, engine.conditioning(batch)))
