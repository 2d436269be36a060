"""The Editor: one Stable Diffusion model, every editing method, batched edits of one image."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import images, methods
from . import maps as maps_lib
from .attention import (
    CrossAttentionStore,
    SelfAttentionStore,
    coarse_cross_levels,
    describe_layers,
    install_processors,
    self_attention_level,
)
from .errors import ModelError, ParameterError
from .loop import Conditioning, Denoiser, SamplerHooks, Step, invert, sample
from .methods.base import METHODS, EditBatch, EditRow, get_method, make_params
from .tokens import positions_of, word_tokens

#: A progress callback receives (phase, steps done, steps in the phase).
Progress = Callable[[str, int, int], None]

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
    """Holds the SD components and runs edits through the one sampler loop."""

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
    ):
        from diffusers import DDIMScheduler

        self.device, self.dtype = default_device_and_dtype(device, dtype)
        self.vae = _place(vae, self.device, self.dtype)
        self.text_encoder = _place(text_encoder, self.device, self.dtype)
        self.unet = _place(unet, self.device, self.dtype)
        self.tokenizer = tokenizer
        # The loop is DDIM whatever scheduler the checkpoint names; its noise schedule,
        # prediction type and timestep spacing come from the model's own config.
        self.scheduler = DDIMScheduler.from_config(scheduler.config)
        self.name = name
        #: the folder or hub id the model was loaded from (None for in-memory components),
        #: so that diffusers' own pipelines can load the same model as peers
        self.source: str | None = None
        self.attention = install_processors(self.unet)
        self.denoiser = Denoiser(self.unet, self.scheduler, self.attention, final_step)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = int(self.unet.config.sample_size) * self.vae_scale_factor
        # a side must survive the VAE's and the UNet's downsampling without remainder
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        self.size_multiple = self.vae_scale_factor * unet_factor
        self._inversions: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()
        self.inversion_cache_size = inversion_cache_size
        self.inversion_cache_hits = 0
        self._embeddings: dict[str, torch.Tensor] = {}
        self._inpainters: dict[str, Any] = {}
        self.progress: Progress | None = None

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
        """Load a diffusers Stable Diffusion 1.x/2.x checkpoint by folder or hub id.

        Only safetensors weights are accepted: pickle files can run code when loaded.
        """
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        check_model_source(model)
        _, torch_dtype = default_device_and_dtype(device, dtype)
        source = str(model)
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
            scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
        except Exception as error:  # diffusers/hub raise many types; the user needs one line
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise ModelError(f"cannot load model {source}: {reason}") from None
        editor = cls(
            vae, text_encoder, tokenizer, unet, scheduler,
            device=device, dtype=dtype, name=source, **kwargs,
        )  # fmt: skip
        editor.source = source
        return editor

    @classmethod
    def mini(cls, **kwargs) -> Editor:
        """The bundled miniature model, trained by the project on its scene world."""
        from .mini import model_dir

        try:
            folder = model_dir()
        except RuntimeError as error:
            raise ModelError(str(error)) from None
        return cls.from_pretrained(folder, **kwargs)

    # --------------------------------------------------------------- building blocks
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """enc(I): the VAE posterior mean (deterministic), scaled as diffusers does."""
        with torch.no_grad():
            posterior = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return posterior.mean.float() * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]."""
        scaled = latents / self.vae.config.scaling_factor
        with torch.no_grad():
            return self.vae.decode(scaled.to(self.device, self.dtype)).sample.float()

    def latent_shape(self, pixels: torch.Tensor) -> tuple[int, int, int, int]:
        """The (1, C, h, w) shape of the latent of (1, 3, H, W) ``pixels``."""
        height, width = pixels.shape[-2:]
        factor = self.vae_scale_factor
        return (1, int(self.unet.config.in_channels), height // factor, width // factor)

    def model_size(self, image: Image.Image) -> tuple[int, int]:
        return images.fit_size(*image.size, self.resolution, self.size_multiple)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings, cached per prompt (sweeps repeat a few prompts many times)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if missing:
            tokens = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            with torch.no_grad():
                encoded = self.text_encoder(tokens.input_ids.to(self.device))[0].float()
            if len(self._embeddings) > 256:
                self._embeddings.clear()
            self._embeddings.update(zip(missing, encoded, strict=True))
        return torch.stack([self._embeddings[p] for p in prompts])

    def conditioning(
        self,
        batch: EditBatch,
        prompts: Sequence[str] | None = None,
        guided: bool = True,
        guidance: torch.Tensor | None = None,
        unguided_rows: int = 0,
    ) -> Conditioning:
        """Conditioning of latent rows on ``prompts`` (default: the rows' prompts), with CFG.

        Methods with several latent rows per edit pass their own per-row ``guidance``;
        by default rows stack branch after branch (edit rows, then edit rows again).
        The first ``unguided_rows`` rows run their conditional pass only.
        """
        prompts = [row.prompt for row in batch.rows] if prompts is None else prompts
        cond = self.text_embeddings(prompts)
        if not guided:
            return Conditioning(cond)
        uncond = self.text_embeddings([""]).expand_as(cond)
        if guidance is None:
            guidance = batch.column("guidance").repeat(len(prompts) // batch.size)
        guidance = guidance.to(self.device).view(-1, 1, 1, 1)
        return Conditioning(cond, uncond, guidance, unguided_rows)

    def attention_store(self, rows: slice | None = None, levels: set[int] | None = None):
        """A cross-attention recorder at the default map level (see coarse_cross_levels)."""
        levels = levels or coarse_cross_levels(describe_layers(self.unet))
        return CrossAttentionStore(levels, rows=rows)

    def self_attention_store(self) -> SelfAttentionStore:
        """A self-attention recorder one level finer than the default map level."""
        layers = describe_layers(self.unet)
        return SelfAttentionStore(self_attention_level(layers, coarse_cross_levels(layers)))

    def word_maps(
        self, token_maps: torch.Tensor, prompt: str, size: tuple[int, int], words=None
    ) -> dict[str, np.ndarray]:
        """Word -> map from one row's (h, w, tokens) cross-attention: the mean of the word's
        tokens (every occurrence), upsampled to ``size``, min-max normalised to [0, 1].
        ``words`` (default: every word of the prompt) may hold phrases."""
        if words is None:
            words = dict.fromkeys(w.word for w in word_tokens(self.tokenizer, prompt))
        maps: dict[str, np.ndarray] = {}
        for word in words:
            try:
                positions = positions_of(self.tokenizer, prompt, word)
            except ValueError as error:
                raise ParameterError(str(error)) from None
            word_map = maps_lib.resize(maps_lib.word_map(token_maps[None], positions), size)
            maps[word] = maps_lib.minmax(word_map)[0].cpu().numpy().astype(np.float32)
        return maps

    @staticmethod
    def generators(batch: EditBatch) -> list[torch.Generator]:
        """One CPU generator per row: a row's noise depends on its seed alone, so an edit
        is the same whether it runs alone or in a batch, on any device."""
        return [torch.Generator("cpu").manual_seed(int(row.seed)) for row in batch.rows]

    def noise(self, generators: list[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
        one = (1, *shape[1:])
        return torch.cat([torch.randn(one, generator=g) for g in generators]).to(self.device)

    def sample(
        self,
        x: torch.Tensor,
        steps: list[Step],
        conditioning: Conditioning,
        hooks: SamplerHooks | None = None,
        phase: str = "edit",
    ) -> torch.Tensor:
        return sample(self.denoiser, x, steps, conditioning, hooks, self._progress(phase))

    def invert(self, reference: torch.Tensor, prompt: str, num_steps: int) -> list[torch.Tensor]:
        """DDIM inversion trajectory of ``reference`` (x_T first), cached per
        (latent content, prompt, steps) so several edits of one image invert once.

        The cache holds at most ``inversion_cache_size`` trajectories (least recently used
        out); each costs ``(steps + 1) * latent bytes`` (3.3 MB for SD at 512 px, 50 steps).
        """
        digest = hashlib.sha1(reference.float().cpu().numpy().tobytes()).hexdigest()
        key = (digest, tuple(reference.shape), prompt, num_steps)
        if key in self._inversions:
            self.inversion_cache_hits += 1
            self._inversions.move_to_end(key)
            return self._inversions[key]
        conditioning = Conditioning(
            self.text_embeddings([prompt]).expand(reference.shape[0], -1, -1)
        )
        steps = self.denoiser.steps(num_steps)
        trajectory = invert(self.denoiser, reference, steps, conditioning, self._progress("invert"))
        self._inversions[key] = trajectory
        while len(self._inversions) > self.inversion_cache_size:
            self._inversions.popitem(last=False)
        return trajectory

    def inpaint_with_checkpoint(
        self, model: str, batch: EditBatch, masks: torch.Tensor, generators
    ) -> torch.Tensor:
        """Inpaint the batch's image inside ``masks`` with diffusers' inpainting pipeline on
        an SD inpainting checkpoint (loaded once, safetensors only); returns latents."""
        pipe = self._inpainting_pipeline(model)
        height, width = batch.pixels.shape[-2:]
        mask_pixels = F.interpolate(masks.float(), size=(height, width), mode="nearest")
        image = ((batch.pixels + 1) / 2).expand(batch.size, -1, -1, -1)
        counter = pipe.unet.register_forward_pre_hook(self._count_rows)
        try:
            latents = pipe(
                prompt=[row.prompt for row in batch.rows],
                image=image.to(self.device, self.dtype),
                mask_image=mask_pixels.to(self.device, self.dtype),
                height=height,
                width=width,
                num_inference_steps=batch.shared("steps"),
                guidance_scale=batch.shared("guidance"),
                strength=batch.shared("inpaint_strength"),
                generator=generators,
                output_type="latent",
            ).images
        finally:
            counter.remove()
        return latents.float()

    def _count_rows(self, module, args) -> None:
        self.denoiser.unet_evals += args[0].shape[0]

    def _inpainting_pipeline(self, model: str):
        if model not in self._inpainters:
            from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

            check_model_source(model)
            try:
                pipe = StableDiffusionInpaintPipeline.from_pretrained(
                    model,
                    safety_checker=None,
                    requires_safety_checker=False,
                    use_safetensors=True,
                    torch_dtype=self.dtype,
                )
            except Exception as error:  # one line for the user, as in from_pretrained
                raise ModelError(
                    f"cannot load inpainting model {model}: {_first_line(error)}"
                ) from None
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            self._inpainters = {model: pipe.to(self.device)}  # keep one: they are large
        return self._inpainters[model]

    def clear_inversion_cache(self) -> None:
        self._inversions.clear()

    def _progress(self, phase: str):
        if self.progress is None:
            return None
        report = self.progress
        return lambda done, total: report(phase, done, total)

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
        result = self.edit(image, prompt, method, seed, record_attention=True, **params)
        if "token_maps" not in result.extras:
            raise ParameterError(f"method {method} does not record attention maps")
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
        for indices in _batches(rows, plugin.batch_key, batch_size):
            batch_start, evals_before = time.perf_counter(), self.denoiser.unet_evals
            batch = EditBatch(reference, [rows[i] for i in indices], record_attention, pixels)
            output = plugin.run(self, batch)
            decoded = images.to_pil(self.decode(output.latents), picture.size)
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

    def _row(self, method: str, variant: dict[str, Any]) -> EditRow:
        variant = dict(variant)
        prompt = variant.pop("prompt", None)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ParameterError("the prompt must be a non-empty text")
        seed = variant.pop("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ParameterError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        return EditRow(prompt, seed, make_params(method, variant))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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


def check_model_source(model: str | Path) -> None:
    """Fail early, in one line, on a model folder that is missing or holds pickle weights."""
    text = str(model)
    path = Path(text)
    if path.is_file():
        raise ModelError(
            f"{text} is a single file; laspa loads diffusers model folders (model_index.json, "
            "unet/, vae/, text_encoder/, tokenizer/, scheduler/) or hub ids"
        )
    looks_local = path.is_absolute() or text.startswith((".", "~")) or path.exists()
    if not path.exists():
        if looks_local or text.count("/") > 1:
            raise ModelError(f"model folder not found: {text}")
        return  # a hub id such as runwayml/stable-diffusion-v1-5: diffusers resolves it
    missing = [sub for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if not (path / sub).is_dir()]  # fmt: skip
    if missing:
        raise ModelError(
            f"{text} is not a diffusers Stable Diffusion folder (missing {', '.join(missing)}/)"
        )
    for sub in ("unet", "vae", "text_encoder"):
        if not any((path / sub).glob("*.safetensors")):
            pickles = [
                p.name
                for p in (path / sub).iterdir()
                if p.suffix in (".bin", ".ckpt", ".pt", ".pth")
            ]
            if pickles:
                raise ModelError(
                    f"{path / sub} holds only pickle weights ({pickles[0]}); laspa loads "
                    "safetensors only, since pickle files can run code: convert the checkpoint"
                )
            raise ModelError(f"no safetensors weights in {path / sub}")


__all__ = ["Editor", "EditResult", "METHODS", "methods"]
