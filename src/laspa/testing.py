"""Tiny random Stable Diffusion components, for tests and plumbing benchmarks: a public,
documented module.

It stays in the package, not in tests/, because more than the tests use it: the plumbing
benchmarks (benchmarks/speed.py), the commands in docs/results.md that rebuild the tiny
SD3 / FLUX folders, and the tests of code built on laspa. Public: ``tiny_editor``,
``tiny_components``, ``save_tiny_model``, ``save_tiny_sdxl_model``,
``save_tiny_sd3_model``, ``save_tiny_flux_model`` (and their ``*_components``),
``tiny_t5_tokenizer`` (a T5-kind tokenizer: SentencePiece-style pieces, no start token),
``SecondDevice`` (a stand-in GPU on a CPU-only machine) and ``run_cli`` (the ``laspa``
command in-process under pytest). It sits on top of the layers (it may import the CLI);
no other module of laspa imports it.

The models have the real architecture (AutoencoderKL, CLIP text encoder, UNet2DConditionModel
with cross- and self-attention at two resolutions, DDIM scheduler) at a few thousand
parameters, like diffusers' own tests build. They say nothing about editing quality.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

#: words the tiny tokenizer keeps whole besides the scene world's (others: characters)
TINY_WORDS = ("photo", "of", "cat", "dog")


@functools.lru_cache(maxsize=1)
def _tokenizer_folder() -> Path:
    from .mini.tokenizer import write_tokenizer
    from .world import VOCABULARY

    folder = Path(tempfile.mkdtemp(prefix="laspa-tiny-tokenizer-"))
    return write_tokenizer((*VOCABULARY, *TINY_WORDS), folder, max_length=40)


#: words the tiny T5-kind tokenizer splits into pieces, as T5's vocabulary splits words
T5_SPLIT_WORDS = {"sunglasses": ("sun", "glasses"), "background": ("back", "ground")}


@functools.lru_cache(maxsize=1)
def _t5_tokenizer_folder() -> Path:
    """A T5-kind tokenizer (SentencePiece-style Unigram pieces, no start token, ``</s>``
    after the text) over the scene world's words, 512 tokens as FLUX's pipeline reads."""
    from .mini.tokenizer import write_unigram_tokenizer
    from .world import VOCABULARY

    folder = Path(tempfile.mkdtemp(prefix="laspa-tiny-t5-tokenizer-"))
    words = [w for w in (*VOCABULARY, *TINY_WORDS) if w not in T5_SPLIT_WORDS]
    return write_unigram_tokenizer(words, folder, max_length=512, split=T5_SPLIT_WORDS)


def tiny_t5_tokenizer():
    """The tiny T5-kind tokenizer (transformers' T5 tokenizer class)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_t5_tokenizer_folder())


def tiny_components(
    seed: int = 0,
    prediction_type: str = "epsilon",
    set_alpha_to_one: bool = False,
    upcast_attention: bool = False,
    time_cond_proj_dim: int | None = None,
    scheduler_class: str = "DDIMScheduler",
):
    """(vae, text_encoder, tokenizer, unet, scheduler), random but seeded; 32 px images.
    ``upcast_attention`` computes attention scores in float32, as SD 2.1's UNet does;
    ``time_cond_proj_dim`` gives the UNet LCM's guidance embedding; ``scheduler_class``
    is the diffusers scheduler on SD's schedule (the sampler "auto" picks follows it)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(_tokenizer_folder())
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(_tiny_text_config(tokenizer))
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
        upcast_attention=upcast_attention,
        time_cond_proj_dim=time_cond_proj_dim,
    )
    scheduler = _tiny_scheduler(set_alpha_to_one=set_alpha_to_one, prediction_type=prediction_type)
    if scheduler_class != "DDIMScheduler":
        import diffusers

        scheduler = getattr(diffusers, scheduler_class).from_config(scheduler.config)
    return vae, text_encoder, tokenizer, unet, scheduler


def _tiny_vae(**config):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        **config,
    )


def _tiny_text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=32,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny_scheduler(**config):
    """SD's DDIM schedule (scaled linear betas, steps_offset 1)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        **{
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
            **config,
        }
    )


def tiny_editor(final_step: str = "clean", **kwargs):
    """An Editor on tiny random components, on the CPU in float32."""
    from .editor import Editor

    components = tiny_components(**kwargs)
    return Editor(
        *components, device="cpu", dtype=torch.float32, name="tiny", final_step=final_step
    )


def save_tiny_model(folder: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write tiny random components as a diffusers StableDiffusionPipeline folder
    (``kwargs`` as tiny_components')."""
    from diffusers import StableDiffusionPipeline

    vae, text_encoder, tokenizer, unet, scheduler = tiny_components(seed, **kwargs)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def save_tiny_inpaint_model(folder: str | Path, seed: int = 1) -> Path:
    """Write a tiny random SD inpainting checkpoint (a UNet of 9 input channels: latent,
    mask, masked-image latent) as a diffusers StableDiffusionInpaintPipeline folder; its
    VAE differs from tiny_editor's (another seed), so a test can tell whose decoded."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    vae, text_encoder, tokenizer, unet, scheduler = tiny_components(seed)
    inpaint_unet = UNet2DConditionModel.from_config({**unet.config, "in_channels": 9})
    StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=inpaint_unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(str(folder), safe_serialization=True)  # fmt: skip
    return Path(folder)


def tiny_sdxl_components(seed: int = 0) -> dict:
    """Tiny random SDXL components by pipeline name (vae, text_encoder, text_encoder_2,
    tokenizer, tokenizer_2, unet, scheduler), as diffusers' SDXL tests build them: a UNet
    with ``text_time`` added conditions, two transformer blocks per attention at its
    coarser level, attending to both encoders' features side by side; 32 px images."""
    from diffusers import UNet2DConditionModel
    from transformers import (
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(_tokenizer_folder())
    tokenizer_2 = CLIPTokenizer.from_pretrained(_tokenizer_folder())
    text_config = _tiny_text_config(tokenizer)
    time_dim, projection_dim = 8, text_config.projection_dim
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=projection_dim + 6 * time_dim,
        cross_attention_dim=64,
        norm_num_groups=8,
    )
    return {
        "vae": _tiny_vae(scaling_factor=0.13025),
        "text_encoder": CLIPTextModel(text_config),
        "text_encoder_2": CLIPTextModelWithProjection(text_config),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "unet": unet,
        "scheduler": _tiny_scheduler(),
    }


def save_tiny_sdxl_model(folder: str | Path, seed: int = 0) -> Path:
    """Write tiny random SDXL components as a diffusers StableDiffusionXLPipeline folder."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(seed))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def tiny_sd3_components(seed: int = 0, shift: float = 3.0, t5: bool = False) -> dict:
    """Tiny random SD3 components by pipeline name, as diffusers' SD3 tests build them: two
    CLIP text encoders with projections, no T5 (``text_encoder_3=None``: the pipeline then
    conditions on zeros in its place) unless ``t5`` (a tiny T5 encoder with the tiny
    T5-kind tokenizer), an ``SD3Transformer2DModel`` (MMDiT, patch 2) and a
    16-channel VAE with SD3's scaling and shift factors; ``FlowMatchEulerDiscreteScheduler``
    with SD3's ``shift``. 32 px images, 16 x 16 latents."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(_tokenizer_folder())
    tokenizer_2 = CLIPTokenizer.from_pretrained(_tokenizer_folder())
    text_config = _tiny_text_config(tokenizer)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=64,
        caption_projection_dim=16,
        pooled_projection_dim=64,
        pos_embed_max_size=16,
    )
    vae = _tiny_flow_vae(scaling_factor=1.5305, shift_factor=0.0609)  # SD3's factors
    text_encoder_3 = tokenizer_3 = None
    if t5:
        from transformers import T5Config, T5EncoderModel

        tokenizer_3 = tiny_t5_tokenizer()
        text_encoder_3 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_3), d_model=64, d_kv=8, d_ff=64, num_layers=1,
                num_heads=2, relative_attention_num_buckets=8,
                pad_token_id=tokenizer_3.pad_token_id,
            )
        )  # fmt: skip
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=shift),
        "vae": vae,
        "text_encoder": CLIPTextModelWithProjection(text_config),
        "tokenizer": tokenizer,
        "text_encoder_2": CLIPTextModelWithProjection(text_config),
        "tokenizer_2": tokenizer_2,
        "text_encoder_3": text_encoder_3,
        "tokenizer_3": tokenizer_3,
    }


def _tiny_flow_vae(scaling_factor: float, shift_factor: float):
    """A tiny 16-channel VAE as SD3's and FLUX's (no quant convs), with their factors."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=16,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def save_tiny_sd3_model(folder: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write tiny random SD3 components as a diffusers StableDiffusion3Pipeline folder."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**tiny_sd3_components(seed, **kwargs))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def tiny_flux_components(seed: int = 0, guidance_embeds: bool = True) -> dict:
    """Tiny random FLUX components by pipeline name, as diffusers' FLUX tests build them: a
    CLIP text encoder (pooled), a T5 encoder with the tiny T5-kind tokenizer (its pieces
    are what the joint attention's text columns are), a ``FluxTransformer2DModel`` with one
    double- and one single-stream block and, with ``guidance_embeds``, FLUX-dev's guidance
    embedding; a 16-channel VAE with FLUX's scaling and shift factors and
    ``FlowMatchEulerDiscreteScheduler`` with FLUX's resolution-dependent shift.
    32 px images, 16 x 16 latents, 64 packed tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(_tokenizer_folder())
    tokenizer_2 = tiny_t5_tokenizer()
    t5 = T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer_2.pad_token_id,
    )  # fmt: skip
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )
    vae = _tiny_flow_vae(scaling_factor=0.3611, shift_factor=0.1159)  # FLUX's factors
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
        shift=3.0, use_dynamic_shifting=True,
    )  # fmt: skip
    return {
        "transformer": transformer,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": CLIPTextModel(_tiny_text_config(tokenizer)),
        "tokenizer": tokenizer,
        "text_encoder_2": T5EncoderModel(t5),
        "tokenizer_2": tokenizer_2,
    }


def save_tiny_flux_model(folder: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write tiny random FLUX components as a diffusers FluxPipeline folder."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**tiny_flux_components(seed, **kwargs))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


# ------------------------------------------------------------------ a second device


class _Elsewhere(torch.Tensor):
    """A tensor that says it lives on the ``meta`` device and keeps its values on the CPU:
    the stand-in for a GPU tensor in :class:`SecondDevice`."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls,
            inner.shape,
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            layout=inner.layout,
            device=SecondDevice.device,
            requires_grad=False,
        )
        wrapper.inner = inner
        return wrapper

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run_elsewhere(func, args, kwargs or {})

    def __repr__(self) -> str:
        return f"Elsewhere({self.inner!r})"


#: operations that PyTorch runs across devices: copies, and reading a scalar
_CROSS_DEVICE_OPS = {"aten::_to_copy", "aten::copy_", "aten::_local_scalar_dense"}
#: indexing ops, whose index tensors (the second argument) may be on the CPU
_INDEX_OPS = {"aten::index", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_"}
_FACTORIES_FROM_DATA = (torch.tensor, torch.as_tensor, torch.asarray)
_INDEXING = (torch.Tensor.__getitem__, torch.Tensor.__setitem__)
#: reads of a device tensor's values into Python (a GPU copies them to the host)
_HOST_READS = (torch.Tensor.tolist,)


def _index_lists_as_tensors(index):
    if isinstance(index, list):
        return torch.tensor(index)
    if isinstance(index, tuple):
        return tuple(_index_lists_as_tensors(i) for i in index)
    return index


class SecondDevice:
    """Run code as if the model were on a second device (a GPU), on a CPU-only machine.

    Inside ``with SecondDevice():`` tensors created on or moved to ``SecondDevice.device``
    (``meta``) report that device but keep real values on the CPU, so every method runs to
    the end; and every operation that mixes them with CPU tensors fails as on a GPU:
    "Expected all tensors to be on the same device". PyTorch's own exceptions are kept:
    0-dim CPU tensors mix with anything, copies cross devices, and index tensors may be on
    the CPU. ``meta`` is chosen because every build of PyTorch has it and nothing computes
    on it by accident: a meta tensor never holds values, so one that escaped this wrapper
    fails too.
    """

    device = torch.device("meta")

    def __enter__(self) -> torch.device:
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        class Factories(TorchFunctionMode):
            """Tensors built from Python data skip the dispatcher: build them here.

            That is torch.tensor(data, device=...), and the index tensor that x[[0, 2]]
            makes on x's device (given as the CPU index tensor PyTorch also accepts)."""

            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                device = kwargs.get("device")
                if func in _FACTORIES_FROM_DATA and device is not None and _is_second(device):
                    return _Elsewhere(func(*args, **{**kwargs, "device": "cpu"}))
                if func in _INDEXING and isinstance(args[0], _Elsewhere):
                    args = (args[0], _index_lists_as_tensors(args[1]), *args[2:])
                if func in _HOST_READS and isinstance(args[0], _Elsewhere):
                    return func(args[0].inner, *args[1:], **kwargs)
                return func(*args, **kwargs)

        class Operations(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return _run_elsewhere(func, args, kwargs or {})

        self._modes = [Factories(), Operations()]
        for mode in self._modes:
            mode.__enter__()
        return self.device

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def _is_second(device) -> bool:
    return torch.device(device).type == SecondDevice.device.type


def _run_elsewhere(func, args, kwargs):
    from torch.utils._pytree import tree_flatten, tree_map

    name = func._schema.name
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    elsewhere = any(isinstance(t, _Elsewhere) for t in tensors)
    if name in _INDEX_OPS:
        rest = [args[0], *args[2:], *kwargs.values()]
        tensors_on_device = [t for t in rest if isinstance(t, torch.Tensor)]
    else:
        tensors_on_device = [] if name in _CROSS_DEVICE_OPS else tensors
    for t in tensors_on_device:
        if isinstance(t, _Elsewhere) or (t.device.type == "cpu" and t.dim() == 0):
            continue
        if elsewhere or _is_second(t.device):  # a CPU tensor, or a meta one without values
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two "
                f"devices, {SecondDevice.device.type} and {t.device}! ({name})"
            )
    target = kwargs.get("device")
    if target is not None:
        on_second = _is_second(target)
        kwargs = {**kwargs, "device": torch.device("cpu")} if on_second else kwargs
    else:
        on_second = elsewhere and name != "aten::_local_scalar_dense"
    if name == "aten::copy_":  # a copy lands where its destination is
        on_second = isinstance(args[0], _Elsewhere)
    inner_of = {id(t.inner): t for t in tensors if isinstance(t, _Elsewhere)}
    unwrap = lambda t: t.inner if isinstance(t, _Elsewhere) else t  # noqa: E731
    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))

    def wrap(t):
        if not isinstance(t, torch.Tensor) or not on_second:
            return t
        return inner_of[id(t)] if id(t) in inner_of else _Elsewhere(t)  # in-place: the input

    return tree_map(wrap, out)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run the ``laspa`` command in-process (``capsys``: pytest's capture fixture) and
    return its exit status, standard output and standard error."""
    from .cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
