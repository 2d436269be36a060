"""The Engine: everything an editing method may use of a model and its sampler.

This is the contract between methods (``methods/``) and model families and samplers.
A method's ``run(engine, batch)`` reaches the model only through the members below;
it never sees the UNet, the tokenizer, the text encoder or the scheduler. A new
model family (another text encoder, latent size or prediction type) or a new
sampler plugs in behind these members, and every method keeps working unchanged:

- ``sampler(batch)``: the name of the sampler the batch runs;
- ``steps(batch)``: the batch's sampler's steps (DDIM, ancestral or LCM, laspa.samplers),
  each with its timesteps and update coefficients; ``step_noise(batch, generators)`` the
  noise a stochastic sampler adds;
- ``generators(batch)``, ``noise(generators, shape)``: each row's noise from its seed;
- ``conditioning(batch, ...)``: text conditioning of latent rows, with guidance;
- ``sample(x, steps, conditioning, hooks, attention=..., callback=...)``: the loop;
- ``invert(reference, prompt, num_steps, guidance=, first_step=)``: a cached (partial,
  optionally guided) inversion trajectory;
- ``attention_store(...)``, ``self_attention_store()``, ``layers``: what attention
  hooks need to know about the denoiser's attention layers;
- ``word_tokens``, ``positions_of``, ``token_alignment``, ``start_positions``: prompts'
  words as the tokens the attention's text columns are (the family's own tokenizer: T5's
  on FLUX), and the columns read as the start token's map;
- ``pipeline(cls, model, ...)``: a diffusers pipeline from another checkpoint, for a
  method that needs one (InstDiffEdit's inpainting checkpoint);
- ``num_train_timesteps``, ``device``, ``dtype``, ``unet_evals``; ``kind``: "unet" (an eps /
  v UNet) or "flow" (a rectified-flow transformer, SD3: laspa.flow), for a method that
  runs on one kind only; ``family``: "sd" (1.x/2.x), "sdxl", "sd3" or "flux", for a method
  whose published settings differ by model;
- ``encode``, ``decode``, ``latent_shape``, ``text_embeddings``: a model family's own
  autoencoder and text encoder (the Editor's, rather than the methods').

:data:`METHOD_INTERFACE` names exactly these members (the tests hold every method to
them). The :class:`~laspa.editor.Editor` builds one Engine per model and keeps the
user's API (images in, images out).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import ddim, loop
from .attention import (
    AttentionHook,
    CrossAttentionStore,
    LayerInfo,
    SelfAttentionStore,
    coarse_cross_levels,
    describe_flux_layers,
    describe_joint_layers,
    describe_layers,
    install_flux_processors,
    install_joint_processors,
    install_processors,
    self_attention_level,
)
from .edit_rows import EditBatch, check_model_kind
from .errors import ModelError, ParameterError, first_line
from .families import (
    FluxText,
    StableDiffusion3Text,
    StableDiffusionText,
    StableDiffusionXLText,
)
from .loop import Conditioning, Denoiser, SamplerHooks, Step, StepCallback
from .models import check_model_source
from .samplers import SAMPLERS, RowNoise, sampler_for_scheduler, step_noise_kind
from .tokens import WordTokens, positions_of, token_alignment, trailing_positions, word_tokens

#: Text embeddings kept per engine (least recently used dropped first): sweeps and long
#: sessions repeat a few prompts many times.
PROMPT_CACHE_SIZE = 256

#: A progress callback receives (phase, steps done, steps in the phase).
Progress = Callable[[str, int, int], None]

#: The members of an Engine that editing methods may use.
METHOD_INTERFACE = frozenset((
    "sampler", "steps", "step_noise", "generators", "noise", "conditioning", "sample", "invert",
    "attention_store", "self_attention_store", "layers",
    "word_tokens", "positions_of", "token_alignment", "start_positions", "pipeline",
    "num_train_timesteps", "device", "dtype", "unet_evals", "kind", "family",
    "encode", "decode", "latent_shape", "text_embeddings",
))  # fmt: skip


class Engine:
    """A Stable Diffusion model (1.x/2.x, SDXL; SD3 and FLUX as flow models, laspa.flow)
    with the sampler loop, as methods see it.

    The components must already sit on ``device`` in ``dtype`` (the VAE may be kept in
    float32, see ``force_upcast``). The sampler follows the checkpoint's scheduler class
    unless an edit names one (laspa.samplers.sampler_for_scheduler), on the noise
    schedule, prediction type and timestep spacing of the model's own config. ``text`` is
    the model family's prompt encoder (laspa.families); by default SD 1.x/2.x's, from
    ``text_encoder`` and ``tokenizer``.
    """

    def __init__(
        self, vae, text_encoder, tokenizer, unet, scheduler, *, device: torch.device,
        dtype: torch.dtype, final_step: str = "clean", inversion_cache_size: int = 8,
        text: StableDiffusionText | StableDiffusionXLText | StableDiffusion3Text | FluxText
        | None = None,
    ):  # fmt: skip
        from diffusers import DDIMScheduler

        self.device, self.dtype = device, dtype
        # the components stay behind the interface; the loop's parts are the Editor's too
        self._vae = vae
        self._vae_dtype = vae.dtype
        self._text = text or StableDiffusionText(text_encoder, tokenizer, device)
        self.family = _FAMILIES[type(self._text)]
        #: pixels per latent pixel, and the model's native image side in pixels
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if unet.config.get("sample_size") is None:  # FLUX: its VAE's image size (1024 px)
            self.resolution = int(vae.config.sample_size)
        else:
            self.resolution = int(unet.config.sample_size) * self.vae_scale_factor
        #: SD3's VAE centres its latents: z = (mean - shift) * scale
        self._vae_shift = vae.config.get("shift_factor")
        self.kind = "flow" if is_flow_denoiser(unet) else "unet"
        if self.kind == "flow":
            self._init_flow(unet, scheduler)
            return
        self.scheduler = DDIMScheduler.from_config(scheduler.config)
        #: the sampler "auto" means: the one the checkpoint's scheduler class names
        self.default_sampler = sampler_for_scheduler(type(scheduler).__name__)
        #: a UNet distilled with a guidance embedding (LCM) takes guidance as an input
        self.guidance_embedding_dim = unet.config.get("time_cond_proj_dim")
        self.attention = install_processors(unet)
        self.denoiser = Denoiser(
            unet, self.scheduler, self.attention, final_step, scheduler_config=scheduler.config
        )
        #: the UNet's attention layers by processor name, in forward order
        self.layers: dict[str, LayerInfo] = describe_layers(unet)
        self.num_train_timesteps = self.denoiser.num_train_timesteps
        self.progress: Progress | None = None
        self._embeddings: OrderedDict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]] = (
            OrderedDict()
        )
        self._inversions: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()
        self.inversion_cache_size = inversion_cache_size
        self.inversion_cache_hits = 0
        self._pipelines: dict[tuple[str, str], Any] = {}

    def _init_flow(self, transformer, scheduler) -> None:
        """A flow transformer (SD3, FLUX) with the flow-matching scheduler of its config.
        SD3's joint attention runs laspa's processor (its image-to-text block as
        cross-attention: maps and swaps; laspa.attention.LaspaJointAttnProcessor); FLUX's
        double-stream layers a processor that adds maps to diffusers' own."""
        import diffusers

        from .flow import FlowDenoiser, FluxDenoiser

        scheduler_class = type(scheduler)
        if not issubclass(scheduler_class, diffusers.FlowMatchEulerDiscreteScheduler):
            scheduler_class = diffusers.FlowMatchEulerDiscreteScheduler
        self.scheduler = scheduler_class.from_config(scheduler.config)
        self.default_sampler = "flow"
        self.guidance_embedding_dim = None
        flux = type(transformer).__name__ == "FluxTransformer2DModel"
        # SD3's joint attention, and FLUX's double-stream attention, expose their
        # image-to-text block to the hooks (laspa.attention)
        install = install_flux_processors if flux else install_joint_processors
        self.attention = install(transformer)
        denoiser_class = FluxDenoiser if flux else FlowDenoiser
        self.denoiser = denoiser_class(transformer, self.scheduler, self.attention)
        self.denoiser.last_token_repeats = getattr(self._text, "last_token_repeats", 1)
        self.layers = (describe_flux_layers if flux else describe_joint_layers)(transformer)
        self.num_train_timesteps = self.denoiser.num_train_timesteps
        self.progress = None
        self._embeddings = OrderedDict()
        self._inversions = OrderedDict()
        self.inversion_cache_size = 0
        self.inversion_cache_hits = 0
        self._pipelines = {}

    def check_kind(self, what: str, kinds: Sequence[str]) -> None:
        """Refuse, in one line, what does not run on this model's kind (check_model_kind)."""
        check_model_kind(what, self.kind, kinds)

    @property
    def unet_evals(self) -> int:
        """UNet batch rows evaluated so far (the loop's and any pipeline's)."""
        return self.denoiser.unet_evals

    # ------------------------------------------------------------------ latents
    def encode(self, pixels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """enc(I): the VAE posterior mean (deterministic), scaled as diffusers does. With
        ``noise`` (standard normal latent rows, one per row of ``pixels``, or any number
        for one image): posterior samples ``mean + std * noise``, what diffusers'
        ``latent_dist.sample`` draws."""
        with torch.no_grad():
            posterior = self._vae.encode(pixels.to(self.device, self._vae_dtype)).latent_dist
        latent = posterior.mean.float()
        if noise is not None:
            latent = latent + posterior.std.float() * noise.to(latent.device)
        if self._vae_shift is not None:  # SD3 / FLUX: centred latents
            latent = latent - self._vae_shift
        return latent * self._vae.config.scaling_factor

    def latent_shape(self, pixels: torch.Tensor) -> tuple[int, int, int, int]:
        """The (1, C, h, w) shape of the latent of (1, 3, H, W) ``pixels``."""
        height, width = pixels.shape[-2:]
        factor = self.vae_scale_factor
        channels = getattr(self.denoiser, "latent_channels", None)
        channels = int(self.denoiser.unet.config.in_channels) if channels is None else channels
        return (1, channels, height // factor, width // factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]."""
        scaled = latents / self._vae.config.scaling_factor
        if self._vae_shift is not None:
            scaled = scaled + self._vae_shift
        with torch.no_grad():
            return self._vae.decode(scaled.to(self.device, self._vae_dtype)).sample.float()

    @staticmethod
    def generators(batch: EditBatch) -> list[torch.Generator]:
        """One CPU generator per row: a row's noise depends on its seed alone, so an edit
        is the same whether it runs alone or in a batch, on any device."""
        return [torch.Generator("cpu").manual_seed(int(row.seed)) for row in batch.rows]

    def noise(self, generators: list[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
        """One standard normal latent row per generator, on the engine's device."""
        one = (1, *shape[1:])
        return torch.cat([torch.randn(one, generator=g) for g in generators]).to(self.device)

    # --------------------------------------------------------------------- text
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings, cached per prompt (sweeps repeat a few prompts many times)."""
        return self._encoded(prompts)[0]

    def _encoded(self, prompts: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The family's embeddings and per-prompt extra UNet inputs, one row per prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if missing:
            encoded, added = self._text.encode(missing)
            for index, prompt in enumerate(missing):
                row_added = {name: value[index] for name, value in added.items()}
                self._embeddings[prompt] = (encoded[index], row_added)
        rows = [self._embeddings[p] for p in prompts]
        for prompt in dict.fromkeys(prompts):
            self._embeddings.move_to_end(prompt)
        # least recently used first; this call's prompts are already read into rows
        while len(self._embeddings) > PROMPT_CACHE_SIZE:
            self._embeddings.popitem(last=False)
        names = rows[0][1]
        added = {name: torch.stack([row[1][name] for row in rows]) for name in names}
        return torch.stack([row[0] for row in rows]), added

    def _text_conditioning(
        self, prompts: Sequence[str], pixel_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embeddings and every extra UNet input of latent rows on ``prompts`` for an
        image of ``pixel_hw``."""
        embeddings, added = self._encoded(prompts)
        return embeddings, {**added, **self._text.size_inputs(len(prompts), pixel_hw)}

    def _pixel_hw(self, batch: EditBatch) -> tuple[int, int]:
        """The batch's image size in pixels (from its input, else the model's own size)."""
        if batch.pixels is not None:
            return tuple(batch.pixels.shape[-2:])
        if batch.reference is not None:
            return self._pixels_of(batch.reference)
        return self.resolution, self.resolution

    def _pixels_of(self, latents: torch.Tensor) -> tuple[int, int]:
        """The image size in pixels that ``latents`` decode to."""
        return tuple(s * self.vae_scale_factor for s in latents.shape[-2:])

    def conditioning(
        self,
        batch: EditBatch,
        prompts: Sequence[str] | None = None,
        guided: bool = True,
        guidance: torch.Tensor | None = None,
        unguided_rows: int = 0,
    ) -> Conditioning:
        """Conditioning of latent rows on ``prompts`` (default: the rows' prompts), guided.

        Methods with several latent rows per edit pass their own per-row ``guidance``;
        by default rows stack branch after branch (edit rows, then edit rows again).
        The first ``unguided_rows`` rows run their conditional pass only. As in diffusers'
        pipelines, a guidance scale of at most 1 means no guidance (the conditional
        prediction alone: what few-step models such as SD-Turbo are run with). A UNet
        with a guidance embedding takes the scale w as ``timestep_cond`` (LCM's
        w - 1 convention) instead of an unconditional row, unless the batch asks for
        ``guidance_mode="cfg"``.
        """
        prompts = [row.prompt for row in batch.rows] if prompts is None else prompts
        pixel_hw = self._pixel_hw(batch)
        cond, added = self._text_conditioning(prompts, pixel_hw)
        if guidance is None:
            guidance = batch.column("guidance").repeat(len(prompts) // batch.size)
        guidance = guidance.to(self.device).view(-1, 1, 1, 1)
        if not guided:
            guidance = torch.ones_like(guidance)
        guidance[:unguided_rows] = 1.0
        if self.kind == "flow" and self.denoiser.guidance_embeds:
            # FLUX-dev: guidance distilled into the model, one row each (FluxPipeline)
            return Conditioning(cond, added={**added, "guidance": guidance.flatten()})
        if self.guidance_mode(batch) == "embedding":
            w = (guidance.flatten() - 1).clamp(min=0)
            embedding = ddim.guidance_embedding(w, self.guidance_embedding_dim)
            return Conditioning(cond, added=added, timestep_cond=embedding)
        if bool((guidance <= 1).all()):
            return Conditioning(cond, added=added)
        uncond, uncond_added = self._text_conditioning([""] * len(prompts), pixel_hw)
        return Conditioning(
            cond, uncond, guidance.clamp(min=1), unguided_rows, added=added,
            uncond_added=uncond_added,
        )  # fmt: skip

    def guidance_mode(self, batch: EditBatch) -> str:
        """ "embedding" or "cfg": the batch's choice, by default what the UNet takes."""
        mode = batch.shared("guidance_mode") if batch.rows else "auto"
        if mode == "auto":
            return "embedding" if self.guidance_embedding_dim else "cfg"
        if mode == "embedding" and not self.guidance_embedding_dim:
            raise ParameterError(
                "guidance_mode embedding needs a UNet distilled with a guidance embedding "
                "(time_cond_proj_dim); this one has none: use cfg or auto"
            )
        return mode

    @property
    def attention_tokenizer(self):
        """The tokenizer whose tokens the attention's text columns are (CLIP's on SD 1.x,
        2.x, SDXL and SD3; T5's on FLUX): every word position below is one of its."""
        return self._text.attention_tokenizer

    def word_tokens(self, prompt: str) -> list[WordTokens]:
        """The prompt's words with their token positions (see laspa.tokens.word_tokens)."""
        return word_tokens(self.attention_tokenizer, prompt)

    def positions_of(self, prompt: str, words: str) -> tuple[int, ...]:
        """Token positions of ``words`` in ``prompt``; ValueError if they do not occur."""
        return positions_of(self.attention_tokenizer, prompt, words)

    def token_alignment(self, source: str, target: str) -> list[int]:
        """For each token of ``target``, the position of the same token in ``source``
        (or -1), as laspa.tokens.token_alignment."""
        return token_alignment(self.attention_tokenizer, source, target)

    def start_positions(self, prompt: str) -> tuple[int, ...]:
        """The columns whose map InstDiffEdit reads as the start token's (the background):
        the start token where the family has one, else the end and padding tokens."""
        if self._text.has_start_token:
            return (0,)
        return trailing_positions(self.attention_tokenizer, prompt, self._text.word_columns)

    def attention_columns(self, prompt: str) -> list[tuple[int, str, str | None]]:
        """Every text column word maps are read from, as (column, token, word): the
        family's tokenizer's tokens of ``prompt`` padded as the model reads them, and the
        prompt word each belongs to (None for the start, end and padding tokens)."""
        tokenizer, length = self.attention_tokenizer, self._text.word_columns
        ids = tokenizer(
            prompt, padding="max_length", max_length=length, truncation=True
        ).input_ids  # fmt: skip
        owner = {p: w.word for w in self.word_tokens(prompt) for p in w.positions}
        tokens = tokenizer.convert_ids_to_tokens(ids)
        return [(column, token, owner.get(column)) for column, token in enumerate(tokens)]

    # ------------------------------------------------------------------ sampling
    def sampler(self, batch: EditBatch | None = None) -> str:
        """The sampler the batch runs: its ``sampler`` option, or the model's own."""
        requested = batch.shared("sampler") if batch is not None and batch.rows else "auto"
        return self.default_sampler if requested == "auto" else requested

    def steps(self, batch: EditBatch | int) -> list[Step]:
        """The steps of the batch's sampler and step count, in sampling order (a bare
        count: the model's own sampler)."""
        if isinstance(batch, int):
            return SAMPLERS[self.default_sampler].steps(self.denoiser, batch)
        self.check_kind(f"sampler {self.sampler(batch)}", SAMPLERS[self.sampler(batch)].kinds)
        if self.kind == "flow":  # a resolution-dependent shift (FLUX) reads the size
            height, width = self._pixel_hw(batch)
            factor = self.vae_scale_factor
            self.denoiser.latent_hw = (height // factor, width // factor)
        return SAMPLERS[self.sampler(batch)].steps(
            self.denoiser, batch.shared("steps"), gamma=batch.shared("gamma")
        )

    def step_noise(
        self,
        batch: EditBatch,
        generators: Sequence[torch.Generator],
        like: torch.Tensor,
        branches: int = 1,
    ) -> RowNoise | None:
        """The noise a stochastic sampler adds to the rows of ``like``, drawn from each
        row's generator (one per row of ``like``): one draw per edit
        (``step_noise="fixed"``) or a fresh one per step, stacked ``branches`` times.
        None for a deterministic sampler."""
        sampler = self.sampler(batch)
        if SAMPLERS[sampler].is_deterministic(batch.shared("gamma")):
            return None
        kind = step_noise_kind(batch.shared("step_noise"), sampler)
        return RowNoise(generators, like, kind == "fresh", branches)

    def sample(
        self,
        x: torch.Tensor,
        steps: list[Step],
        conditioning: Conditioning,
        hooks: SamplerHooks | None = None,
        *,
        attention: Sequence[AttentionHook] = (),
        callback: StepCallback | None = None,
        phase: str = "edit",
        noise: RowNoise | None = None,
    ) -> torch.Tensor:
        """Run the loop from ``x`` through ``steps`` (see laspa.loop.sample); ``phase``
        names the run for progress reports, ``noise`` is ``step_noise``'s for a
        stochastic sampler."""
        return loop.sample(
            self.denoiser, x, steps, conditioning, hooks, self._progress(phase),
            attention=attention, callback=callback, noise=noise,
        )  # fmt: skip

    def invert(
        self, reference: torch.Tensor, prompt: str, num_steps: int, *,
        guidance: float = 1.0, first_step: int = 0,
    ) -> list[torch.Tensor]:  # fmt: skip
        """DDIM inversion trajectory of ``reference`` (x_T first), cached per
        (latent content, prompt, steps, guidance) so several edits of one image invert once.

        ``first_step`` > 0 inverts only up to the noise level of that sampling step (a
        partial inversion, DiffEdit's ``inpaint_strength``): the result holds the latents
        at ``steps[first_step:]``'s timesteps, then the input. A cached longer inversion
        of the same key serves it as its tail (inverting starts at the input, so the
        tail is the same). ``guidance`` > 1 guides each inversion step with the empty
        prompt as diffusers' pipelines' ``invert`` do (twice the UNet rows).

        The cache holds at most ``inversion_cache_size`` trajectories (least recently used
        out); each costs ``(steps + 1) * latent bytes`` (3.3 MB for SD at 512 px, 50 steps).
        """
        self.check_kind("DDIM inversion", ("unet",))
        digest = hashlib.sha1(reference.float().cpu().numpy().tobytes()).hexdigest()
        base = (digest, tuple(reference.shape), prompt, num_steps)
        if guidance != 1.0:  # the key of an unguided inversion stays what it was
            base = (*base, float(guidance))
        for cached_first in range(first_step, -1, -1):
            key = base if cached_first == 0 else (*base, "from", cached_first)
            if key in self._inversions:
                self.inversion_cache_hits += 1
                self._inversions.move_to_end(key)
                return self._inversions[key][first_step - cached_first :]
        pixels = self._pixels_of(reference)
        prompts = [prompt] * reference.shape[0]
        cond, added = self._text_conditioning(prompts, pixels)
        conditioning = Conditioning(cond, added=added)
        if self.guidance_embedding_dim:  # w = guidance - 1 (0: unguided), LCM's convention
            w = torch.full((reference.shape[0],), max(guidance - 1.0, 0.0), device=self.device)
            conditioning.timestep_cond = ddim.guidance_embedding(w, self.guidance_embedding_dim)
        elif guidance > 1.0:
            uncond, uncond_added = self._text_conditioning([""] * len(prompts), pixels)
            conditioning = Conditioning(
                cond, uncond, float(guidance), added=added, uncond_added=uncond_added
            )
        steps = self.denoiser.steps(num_steps)[first_step:]
        trajectory = loop.invert(
            self.denoiser, reference, steps, conditioning, self._progress("invert")
        )
        key = base if first_step == 0 else (*base, "from", first_step)
        self._inversions[key] = trajectory
        while len(self._inversions) > self.inversion_cache_size:
            self._inversions.popitem(last=False)
        return trajectory

    def clear_inversion_cache(self) -> None:
        self._inversions.clear()

    def _progress(self, phase: str) -> loop.ProgressCallback | None:
        if self.progress is None:
            return None
        report = self.progress
        return lambda done, total: report(phase, done, total)

    # ----------------------------------------------------------------- attention
    def attention_store(
        self, rows: slice | None = None, levels: set[int] | None = None
    ) -> CrossAttentionStore:
        """A cross-attention recorder at the default map level (see coarse_cross_levels)."""
        return CrossAttentionStore(levels or coarse_cross_levels(self.layers), rows=rows)

    def self_attention_store(self) -> SelfAttentionStore:
        """A self-attention recorder one level finer than the default map level."""
        self.check_kind("self-attention maps", ("unet",))
        level = self_attention_level(self.layers, coarse_cross_levels(self.layers))
        return SelfAttentionStore(level)

    # ----------------------------------------------------------------- pipelines
    def pipeline(
        self, pipeline_class: type, model: str, purpose: str, unet_channels: int = 4,
        **kwargs: Any,
    ):  # fmt: skip
        """A diffusers pipeline of ``pipeline_class`` loaded from the model folder or hub
        id ``model`` (safetensors only), on this engine's device and dtype, with the DDIM
        scheduler of its own config like the loop, and its UNet rows counted in
        ``unet_evals``. Loaded once; only the last one is kept, since they are large.
        ``purpose`` names it in the one-line error; ``unet_channels`` is the input its
        UNet must take (9 for an inpainting checkpoint), checked before loading;
        ``kwargs`` go to ``from_pretrained``.
        """
        key = (pipeline_class.__name__, model)
        if key not in self._pipelines:
            from diffusers import DDIMScheduler

            check_model_source(model, unet_channels)
            try:
                pipe = pipeline_class.from_pretrained(
                    model, use_safetensors=True, torch_dtype=self.dtype, **kwargs
                )
            except Exception as error:  # one line for the user, as in Editor.from_pretrained
                raise ModelError(
                    f"cannot load {purpose} model {model}: {first_line(error)}"
                ) from None
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            pipe.unet.register_forward_pre_hook(self._count_rows)
            self._pipelines = {key: pipe.to(self.device)}
        return self._pipelines[key]

    def _count_rows(self, module, args) -> None:
        self.denoiser.unet_evals += args[0].shape[0]


_FAMILIES = {
    StableDiffusionText: "sd", StableDiffusionXLText: "sdxl", StableDiffusion3Text: "sd3",
    FluxText: "flux",
}  # fmt: skip

#: diffusers classes of flow (velocity-predicting) transformers the engine runs
FLOW_DENOISERS = ("SD3Transformer2DModel", "FluxTransformer2DModel")


def is_flow_denoiser(model) -> bool:
    """Whether the denoising network is a rectified-flow transformer (laspa.flow)."""
    return type(model).__name__ in FLOW_DENOISERS
