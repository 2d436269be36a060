"""Checks of a model folder, from its files and configs, before any weight loads.

Each refusal is one line (:class:`~laspa.errors.ModelError`) naming what is wrong: a
missing folder, pickle-only weights, a family the engine does not run (FLUX, ...),
an SDXL or SD3 folder without one of its text encoders, a broken UNet config, components that do
not fit together.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelError, first_line


def check_model_source(model: str | Path, unet_channels: int = 4) -> None:
    """Fail early, in one line, on a model folder that is missing, holds pickle weights or
    is of a family the engine does not run. ``unet_channels``: 4 for the model that edits,
    9 for an inpainting checkpoint (InstDiffEdit's optional final pass)."""
    text = str(model)
    path = Path(text)
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # a hub id, or a folder reported missing below
    except OSError as error:  # e.g. a name longer than the file system allows
        raise ModelError(f"cannot use model {text[:60]}...: {error.strerror}") from None
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
    check_model_family(path)
    if is_sd3_folder(path):
        check_sd3_folder(path, text)
        return
    unet_config = _read_json(path / "unet" / "config.json")
    if unet_config is not None:
        check_unet_config(unet_config, text, unet_channels)
    missing = [sub for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if not (path / sub).is_dir()]  # fmt: skip
    if missing:
        raise ModelError(
            f"{text} is not a diffusers Stable Diffusion folder (missing {', '.join(missing)}/)"
        )
    weighted = ["unet", "vae", "text_encoder"]
    if is_sdxl(unet_config or {}):
        missing = [sub for sub in ("text_encoder_2", "tokenizer_2") if not (path / sub).is_dir()]
        if missing:
            raise ModelError(
                f"{text} is an SDXL checkpoint without {' and '.join(m + '/' for m in missing)}"
                "; SDXL needs both of its text encoders and tokenizers"
            )
        weighted.append("text_encoder_2")
    for sub in weighted:
        _check_safetensors(path / sub)


def _check_safetensors(folder: Path) -> None:
    """A component folder must hold safetensors weights (pickles can run code)."""
    if not any(folder.glob("*.safetensors")):
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
        if pickles:
            raise ModelError(
                f"{folder} holds only pickle weights ({pickles[0]}); laspa loads "
                "safetensors only, since pickle files can run code: convert the checkpoint"
            )
        raise ModelError(f"no safetensors weights in {folder}")


#: pipeline classes of families the engine does not run, by the start of their name
_OTHER_FAMILIES = {
    "Kandinsky": "Kandinsky",
    "IF": "DeepFloyd IF",
    "PixArt": "PixArt",
    "Sana": "Sana",
    "StableCascade": "Stable Cascade",
    "Wuerstchen": "Wuerstchen",
    "HunyuanDiT": "Hunyuan-DiT",
    "AuraFlow": "AuraFlow",
    "Lumina": "Lumina",
    "CogView": "CogView",
}

_SUPPORTED = "laspa runs Stable Diffusion 1.x/2.x, SDXL, SD3 and FLUX checkpoints"
#: pipeline classes (by the start of their name) the engine runs as flow models
#: (laspa.flow), with their family's name
FLOW_FAMILIES = {"StableDiffusion3": "Stable Diffusion 3", "Flux": "FLUX"}
#: their parts (SD3's T5, text_encoder_3 / tokenizer_3, is optional, as in diffusers)
_FLOW_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer",
               "tokenizer_2", "scheduler")  # fmt: skip
_FLOW_NEEDS = {
    "Stable Diffusion 3": "its transformer, VAE and both CLIP text encoders and tokenizers "
    "(T5 is optional)",
    "FLUX": "its transformer, VAE, CLIP and T5 text encoders and tokenizers",
}


def flow_family(pipeline: str) -> str | None:
    """The flow family ("Stable Diffusion 3", "FLUX") a pipeline class names, or None."""
    return next((name for start, name in FLOW_FAMILIES.items() if pipeline.startswith(start)),
                None)  # fmt: skip


def folder_pipeline(path: Path) -> str:
    """The pipeline class a folder's model_index.json names ("" without one)."""
    return str((_read_json(path / "model_index.json") or {}).get("_class_name", ""))


def is_sd3_folder(path: Path) -> bool:
    """Whether a model folder is a flow checkpoint (SD3 or FLUX, from its model_index)."""
    return flow_family(folder_pipeline(path)) is not None


def check_sd3_folder(path: Path, source: str) -> None:
    """A flow (SD3, FLUX) folder must hold every part the engine loads, each with
    safetensors weights."""
    family = flow_family(folder_pipeline(path))
    missing = [sub for sub in _FLOW_PARTS if not (path / sub).is_dir()]
    if missing:
        raise ModelError(
            f"{source} is a {family} checkpoint without "
            f"{', '.join(m + '/' for m in missing)}; laspa needs {_FLOW_NEEDS[family]}"
        )
    weighted = ["transformer", "vae", "text_encoder", "text_encoder_2"]
    if (path / "text_encoder_3").is_dir():
        weighted.append("text_encoder_3")
    for sub in weighted:
        _check_safetensors(path / sub)


def is_sdxl(unet_config: dict) -> bool:
    """Whether a UNet config is SDXL's: pooled text and size conditions (``text_time``)."""
    return unet_config.get("addition_embed_type") == "text_time"


def _read_json(path: Path) -> dict | None:
    """A config file as a dict; None when absent. Unreadable JSON is a ModelError."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read {path}: {first_line(error)}") from None
    if not isinstance(data, dict):
        raise ModelError(f"cannot read {path}: not a JSON object")
    return data


def check_model_family(path: Path) -> None:
    """Refuse, from its configs and before any weight loads, a model folder of a family
    the engine does not run (FLUX, ...), naming the family."""
    index = _read_json(path / "model_index.json") or {}
    pipeline = str(index.get("_class_name", ""))
    if flow_family(pipeline) is not None:
        return  # SD3 and FLUX run as flow models (laspa.flow)
    family = next(
        (name for prefix, name in _OTHER_FAMILIES.items() if pipeline.startswith(prefix)),
        None,
    )
    two_encoders = "text_encoder_2" in index or (path / "text_encoder_2").is_dir()
    sdxl_unet = is_sdxl(_read_json(path / "unet" / "config.json") or {})
    if family is None and two_encoders and not sdxl_unet:
        family = "SDXL-like (two text encoders, but a UNet without text_time conditions)"
    if family is None and ("transformer" in index or (path / "transformer").is_dir()):
        family = f"a diffusion transformer ({pipeline or 'transformer/ instead of unet/'})"
    if family is not None:
        shown = f"{family} ({pipeline})" if pipeline and pipeline not in family else family
        raise ModelError(f"{path} is a checkpoint of {shown}; {_SUPPORTED} only")


def check_unet_config(config: dict, source: str, channels: int = 4) -> None:
    """Refuse a UNet config the engine cannot run, in one line naming what is wrong;
    ``channels`` is the input the UNet must take (4 text-to-image, 9 inpainting)."""
    embed_type = config.get("addition_embed_type")
    if embed_type is not None and embed_type != "text_time":
        raise ModelError(f"{source}: the UNet takes {embed_type!r} added conditions; "
                         f"{_SUPPORTED} only")  # fmt: skip
    if config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise ModelError(f"{source}: the unet is a {config['_class_name']}; {_SUPPORTED} only")
    for key in ("sample_size", "in_channels", "out_channels"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):  # fmt: skip
            raise ModelError(f"{source}: unet config {key} must be a positive integer, "
                             f"got {value!r}")  # fmt: skip
    taken = config.get("in_channels")
    if taken is not None and taken != channels:
        kind = {4: "a text-to-image", 9: "an inpainting", 5: "a depth-to-image",
                8: "an instruct-pix2pix"}.get(taken, f"a {taken}-channel")  # fmt: skip
        wanted = "an inpainting" if channels == 9 else "a text-to-image"
        raise ModelError(
            f"{source} is {kind} checkpoint (its UNet takes {taken} input channels); "
            f"{_SUPPORTED} only, and needs {wanted} one ({channels} channels) here"
        )


def check_components(vae_config, text_configs: list, unet_config, source: str) -> None:
    """The loaded components must fit together: the UNet reads the VAE's latents and
    attends to the text encoders' features (SDXL's two side by side)."""
    latent = getattr(vae_config, "latent_channels", None)
    if latent is not None and latent != unet_config.in_channels:
        raise ModelError(f"{source}: the VAE makes {latent}-channel latents but the UNet "
                         f"takes {unet_config.in_channels}")  # fmt: skip
    widths = [getattr(config, "hidden_size", None) for config in text_configs]
    width = None if None in widths else sum(widths)
    cross = unet_config.cross_attention_dim
    if width is not None and isinstance(cross, int) and cross != width:
        raise ModelError(f"{source}: the text encoders' features have {width} channels but "
                         f"the UNet attends to {cross}")  # fmt: skip


def folder_kind(model: str | Path) -> str | None:
    """The kind of model a local folder holds, read from its configs before any weight
    loads: "flow" (SD3, FLUX) or "unet"; None for what is only known once loaded (a hub id)."""
    path = Path(str(model))
    try:
        if not path.is_dir():
            return None
    except OSError:
        return None
    return "flow" if is_sd3_folder(path) else "unet"
