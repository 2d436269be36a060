"""The Editor: one Stable Diffusion model (1.x/2.x, SDXL or SD3), every editing method,
batched edits of one image."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import images, methods
from . import maps as maps_lib
from .engine import Engine, Progress, is_flow_denoiser
from .errors import ModelError, ParameterError, first_line
from .families import FluxText, StableDiffusion3Text, StableDiffusionXLText, pipeline_defaults
from .methods.base import (
    COMMON_BATCH_KEY,
    METHODS,
    EditBatch,
    EditRow,
    MethodOutput,
    check_model_kind,
    check_prompt,
    check_sampler,
    check_seed,
    check_text,
    get_method,
    make_params,
)
from .models import (
    check_components,
    check_model_source,
    check_unet_config,
    folder_kind,
    is_sdxl,
)
from .samplers import SAMPLERS
from .tokens import phrase_occurs

DEFAULT_METHOD = "laspa-x0"


@dataclass
class EditResult:
    """One edited image and what it cost."""

    image: Image.Image
    method: str
    prompt: str
    seed: int
    params: dict[str, Any]
    seconds: float  # wall time per edit (a batch's time divided by its edits)
    unet_evals: float  # UNet batch rows evaluated per edit
    latent: torch.Tensor
    mask: torch.Tensor | None = None  # (1, h, w) in [0, 1] at latent size, if the method made one
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # word -> map in [0, 1]
    extras: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. InstDiffEdit's index word

    def summary(self) -> dict[str, Any]:
        summary = {
            "method": self.method,
            "prompt": self.prompt,
            "seed": self.seed,
            "params": self.params,
            "seconds": round(self.seconds, 4),
            "unet_evals": self.unet_evals,
        }
        if self.notes:
            summary["notes"] = self.notes
        return summary


def default_device_and_dtype(
    device: str | torch.device | None, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """CUDA in float16 when present, else CPU in float32; either may be overridden."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return device, dtype


class Editor:
    """Edits images: loads a model, batches edits, turns latents into pictures.

    The model and its sampler, as methods use them, are ``self.engine``
    (:class:`~laspa.engine.Engine`); each edit's method runs on it.
    """

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        name: str = "in-memory model",
        inversion_cache_size: int = 8,
        final_step: str = "clean",
        text_encoder_2=None,
        tokenizer_2=None,
        force_zeros_for_empty_prompt: bool = True,
        text_encoder_3=None,
        tokenizer_3=None,
    ):
        """SDXL: also ``text_encoder_2`` (CLIPTextModelWithProjection) and ``tokenizer_2``;
        ``force_zeros_for_empty_prompt`` is its pipeline's rule for the empty prompt.
        SD3: ``unet`` is its SD3Transformer2DModel, ``text_encoder`` and ``text_encoder_2``
        its CLIP encoders with projections, ``text_encoder_3`` / ``tokenizer_3`` its T5
        (None: zeros in its place, as diffusers conditions without T5)."""
        self.device, self.dtype = default_device_and_dtype(device, dtype)
        flow = is_flow_denoiser(unet)
        sdxl = text_encoder_2 is not None and not flow
        # SDXL's VAE overflows in float16; its config says so (force_upcast)
        vae_dtype = torch.float32 if sdxl and vae.config.force_upcast else self.dtype
        self.vae = _place(vae, self.device, vae_dtype)
        self.text_encoder = _place(text_encoder, self.device, self.dtype)
        self.unet = _place(unet, self.device, self.dtype)
        self.tokenizer = tokenizer
        text = None
        if sdxl:
            self.text_encoder_2 = _place(text_encoder_2, self.device, self.dtype)
            text = StableDiffusionXLText(
                (self.text_encoder, self.text_encoder_2), (tokenizer, tokenizer_2),
                self.device, force_zeros_for_empty_prompt,
            )  # fmt: skip
        if flow:
            self.text_encoder_2 = _place(text_encoder_2, self.device, self.dtype)
            self.text_encoder_3 = text_encoder_3
            if text_encoder_3 is not None:
                self.text_encoder_3 = _place(text_encoder_3, self.device, self.dtype)
            if _is_flux(unet):
                text = FluxText(
                    self.text_encoder, tokenizer, self.text_encoder_2, tokenizer_2, self.device
                )
            else:
                text = StableDiffusion3Text(
                    (self.text_encoder, self.text_encoder_2), (tokenizer, tokenizer_2),
                    self.device, int(unet.config.joint_attention_dim), self.text_encoder_3,
                    tokenizer_3,
                )  # fmt: skip
        self.engine = Engine(
            self.vae, self.text_encoder, tokenizer, self.unet, scheduler,
            device=self.device, dtype=self.dtype, final_step=final_step,
            inversion_cache_size=inversion_cache_size, text=text,
        )  # fmt: skip
        self.scheduler = self.engine.scheduler  # DDIM, from the checkpoint's config
        #: the sampler "auto" runs: the one the checkpoint's scheduler config names
        self.default_sampler: str = self.engine.default_sampler
        self.attention = self.engine.attention
        self.denoiser = self.engine.denoiser
        self.name = name
        #: the folder or hub id the model was loaded from (None for in-memory components),
        #: so that diffusers' own pipelines can load the same model as peers
        self.source: str | None = None
        self.vae_scale_factor = self.engine.vae_scale_factor
        self.resolution = self.engine.resolution
        # a side must survive the VAE's and the UNet's downsampling (or the transformer's
        # patches) without remainder
        if flow:  # FLUX packs 2 x 2 latent pixels into a token
            unet_factor = 2 if _is_flux(self.unet) else int(self.unet.config.patch_size)
        else:
            unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        self.size_multiple = self.vae_scale_factor * unet_factor

    @property
    def progress(self) -> Progress | None:
        """Called with (phase, steps done, steps in the phase) while edits run."""
        return self.engine.progress

    @progress.setter
    def progress(self, progress: Progress | None) -> None:
        self.engine.progress = progress

    @property
    def inversion_cache_hits(self) -> int:
        """Inversions served from the cache so far."""
        return self.engine.inversion_cache_hits

    def clear_inversion_cache(self) -> None:
        self.engine.clear_inversion_cache()

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> Editor:
        """Load a diffusers Stable Diffusion 1.x/2.x or SDXL checkpoint by folder or hub id.

        Only safetensors weights are accepted: pickle files can run code when loaded.
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        check_model_source(model)
        _, torch_dtype = default_device_and_dtype(device, dtype)
        source = str(model)
        pipeline = _pipeline_class(source)
        if pipeline.startswith("StableDiffusion3"):
            return cls._from_sd3(source, device=device, dtype=dtype, **kwargs)
        if pipeline.startswith("Flux"):
            return cls._from_flux(source, device=device, dtype=dtype, **kwargs)
        sdxl: dict[str, Any] = {}
        try:
            vae = AutoencoderKL.from_pretrained(
                source, subfolder="vae", use_safetensors=True, torch_dtype=torch_dtype
            )
            unet = UNet2DConditionModel.from_pretrained(
                source, subfolder="unet", use_safetensors=True, torch_dtype=torch_dtype
            )
            text_encoder = CLIPTextModel.from_pretrained(
                source, subfolder="text_encoder", use_safetensors=True, dtype=torch_dtype
            )
            tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
            scheduler = load_scheduler(source)
            if is_sdxl(dict(unet.config)):
                sdxl["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
                    source, subfolder="text_encoder_2", use_safetensors=True, dtype=torch_dtype
                )
                sdxl["tokenizer_2"] = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2")
        except Exception as error:  # diffusers/hub raise many types; the user needs one line
            raise ModelError(f"cannot load model {source}: {first_line(error)}") from None
        # a hub id's configs are only known now; a folder's were read before loading
        check_unet_config(dict(unet.config), source)
        text_configs = [text_encoder.config]
        if sdxl:
            text_configs.append(sdxl["text_encoder_2"].config)
            sdxl["force_zeros_for_empty_prompt"] = _force_zeros_for_empty_prompt(source)
        check_components(vae.config, text_configs, unet.config, source)
        try:
            editor = cls(
                vae, text_encoder, tokenizer, unet, scheduler,
                device=device, dtype=dtype, name=source, **sdxl, **kwargs,
            )  # fmt: skip
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            # a config the checks above do not cover, caught where the Editor reads it
            raise ModelError(f"cannot use model {source}: {first_line(error)}") from None
        editor.source = source
        return editor

    @classmethod
    def _from_sd3(cls, source: str, *, device=None, dtype=None, **kwargs) -> Editor:
        """An SD3 checkpoint (diffusers' StableDiffusion3Pipeline layout), run as a flow
        model: transformer, VAE, two CLIP encoders with projections, T5 where present."""
        from diffusers import AutoencoderKL, SD3Transformer2DModel
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        _, torch_dtype = default_device_and_dtype(device, dtype)
        weights = {"use_safetensors": True}
        parts: dict[str, Any] = {}
        try:
            parts["unet"] = SD3Transformer2DModel.from_pretrained(
                source, subfolder="transformer", torch_dtype=torch_dtype, **weights
            )
            parts["vae"] = AutoencoderKL.from_pretrained(
                source, subfolder="vae", torch_dtype=torch_dtype, **weights
            )
            for suffix in ("", "_2"):
                parts[f"text_encoder{suffix}"] = CLIPTextModelWithProjection.from_pretrained(
                    source, subfolder=f"text_encoder{suffix}", dtype=torch_dtype, **weights
                )
                parts[f"tokenizer{suffix}"] = CLIPTokenizer.from_pretrained(
                    source, subfolder=f"tokenizer{suffix}"
                )
            parts["scheduler"] = load_scheduler(source)
            parts.update(_load_t5(source, torch_dtype))
        except Exception as error:  # diffusers/hub raise many types; the user needs one line
            raise ModelError(f"cannot load model {source}: {first_line(error)}") from None
        latent = parts["vae"].config.latent_channels
        if latent != parts["unet"].config.in_channels:
            raise ModelError(f"{source}: the VAE makes {latent}-channel latents but the "
                             f"transformer takes {parts['unet'].config.in_channels}")  # fmt: skip
        return cls._assemble(source, parts, device, dtype, kwargs)

    @classmethod
    def _from_flux(cls, source: str, *, device=None, dtype=None, **kwargs) -> Editor:
        """A FLUX checkpoint (diffusers' FluxPipeline layout), run as a flow model:
        transformer, VAE, CLIP text encoder (pooled) and T5 encoder with their tokenizers."""
        from diffusers import AutoencoderKL, FluxTransformer2DModel
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

        _, torch_dtype = default_device_and_dtype(device, dtype)
        weights = {"use_safetensors": True}
        try:
            parts: dict[str, Any] = {
                "unet": FluxTransformer2DModel.from_pretrained(
                    source, subfolder="transformer", torch_dtype=torch_dtype, **weights
                ),
                "vae": AutoencoderKL.from_pretrained(
                    source, subfolder="vae", torch_dtype=torch_dtype, **weights
                ),
                "text_encoder": CLIPTextModel.from_pretrained(
                    source, subfolder="text_encoder", dtype=torch_dtype, **weights
                ),
                "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
                "text_encoder_2": T5EncoderModel.from_pretrained(
                    source, subfolder="text_encoder_2", dtype=torch_dtype, **weights
                ),
                "tokenizer_2": AutoTokenizer.from_pretrained(source, subfolder="tokenizer_2"),
                "scheduler": load_scheduler(source),
            }
        except Exception as error:  # diffusers/hub raise many types; the user needs one line
            raise ModelError(f"cannot load model {source}: {first_line(error)}") from None
        latent, taken = parts["vae"].config.latent_channels, parts["unet"].config.in_channels
        if 4 * latent != taken:
            raise ModelError(f"{source}: the VAE makes {latent}-channel latents but the "
                             f"transformer takes {taken // 4} (packed 2 x 2: {taken})")  # fmt: skip
        return cls._assemble(source, parts, device, dtype, kwargs)

    @classmethod
    def _assemble(cls, source: str, parts: dict, device, dtype, kwargs: dict) -> Editor:
        """The Editor over loaded ``parts``; a mismatch among them is one line."""
        try:
            editor = cls(device=device, dtype=dtype, name=source, **parts, **kwargs)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ModelError(f"cannot use model {source}: {first_line(error)}") from None
        editor.source = source
        return editor

    @classmethod
    def mini(cls, variant: str = "base", **kwargs) -> Editor:
        """A bundled miniature model, trained by the project on its scene world: ``"base"``
        (DDIM, 25-50 steps), ``"lcm"`` (mini-lcm: distilled from it, 2-8 LCM steps) or
        ``"flow"`` (mini-flow: an SD3 transformer trained by flow matching)."""
        from .mini import model_dir

        try:
            folder = model_dir(variant)
        except (RuntimeError, ValueError) as error:
            raise ModelError(str(error)) from None
        editor = cls.from_pretrained(folder, **kwargs)
        editor.name = "mini" if variant == "base" else f"mini-{variant}"
        return editor

    # --------------------------------------------------------------- building blocks
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """enc(I): the VAE posterior mean (deterministic), scaled as diffusers does."""
        return self.engine.encode(pixels)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]."""
        return self.engine.decode(latents)

    def _decoded(self, output: MethodOutput) -> torch.Tensor:
        """A method's result as images in [-1, 1]: decoded already where its latents
        belong to another model's VAE, else by this model's."""
        return output.pixels if output.pixels is not None else self.decode(output.latents)

    def latent_shape(self, pixels: torch.Tensor) -> tuple[int, int, int, int]:
        """The (1, C, h, w) shape of the latent of (1, 3, H, W) ``pixels``."""
        return self.engine.latent_shape(pixels)

    def model_size(self, image: Image.Image) -> tuple[int, int]:
        return images.fit_size(*image.size, self.resolution, self.size_multiple)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings of ``prompts``, one row each (cached per prompt)."""
        return self.engine.text_embeddings(prompts)

    def word_maps(
        self, token_maps: torch.Tensor, prompt: str, size: tuple[int, int], words=None
    ) -> dict[str, np.ndarray]:
        """Word -> map from one row's (h, w, tokens) cross-attention: the mean of the word's
        tokens (every occurrence), upsampled to ``size``, min-max normalised to [0, 1].
        ``words`` (default: every word of the prompt) may hold phrases."""
        if words is None:
            words = dict.fromkeys(w.word for w in self.engine.word_tokens(prompt))
        maps: dict[str, np.ndarray] = {}
        for word in words:
            try:
                positions = self.engine.positions_of(prompt, word)
            except ValueError as error:
                raise ParameterError(str(error)) from None
            word_map = maps_lib.resize(maps_lib.word_map(token_maps[None], positions), size)
            maps[word] = maps_lib.minmax(word_map)[0].cpu().numpy().astype(np.float32)
        return maps

    # -------------------------------------------------------------------- editing
    def edit(
        self,
        image: Image.Image | str | Path,
        prompt: str,
        method: str = DEFAULT_METHOD,
        seed: int = 0,
        record_attention: bool = False,
        **params: Any,
    ) -> EditResult:
        """Edit one image towards ``prompt``; ``params`` are the method's options.

        With ``record_attention``, ``result.attention`` maps each prompt word to its
        cross-attention map (methods that record attention: the LASPA family).
        """
        variant = {"prompt": prompt, "seed": seed, **params}
        return self.edit_many(image, [variant], method, record_attention=record_attention)[0]

    def attention_columns(self, prompt: str) -> list[tuple[int, str, str | None]]:
        """Every text column the word maps are read from: (column, token, the prompt word
        it belongs to, or None), from the tokenizer whose tokens the attention sees (T5's
        on FLUX, CLIP's elsewhere): what a user debugging a map needs."""
        check_prompt(prompt)
        return self.engine.attention_columns(prompt)

    def attention_maps(
        self,
        image: Image.Image | str | Path,
        prompt: str,
        words: Sequence[str] | None = None,
        method: str = DEFAULT_METHOD,
        seed: int = 0,
        **params: Any,
    ) -> dict[str, np.ndarray]:
        """Cross-attention maps of ``prompt``'s words on a real image, from one aligned pass
        (no inversion): alignment makes the UNet see the image while it samples.

        Returns word -> float32 map in [0, 1] at latent size; ``words`` picks and orders
        them (a phrase maps to the mean of its words' tokens).
        """
        check_prompt(prompt)
        if not get_method(method).records_attention:
            raise ParameterError(f"method {method} does not record attention maps")
        for word in words or ():
            check_text("a word", word)
            if not phrase_occurs(prompt, word):
                raise ParameterError(f"the word {word!r} does not occur in the prompt {prompt!r}")
        result = self.edit(image, prompt, method, seed, record_attention=True, **params)
        if words is None:
            return result.attention
        size = tuple(result.latent.shape[-2:])
        return self.word_maps(result.extras["token_maps"], prompt, size, words)

    def edit_many(
        self,
        image: Image.Image | str | Path,
        variants: Sequence[dict[str, Any]],
        method: str = DEFAULT_METHOD,
        batch_size: int | None = None,
        record_attention: bool = False,
    ) -> list[EditResult]:
        """Several edits of one image (prompts, seeds, parameters) in shared UNet batches.

        Each variant is a dict with ``prompt``, optional ``seed`` and the method's options.
        Variants that agree on the method's batch key (e.g. ``steps``) run in one batch of
        at most ``batch_size`` rows; results come back in the order given.
        """
        start = time.perf_counter()
        plugin = get_method(method)
        check_model_kind(method, self.engine.kind, plugin.kinds)
        rows = [self._row(method, variant) for variant in variants]
        if not rows:
            raise ParameterError("no edits requested")
        if batch_size is not None and batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        picture = images.load_image(image)
        model_size = self.model_size(picture)
        pixels = images.to_tensor(picture, model_size)
        reference = self.encode(pixels) if plugin.reads_image else None
        latent_size = self.latent_shape(pixels)[-2:]

        results: list[EditResult | None] = [None] * len(rows)
        if plugin.needs_deterministic_sampler:  # "auto" resolves to the model's sampler
            for row in rows:
                if row.params.sampler == "auto":
                    check_sampler(method, self.engine.sampler())
        key = (*plugin.batch_key, *COMMON_BATCH_KEY)
        for indices in _batches(rows, key, batch_size):
            batch_start, evals_before = time.perf_counter(), self.denoiser.unet_evals
            batch = EditBatch(reference, [rows[i] for i in indices], record_attention, pixels)
            output = plugin.run(self.engine, batch)
            decoded = images.to_pil(self._decoded(output), picture.size)
            per_edit_seconds = (time.perf_counter() - batch_start) / len(indices)
            per_edit_evals = (self.denoiser.unet_evals - evals_before) / len(indices)
            for position, index in enumerate(indices):
                row = rows[index]
                results[index] = EditResult(
                    image=decoded[position],
                    method=method,
                    prompt=row.prompt,
                    seed=row.seed,
                    params=dataclasses.asdict(row.params),
                    seconds=per_edit_seconds,
                    unet_evals=per_edit_evals,
                    latent=output.latents[position : position + 1].cpu(),
                    mask=None if output.masks is None else output.masks[position].cpu(),
                    notes=dict(output.notes[position]) if output.notes else {},
                )
                if output.token_maps is not None:
                    token_maps = output.token_maps[position].cpu()
                    prompts = output.map_prompts or [r.prompt for r in batch.rows]
                    result = results[index]
                    result.attention = self.word_maps(token_maps, prompts[position], latent_size)
                    result.extras["token_maps"] = token_maps
        # encoding and image conversion are shared: spread them over the edits
        overhead = (time.perf_counter() - start - sum(r.seconds for r in results)) / len(rows)
        for result in results:
            result.seconds += overhead
        return results  # type: ignore[return-value]

    def edit_frames(
        self,
        frames: Sequence[Image.Image | str | Path],
        prompt: str,
        method: str = DEFAULT_METHOD,
        seeds: int | Sequence[int] = 0,
        **params: Any,
    ) -> list[EditResult]:
        """One edit (``prompt``, the method's options ``params``) of several images of one
        size, e.g. a video's frames; ``seeds``: one for all (the same x_T, and z for input
        alignment, for every frame: LASPA A.1's fixed noise) or one per frame.

        Methods that take one reference per row (``many_images``: LASPA's alignments,
        SDEdit) edit the frames in one UNet batch; the others edit them one by one.
        """
        if not frames:
            raise ParameterError("no frames given")
        seeds = [seeds] * len(frames) if isinstance(seeds, int) else list(seeds)
        if len(seeds) != len(frames):
            raise ParameterError(f"{len(seeds)} seeds for {len(frames)} frames")
        plugin = get_method(method)
        if not plugin.many_images or len(frames) == 1:
            return [
                self.edit(frame, prompt, method, seed, **params)
                for frame, seed in zip(frames, seeds, strict=True)
            ]
        start = time.perf_counter()
        rows = [self._row(method, {"prompt": prompt, "seed": seed, **params}) for seed in seeds]
        pictures = [images.load_image(frame) for frame in frames]
        size = pictures[0].size
        if any(picture.size != size for picture in pictures):
            raise ParameterError("frames edited together must all have one size")
        pixels = torch.cat([images.to_tensor(p, self.model_size(p)) for p in pictures])
        if plugin.needs_deterministic_sampler and rows[0].params.sampler == "auto":
            check_sampler(method, self.engine.sampler())
        batch = EditBatch(self.encode(pixels), rows, False, pixels[:1])
        evals_before = self.denoiser.unet_evals
        output = plugin.run(self.engine, batch)
        decoded = images.to_pil(self._decoded(output), size)
        seconds = (time.perf_counter() - start) / len(rows)
        evals = (self.denoiser.unet_evals - evals_before) / len(rows)
        return [
            EditResult(
                image=decoded[i],
                method=method,
                prompt=prompt,
                seed=row.seed,
                params=dataclasses.asdict(row.params),
                seconds=seconds,
                unet_evals=evals,
                latent=output.latents[i : i + 1].cpu(),
                mask=None if output.masks is None else output.masks[i].cpu(),
            )  # fmt: skip
            for i, row in enumerate(rows)
        ]

    def edit_video(
        self,
        source: str | Path,
        prompt: str,
        output: str | Path,
        method: str = DEFAULT_METHOD,
        seed: int = 0,
        frame_noise: str = "fixed",
        batch_size: int = 4,
        fps: float | None = None,
        progress: Any = None,
        overwrite: bool = False,
        **params: Any,
    ):
        """Edit every frame of ``source`` (an mp4 / webm / gif / ... file or a folder of
        frames) towards ``prompt`` and write ``output`` (a video file or a folder of PNG
        frames) at the input's frame rate and size. ``frame_noise="fixed"``: every frame edited
        with ``seed`` (one x_T, and z, for the whole clip); ``"fresh"``: frame i with
        ``seed + i``. Frames are streamed ``batch_size`` at a time; a rerun resumes (see
        :mod:`laspa.video`). ``fps``: the output's frame rate (default: the file's own; 24
        for a folder).
        ``progress``: called with the number of frames finished by each step.
        ``overwrite``: redo frames in the output that other settings made (else refused).
        Returns a :class:`laspa.video.VideoSummary`."""
        from . import video

        return video.edit_video(
            self, source, prompt, output, method=method, seed=seed, frame_noise=frame_noise,
            batch_size=batch_size, fps=fps, progress=progress, overwrite=overwrite, **params,
        )  # fmt: skip

    def _row(self, method: str, variant: dict[str, Any]) -> EditRow:
        variant = dict(variant)
        prompt = variant.pop("prompt", None)
        check_prompt(prompt)
        seed = check_seed(variant.pop("seed", 0))
        if variant.get("steps") is None:
            variant.pop("steps", None)
            steps = self.default_steps(variant.get("sampler"))
            if steps is not None:
                variant["steps"] = steps
        params_cls = get_method(method).Params
        variant = {**self.family_defaults(params_cls, variant), **variant}
        variant = {**self.schedule_defaults(params_cls, variant), **variant}
        # "auto" is the model's sampler now: options that cannot act on it are refused
        params = make_params(method, variant, sampler=self.default_sampler)
        return EditRow(prompt, seed, params)

    def family_defaults(self, params_cls: type, options: dict[str, Any]) -> dict[str, Any]:
        """Defaults of a method (its ``params_cls``) that are the model family's own: on
        SDXL, SD3 and FLUX the steps and guidance its diffusers pipeline runs with
        (laspa.families.pipeline_defaults); on SD 1.x / 2.x, where the methods' papers ran,
        their own (LASPA's guidance 10); none for a method with its own table per family
        (``uses_family_defaults``), and a few-step sampler keeps its steps. ``options``:
        the edit's; what it names wins."""
        if self.engine.family == "sd" or not params_cls.uses_family_defaults:
            return {}
        embeds = self.engine.kind == "flow" and self.denoiser.guidance_embeds
        defaults = pipeline_defaults(self.engine.family, embeds)
        if self._sampler_of(options).default_steps is not None:
            defaults.pop("steps")
        return defaults

    def schedule_defaults(self, params_cls: type, options: dict[str, Any]) -> dict[str, Any]:
        """Defaults of a method (its ``params_cls``) that differ on this edit's schedule:
        on a few-step sampler (LCM, TCD) its ``few_step_defaults``; none on others.
        ``options``: the edit's (its sampler and steps); what it names wins."""
        sampler, steps = self._sampler_of(options), options.get("steps")
        if sampler.default_steps is None:
            return {}
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            return {}  # refused, in its own words, when the Params are made
        return params_cls.few_step_defaults(sampler.steps(self.denoiser, steps))

    def _sampler_of(self, options: dict[str, Any]):
        """The Sampler an edit's ``sampler`` option names ("auto": the model's own); an
        unknown name is refused when the Params are made, so DDIM stands in here."""
        name = options.get("sampler")
        name = self.default_sampler if name in (None, "auto") else name
        return SAMPLERS.get(name, SAMPLERS["ddim"])

    def default_steps(self, sampler: str | None = None) -> int | None:
        """The steps of an edit that names none: 4 on a few-step sampler (LCM, TCD), the
        method's own default (None) otherwise. ``sampler``: the edit's, or the model's."""
        return self._sampler_of({"sampler": sampler}).default_steps


def check_method_fits(method: str, sampler: str | None, model: str | Path | None) -> None:
    """Refuse, before the model loads, a method or sampler that does not run on the kind of
    model a local folder holds (FPE on SD3, ddim on a flow model, ...); a hub id is checked
    once loaded (Editor.edit_many, Engine.steps)."""
    from .mini import MODEL_NAMES, model_dir

    if model is None:
        kind = "unet"  # the bundled default
    elif model in MODEL_NAMES:
        try:
            kind = folder_kind(model_dir(MODEL_NAMES[model]))
        except (RuntimeError, ValueError):
            return  # a missing bundled model is refused when it loads
    else:
        kind = folder_kind(model)
    if kind is None:
        return
    check_model_kind(method, kind, METHODS[method].kinds)
    if sampler and sampler != "auto":
        check_model_kind(f"sampler {sampler}", kind, SAMPLERS[sampler].kinds)


def auto_sampler(model: str | Path | None) -> str | None:
    """The sampler "auto" runs on the model ``--model`` names, read from a local folder's
    scheduler config before any weight loads (as the Engine picks it once loaded); None
    where only loading tells (a hub id, a folder without a readable config)."""
    from .mini import MODEL_NAMES, model_dir
    from .samplers import sampler_for_scheduler

    try:
        if model is None or model in MODEL_NAMES:
            folder = Path(model_dir(MODEL_NAMES[model or "mini"]))
        else:
            folder = Path(str(model))
        config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError, RuntimeError):  # not a folder, or a bundled model missing
        return None
    if not isinstance(config, dict):
        return None
    if folder_kind(folder) == "flow":
        return "flow"
    return sampler_for_scheduler(str(config.get("_class_name")))


def load_scheduler(source: str):
    """The checkpoint's scheduler, of the class its config names (which picks the sampler
    "auto" runs); DDIM on the same schedule where that class is not a diffusers scheduler."""
    import diffusers

    config = diffusers.DDIMScheduler.load_config(source, subfolder="scheduler")
    scheduler_class = getattr(diffusers, str(config.get("_class_name")), None)
    known = isinstance(scheduler_class, type) and issubclass(
        scheduler_class, diffusers.SchedulerMixin
    )
    if not known:
        scheduler_class = diffusers.DDIMScheduler
    return scheduler_class.from_config(config)


def _is_flux(model) -> bool:
    return type(model).__name__ == "FluxTransformer2DModel"


def _pipeline_class(source: str) -> str:
    """The pipeline class a folder's or hub id's model_index.json names ("" when unknown)."""
    from diffusers import DiffusionPipeline

    try:
        return str(DiffusionPipeline.load_config(source).get("_class_name", ""))
    except Exception:  # no model_index.json: an SD folder assembled by hand
        return ""


def _load_t5(source: str, torch_dtype: torch.dtype) -> dict[str, Any]:
    """SD3's T5 encoder and tokenizer where the checkpoint has them, else none (zeros)."""
    from diffusers import DiffusionPipeline

    index = DiffusionPipeline.load_config(source)
    if (index.get("text_encoder_3") or [None])[0] is None:
        return {}
    from transformers import AutoTokenizer, T5EncoderModel

    return {
        "text_encoder_3": T5EncoderModel.from_pretrained(
            source, subfolder="text_encoder_3", use_safetensors=True, dtype=torch_dtype
        ),
        # the class the folder names (T5TokenizerFast in SD3 checkpoints)
        "tokenizer_3": AutoTokenizer.from_pretrained(source, subfolder="tokenizer_3"),
    }


def _force_zeros_for_empty_prompt(source: str) -> bool:
    """An SDXL pipeline's rule for the empty prompt, from its model_index.json (a hub id's
    is in the hub cache); diffusers' default, True, when it cannot be read."""
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(source)
    except Exception:  # no model_index.json: the default, as diffusers uses
        return True
    return bool(config.get("force_zeros_for_empty_prompt", True))


def _place(module, device: torch.device, dtype: torch.dtype):
    """Move a component, casting only when needed (diffusers warns on redundant casts)."""
    module = module.to(device)
    if module.dtype != dtype:
        module = module.to(dtype)
    return module.eval()


def _batches(rows: list[EditRow], key: tuple[str, ...], batch_size: int | None) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(tuple(getattr(row.params, name) for name in key), []).append(index)
    size = batch_size or len(rows)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


__all__ = ["Editor", "EditResult", "METHODS", "methods"]
