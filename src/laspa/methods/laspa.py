"""LASPA: sample from noise with the edit prompt while aligning towards enc(I).

Three alignments, one hook point each (docs/methods.md, "LASPA"):

- ``laspa-input``  before the UNet: ``x_t <- b*s_t + (1-b)*x_t``, s_t the stochastic inverse;
- ``laspa-eps``    after eps: ``eps <- b*e_rec + (1-b)*eps``;
- ``laspa-x0``     after x0: ``x0 <- b*r + (1-b)*x0`` (our default method; with its default
  ``consistent`` direction it is exactly error alignment with the exact eps form).

``b`` is :func:`laspa.ddim.alignment_weight`, zero for ``t <= K``. Rows of one batch may
carry different K, beta and schedules: weights are per-row tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import ddim
from ..loop import SamplerHooks, Step
from ..samplers import RowNoise
from .base import CommonParams, EditBatch, Method, MethodOutput, option, register

WeightFn = Callable[[int], torch.Tensor]


def beta_option(default: float) -> Any:
    """The alignment strength, with the range every LASPA alignment shares."""
    return option(default, low=0.0, high=1.0, help="alignment strength")


def beta_schedule_option() -> Any:
    return option("constant", choices=("constant", "linear"), help="b_t = beta, or beta * t / T")


def direction_option() -> Any:
    """x0 alignment's direction term; consistent rather than the paper's asymmetric:
    measured (docs/methods.md, "LASPA")."""
    return option(
        "consistent",
        choices=("asymmetric", "consistent"),
        help="direction term from the UNet's eps, or recomputed from the aligned x0",
    )


#: On a few-step schedule K leaves at least the last step free: K 200 would align every
#: step of LCM's 999, 759, 499, 259 and return 0.9 of the input (docs/results.md, "Few-step
#: editing: mini-lcm").
FEW_STEP_K = 300


@dataclass
class LaspaParams(CommonParams):
    K: int = option(200, low=0, high=1000, help="align while t > K (lower K: more preservation)")
    beta: float = beta_option(0.3)
    beta_schedule: str = beta_schedule_option()

    @classmethod
    def few_step_defaults(cls, steps: list[Step]) -> dict[str, Any]:
        """Align while t > max(FEW_STEP_K, the last step's t): the last step is never
        aligned (at 2 steps, 999 and 499, that is half of them)."""
        return {"K": max(FEW_STEP_K, int(steps[-1].t))}


@dataclass
class InputParams(LaspaParams):
    # beta 0.7 rather than the paper's 0.3: measured (docs/methods.md, "LASPA")
    beta: float = beta_option(0.7)
    noise: str = option(
        "fixed", choices=("fixed", "fresh"), help="z of s_t: fixed for the edit, or fresh per step"
    )


# K 200, beta 0.9 for the two alignments that act on the prediction: measured
# (docs/methods.md, "LASPA"; docs/results.md, "LASPA alignments")
@dataclass
class PredictionParams(LaspaParams):
    beta: float = beta_option(0.9)


@dataclass
class EpsParams(PredictionParams):
    eps_form: str = option(
        "exact", choices=("exact", "literal"), help="e_rec scaled so x0 = r, or x_t - r as printed"
    )


@dataclass
class X0Params(PredictionParams):
    direction: str = direction_option()


def weight_schedule(
    batch: EditBatch, num_train_timesteps: int, device, timesteps: list[int] = ()
) -> AlignmentWeights:
    """Per-row b_t by timestep, from the rows' K, beta and schedule; the weights of
    ``timesteps`` (the steps' and the final one) are computed at once up front."""
    beta = batch.column("beta", device)
    K = batch.column("K", device)
    linear = torch.tensor([s == "linear" for s in batch.param("beta_schedule")], device=device)

    def weight(t: int | torch.Tensor) -> torch.Tensor:
        return ddim.alignment_weight(t, beta, K, linear, num_train_timesteps)

    weights = AlignmentWeights(weight)
    if timesteps:
        column = torch.tensor(timesteps, dtype=beta.dtype, device=device)[:, None]
        weights.fill(timesteps, weight(column).view(len(timesteps), -1, 1, 1, 1))
    return weights


class AlignmentWeights:
    """``weight(t)`` with whether any row, and every row, is aligned at t, each worked out
    once per timestep: on a small model the few tensor ops and host reads behind them,
    repeated by every hook of every step, are a measurable part of the step."""

    def __init__(self, weight: WeightFn):
        self.weight = weight
        self._known: dict[int, tuple[torch.Tensor, bool, bool]] = {}

    def fill(self, timesteps: list[int], weights: torch.Tensor) -> None:
        """Record the weights of ``timesteps`` (one row of ``weights`` per timestep)."""
        values = weights.flatten(1).tolist()
        for t, weight, row in zip(timesteps, weights, values, strict=True):
            self._known[t] = (weight, any(v != 0 for v in row), all(v == 1 for v in row))

    def _facts(self, t: int) -> tuple[torch.Tensor, bool, bool]:
        if t not in self._known:
            self.fill([t], self.weight(t)[None])
        return self._known[t]

    def __call__(self, t: int) -> torch.Tensor:
        return self._facts(t)[0]

    def any(self, t: int) -> bool:
        """Whether some row is aligned at t (weight above 0)."""
        return self._facts(t)[1]

    def full(self, t: int) -> bool:
        """Whether every row's weight is 1 at t: the blend then returns the aligned value
        alone, and whatever it blends with is discarded."""
        return self._facts(t)[2]


def step_weights(weight: WeightFn) -> AlignmentWeights:
    """``weight`` as AlignmentWeights (hooks accept any function of t)."""
    return weight if isinstance(weight, AlignmentWeights) else AlignmentWeights(weight)


class InputAlignment(SamplerHooks):
    """Pull the sample towards the stochastic inverse of the reference before each UNet call.

    The final latent is aligned too when the weight at the terminal timestep is non-zero
    (never for K >= 0; the property tests use a weight of 1 everywhere), so that weight 1
    reproduces the reference exactly like the other two alignments.
    """

    def __init__(
        self, reference: torch.Tensor, weight: WeightFn, noise: Callable[[], torch.Tensor]
    ):
        self.reference = reference
        self.weight = step_weights(weight)
        self.noise = noise  # the z of s_t; called once per step (returns the same z if fixed)

    def _align(self, t: int, noised: Callable, x: torch.Tensor) -> torch.Tensor:
        """``noised``: the step's forward process to the level of ``t`` (laspa.loop.Step)."""
        if not self.weight.any(t):
            return x
        target = noised(self.reference, self.noise())
        return target if self.weight.full(t) else ddim.blend(target, x, self.weight(t))

    def needs_unet(self, step: Step, next_step: Step | None) -> bool:
        # this step's result is what the next alignment (or the final one) blends with
        t_next = step.t_prev if next_step is None else next_step.t
        return not self.weight.full(t_next)

    def before_unet(self, step: Step, x: torch.Tensor) -> torch.Tensor:
        return self._align(step.t, step.noised, x)

    def after_step(self, step: Step, x_prev: torch.Tensor) -> torch.Tensor:
        return self._align(step.t_prev, step.noised_prev, x_prev) if step.is_last else x_prev


class EpsAlignment(SamplerHooks):
    """Blend the guided eps with the noise that would make x0 exactly the reference."""

    def __init__(self, reference: torch.Tensor, weight: WeightFn, form: list[str]):
        self.reference = reference
        self.weight = step_weights(weight)
        self.forms = set(form)
        literal = [f == "literal" for f in form]
        self.literal = torch.tensor(literal, device=reference.device).view(-1, 1, 1, 1)

    def needs_unet(self, step: Step, next_step: Step | None) -> bool:
        # where eps does not fix x0 (a flow model's pure noise), x0 is the model's own
        return not (self.weight.full(step.t) and step.eps_determines_x0)

    def after_eps(self, step: Step, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if not self.weight.any(step.t):
            return eps
        if len(self.forms) == 1:  # one form for every row: no need to compute both
            e_rec = reconstruction_eps(step, x, self.reference, *self.forms)
        else:
            exact = reconstruction_eps(step, x, self.reference, "exact")
            literal = reconstruction_eps(step, x, self.reference, "literal")
            e_rec = torch.where(self.literal, literal, exact)
        return e_rec if self.weight.full(step.t) else ddim.blend(e_rec, eps, self.weight(step.t))


def reconstruction_eps(step: Step, x: torch.Tensor, reference: torch.Tensor, form: str):
    """LASPA's reconstruction error on ``step``'s sampler: ``exact`` is the eps under which
    the step's x0 is the reference (with LCM's boundary conditions where it has them),
    ``literal`` the paper's printed ``x_t - enc(I)``."""
    if form == "exact":
        return step.eps_for(x, reference)
    return ddim.reconstruction_eps(x, reference, step.alpha, form)


class X0Alignment(SamplerHooks):
    """Blend the predicted x0 with the reference; the direction term keeps the UNet's eps
    (asymmetric, after Asyrp) unless ``consistent`` rows recompute it from the aligned x0."""

    def __init__(self, reference: torch.Tensor, weight: WeightFn, direction: list[str]):
        self.reference = reference
        self.weight = step_weights(weight)
        consistent = [d == "consistent" for d in direction]
        self.consistent = torch.tensor(consistent, device=reference.device).view(-1, 1, 1, 1)
        self.all_consistent = all(consistent)

    def needs_unet(self, step: Step, next_step: Step | None) -> bool:
        # the asymmetric direction term is the UNet's eps itself
        return not (self.all_consistent and self.weight.full(step.t))

    def after_x0(self, step: Step, x, eps, x0):
        if not self.weight.any(step.t):
            return x0
        if self.weight.full(step.t):
            return self.reference.expand_as(x0)
        return ddim.blend(self.reference, x0, self.weight(step.t))

    def direction(self, step: Step, x, eps, x0):
        if self.all_consistent:
            return step.eps_for(x, x0)
        if not bool(self.consistent.any()):
            return eps
        return torch.where(self.consistent, step.eps_for(x, x0), eps)


class _Laspa(Method):
    """Shared run(): noise x_T from each row's seed, edit prompt, one aligned DDIM pass."""

    records_attention = True
    many_images = True  # every hook reads the reference row by row

    def hooks(self, batch: EditBatch, reference, weight, generators) -> SamplerHooks:
        raise NotImplementedError

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        steps = engine.steps(batch)
        reference = batch.reference.expand(batch.size, -1, -1, -1)
        generators = engine.generators(batch)
        x_T = engine.noise(generators, reference.shape)
        noise = engine.step_noise(batch, generators, x_T)
        timesteps = [step.t for step in steps] + [steps[-1].t_prev]
        weight = weight_schedule(batch, engine.num_train_timesteps, reference.device, timesteps)
        hooks = self.hooks(batch, reference, weight, generators)
        store = engine.attention_store() if batch.record_attention else None
        attention = [store] if store else []
        latents = engine.sample(
            x_T, steps, engine.conditioning(batch), hooks, attention=attention, noise=noise
        )
        return MethodOutput(latents, token_maps=store.mean() if store else None)


@register
class LaspaInput(_Laspa):
    name = "laspa-input"
    summary = "LASPA input alignment: pulls the sample towards the input's stochastic inverse"
    Params = InputParams

    def hooks(self, batch, reference, weight, generators):
        fresh = [p == "fresh" for p in batch.param("noise")]
        return InputAlignment(reference, weight, RowNoise(generators, reference, fresh))


@register
class LaspaEps(_Laspa):
    name = "laspa-eps"
    summary = "LASPA error alignment: pulls the predicted noise towards the reconstruction error"
    Params = EpsParams

    def hooks(self, batch, reference, weight, generators):
        return EpsAlignment(reference, weight, batch.param("eps_form"))


@register
class LaspaX0(_Laspa):
    name = "laspa-x0"
    summary = "LASPA x0 alignment (default direction: exact error alignment)"
    Params = X0Params

    def hooks(self, batch, reference, weight, generators):
        return X0Alignment(reference, weight, batch.param("direction"))
