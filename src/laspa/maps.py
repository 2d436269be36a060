"""Pure functions on attention maps: token -> word maps, resizing, normalising, blurring.

Maps are float tensors of shape (rows, h, w) unless said otherwise; ``token_maps`` are
(rows, h, w, tokens) as :class:`laspa.attention.CrossAttentionStore` records them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def word_map(token_maps: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """The mean map of a word's token positions, (rows, h, w)."""
    return token_maps[..., list(positions)].mean(dim=-1)


def word_maps(token_maps: torch.Tensor, words: Sequence[Sequence[int]]) -> torch.Tensor:
    """The mean map of each word's token positions at once: (..., h, w, tokens) ->
    (..., words, h, w); one matrix product, for code that runs every step."""
    averaging = torch.zeros(token_maps.shape[-1], len(words), dtype=token_maps.dtype)
    for column, positions in enumerate(words):
        averaging[list(positions), column] = 1 / len(positions)
    return (token_maps @ averaging.to(token_maps.device)).movedim(-1, -3)


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (rows, h, w) maps to ``size`` = (height, width)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def minmax(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-row min-max normalisation to [0, 1] (a constant map becomes all zeros)."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, *([1] * (maps.dim() - 1)))
    high = flat.max(dim=1).values.view(-1, *([1] * (maps.dim() - 1)))
    return (maps - low) / (high - low).clamp_min(eps)


def scale_to_max(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-row division by the maximum."""
    high = maps.flatten(1).max(dim=1).values.view(-1, *([1] * (maps.dim() - 1)))
    return maps / high.clamp_min(eps)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of flattened maps, per row."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def gaussian_kernel(size: int = 5, sigma: float = 1.1) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return kernel[:, None] * kernel[None, :]


def gaussian_blur(maps: torch.Tensor, size: int = 5, sigma: float = 1.1) -> torch.Tensor:
    """Gaussian blur of (rows, h, w) maps with reflected borders."""
    kernel = gaussian_kernel(size, sigma).to(maps)[None, None]
    padded = F.pad(maps[:, None], [size // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel)[:, 0]


def dilate(masks: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """Grey-level dilation of (rows, h, w) masks by ``pixels`` in every direction."""
    size = 2 * pixels + 1
    return F.max_pool2d(masks[:, None], size, stride=1, padding=pixels)[:, 0]
