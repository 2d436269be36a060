"""The one DDIM sampler loop, with named hook points.

::

    for t in timesteps:
        x    -> before_unet          input alignment, latent mixing, masked blending
        eps  =  UNet(x, t, text)     attention hooks run inside the processors
                                     (skipped when needs_unet says its output is discarded)
        eps  -> after_eps            error alignment
        x0   -> after_x0             x0 alignment
        callback(step, x, x0, eps)   watching only (optional)
        dir  -> direction            the eps of the direction term (default: eps)
        x    =  ddim_step(x0, dir)   -> after_step

Every editing method is a :class:`SamplerHooks` subclass that overrides the points
it needs; its attention hooks are handed to :func:`sample` beside it, and a
``callback(step, x, x0, eps)`` watches a run without changing it. Latents are kept in
float32 whatever the UNet's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from . import ddim
from .attention import AttentionHook, AttentionState, StepInfo
from .errors import ParameterError

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Step:
    """One DDIM step from timestep ``t`` to ``t_prev`` (negative after the last step)."""

    index: int
    num_steps: int
    t: int
    t_prev: int
    alpha: float
    alpha_prev: float

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1


#: Watches a run: called once per step with the step, the latent the UNet saw, the
#: predicted x0 and the (guided) eps, after the hooks changed them and before the update.
StepCallback = Callable[[Step, torch.Tensor, torch.Tensor, torch.Tensor], None]


class SamplerHooks:
    """Named hook points of the loop; the defaults are plain DDIM."""

    def needs_unet(self, step: Step, next_step: Step | None) -> bool:
        """Whether this step's result depends on the UNet's eps in any row.

        A method returns False only where its hooks replace everything eps feeds (the
        x0, the direction, or the whole step's result, which ``next_step``'s
        ``before_unet`` or this last step's ``after_step`` may overwrite): the loop then
        hands the hooks a NaN eps instead of evaluating the UNet, so a wrong answer shows.
        """
        return True

    def before_unet(self, step: Step, x: torch.Tensor) -> torch.Tensor:
        return x

    def after_eps(self, step: Step, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return eps

    def after_x0(
        self, step: Step, x: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor
    ) -> torch.Tensor:
        return x0

    def direction(
        self, step: Step, x: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor
    ) -> torch.Tensor:
        return eps

    def after_step(self, step: Step, x_prev: torch.Tensor) -> torch.Tensor:
        return x_prev


@dataclass
class Conditioning:
    """Text embeddings of the latent rows, and how to guide them.

    ``uncond=None`` runs the conditional branch alone (no classifier-free guidance),
    which is how DDIM inversion with the empty prompt evaluates the UNet once per row.
    The first ``unguided_rows`` rows skip guidance too, while the others are guided:
    a row whose prompt is empty (FPE's source) gains nothing from a second UNet row.
    """

    cond: torch.Tensor  # (rows, tokens, dim)
    uncond: torch.Tensor | None = None  # (rows, tokens, dim); rows < unguided_rows unused
    guidance: torch.Tensor | float = 7.5  # scalar or (rows, 1, 1, 1)
    unguided_rows: int = 0
    #: a model family's extra UNet inputs (``added_cond_kwargs``, e.g. SDXL's pooled
    #: ``text_embeds`` and ``time_ids``), each (rows, ...), for ``cond`` and ``uncond``
    added: dict[str, torch.Tensor] = field(default_factory=dict)
    uncond_added: dict[str, torch.Tensor] = field(default_factory=dict)
    _inputs: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def rows(self) -> int:
        return self.cond.shape[0]

    @property
    def guided_from(self) -> int:
        """The first row that is guided (all rows are unguided without ``uncond``)."""
        return self.rows if self.uncond is None else self.unguided_rows

    def unet_inputs(self, dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The UNet batch's text inputs in ``dtype``: unconditional rows of the guided rows,
        then every row's conditional ones. The same at every step of a run, so they are
        stacked once."""
        if self._inputs is None or self._inputs[0].dtype != dtype:
            skip = self.guided_from
            embeddings, added = self.cond, self.added
            if skip < self.rows:
                embeddings = torch.cat([self.uncond[skip:], self.cond])
                added = {
                    name: torch.cat([self.uncond_added[name][skip:], value])
                    for name, value in added.items()
                }
            extra = {name: value.to(dtype) for name, value in added.items()}
            self._inputs = (embeddings.to(dtype), extra)
        return self._inputs


class Denoiser:
    """A UNet with its noise schedule: guided noise predictions and DDIM timesteps."""

    def __init__(self, unet, scheduler, attention: AttentionState, final_step: str = "clean"):
        self.unet = unet
        # Read once: ModelMixin.dtype walks every module, a measurable cost per step on
        # a small UNet. The Editor places the UNet before building its Denoiser.
        self.dtype = next(unet.parameters()).dtype
        self.scheduler = scheduler
        self.attention = attention
        self.alphas_cumprod = scheduler.alphas_cumprod.double().cpu()
        # "clean": the last step lands on alpha = 1, the clean image, as DDIM defines it.
        # "scheduler": the model config's final alpha, as diffusers' pipelines use it; SD's
        # set_alpha_to_one=False stops at alphas_cumprod[0] and so adds sqrt(1 - a_0) times
        # the *guided* eps to the output. The bench's peers follow this choice
        # (docs/methods.md, "The clean last step", with its measurement).
        if final_step not in ("clean", "scheduler"):
            raise ValueError(f"final_step must be 'clean' or 'scheduler', got {final_step!r}")
        self.final_alpha = 1.0 if final_step == "clean" else float(scheduler.final_alpha_cumprod)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        self.unet_evals = 0  # UNet batch rows evaluated since the last reset

    def alpha(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha

    def steps(self, num_steps: int) -> list[Step]:
        """The DDIM steps the model's scheduler visits, with DDIMScheduler's ``t_prev`` rule.
        A count the model's schedule cannot take (SD's ``steps_offset`` 1 moves the last
        of 1000 steps past the schedule's end) is a ParameterError."""
        try:
            self.scheduler.set_timesteps(num_steps)
        except ValueError as error:
            raise ParameterError(f"steps: {error}") from None
        ratio = self.num_train_timesteps // num_steps
        timesteps = [int(t) for t in self.scheduler.timesteps]
        if max(timesteps) >= self.num_train_timesteps:
            raise ParameterError(
                f"steps must be below {num_steps} for this model: its schedule would pass "
                f"timestep {self.num_train_timesteps - 1}"
            )
        return [
            Step(i, num_steps, t, t - ratio, self.alpha(t), self.alpha(t - ratio))
            for i, t in enumerate(timesteps)
        ]

    def eps(
        self,
        x: torch.Tensor,
        t: int,
        conditioning: Conditioning,
        step: StepInfo,
        alpha: float | None = None,
    ) -> torch.Tensor:
        """Guided noise prediction for the latent rows ``x`` at timestep ``t``.

        ``alpha`` is the noise level of ``x`` where it is not ``t``'s (DDIM inversion): a
        v-prediction becomes eps with it, as diffusers' DDIMInverseScheduler converts."""
        skip = conditioning.guided_from
        guided = x[skip:]  # the rows that also need an unconditional prediction
        model_input = torch.cat([guided, x]) if len(guided) else x
        embeddings, extra = conditioning.unet_inputs(self.dtype)
        step.rows, step.uncond_rows = x.shape[0], len(guided)
        step.latent_hw = (x.shape[-2], x.shape[-1])
        self.attention.step = step
        with torch.no_grad():
            out = self.unet(
                model_input.to(self.dtype), t, encoder_hidden_states=embeddings,
                added_cond_kwargs=extra or None,
            ).sample.float()  # fmt: skip
        self.unet_evals += model_input.shape[0]
        if self.prediction_type == "v_prediction":
            out = ddim.v_to_eps(model_input, out, self.alpha(t) if alpha is None else alpha)
        if not len(guided):
            return out
        eps_uncond, eps_cond = out[: len(guided)], out[len(guided) :]
        guidance = conditioning.guidance
        if isinstance(guidance, torch.Tensor) and guidance.ndim:
            guidance = guidance[skip:]
        eps = ddim.guided_eps(eps_uncond, eps_cond[skip:], guidance)
        return torch.cat([eps_cond[:skip], eps]) if skip else eps


def sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    steps: list[Step],
    conditioning: Conditioning,
    hooks: SamplerHooks | None = None,
    progress: ProgressCallback | None = None,
    *,
    attention: Sequence[AttentionHook] = (),
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run DDIM from ``x`` (at ``steps[0].t``) through ``steps``; return the final latents.

    ``hooks`` change the latents at the loop's hook points, ``attention`` hooks act inside
    the UNet's attention layers during this run, ``callback`` only watches (at a step
    whose UNet output every row discards, see ``SamplerHooks.needs_unet``, its eps is NaN).
    """
    hooks = hooks or SamplerHooks()
    denoiser.attention.hooks = list(attention)
    try:
        for position, step in enumerate(steps):
            x = hooks.before_unet(step, x)
            next_step = steps[position + 1] if position + 1 < len(steps) else None
            # attention hooks read the UNet's attention: a step they see must run it
            if attention or hooks.needs_unet(step, next_step):
                info = StepInfo(index=step.index, num_steps=step.num_steps, timestep=step.t)
                eps = denoiser.eps(x, step.t, conditioning, info)
            else:
                eps = torch.full_like(x, float("nan"))
            eps = hooks.after_eps(step, x, eps)
            x0 = hooks.after_x0(step, x, eps, ddim.predict_x0(x, eps, step.alpha))
            if callback is not None:
                callback(step, x, x0, eps)
            eps_dir = hooks.direction(step, x, eps, x0)
            x = hooks.after_step(step, ddim.ddim_step(x0, eps_dir, step.alpha_prev))
            if progress is not None:
                progress(step.index + 1, step.num_steps)
    finally:
        denoiser.attention.hooks = []
    return x


def invert(
    denoiser: Denoiser,
    x0: torch.Tensor,
    steps: list[Step],
    conditioning: Conditioning,
    progress: ProgressCallback | None = None,
) -> list[torch.Tensor]:
    """DDIM inversion of clean latents along ``steps`` (given in sampling order).

    Returns the trajectory aligned with ``steps``: ``trajectory[i]`` is the latent at
    ``steps[i].t`` (so ``trajectory[0]`` is x_T), and ``trajectory[-1]`` is the input
    ``x0``. The UNet is evaluated at the timestep being moved to, as in DDIM inversion
    practice (the exact eps at the current level is not available); a v-prediction is
    turned into eps with the current latent's alpha, as diffusers' DDIMInverseScheduler does.
    """
    trajectory = [x0]
    x = x0
    for count, step in enumerate(reversed(steps), start=1):
        info = StepInfo(index=step.index, num_steps=step.num_steps, timestep=step.t)
        eps = denoiser.eps(x, step.t, conditioning, info, alpha=step.alpha_prev)
        x = ddim.ddim_inversion_step(x, eps, step.alpha_prev, step.alpha)
        trajectory.append(x)
        if progress is not None:
            progress(count, len(steps))
    trajectory.reverse()
    return trajectory
