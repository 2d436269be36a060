"""FlowEdit (Kulikov et al. 2024): inversion-free editing along a noise-free path.

The published algorithm (their repository, fallenshock/FlowEdit, ``FlowEditSD3``), on the
flow sampler's levels s_T > ... > s_1 > 0 (T = ``steps``). Z_edit starts at the input's
latent X_src; at every step i whose distance from the end T - i lies in (n_min, n_max],
with ``n_avg`` fresh noise draws N::

    Z_src   = (1 - s_i) X_src + s_i N
    Z_tar   = Z_edit + Z_src - X_src
    V_delta = mean over the draws of  V(Z_tar, s_i, c_tar; tar_guidance_scale)
                                    - V(Z_src, s_i, c_src; src_guidance_scale)
    Z_edit  = Z_edit + (s_{i+1} - s_i) V_delta

The steps before the window are skipped (Z_edit = X_src there). With ``n_min`` > 0 the last
n_min steps are ordinary sampling with the target prompt from
``Z_edit + ((1 - s) X_src + s N) - X_src``; the result is Z_edit (n_min = 0) or that sample.

Each velocity is guided classifier-free against the empty prompt (their negative prompt),
source and target in one model batch with their own scales. V = eps - x0 at the row's
latent, from the loop's predictions (laspa.flow), so this is one pass of the loop whose
hooks replace the latents before the model and read its velocities after it.

On eps / v UNet models (SD 1.x/2.x, SDXL) the same algorithm runs in the flow
coordinates of the variance-preserving latent, the conversion its authors describe:
x_t = sqrt(a) x0 + sqrt(1 - a) eps = c ((1 - s) x0 + s eps) with c = sqrt(a) + sqrt(1 - a)
and s = sqrt(1 - a) / c, so Z = x_t / c is a rectified-flow latent at level s with the
same x0 and eps, and V = eps - x0 (laspa.loop.Step.flow_level). The model sees c Z.
Then V_tar - V_src = ((eps_tar - eps_src) - (Z_edit - X_src)) / (1 - s), the formula its
authors give for eps models (fallenshock/FlowEdit, issue 3).

Defaults are the published ones of the model (SD3_exp.yaml, FLUX_exp.yaml): on SD3
T = 50, n_max = 33, src_guidance_scale 3.5, tar_guidance_scale 13.5; on FLUX T = 28,
n_max = 24, 1.5 and 5.5 (FLUX-dev's guidance embedding, no unconditional rows); n_min = 0,
n_avg = 1 on both. On a FLUX without a guidance embedding the scales are classifier-free
guidance, as for every method; the released FlowEditFLUX runs unguided there (scales 1
reproduce it; docs/methods.md). UNet models take SD3's (none are published for them). The common
``guidance`` is not used (FlowEdit has two scales; an edit that sets it is refused).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ParameterError
from ..loop import SamplerHooks, Step
from .base import CommonParams, EditBatch, EditRow, Method, MethodOutput, option, register


@dataclass
class FlowEditParams(CommonParams):
    uses_family_defaults = False  # its published table per family (PUBLISHED)
    steps: int | None = option(
        None, low=1, high=1000, help="T, sampler steps (default: published, 50; FLUX 28)"
    )
    guidance: float | None = option(
        None, low=0.0, high=100.0,
        help="not used by flowedit: set src_guidance_scale and tar_guidance_scale",
    )  # fmt: skip
    source_prompt: str = option("", help="the prompt that describes the input (c_src)")
    n_max: int | None = option(
        None, low=0, high=1000, help="edit while T - i <= n_max (default: published, 33; FLUX 24)"
    )
    n_min: int = option(0, low=0, high=1000, help="last n_min steps: plain target sampling")
    n_avg: int = option(1, low=1, high=64, help="noise draws averaged per step")
    src_guidance_scale: float | None = option(
        None, low=0.0, high=100.0, widget="number",
        help="guidance of the source velocity (default: published, 3.5; FLUX 1.5)",
    )  # fmt: skip
    tar_guidance_scale: float | None = option(
        None, low=0.0, high=100.0, widget="number",
        help="guidance of the target velocity (default: published, 13.5; FLUX 5.5)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.guidance is not None:
            raise ParameterError(
                "flowedit takes src_guidance_scale and tar_guidance_scale (as published), "
                "not guidance"
            )
        check_window(self.n_min, self.n_max)


#: the published settings per model (fallenshock/FlowEdit, SD3_exp.yaml, FLUX_exp.yaml);
#: UNet models take SD3's
PUBLISHED = {
    "sd3": {"steps": 50, "n_max": 33, "src_guidance_scale": 3.5, "tar_guidance_scale": 13.5},
    "flux": {"steps": 28, "n_max": 24, "src_guidance_scale": 1.5, "tar_guidance_scale": 5.5},
}


def check_window(n_min, n_max) -> None:
    if isinstance(n_min, int) and isinstance(n_max, int) and n_min > n_max:
        raise ParameterError(f"n_min ({n_min}) must be at most n_max ({n_max})")


def with_published_defaults(batch: EditBatch, family: str) -> EditBatch:
    """The batch with every option left unset (None) at the model's published value."""
    return dataclasses.replace(batch, rows=[filled for filled, _ in published_rows(batch, family)])


def published_rows(batch: EditBatch, family: str) -> list[tuple[EditRow, dict]]:
    """Each row with its unset options at the model's published values, and those values."""
    published = PUBLISHED.get(family, PUBLISHED["sd3"])
    rows = []
    for row in batch.rows:
        unset = {k: v for k, v in published.items() if getattr(row.params, k) is None}
        params = dataclasses.replace(row.params, **unset)
        check_window(params.n_min, params.n_max)
        rows.append((dataclasses.replace(row, params=params), unset))
    return rows


class FlowEditHooks(SamplerHooks):
    """The model batch holds the source rows (``n_avg`` draws of each edit), then the
    target rows; Z_edit lives here and moves by the averaged velocity difference."""

    def __init__(self, x_src: torch.Tensor, n_avg: int, noise: Callable[[], torch.Tensor]):
        self.x_src = x_src  # (N, C, h, w)
        self.n_avg = n_avg
        self.noise = noise  # a fresh standard normal draw of the N rows per call
        self.z_edit = x_src.clone()

    def before_unet(self, step: Step, x: torch.Tensor) -> torch.Tensor:
        s = step.flow_level
        draws = [s * self.noise() + (1 - s) * self.x_src for _ in range(self.n_avg)]
        z_src = torch.cat(draws)
        x_src = self.x_src.repeat(self.n_avg, 1, 1, 1)
        z_tar = self.z_edit.repeat(self.n_avg, 1, 1, 1) + z_src - x_src
        z = torch.cat([z_src, z_tar])
        return z if step.flow_scale == 1.0 else step.flow_scale * z

    def after_x0(self, step: Step, x, eps, x0):
        v_src, v_tar = (eps - x0).chunk(2)  # v = eps - x0 (laspa.flow)
        rows = len(self.x_src)
        delta = torch.zeros_like(self.x_src)
        for k in range(self.n_avg):  # accumulated as published
            draw = slice(k * rows, (k + 1) * rows)
            delta = delta + (1 / self.n_avg) * (v_tar[draw] - v_src[draw])
        self.z_edit = self.z_edit + (step.flow_level_prev - step.flow_level) * delta
        return x0


@register
class FlowEdit(Method):
    name = "flowedit"
    summary = "FlowEdit: inversion-free, the target-minus-source velocity along a noise-free path"
    Params = FlowEditParams
    case_inputs = ("source_prompt",)
    batch_key = ("steps", "source_prompt", "n_max", "n_min", "n_avg")

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        filled = published_rows(batch, engine.family)
        batch = dataclasses.replace(batch, rows=[row for row, _ in filled])
        # the published values an edit left to the model: its result's notes say them
        notes = [{"published_defaults": unset} if unset else {} for _, unset in filled]
        steps = engine.steps(batch)
        total = len(steps)
        n_max, n_min = min(batch.shared("n_max"), total), min(batch.shared("n_min"), total)
        n_avg = batch.shared("n_avg")
        x_src = batch.reference.expand(batch.size, -1, -1, -1)
        generators = engine.generators(batch)

        def noise() -> torch.Tensor:
            return engine.noise(generators, x_src.shape)

        n = batch.size
        src_scale = batch.column("src_guidance_scale").repeat(n_avg)
        tar_scale = batch.column("tar_guidance_scale")
        latents = x_src.clone()
        window = steps[total - n_max : total - n_min]
        if window:
            hooks = FlowEditHooks(x_src, n_avg, noise)
            source = [batch.shared("source_prompt")] * (n * n_avg)
            targets = [row.prompt for row in batch.rows] * n_avg
            conditioning = engine.conditioning(
                batch, prompts=source + targets,
                guidance=torch.cat([src_scale, tar_scale.repeat(n_avg)]),
            )  # fmt: skip
            x = torch.cat([x_src] * (2 * n_avg))
            # a stochastic sampler's update noise lands in latents the hooks replace
            step_noise = engine.step_noise(batch, generators, x_src, branches=2 * n_avg)
            engine.sample(x, window, conditioning, hooks, noise=step_noise)
            latents = hooks.z_edit
        if n_min:
            # plain sampling with the target prompt for the last n_min steps
            rest = steps[total - n_min :]
            s, scale = rest[0].flow_level, rest[0].flow_scale
            z_t = latents + (s * noise() + (1 - s) * x_src) - x_src
            conditioning = engine.conditioning(batch, guidance=tar_scale)
            step_noise = engine.step_noise(batch, generators, x_src)
            latents = engine.sample(
                scale * z_t, rest, conditioning, noise=step_noise, phase="sample"
            )
        return MethodOutput(latents, notes=notes)
