"""Pure DDIM arithmetic on tensors (eta = 0), in the notation of docs/methods.md.

Every function here is stateless and model-free, so the maths of each editing
method can be tested on random tensors. ``alpha`` always means the cumulative
product ``alphas_cumprod[t]`` (the LASPA paper's alpha_t). Alphas and weights may
be Python floats or tensors broadcastable against the latents (one value per
batch row, shape ``(N, 1, 1, 1)``), which is how one UNet batch carries edits
with different parameters.
"""

from __future__ import annotations

import torch

Scalar = float | torch.Tensor


def _sqrt(value: Scalar) -> Scalar:
    return torch.sqrt(value) if isinstance(value, torch.Tensor) else value**0.5


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """The x0 that the noise prediction ``eps`` implies at ``x_t``."""
    return (x_t - _sqrt(1 - alpha) * eps) / _sqrt(alpha)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """The noise that turns ``x0`` into ``x_t`` (inverse of :func:`predict_x0`)."""
    return (x_t - _sqrt(alpha) * x0) / _sqrt(1 - alpha)


def ddim_step(x0: torch.Tensor, eps_dir: torch.Tensor, alpha_prev: Scalar) -> torch.Tensor:
    """Deterministic DDIM update: ``sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps_dir``."""
    return _sqrt(alpha_prev) * x0 + _sqrt(1 - alpha_prev) * eps_dir


def forward_noise(x0: torch.Tensor, noise: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """q(x_t | x0) with given noise; LASPA's stochastic inverse ``s_t`` of the reference."""
    return _sqrt(alpha) * x0 + _sqrt(1 - alpha) * noise


def ddim_inversion_step(
    x_t: torch.Tensor, eps: torch.Tensor, alpha: Scalar, alpha_next: Scalar
) -> torch.Tensor:
    """One DDIM inversion step from the less noisy ``x_t`` to the noisier next timestep."""
    return ddim_step(predict_x0(x_t, eps, alpha), eps, alpha_next)


def v_to_eps(x_t: torch.Tensor, v: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """Convert a v-prediction (SD 2.x 768) into the equivalent noise prediction."""
    return _sqrt(alpha) * v + _sqrt(1 - alpha) * x_t


def reconstruction_eps(
    x_t: torch.Tensor, reference: torch.Tensor, alpha: Scalar, form: str = "exact"
) -> torch.Tensor:
    """LASPA's reconstruction error: the noise under which x0 is exactly ``reference``.

    ``form="literal"`` is the paper's printed ``x_t - enc(I)`` (unscaled), offered because
    eq. 8 is ambiguous; ``"exact"`` makes :func:`predict_x0` return ``reference``.
    """
    if form == "exact":
        return eps_from_x0(x_t, reference, alpha)
    if form == "literal":
        return x_t - reference
    raise ValueError(f"unknown eps form {form!r} (expected 'exact' or 'literal')")


def blend(aligned: torch.Tensor, current: torch.Tensor, weight: Scalar) -> torch.Tensor:
    """``weight * aligned + (1 - weight) * current``: every LASPA alignment is this blend."""
    return current + weight * (aligned - current)


def guided_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: Scalar) -> torch.Tensor:
    """Classifier-free guidance."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def alignment_weight(
    t: int | torch.Tensor,
    beta: torch.Tensor,
    K: torch.Tensor,
    schedule: torch.Tensor,
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """Per-row alignment weight ``b_t``, zero outside the alignment interval ``t > K``.

    ``schedule`` holds 0 for ``constant`` (b_t = beta) and 1 for ``linear``
    (b_t = beta * t / T, the paper's eq. 5 when beta = 1); all arguments are
    per-row tensors of shape (N,), the result has shape (N, 1, 1, 1).
    """
    t = torch.as_tensor(t, dtype=beta.dtype, device=beta.device)
    ramp = torch.where(schedule.bool(), t / num_train_timesteps, torch.ones_like(beta))
    weight = torch.where(t > K, beta * ramp, torch.zeros_like(beta))
    return weight.view(-1, 1, 1, 1)


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """LCM's embedding of the guidance scale ``w`` (one per row) as a UNet input
    (``timestep_cond``): sinusoids of ``1000 w`` (Luo et al. 2023; VDM's timestep embedding).
    """
    half = dim // 2
    frequencies = torch.exp(
        torch.arange(half, dtype=torch.float32, device=w.device)
        * -(torch.log(torch.tensor(10000.0)) / (half - 1))
    )
    angles = w.float()[:, None] * 1000.0 * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(embedding, (0, dim % 2))
