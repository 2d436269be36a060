"""The one sampler loop, with named hook points.

::

    for step in steps:
        x    -> before_unet          input alignment, latent mixing, masked blending
        out  =  denoiser(x, t, text) attention hooks run inside the processors
                                     (skipped when needs_unet says its output is discarded)
        eps  =  step.eps_of(x, out)  a UNet's eps as is; a flow model's velocity converted
        eps  -> after_eps            error alignment
        x0   =  step.x0(x, eps)      -> after_x0    x0 alignment
        callback(step, x, x0, eps)   watching only (optional)
        dir  -> direction            the eps of the direction term (default: eps)
        x    =  step.update(x0, dir, noise)         -> after_step

A sampler (laspa.samplers) is the list of :class:`Step` the loop walks: each step's
timesteps, alphas and the coefficients of one generalised DDIM update, so DDIM, DDPM /
ancestral, LCM and flow (SD3, FLUX: laspa.flow) sampling share this loop and its hooks.
Every editing method is a :class:`SamplerHooks` subclass that overrides the points it
needs; its attention hooks are handed to :func:`sample` beside it, and a
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
    """One step from timestep ``t`` to ``t_prev`` (negative after the last step).

    The step rule is DDIM's generalised update (Song et al. 2021, eq. 12) with the
    consistency boundary conditions of LCM (Luo et al. 2023)::

        x0     = c_skip * x + c_out * (x - sqrt(1 - alpha) * eps) / sqrt(alpha)
        x_prev = sqrt(alpha_prev) * x0 + sqrt(1 - alpha_prev - sigma**2) * dir + sigma * n

    DDIM is ``c_skip = 0, c_out = 1, sigma = 0``; laspa.samplers sets the others.
    """

    index: int
    num_steps: int
    t: int
    t_prev: int
    alpha: float
    alpha_prev: float
    c_skip: float = 0.0
    c_out: float = 1.0
    #: standard deviation of the fresh noise n the update adds (0: deterministic)
    sigma: float = 0.0

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1

    def x0(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The clean latent this step predicts from the noise prediction ``eps`` at ``x``."""
        x0 = ddim.predict_x0(x, eps, self.alpha)
        if self.c_skip == 0.0 and self.c_out == 1.0:
            return x0
        return self.c_skip * x + self.c_out * x0

    def eps_for(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise prediction under which :meth:`x0` returns ``x0`` (its inverse)."""
        if self.c_skip != 0.0 or self.c_out != 1.0:
            x0 = (x0 - self.c_skip * x) / self.c_out
        return ddim.eps_from_x0(x, x0, self.alpha)

    def update(
        self, x0: torch.Tensor, eps_dir: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The next latent from the predicted ``x0``, the direction's eps and, where
        ``sigma > 0``, fresh standard normal ``noise``."""
        if self.sigma == 0.0:
            return ddim.ddim_step(x0, eps_dir, self.alpha_prev)
        direction = max(1.0 - self.alpha_prev - self.sigma**2, 0.0) ** 0.5
        out = self.alpha_prev**0.5 * x0 + self.sigma * noise
        return out + direction * eps_dir if direction else out

    def eps_of(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The noise prediction of the denoiser's output ``out`` at ``x`` (a UNet's output
        is eps already; a flow model's velocity is converted, see laspa.flow)."""
        return out

    def x0_from(
        self, x: torch.Tensor, eps: torch.Tensor, out: torch.Tensor, changed: bool
    ) -> torch.Tensor:
        """The x0 of the (hooked) ``eps``, given the denoiser's own output ``out`` and
        whether a hook ``changed`` eps; on a UNet step simply :meth:`x0`."""
        return self.x0(x, eps)

    @property
    def eps_determines_x0(self) -> bool:
        """Whether eps at x fixes x0 (not so for a flow model's pure noise, laspa.flow)."""
        return True

    @property
    def flow_level(self) -> float:
        """The level s of this step's latent as a rectified flow: a variance-preserving
        x_t = sqrt(a) x0 + sqrt(1 - a) eps is c * ((1 - s) x0 + s eps) with
        c = sqrt(a) + sqrt(1 - a) and s = sqrt(1 - a) / c (laspa.flow; FlowEdit on UNets)."""
        return flow_level(self.alpha)

    @property
    def flow_level_prev(self) -> float:
        return flow_level(self.alpha_prev)

    @property
    def flow_scale(self) -> float:
        """c: the model's latent is c times the flow latent at :attr:`flow_level`."""
        return self.alpha**0.5 + (1 - self.alpha) ** 0.5

    def noised(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x0`` taken to this step's noise level with ``noise`` (q(x_t | x0))."""
        return ddim.forward_noise(x0, noise, self.alpha)

    def noised_prev(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x0`` taken to the noise level this step lands on."""
        return ddim.forward_noise(x0, noise, self.alpha_prev)


def flow_level(alpha: float) -> float:
    """s = sqrt(1 - a) / (sqrt(a) + sqrt(1 - a)): the rectified-flow level of alpha."""
    noise = (1 - alpha) ** 0.5
    return noise / (alpha**0.5 + noise)


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
    #: (rows, dim): the guidance embedding of a UNet distilled with it (LCM's w-embedding,
    #: ``time_cond_proj_dim``), which then guides in place of an unconditional row
    timestep_cond: torch.Tensor | None = None
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
        then every row's conditional ones, and the extra inputs (``added_cond_kwargs``
        and, under its own name, ``timestep_cond``). The same at every step of a run,
        so they are stacked once."""
        if self.timestep_cond is not None and self.guided_from < self.rows:
            raise ValueError("a guidance embedding replaces the unconditional rows")
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
            if self.timestep_cond is not None:
                extra["timestep_cond"] = self.timestep_cond.to(dtype)
            self._inputs = (embeddings.to(dtype), extra)
        return self._inputs


class Denoiser:
    """A UNet with its noise schedule: guided noise predictions and the alphas samplers read.

    ``scheduler`` is a DDIMScheduler on the model's schedule; ``scheduler_config`` the
    checkpoint's own scheduler config (default: ``scheduler``'s), which names the sampler
    the model was made for and holds LCM's settings.
    """

    def __init__(
        self, unet, scheduler, attention: AttentionState, final_step: str = "clean",
        scheduler_config=None,
    ):  # fmt: skip
        self.unet = unet
        self.scheduler_config = scheduler.config if scheduler_config is None else scheduler_config
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
        """The DDIM steps of ``num_steps`` on the model's schedule (laspa.samplers)."""
        return ddim_steps(self, num_steps)

    def forward(
        self,
        model_input: torch.Tensor,
        t: int,
        embeddings: torch.Tensor,
        added: dict[str, torch.Tensor],
        timestep_cond: torch.Tensor | None,
    ) -> torch.Tensor:
        """One unguided batch through the model, in float32 (a flow model overrides it)."""
        return self.unet(
            model_input.to(self.dtype), t, encoder_hidden_states=embeddings,
            timestep_cond=timestep_cond, added_cond_kwargs=added or None,
        ).sample.float()  # fmt: skip

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
        timestep_cond = extra.get("timestep_cond")
        added = {name: value for name, value in extra.items() if name != "timestep_cond"}
        step.rows, step.uncond_rows = x.shape[0], len(guided)
        step.latent_hw = (x.shape[-2], x.shape[-1])
        self.attention.step = step
        with torch.no_grad():
            out = self.forward(model_input, t, embeddings, added, timestep_cond)
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
    noise: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the sampler's ``steps`` from ``x`` (at ``steps[0].t``); return the final latents.

    ``hooks`` change the latents at the loop's hook points, ``attention`` hooks act inside
    the UNet's attention layers during this run, ``callback`` only watches (at a step
    whose UNet output every row discards, see ``SamplerHooks.needs_unet``, its eps is NaN).
    ``noise()`` returns the fresh noise of a step whose update adds some (``sigma > 0``).
    """
    hooks = hooks or SamplerHooks()
    if noise is None and any(step.sigma for step in steps):
        raise ValueError("these steps add noise: pass the rows' noise source")
    denoiser.attention.hooks = list(attention)
    try:
        for position, step in enumerate(steps):
            x = hooks.before_unet(step, x)
            next_step = steps[position + 1] if position + 1 < len(steps) else None
            # attention hooks read the UNet's attention: a step they see must run it
            if attention or hooks.needs_unet(step, next_step):
                info = StepInfo(index=step.index, num_steps=step.num_steps, timestep=step.t)
                out = denoiser.eps(x, step.t, conditioning, info)
            else:
                out = torch.full_like(x, float("nan"))
            # a UNet predicts eps; a flow model's velocity becomes eps here (laspa.flow)
            model_eps = step.eps_of(x, out)
            eps = hooks.after_eps(step, x, model_eps)
            x0 = step.x0_from(x, eps, out, changed=eps is not model_eps)
            x0 = hooks.after_x0(step, x, eps, x0)
            if callback is not None:
                callback(step, x, x0, eps)
            eps_dir = hooks.direction(step, x, eps, x0)
            fresh = noise() if step.sigma else None
            x = hooks.after_step(step, step.update(x0, eps_dir, fresh))
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


def ddim_timesteps(denoiser: Denoiser, num_steps: int) -> list[tuple[int, int]]:
    """(t, t_prev) pairs of DDIMScheduler's schedule on the model's config (its timestep
    spacing and offset), with DDIMScheduler's ``t_prev = t - T // num_steps``."""
    scheduler = denoiser.scheduler
    try:
        scheduler.set_timesteps(num_steps)
    except ValueError as error:
        raise ParameterError(f"steps: {error}") from None
    total = denoiser.num_train_timesteps
    timesteps = [int(t) for t in scheduler.timesteps]
    if max(timesteps) >= total:
        raise ParameterError(
            f"steps must be below {num_steps} for this model: its schedule would pass "
            f"timestep {total - 1}"
        )
    ratio = total // num_steps
    return [(t, t - ratio) for t in timesteps]


def ddim_steps(denoiser: Denoiser, num_steps: int) -> list[Step]:
    """DDIM's (eta 0) steps of ``num_steps``: the ``ddim`` sampler's, and inversion's."""
    return [
        Step(i, num_steps, t, t_prev, denoiser.alpha(t), denoiser.alpha(t_prev))
        for i, (t, t_prev) in enumerate(ddim_timesteps(denoiser, num_steps))
    ]
