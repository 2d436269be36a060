"""Samplers: the step rule of the one loop, as the list of :class:`~laspa.loop.Step` it walks.

Each sampler is one generalised DDIM update (laspa.loop.Step) with its own timesteps and
coefficients, so every method's hooks (which act on x_t, eps and x0) run unchanged on all:

- ``ddim``: eta 0, ``x_prev = sqrt(a') x0 + sqrt(1 - a') eps``; the default for SD models.
- ``ancestral``: DDPM's posterior, i.e. DDIM with eta 1:
  ``sigma^2 = (1 - a') / (1 - a) * (1 - a / a')``, the noise fresh per step or fixed per
  edit. Euler ancestral on the model's sigmas is the same update in k-diffusion's
  coordinates (x / sqrt(a)), so checkpoints that name EulerAncestral or DDPM run it.
- ``lcm``: LCM multistep consistency sampling (Luo et al. 2023): ``LCMScheduler``'s
  skipping-step timesteps, the boundary conditions ``c_skip = s_d^2 / ((t s)^2 + s_d^2)``,
  ``c_out = t s / sqrt((t s)^2 + s_d^2)`` (s = ``timestep_scaling``, s_d = 0.5), and the
  consistency estimate re-noised to the next timestep: ``sigma^2 = 1 - a'``.
- ``tcd``: Trajectory Consistency Distillation's strategic stochastic sampling (Zheng et
  al. 2024; diffusers' ``TCDScheduler``) on LCM's timesteps: the estimate is taken to the
  intermediate timestep ``s = floor((1 - gamma) t')`` along the model's own eps and
  re-noised from there, i.e. ``sigma^2 = 1 - a' / a_s``. ``gamma`` 1 is ``lcm``, 0 is
  deterministic (DDIM with consistency estimates), which lets a few-step model keep what
  earlier steps decided, as DDIM does.

- ``flow``: Euler on a rectified-flow model's sigmas (SD3; diffusers'
  ``FlowMatchEulerDiscreteScheduler``, with its config's shift), in the loop's terms
  (laspa.flow): the model's velocity v at level s gives ``x0 = x_s - s v`` and
  ``eps = x_s + (1 - s) v``, and ``x_{s'} = x_s + (s' - s) v = (1 - s') x0 + s' eps``.
  It is the only sampler of flow models, and runs on them only.

(a, a' are alphas_cumprod at t and at the next timestep.) The last step of every sampler
lands on the clean latent (a' = 1, sigma = 0) unless the engine keeps the model's final
alpha (``final_step="scheduler"``) on DDIM and ancestral.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch

from .errors import ParameterError
from .flow import flow_steps
from .loop import Step, ddim_steps, ddim_timesteps

if TYPE_CHECKING:
    from .loop import Denoiser


class Sampler:
    """A step rule: the steps of ``num_steps`` on a denoiser's noise schedule."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: whether a run is a deterministic function of x_T (what inversion needs)
    deterministic: ClassVar[bool] = True
    #: the step noise when the user leaves it to the sampler: "fixed" or "fresh"
    default_noise: ClassVar[str] = "fixed"
    #: the denoiser kinds it runs on: "unet" (eps / v models), "flow" (rectified flow)
    kinds: ClassVar[tuple[str, ...]] = ("unet",)
    #: steps of an edit that names none: a few-step sampler's own count, else None (the
    #: method's default)
    default_steps: ClassVar[int | None] = None

    def steps(self, denoiser: Denoiser, num_steps: int, gamma: float = 1.0) -> list[Step]:
        """``gamma``: the stochasticity of samplers that have one (tcd); others ignore it."""
        raise NotImplementedError

    def is_deterministic(self, gamma: float) -> bool:
        return self.deterministic


class DDIM(Sampler):
    name = "ddim"
    summary = "DDIM, eta 0: deterministic"

    def steps(self, denoiser: Denoiser, num_steps: int, gamma: float = 1.0) -> list[Step]:
        return ddim_steps(denoiser, num_steps)


def ancestral_sigma(alpha: float, alpha_prev: float) -> float:
    """DDPM's posterior standard deviation between two noise levels (DDIM's eta = 1)."""
    return ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)) ** 0.5


class Ancestral(Sampler):
    name = "ancestral"
    summary = "DDPM / ancestral (DDIM with eta 1): fresh noise every step"
    deterministic = False
    default_noise = "fresh"

    def steps(self, denoiser: Denoiser, num_steps: int, gamma: float = 1.0) -> list[Step]:
        steps = []
        for i, (t, t_prev) in enumerate(ddim_timesteps(denoiser, num_steps)):
            alpha, alpha_prev = denoiser.alpha(t), denoiser.alpha(t_prev)
            sigma = ancestral_sigma(alpha, alpha_prev)
            steps.append(Step(i, num_steps, t, t_prev, alpha, alpha_prev, sigma=sigma))
        return steps


#: sigma_data of the LCM boundary conditions (diffusers' LCMScheduler)
LCM_SIGMA_DATA = 0.5


def consistency_scalings(t: int, timestep_scaling: float) -> tuple[float, float]:
    """LCM's boundary conditions (c_skip, c_out) at timestep ``t``: c_skip(0) = 1,
    c_out(0) = 0, so the consistency function is the identity on clean latents."""
    scaled = t * timestep_scaling
    c_skip = LCM_SIGMA_DATA**2 / (scaled**2 + LCM_SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + LCM_SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


class LCM(Sampler):
    name = "lcm"
    summary = "LCM multistep consistency sampling: few steps, re-noised consistency estimates"
    deterministic = False
    default_steps = 4

    def steps(self, denoiser: Denoiser, num_steps: int, gamma: float = 1.0) -> list[Step]:
        return consistency_steps(denoiser, num_steps, gamma=1.0)


class TCD(Sampler):
    name = "tcd"
    summary = "TCD: LCM's steps, re-noised from (1 - gamma) of the way (gamma 0: deterministic)"
    deterministic = False
    default_steps = 4
    # the update keeps a direction term (the model's eps, which carries earlier steps'
    # noise): adding the same draw again every step would compound it, unlike lcm's
    default_noise = "fresh"

    def steps(self, denoiser: Denoiser, num_steps: int, gamma: float = 1.0) -> list[Step]:
        return consistency_steps(denoiser, num_steps, gamma)

    def is_deterministic(self, gamma: float) -> bool:
        return gamma == 0.0


def consistency_steps(denoiser: Denoiser, num_steps: int, gamma: float) -> list[Step]:
    """LCMScheduler's timesteps with the boundary conditions, each estimate carried to
    ``s = floor((1 - gamma) t')`` along the step's eps and re-noised from there to t'."""
    from diffusers import LCMScheduler

    scheduler = LCMScheduler.from_config(denoiser.scheduler_config)
    try:
        scheduler.set_timesteps(num_steps)
    except ValueError as error:
        raise ParameterError(f"steps: {error}") from None
    timesteps = [int(t) for t in scheduler.timesteps]
    scaling = float(scheduler.config.timestep_scaling)
    steps = []
    for i, t in enumerate(timesteps):
        last = i == len(timesteps) - 1
        t_prev = -1 if last else timesteps[i + 1]
        alpha = denoiser.alpha(t)
        # LCMScheduler returns the consistency estimate itself after the last step
        alpha_prev = 1.0 if last else denoiser.alpha(t_prev)
        c_skip, c_out = consistency_scalings(t, scaling)
        if last:
            sigma = 0.0
        else:
            s = math.floor((1 - gamma) * t_prev)
            alpha_s = denoiser.alpha(s) if s > 0 else 1.0
            sigma = max(1 - alpha_prev / alpha_s, 0.0) ** 0.5
        steps.append(Step(i, num_steps, t, t_prev, alpha, alpha_prev, c_skip, c_out, sigma))
    return steps


class Flow(Sampler):
    name = "flow"
    summary = "Euler on a flow model's shifted sigmas (SD3): deterministic"
    kinds = ("flow",)

    def steps(self, denoiser: Denoiser, num_steps: int, gamma: float = 1.0) -> list[Step]:
        return flow_steps(denoiser, num_steps)


SAMPLERS: dict[str, Sampler] = {s.name: s for s in (DDIM(), Ancestral(), LCM(), TCD(), Flow())}
#: the samplers of UNet (eps / v) models, and of flow models
UNET_SAMPLERS = ("ddim", "ancestral", "lcm", "tcd")
FLOW_SAMPLERS = ("flow",)

#: scheduler classes whose update is the ancestral one, and LCM's
_ANCESTRAL = {
    "DDPMScheduler", "EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
    "DPMSolverSDEScheduler",
}  # fmt: skip
_LCM = {"LCMScheduler"}
_TCD = {"TCDScheduler"}
_FLOW = {"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"}


def sampler_for_scheduler(class_name: str) -> str:
    """The sampler a checkpoint's scheduler config asks for: LCM for LCMScheduler, ancestral
    for DDPM and the ancestral schedulers, DDIM for every deterministic one (PNDM, LMS,
    Euler, DPM-Solver, ...: the same ODE, DDIM its first-order solver); flow for the
    flow-matching schedulers."""
    if class_name in _FLOW:
        return "flow"
    if class_name in _LCM:
        return "lcm"
    if class_name in _TCD:
        return "tcd"
    if class_name in _ANCESTRAL:
        return "ancestral"
    return "ddim"


def step_noise_kind(requested: str, sampler: str) -> str:
    """ "fixed" or "fresh": the user's choice, else the sampler's default."""
    return SAMPLERS[sampler].default_noise if requested == "auto" else requested


class RowNoise:
    """Standard normal noise for the latent rows, each row drawn from its own generator.

    Fixed rows keep their first draw for the whole run; ``fresh`` rows draw a new one per
    call. The same generator may serve several rows (draws are taken in row order).
    With ``branches`` > 1 the rows are stacked that many times, branch after branch (a
    method whose edits run in several branches that share their noise).
    """

    def __init__(
        self, generators: Sequence[torch.Generator], like: torch.Tensor, fresh, branches: int = 1
    ):
        self.generators = list(generators)
        self.branches = branches
        self.like = like
        fresh = [bool(f) for f in (fresh if isinstance(fresh, Sequence) else [fresh] * len(like))]
        self.any_fresh = any(fresh)
        self.fresh = torch.tensor(fresh, device=like.device).view(-1, 1, 1, 1)
        self.z: torch.Tensor | None = None

    def _draw(self) -> torch.Tensor:
        shape = (1, *self.like.shape[1:])
        draws = [torch.randn(shape, generator=g, device=g.device) for g in self.generators]
        return torch.cat(draws).to(self.like.device)

    def __call__(self) -> torch.Tensor:
        if self.z is None:
            self.z = self._draw()
        elif self.any_fresh:
            self.z = torch.where(self.fresh, self._draw(), self.z)
        return self.z if self.branches == 1 else torch.cat([self.z] * self.branches)
