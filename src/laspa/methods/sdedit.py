"""SDEdit: noise enc(I) to ``strength * T`` and denoise with the edit prompt (img2img)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError
from .base import CommonParams, EditBatch, Method, MethodOutput, option, register


@dataclass
class SDEditParams(CommonParams):
    strength: float = option(
        0.8, low=0.0, high=1.0, low_open=True, help="fraction of the schedule re-noised"
    )


def start_index(num_steps: int, strength: float, flow: bool = False) -> int:
    """First step run, with diffusers img2img's rounding so both visit the same timesteps:
    SD's pipelines round the steps run down, SD3's the steps skipped (``flow``)."""
    if flow:
        return int(max(num_steps - num_steps * strength, 0))
    return num_steps - min(int(num_steps * strength), num_steps)


@register
class SDEdit(Method):
    name = "sdedit"
    summary = "SDEdit baseline: re-noise the input to a strength, denoise with the prompt"
    Params = SDEditParams
    batch_key = ("steps", "strength")

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        num_steps, strength = batch.shared("steps"), batch.shared("strength")
        first = start_index(num_steps, strength, flow=engine.kind == "flow")
        steps = engine.steps(batch)[first:]
        if not steps:
            raise ParameterError(
                f"strength {strength} with {num_steps} steps leaves no denoising step; "
                "raise strength or steps"
            )
        reference = batch.reference.expand(batch.size, -1, -1, -1)
        generators = engine.generators(batch)
        noise = engine.noise(generators, reference.shape)
        x = steps[0].noised(reference, noise)
        step_noise = engine.step_noise(batch, generators, x)
        return MethodOutput(engine.sample(x, steps, engine.conditioning(batch), noise=step_noise))
