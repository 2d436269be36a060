"""The bundled miniature Stable Diffusion model and its trainer.

`model_dir()` is the diffusers folder that `StableDiffusionPipeline.from_pretrained`
loads offline; `PYTHONPATH=training python -m laspa_train.train` builds and trains it on the scene
world and `PYTHONPATH=training python -m laspa_train.evaluate --json` measures it.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: mini-lcm: the LCM-distilled UNet and LCMScheduler; vae/, text_encoder/ and tokenizer/
#: are links to the bundled model's, so the folder is a whole diffusers checkpoint
LCM_DIR = Path(__file__).resolve().parent / "lcm"
#: mini-flow: an SD3 transformer trained by flow matching on the same world, the bundled
#: VAE and text encoder around it (links, as mini-lcm's); a StableDiffusion3Pipeline folder
FLOW_DIR = Path(__file__).resolve().parent / "flow"
_UNET_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")
_FLOW_PARTS = ("model_index.json", "transformer", "vae", "text_encoder", "text_encoder_2",
               "tokenizer", "tokenizer_2", "scheduler")  # fmt: skip
#: the bundled models by variant, with the command that rebuilds each
VARIANTS = {
    "base": "`PYTHONPATH=training python -m laspa_train.train --stage vae` then `--stage unet`",
    "lcm": "`PYTHONPATH=training python -m laspa_train.lcd` (training/README.md)",
    "flow": "`PYTHONPATH=training python -m laspa_train.flow` (training/README.md)",
}
#: what --model accepts for each bundled variant
MODEL_NAMES = {"mini": "base", "mini-lcm": "lcm", "mini-flow": "flow"}
#: --model's help, shared by every command that loads a model
MODEL_HELP = (
    "diffusers SD / SDXL / SD3 / FLUX folder or hub id, or a bundled model: mini (the "
    "default), mini-lcm (few-step LCM: use --steps 4) or mini-flow (SD3 architecture, "
    "rectified flow)"
)


def model_dir(variant: str = "base") -> Path:
    """The diffusers folder of a bundled miniature model (``"base"``, ``"lcm"``, ``"flow"``).

    Raises RuntimeError with the command that rebuilds it if it is missing or
    incomplete (e.g. a checkout without the weights), ValueError for another variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"no bundled model {variant!r}; choose one of: {', '.join(VARIANTS)}")
    # looked up at call time so a relocated folder (tests, packagers) is honoured
    folder = {"base": WEIGHTS_DIR, "lcm": LCM_DIR, "flow": FLOW_DIR}[variant]
    command = VARIANTS[variant]
    parts = _FLOW_PARTS if variant == "flow" else _UNET_PARTS
    missing = [name for name in parts if not (folder / name).exists()]
    if missing:
        raise RuntimeError(
            f"the bundled miniature model {variant!r} is missing or incomplete at {folder} "
            f"(no {', '.join(missing)}); rebuild it with {command}"
        )
    return folder


__all__ = [
    "FLOW_DIR", "LCM_DIR", "MODEL_HELP", "MODEL_NAMES", "VARIANTS", "WEIGHTS_DIR", "model_dir",
]  # fmt: skip
