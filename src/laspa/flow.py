"""Rectified-flow models (SD3, FLUX) in the loop's terms: the step, and the denoisers.

A flow model (SD3's MMDiT; diffusers' ``FlowMatchEulerDiscreteScheduler``) noises a clean
latent x0 with eps along a straight line and predicts the velocity v = eps - x0::

    x_s = (1 - s) x0 + s eps,   s in [0, 1] (the scheduler's sigma, after its shift)

so the loop's two predictions follow from v at x_s:

    x0  = x_s - s v
    eps = x_s + (1 - s) v

and the Euler step of the flow ODE from s to s' (what the scheduler does) is a generalised
DDIM step in these terms::

    x_{s'} = x_s + (s' - s) v = (1 - s') x0 + s' eps

Every hook of the loop (which acts on x_t, eps and x0) therefore runs unchanged, and the
LASPA alignments read, in flow terms (b the alignment weight, z_I the input's latent):

- input alignment:  ``x_s <- (1 - b) x_s + b ((1 - s) z_I + s z)``;
- error alignment:  ``eps <- (1 - b) eps + b eps*``, ``eps* = (x_s - (1 - s) z_I) / s``
  (the eps under which x0 = z_I);
- x0 alignment:     ``x0 <- (1 - b) x0 + b z_I``; the consistent direction is then
  ``eps' = (x_s - (1 - s) x0') / s``, i.e. ``v' = (x_s - x0') / s``; the asymmetric one
  keeps the model's eps (``v' = eps - x0'``).

At b = 1 every one of them lands on z_I at s = 0. At s = 1 the latent is pure noise and
eps = x_s whatever the model says, so eps carries nothing about x0 there: the step takes
x0 from the model's velocity, and a hook's change of eps at s = 1 leaves x0 as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionState
from .errors import ParameterError
from .loop import Denoiser, Step


def velocity_to_eps(x: torch.Tensor, v: torch.Tensor, s: float) -> torch.Tensor:
    """eps = x_s + (1 - s) v."""
    return x + (1 - s) * v


def velocity_to_x0(x: torch.Tensor, v: torch.Tensor, s: float) -> torch.Tensor:
    """x0 = x_s - s v."""
    return x - s * v


def flow_noised(x0: torch.Tensor, noise: torch.Tensor, s: float) -> torch.Tensor:
    """x_s = (1 - s) x0 + s eps (diffusers' ``scale_noise``)."""
    return s * noise + (1.0 - s) * x0


def vp_alpha(s: float) -> float:
    """The alpha (alphas_cumprod) of the variance-preserving latent with the same
    signal-to-noise ratio as x_s: ``(1 - s)^2 / ((1 - s)^2 + s^2)``. For reference only:
    flow steps never compute with it."""
    return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)


@dataclass(frozen=True)
class FlowStep(Step):
    """One Euler step of a flow model from level ``s`` to ``s_prev`` (0 after the last).

    ``t`` and ``t_prev`` are the model's timesteps (``s * num_train_timesteps``, floats);
    ``alpha`` and ``alpha_prev`` are :func:`vp_alpha` of the levels, for reference.
    """

    s: float = 1.0
    s_prev: float = 0.0

    def x0(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (x - self.s * eps) / (1 - self.s)

    def eps_for(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (x - (1 - self.s) * x0) / self.s

    def update(
        self, x0: torch.Tensor, eps_dir: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.s_prev == 0.0:  # lands on x0 itself (no 0 * eps: eps may be NaN there)
            return x0 * 1.0
        return (1 - self.s_prev) * x0 + self.s_prev * eps_dir

    def eps_of(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return velocity_to_eps(x, out, self.s)

    def x0_from(
        self, x: torch.Tensor, eps: torch.Tensor, out: torch.Tensor, changed: bool
    ) -> torch.Tensor:
        # the model's own x0 where eps is the model's (better conditioned than through eps
        # near s = 1), and at s = 1, where eps cannot say anything about x0
        if not changed or self.s >= 1.0:
            return velocity_to_x0(x, out, self.s)
        return self.x0(x, eps)

    @property
    def eps_determines_x0(self) -> bool:
        return self.s < 1.0

    @property
    def flow_level(self) -> float:
        return self.s

    @property
    def flow_level_prev(self) -> float:
        return self.s_prev

    @property
    def flow_scale(self) -> float:
        return 1.0

    def noised(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return flow_noised(x0, noise, self.s)

    def noised_prev(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return flow_noised(x0, noise, self.s_prev)


class FlowDenoiser(Denoiser):
    """A flow transformer (SD3's ``SD3Transformer2DModel``) with its flow-matching scheduler:
    guided velocity predictions, and the sigmas (after the config's shift) of a run.

    ``forward`` takes the text embeddings and the pooled projections (``added``'s
    ``pooled_projections``); guidance is classifier-free on the velocity, as in diffusers'
    StableDiffusion3Pipeline.
    """

    def __init__(self, transformer, scheduler, attention: AttentionState):
        self.unet = transformer  # the denoiser's network, under the name the engine reads
        self.scheduler_config = scheduler.config
        self.dtype = next(transformer.parameters()).dtype
        self.scheduler = scheduler
        self.attention = attention
        self.final_alpha = 1.0
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = "flow"
        self.unet_evals = 0
        #: the latent (h, w) the next steps are for: a resolution-dependent shift reads it
        self.latent_hw: tuple[int, int] | None = None
        #: a guidance-distilled model (FLUX-dev) takes the scale as an input, not by CFG
        self.guidance_embeds = False
        #: channels of the loop's latents (FLUX's transformer takes them packed, 4x)
        self.latent_channels = int(transformer.config.in_channels)
        #: how many identical tokens the text's last token stands for (SD3 without T5:
        #: StableDiffusion3Text.last_token_repeats); its attention logits get log of it
        self.last_token_repeats = 1

    def alpha(self, t: float) -> float:
        return vp_alpha(t / self.num_train_timesteps) if t > 0 else 1.0

    def sigmas(self, num_steps: int, latent_hw: tuple[int, int] | None = None):
        """(timesteps, sigmas) of ``num_steps`` as the scheduler sets them (its shift, and
        its resolution-dependent shift where the config asks for one); sigmas end in 0."""
        kwargs = {}
        if self.scheduler_config.get("use_dynamic_shifting"):
            kwargs["mu"] = self.dynamic_shift(latent_hw or self.latent_hw)
        self.scheduler.set_timesteps(num_steps, **kwargs)
        timesteps = [float(t) for t in self.scheduler.timesteps]
        sigmas = [float(s) for s in self.scheduler.sigmas]
        return timesteps, sigmas

    def dynamic_shift(self, latent_hw: tuple[int, int] | None, patch: int | None = None) -> float:
        """diffusers' ``calculate_shift`` (mu) for an image of ``latent_hw`` latent pixels
        (default: the model's own size), in patches of ``patch`` (default: the
        transformer's patch size)."""
        config, model = self.scheduler_config, self.unet.config
        patch = patch or int(model.get("patch_size", 1) or 1)
        if latent_hw is None:
            latent_hw = (int(model.sample_size),) * 2
        tokens = (latent_hw[0] // patch) * (latent_hw[1] // patch)
        base, top = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
        low, high = config.get("base_shift", 0.5), config.get("max_shift", 1.16)
        slope = (high - low) / (top - base)
        return tokens * slope + (low - slope * base)

    def steps(self, num_steps: int) -> list[Step]:
        return flow_steps(self, num_steps)

    def forward(self, model_input, t, embeddings, added, timestep_cond) -> torch.Tensor:
        timestep = torch.full((model_input.shape[0],), float(t), device=model_input.device)
        return self.unet(
            hidden_states=model_input.to(self.dtype), timestep=timestep,
            encoder_hidden_states=embeddings,
            pooled_projections=added["pooled_projections"], return_dict=False,
            joint_attention_kwargs=self._attention_kwargs(),
        )[0].float()  # fmt: skip

    def _attention_kwargs(self) -> dict | None:
        # the embeddings' last token standing for the pipeline's zero tokens (no T5)
        repeats = self.last_token_repeats
        return {"last_token_repeats": repeats} if repeats > 1 else None


class FluxDenoiser(FlowDenoiser):
    """FLUX's ``FluxTransformer2DModel``: the loop's latents (rows, C, h, w) are packed into
    2 x 2 patches of (h/2 w/2) tokens of 4C channels for the transformer and unpacked
    from it, with their position ids, as diffusers' FluxPipeline does; the timestep is
    given as s (``t / 1000``), a guidance-distilled model (FLUX-dev) takes each row's
    guidance scale as ``added["guidance"]``; the levels are ``linspace(1, 1/N, N)`` through
    the scheduler's resolution-dependent shift, as FluxPipeline sets them."""

    def __init__(self, transformer, scheduler, attention: AttentionState):
        super().__init__(transformer, scheduler, attention)
        self.guidance_embeds = bool(transformer.config.get("guidance_embeds"))
        self.latent_channels = int(transformer.config.in_channels) // 4

    def sigmas(self, num_steps: int, latent_hw: tuple[int, int] | None = None):
        import numpy as np

        latent_hw = latent_hw or self.latent_hw
        if latent_hw is None:
            side = int(self.unet.config.get("sample_size", 128) or 128)
            latent_hw = (side, side)
        mu = self.dynamic_shift((latent_hw[0] // 2, latent_hw[1] // 2), patch=1)
        levels = np.linspace(1.0, 1 / num_steps, num_steps)
        self.scheduler.set_timesteps(num_steps, sigmas=levels, mu=mu)
        timesteps = [float(t) for t in self.scheduler.timesteps]
        return timesteps, [float(s) for s in self.scheduler.sigmas]

    def forward(self, model_input, t, embeddings, added, timestep_cond) -> torch.Tensor:
        rows, channels, height, width = model_input.shape
        packed = pack_latents(model_input.to(self.dtype))
        device = model_input.device
        timestep = torch.full((rows,), float(t), device=device).to(self.dtype) / 1000
        guidance = added.get("guidance") if self.guidance_embeds else None
        out = self.unet(
            hidden_states=packed, timestep=timestep, guidance=guidance,
            pooled_projections=added["pooled_projections"], encoder_hidden_states=embeddings,
            txt_ids=torch.zeros(embeddings.shape[1], 3, device=device, dtype=self.dtype),
            img_ids=latent_ids(height // 2, width // 2, device, self.dtype), return_dict=False,
        )[0]  # fmt: skip
        return unpack_latents(out.float(), channels, height, width)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(rows, C, h, w) -> (rows, h/2 w/2, 4C): FluxPipeline's ``_pack_latents``."""
    rows, channels, height, width = latents.shape
    patches = latents.view(rows, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(rows, (height // 2) * (width // 2), channels * 4)


def unpack_latents(tokens: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents` (FluxPipeline's ``_unpack_latents``)."""
    rows = tokens.shape[0]
    patches = tokens.view(rows, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(rows, channels, height, width)


def latent_ids(height: int, width: int, device, dtype) -> torch.Tensor:
    """The (row, column) position ids of the packed tokens (``_prepare_latent_image_ids``)."""
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(height)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(width)[None, :]
    return ids.reshape(height * width, 3).to(device=device, dtype=dtype)


def flow_steps(denoiser: FlowDenoiser, num_steps: int) -> list[Step]:
    """Euler's steps of ``num_steps`` on a flow model's shifted sigmas (the ``flow``
    sampler's, and what inversion walks back)."""
    if getattr(denoiser, "prediction_type", None) != "flow":
        raise ParameterError("the flow sampler runs on flow models (SD3) only")
    try:
        timesteps, sigmas = denoiser.sigmas(num_steps)
    except ValueError as error:
        raise ParameterError(f"steps: {error}") from None
    scale = denoiser.num_train_timesteps
    steps = []
    for i, (t, s, s_prev) in enumerate(zip(timesteps, sigmas, sigmas[1:], strict=False)):
        alphas = (vp_alpha(s), vp_alpha(s_prev))
        steps.append(FlowStep(i, num_steps, t, s_prev * scale, *alphas, s=s, s_prev=s_prev))
    return steps
