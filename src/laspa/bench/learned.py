"""Learned metrics for the public benchmarks: LPIPS and CLIP score through torchmetrics.

Both need pretrained weights that this package cannot download (no hub at run time):
each is used only when its weights are on the local disk, and otherwise skipped with
a reason the CLI prints in one line. Conventions follow PIE-Bench: LPIPS with
``net_type='squeeze'`` on images in [-1, 1]; CLIP score = 100 * max(cos, 0) with
``openai/clip-vit-large-patch14`` on uint8 pixels.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_lpips() -> tuple[Callable | None, str | None]:
    """(lpips(a, b) on float H x W x 3 in [0, 1], None) or (None, why it is skipped)."""
    if importlib.util.find_spec("torchvision") is None:
        return None, (
            "torchmetrics' LPIPS builds its SqueezeNet backbone from torchvision, which is "
            "not installed (and breaks this machine's torch build)"
        )
    import torch

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(checkpoints.glob("squeezenet1_1-*.pth")):
        return None, f"the SqueezeNet weights are not in the local torch hub cache ({checkpoints})"
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        model = LearnedPerceptualImagePatchSimilarity(net_type="squeeze").eval()
    except Exception as error:  # any failure to build it means: skip, with the reason
        return None, f"cannot build LPIPS: {_reason(error)}"

    def lpips(a: np.ndarray, b: np.ndarray) -> float:
        tensors = [torch.from_numpy(x).permute(2, 0, 1)[None] * 2 - 1 for x in (a, b)]
        with torch.no_grad():
            return float(model(*tensors))

    return lpips, None


def _local_clip(model: str) -> str | None:
    """A local folder holding the CLIP model: the path itself, or its hub cache snapshot."""
    if Path(model).is_dir():
        return model
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception:  # not cached (or not a valid id): nothing local
        return None


def load_clip(model: str = DEFAULT_CLIP_MODEL) -> tuple[Callable | None, str | None]:
    """(clip(image uint8 H x W x 3, text) -> score, None) or (None, why it is skipped)."""
    folder = _local_clip(model)
    if folder is None:
        return None, (
            f"the weights of {model} are not available locally (no hub access); "
            "pass --clip-model FOLDER holding a CLIP model"
        )
    try:
        import torch
        from torchmetrics.multimodal.clip_score import CLIPScore

        metric = CLIPScore(model_name_or_path=folder)
    except Exception as error:
        return None, f"cannot build CLIP score from {folder}: {_reason(error)}"

    def clip(image: np.ndarray, text: str) -> float:
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        with torch.no_grad():
            return float(metric(pixels, text))

    return clip, None
