"""diffusers' own editing pipelines, run as they are, as reference rows of the benchmark.

- ``peer-sdedit``: ``StableDiffusionImg2ImgPipeline`` (SDEdit; its XL version for SDXL)
  with the scheduler of the edit's sampler (DDIM, DDPM), or
  ``LatentConsistencyModelImg2ImgPipeline`` for LCM; on a flow model
  ``StableDiffusion3Img2ImgPipeline`` or ``FluxImg2ImgPipeline`` with its own scheduler.
- ``peer-diffedit``: ``StableDiffusionDiffEditPipeline``: ``generate_mask``, ``invert``
  and the call, with the pipeline's documented defaults (deprecated in diffusers but
  importable; a text-to-image folder has no inverse scheduler, so one is made from the
  model's scheduler config, starting from the alpha the DDIM scheduler ends on). A
  diffusers release without it skips the row with a note (``Peer.unavailable``).

Both load the editor's model from ``editor.source`` (folder or hub id) as separate
pipelines, so the engine's attention processors never touch them. Each peer takes a
PIL image, a prompt, a seed and validated parameters, and returns the edited image,
wall seconds, UNet evaluations and (DiffEdit) its latent-size mask, like
:class:`laspa.EditResult`.

UNet evaluations are counted with a forward pre-hook on the pipeline's UNet (or flow
transformer) that adds
the batch size of each call: UNet batch rows, the engine's definition (a CFG step on
one image counts 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..errors import ModelError, ParameterError, first_line
from ..methods.base import DETERMINISTIC_SAMPLERS, CommonParams, make_params, option
from ..methods.diffedit import DiffEditOptions
from ..samplers import sampler_for_scheduler


@dataclass
class PeerOutput:
    image: Image.Image
    seconds: float
    unet_evals: float
    mask: np.ndarray | None = None  # latent-size soft or binary mask, if the method makes one


@dataclass
class SDEditPeerParams(CommonParams):
    # guidance keeps the engine's default (10 on SD 1.x / 2.x, the family's pipeline's on the
    # others), not img2img's 7.5, so that ``sdedit`` and ``peer-sdedit`` compare like for like
    strength: float = option(
        0.8, low=0.0, high=1.0, low_open=True, help="fraction of the schedule re-noised"
    )
    init: str = option(
        "image",
        choices=("image", "latent"),
        help="image: img2img as users call it (it samples the VAE posterior, then draws the "
        "noise); latent: hand it enc(I), the posterior mean, so its noise is the seed's first "
        "draw exactly like the engine's sdedit (the bit-level correctness check)",
    )


@dataclass
class DiffEditPeerParams(DiffEditOptions):
    def __post_init__(self) -> None:
        if self.sampler not in ("auto", *DETERMINISTIC_SAMPLERS):
            raise ParameterError(
                "peer-diffedit inverts the image with DDIM, which needs a deterministic "
                f"sampler: use --sampler ddim, not {self.sampler}"
            )


class Peer:
    """Base of a diffusers pipeline wrapped like an editing method."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type]
    #: parameters a benchmark case may fill (see Method.case_inputs)
    case_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        source: str | None,
        device: torch.device,
        dtype: torch.dtype,
        final_alpha_one: bool = True,
    ):
        if source is None:
            raise ModelError(
                f"{self.name} loads the model with diffusers: run the bench on a model "
                "folder or hub id (--model), not on in-memory components"
            )
        from diffusers import DDIMScheduler, DDPMScheduler, LCMScheduler, TCDScheduler

        self.pipe = self._load(source, device, dtype)
        self.pipe.set_progress_bar_config(disable=True)
        config = self.pipe.scheduler.config
        self.default_sampler = sampler_for_scheduler(type(self.pipe.scheduler).__name__)
        #: diffusers' scheduler for each of the engine's samplers; DDIM has the same final
        #: step as the engine's loop (by default it lands on the clean image, alpha 1): the
        #: comparison is of the methods, not of the last step. A flow model has one: its own.
        if self.default_sampler == "flow":
            self.schedulers = {"flow": self.pipe.scheduler}
        else:
            self.schedulers = {
                "ddim": DDIMScheduler.from_config(config, set_alpha_to_one=final_alpha_one),
                "ancestral": DDPMScheduler.from_config(config),
                "lcm": LCMScheduler.from_config(config),
                "tcd": TCDScheduler.from_config(config),
            }
            self.pipe.scheduler = self.schedulers["ddim"]
        if hasattr(self.pipe, "inverse_scheduler"):
            from diffusers import DDIMInverseScheduler

            # the mirror of the final step: DDIM inversion's first step starts from the
            # alpha the loop's last step lands on (1 by default; the config's would treat
            # enc(I) as slightly noisy, docs/bench.md "peer-diffedit")
            self.pipe.inverse_scheduler = DDIMInverseScheduler.from_config(
                config, set_alpha_to_one=final_alpha_one
            )
        self.evals = 0
        denoiser = getattr(self.pipe, "unet", None) or self.pipe.transformer
        denoiser.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        # the UNet takes the latents as its first argument, SD3's / FLUX's transformer by name
        latents = args[0] if args else kwargs["hidden_states"]
        self.evals += int(latents.shape[0])

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the installed diffusers cannot run this peer (None: it can)."""
        return None

    def _load(self, source: str, device, dtype):
        raise NotImplementedError

    def run(
        self,
        image: Image.Image,
        prompt: str,
        seed: int,
        params: Any,
        latent: torch.Tensor | None = None,
    ) -> PeerOutput:
        """Edit ``image`` (already at the model's size) towards ``prompt``; ``latent`` is
        enc(image) for peers whose parameters ask to start from it."""
        before, start = self.evals, time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(int(seed))
        with torch.no_grad():
            edited, mask = self._edit(image, prompt, generator, params, latent)
        return PeerOutput(edited, time.perf_counter() - start, self.evals - before, mask)

    def wants_latent(self, params: Any) -> bool:
        return False

    def sampler(self, params: Any) -> str:
        """The edit's sampler: its ``sampler`` option, or the one the model's scheduler names."""
        return self.default_sampler if params.sampler == "auto" else params.sampler

    def _edit(
        self, image, prompt, generator, params, latent
    ) -> tuple[Image.Image, np.ndarray | None]:
        raise NotImplementedError


def _from_pretrained(cls, source: str, device, dtype):
    # SDXL's pipelines have no safety checker to switch off
    unchecked = {} if "XL" in cls.__name__ else {"safety_checker": None}
    try:
        pipe = cls.from_pretrained(
            source,
            requires_safety_checker=False,
            use_safetensors=True,
            torch_dtype=dtype,
            **unchecked,
        )
    except Exception as error:  # diffusers raises many types; the user needs one line
        raise ModelError(f"cannot load {source} into {cls.__name__}: {first_line(error)}") from None
    return pipe.to(device)  # DDIM, like the engine's, is set in Peer.__init__


def _is_sdxl(source: str) -> bool:
    from diffusers import UNet2DConditionModel

    from ..models import is_sdxl

    try:
        config = UNet2DConditionModel.load_config(source, subfolder="unet")
    except Exception as error:  # the engine read the same folder: rarely reached
        raise ModelError(f"cannot read {source}'s UNet config: {first_line(error)}") from None
    return is_sdxl(dict(config))


def _pipeline_class(source: str) -> str:
    """The pipeline class a folder's or hub id's model_index.json names ("" if unreadable:
    the SD / SDXL loaders then say what is wrong)."""
    from diffusers import DiffusionPipeline

    try:
        return str(DiffusionPipeline.load_config(source).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


class SDEditPeer(Peer):
    name = "peer-sdedit"
    summary = "diffusers StableDiffusionImg2ImgPipeline (SDEdit), DDIM"
    Params = SDEditPeerParams

    _lcm = None

    def _load(self, source, device, dtype):
        import diffusers

        from ..models import flow_family

        family = flow_family(_pipeline_class(source))
        self.flux = family == "FLUX"
        self.sdxl = family is None and _is_sdxl(source)
        if family is not None:  # SD3's and FLUX's own img2img pipelines, their own scheduler
            name = "StableDiffusion3" if family == "Stable Diffusion 3" else "Flux"
            pipeline = getattr(diffusers, f"{name}Img2ImgPipeline")
            index = diffusers.DiffusionPipeline.load_config(source)
            # components the folder does without (SD3 without T5, no IP-Adapter encoder)
            absent = {
                part: None
                for part in ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")
                if not any(index.get(part) or [None])
            }
            return pipeline.from_pretrained(source, torch_dtype=dtype, **absent).to(device)
        cls = (
            diffusers.StableDiffusionXLImg2ImgPipeline
            if self.sdxl
            else diffusers.StableDiffusionImg2ImgPipeline
        )
        return _from_pretrained(cls, source, device, dtype)

    def wants_latent(self, params: Any) -> bool:
        return params.init == "latent"

    def _pipeline(self, sampler: str):
        """img2img with the sampler's scheduler; LCM's own img2img pipeline for lcm (its
        guidance embedding, its strength rule), on the same components."""
        if sampler != "lcm":
            self.pipe.scheduler = self.schedulers[sampler]
            return self.pipe
        if self.sdxl:
            raise ModelError(
                "peer-sdedit runs LCM on SD 1.x/2.x only (diffusers has no SDXL "
                "LCM img2img pipeline)"
            )
        if self._lcm is None:
            from diffusers import LatentConsistencyModelImg2ImgPipeline

            parts = {k: getattr(self.pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet")}
            self._lcm = LatentConsistencyModelImg2ImgPipeline(
                **parts, scheduler=self.schedulers["lcm"], safety_checker=None,
                feature_extractor=None, requires_safety_checker=False,
            )  # fmt: skip
            self._lcm.set_progress_bar_config(disable=True)
        return self._lcm

    def _edit(self, image, prompt, generator, params, latent):
        if params.init == "latent" and latent is None:
            raise ValueError("init='latent' needs the image's latent")
        # img2img takes a tensor of the VAE's latent channels as ready-made initial latents
        # (no VAE sampling; SD3 and FLUX expect them shifted and scaled, as the engine's are)
        result = self._pipeline(self.sampler(params))(
            prompt=prompt,
            image=latent if params.init == "latent" else image,
            strength=params.strength,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            generator=generator,
            # TCDScheduler takes its gamma as the step's eta (LCM's pipeline has no eta)
            **({"eta": params.gamma} if self.sampler(params) == "tcd" else {}),
            # FLUX's img2img reads the size from its input, which may be a latent
            **({"width": image.width, "height": image.height} if self.flux else {}),
        )
        return result.images[0], None


class DiffEditPeer(Peer):
    name = "peer-diffedit"
    case_inputs = ("source_prompt",)
    summary = "diffusers StableDiffusionDiffEditPipeline: generate_mask, invert, call"
    Params = DiffEditPeerParams

    @classmethod
    def unavailable(cls) -> str | None:
        # deprecated in diffusers: a release without it skips the row, the bench goes on
        import diffusers

        if not hasattr(diffusers, "StableDiffusionDiffEditPipeline"):
            return (
                f"diffusers {diffusers.__version__} no longer ships "
                "StableDiffusionDiffEditPipeline (our diffedit still runs)"
            )
        return None

    def _load(self, source, device, dtype):
        from diffusers import StableDiffusionDiffEditPipeline

        # a text-to-image folder has no inverse scheduler: Peer.__init__ makes it
        return _from_pretrained(StableDiffusionDiffEditPipeline, source, device, dtype)

    def _edit(self, image, prompt, generator, params, latent):
        p = params
        mask = self.pipe.generate_mask(
            image=image,
            source_prompt=p.source_prompt,
            target_prompt=prompt,
            num_maps_per_mask=p.num_maps_per_mask,
            mask_encode_strength=p.mask_encode_strength,
            mask_thresholding_ratio=p.mask_thresholding_ratio,
            num_inference_steps=p.steps,
            guidance_scale=p.guidance,
            generator=generator,
        )
        latents = self.pipe.invert(
            prompt=p.source_prompt,
            image=image,
            num_inference_steps=p.steps,
            inpaint_strength=p.inpaint_strength,
            guidance_scale=p.guidance,
            generator=generator,
        ).latents
        edited = self.pipe(
            prompt=prompt,
            mask_image=mask,
            image_latents=latents,
            inpaint_strength=p.inpaint_strength,
            num_inference_steps=p.steps,
            guidance_scale=p.guidance,
            generator=generator,
        ).images[0]
        return edited, np.asarray(mask, dtype=np.float32).reshape(mask.shape[-2:])


PEERS: dict[str, type[Peer]] = {cls.name: cls for cls in (SDEditPeer, DiffEditPeer)}


def make_peer_params(name: str, overrides: dict[str, Any]) -> Any:
    """The peer's Params with ``overrides`` applied and validated."""
    return make_params(name, overrides, PEERS[name].Params)
