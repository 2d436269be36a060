"""A new editing method: re-noise the input part-way, then pull each step's predicted x0
towards it with a per-edit weight (docs/architecture.md, "A method").

Run it: ``PYTHONPATH=src python docs/examples/method.py`` (the tiny random model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from laspa.loop import SamplerHooks, Step
from laspa.methods.base import CommonParams, EditBatch, Method, MethodOutput, option, register


@dataclass
class PullParams(CommonParams):
    # every option declares its range and help once: validation, --help, docs/cli.md,
    # the web UI's widgets and the bench's --param all read them from here
    weight: float = option(0.5, low=0.0, high=1.0, help="pull of x0 towards the input")
    strength: float = option(
        0.8, low=0.0, high=1.0, low_open=True, help="fraction of the schedule re-noised"
    )


class PullHooks(SamplerHooks):
    """x0 <- w * enc(I) + (1 - w) * x0 at every step, each row with its own w."""

    def __init__(self, reference: torch.Tensor, weight: torch.Tensor):
        self.reference, self.weight = reference, weight.view(-1, 1, 1, 1)
        self.full = bool((weight == 1).all())

    def needs_unet(self, step: Step, next_step: Step | None) -> bool:
        # at weight 1 in every row x0 is the reference and the direction is recomputed
        # from it below: nothing reads eps, so the loop may skip the UNet
        return not self.full

    def after_x0(self, step: Step, x, eps, x0):
        if self.full:  # the value itself, unblended, so that weight 1 keeps every bit
            return self.reference.expand_as(x0)
        return self.weight * self.reference + (1 - self.weight) * x0

    def direction(self, step: Step, x, eps, x0):
        return step.eps_for(x, x0)  # the eps that is consistent with the pulled x0


@register
class Pull(Method):
    name = "example-pull"
    summary = "re-noise the input, then pull x0 towards it (an example plug-in)"
    Params = PullParams
    # rows that differ in these run in separate UNet batches; weight may differ per row
    batch_key = ("steps", "strength")

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        steps = engine.steps(batch)  # the batch's sampler: DDIM, ancestral, LCM, flow, ...
        first = round(len(steps) * (1 - batch.shared("strength")))
        steps = steps[min(first, len(steps) - 1) :]
        reference = batch.reference.expand(batch.size, -1, -1, -1)
        generators = engine.generators(batch)  # one per row, from the row's seed
        # noise only through the step: its forward process knows the model's kind
        x = steps[0].noised(reference, engine.noise(generators, reference.shape))
        hooks = PullHooks(reference, batch.column("weight", reference.device))
        noise = engine.step_noise(batch, generators, x)  # None for a deterministic sampler
        latents = engine.sample(x, steps, engine.conditioning(batch), hooks, noise=noise)
        return MethodOutput(latents)


def main() -> tuple[list[float], float]:
    """UNet rows per edit: three weights in one batch, then weight 1 alone (no UNet)."""
    from PIL import Image

    from laspa.testing import tiny_editor

    editor = tiny_editor()
    image = Image.new("RGB", (32, 32), (200, 40, 40))
    variants = [{"prompt": "a cat", "weight": w, "steps": 4} for w in (0.0, 0.5, 1.0)]
    shared = editor.edit_many(image, variants, method="example-pull")
    alone = editor.edit(image, "a cat", method="example-pull", weight=1.0, steps=4)
    return [result.unet_evals for result in shared], alone.unet_evals


if __name__ == "__main__":
    print(main())
