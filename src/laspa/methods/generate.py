"""Plain text-to-image generation: the floor every edit's time is held against."""

from __future__ import annotations

from .base import CommonParams, EditBatch, Method, MethodOutput, register


@register
class Generate(Method):
    name = "generate"
    summary = "text-to-image with the prompt, ignoring the input (the speed reference)"
    Params = CommonParams
    reads_image = False  # text to image: the input only sets the size

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        shape = (batch.size, *engine.latent_shape(batch.pixels)[1:])
        generators = engine.generators(batch)
        x_T = engine.noise(generators, shape)
        steps = engine.steps(batch)
        noise = engine.step_noise(batch, generators, x_T)
        return MethodOutput(engine.sample(x_T, steps, engine.conditioning(batch), noise=noise))
