"""The bundled miniature Stable Diffusion model and its trainer.

`model_dir()` is the diffusers folder that `StableDiffusionPipeline.from_pretrained`
loads offline; `PYTHONPATH=training python -m laspa_train.train` builds and trains it on the scene
world and `PYTHONPATH=training python -m laspa_train.evaluate --json` measures it.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_REQUIRED = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")


def model_dir() -> Path:
    """The bundled miniature model's diffusers folder.

    Raises RuntimeError with the command that rebuilds it if it is missing or
    incomplete (e.g. a checkout without the weights).
    """
    missing = [name for name in _REQUIRED if not (WEIGHTS_DIR / name).exists()]
    if missing:
        raise RuntimeError(
            f"the bundled miniature model is missing or incomplete at {WEIGHTS_DIR} "
            f"(no {', '.join(missing)}); rebuild it with "
            "`PYTHONPATH=training python -m laspa_train.train --stage vae` then `--stage unet`"
        )
    return WEIGHTS_DIR


__all__ = ["WEIGHTS_DIR", "model_dir"]
