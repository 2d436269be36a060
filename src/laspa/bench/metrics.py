"""Benchmark metrics: pure functions on numpy arrays (images float32 in [0, 1], H x W x 3).

PSNR, SSIM and MSE are torchmetrics' own functions, called the way PIE-Bench's
``evaluation/matrics_calculator.py`` calls them (``data_range=1``, one image at a
time), so numbers are comparable with published tables. Background metrics follow
PIE-Bench too: both images are multiplied by ``keep = 1 - mask`` (the masked area
becomes 0 in both and still counts in the mean), and the metric is NaN when nothing
is kept. Averages skip NaN, as PIE-Bench's final scores do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import LaspaError

#: PSNR of identical images is infinite; capping keeps means and JSON finite. 100 dB is
#: an MSE of 1e-10, far below 8-bit quantisation (about 48 dB for one level everywhere).
PSNR_CAP = 100.0


def _functional():
    """torchmetrics' image functions, imported on first use (it is the ``bench`` extra)."""
    try:
        from torchmetrics.functional.image import (
            peak_signal_noise_ratio,
            structural_similarity_index_measure,
        )
    except ImportError:
        raise LaspaError("laspa bench needs torchmetrics: pip install 'laspa[bench]'") from None
    return peak_signal_noise_ratio, structural_similarity_index_measure


def to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image (or uint8 array) as float32 H x W x 3 in [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32)


def _tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None]


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB with data range 1, capped at :data:`PSNR_CAP`."""
    _check_pair(a, b)
    peak_signal_noise_ratio, _ = _functional()
    value = float(peak_signal_noise_ratio(_tensor(a), _tensor(b), data_range=1.0))
    return min(value, PSNR_CAP)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with data range 1 (torchmetrics' defaults: Gaussian 11 x 11, sigma 1.5)."""
    _check_pair(a, b)
    _, structural_similarity = _functional()
    return float(structural_similarity(_tensor(a), _tensor(b), data_range=1.0))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all pixels and channels."""
    _check_pair(a, b)
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def masked(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``image * keep``: PIE-Bench's way of restricting a metric to a region."""
    return image * keep.astype(np.float32)[..., None]


def background_metrics(
    output: np.ndarray, reference: np.ndarray, mask: np.ndarray
) -> dict[str, float]:
    """bg_psnr, bg_ssim, bg_mse of ``output`` against ``reference`` outside ``mask``.

    ``mask`` is True (or 1) where the edit may change pixels. Both images are multiplied
    by ``1 - mask``; with an empty mask this is the whole-image metric, with a full mask
    there is no background and every value is NaN.
    """
    keep = 1.0 - np.asarray(mask, dtype=np.float32)
    if keep.shape != output.shape[:2]:
        raise ValueError(f"mask shape {keep.shape} does not match image {output.shape[:2]}")
    if not keep.any():
        return {"bg_psnr": math.nan, "bg_ssim": math.nan, "bg_mse": math.nan}
    a, b = masked(output, keep), masked(reference, keep)
    return {"bg_psnr": psnr(a, b), "bg_ssim": ssim(a, b), "bg_mse": mse(a, b)}


def upsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A soft latent-size mask resized bilinearly to ``shape`` (rows, cols)."""
    mask = np.asarray(mask, dtype=np.float32).squeeze()
    if mask.shape == tuple(shape):
        return mask
    image = Image.fromarray(mask, mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def mask_iou(predicted: np.ndarray, exact: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of a method's soft mask (any size; upsampled, then ``> threshold``) with the
    exact bool mask. Two empty masks agree perfectly: 1.0."""
    exact = np.asarray(exact, dtype=bool)
    binary = upsample_mask(predicted, exact.shape) > threshold
    union = np.logical_or(binary, exact).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(binary, exact).sum() / union)


def edit_success(image: Image.Image, target_scene: Any) -> bool:
    """Whether the scene reader reads back exactly the target scene: the requested change
    on the right object and nothing else changed (scenes compare by value)."""
    from ..world import UnreadableSceneError, read_scene

    try:
        return read_scene(image) == target_scene
    except UnreadableSceneError:
        return False


def decode_rle(counts: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """PIE-Bench's mask encoding: (start, length) pairs over the row-major flattened
    image; runs are clipped at the end; the one-pixel border is forced into the mask
    (the benchmark does so to absorb annotation errors at the edges)."""
    if len(counts) % 2:
        raise ValueError("an RLE mask needs (start, length) pairs: odd number of values")
    total = shape[0] * shape[1]
    flat = np.zeros(total, dtype=bool)
    for start, length in zip(counts[0::2], counts[1::2], strict=True):
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"RLE start {start!r} is not a non-negative integer")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"RLE length {length!r} is not a non-negative integer")
        flat[start : min(start + length, total)] = True
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = True
    mask[:, 0] = mask[:, -1] = True
    return mask


def mean(values: Iterable[float | bool | None]) -> float | None:
    """Mean over values that are neither None nor NaN (None if there are none)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else None
