"""A new sampler: DDIM with eta 0.5, half of DDPM's fresh noise per step
(docs/architecture.md, "A sampler").

Run it: ``PYTHONPATH=src python docs/examples/sampler.py`` (the tiny random model).
"""

from __future__ import annotations

import torch

from laspa.loop import Conditioning, Denoiser, Step, sample
from laspa.samplers import SAMPLERS, RowNoise, Sampler, ancestral_sigma, ddim_timesteps


class HalfAncestral(Sampler):
    name = "half-ancestral"
    summary = "DDIM with eta 0.5"
    deterministic = False  # methods that invert refuse it
    default_noise = "fresh"
    kinds = ("unet",)  # eps / v UNets; a flow model's steps are laspa.flow.FlowStep

    def steps(self, denoiser: Denoiser, num_steps: int, gamma: float = 1.0) -> list[Step]:
        steps = []
        for i, (t, t_prev) in enumerate(ddim_timesteps(denoiser, num_steps)):
            alpha, alpha_prev = denoiser.alpha(t), denoiser.alpha(t_prev)
            # the last step lands on the clean latent: no noise added there
            sigma = 0.0 if i == num_steps - 1 else 0.5 * ancestral_sigma(alpha, alpha_prev)
            steps.append(Step(i, num_steps, t, t_prev, alpha, alpha_prev, sigma=sigma))
        return steps


# Registered, the engine builds its steps for a batch that names it; the option's
# choices (SAMPLER_CHOICES in laspa/methods/base.py) must name it too for `--sampler`.
SAMPLERS[HalfAncestral.name] = HalfAncestral()


def main() -> torch.Tensor:
    from laspa.testing import tiny_editor

    engine = tiny_editor().engine
    steps = SAMPLERS["half-ancestral"].steps(engine.denoiser, 4)
    generators = [torch.Generator().manual_seed(0)]
    x = torch.randn(1, 4, 8, 8, generator=generators[0])
    conditioning = Conditioning(engine.text_embeddings(["a cat"]))  # unguided
    noise = RowNoise(generators, x, fresh=True)
    return sample(engine.denoiser, x, steps, conditioning, noise=noise)


if __name__ == "__main__":
    print(main().shape)
