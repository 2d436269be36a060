"""Pure functions on attention maps: token -> word maps, resizing, normalising, blurring.

Maps are float tensors of shape (rows, h, w) unless said otherwise; ``token_maps`` are
(rows, h, w, tokens) as :class:`laspa.attention.CrossAttentionStore` records them.
"""

from __future__ import annotations

import functools
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


#: OpenCV's GaussianBlur((5, 5), 0), the released InstDiffEdit's blur: for 5 taps and
#: sigma 0 OpenCV takes this fixed binomial kernel, not a sampled Gaussian
BINOMIAL_5 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def gaussian_blur(maps: torch.Tensor) -> torch.Tensor:
    """OpenCV's 5x5 Gaussian blur (sigma 0: the binomial kernel :data:`BINOMIAL_5`) of
    (rows, h, w) maps, with OpenCV's default border (reflect without the edge pixel)."""
    taps = torch.tensor(BINOMIAL_5).to(maps)
    kernel = (taps[:, None] * taps[None, :])[None, None]
    padded = F.pad(maps[:, None], [len(BINOMIAL_5) // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel)[:, 0]


def _pillow_bicubic(x: float) -> float:
    """Pillow's cubic convolution kernel (Keys, a = -0.5)."""
    a, x = -0.5, abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@functools.lru_cache(maxsize=32)
def _cubic_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) weights of Pillow's bicubic resampling along one axis: the
    kernel widened by the scale when shrinking, the window cut at the borders and its
    weights renormalised (Pillow's precompute_coeffs)."""
    scale = size_in / size_out
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for out in range(size_out):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), size_in)
        weights = [_pillow_bicubic((x - center + 0.5) / stretch) for x in range(first, last)]
        total = sum(weights)
        for x, weight in zip(range(first, last), weights, strict=True):
            matrix[out, x] = weight / total if total else 0.0
    return matrix


def cubic_resize(
    maps: torch.Tensor, size: tuple[int, int], clip: tuple[float, float] | None = None
) -> torch.Tensor:
    """Pillow's bicubic resize (its ``Image.resize`` default) of (rows, h, w) maps to
    ``size`` = (height, width): rows first, then columns; ``clip`` = (low, high) clamps
    after each pass, as Pillow does for 8-bit images."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    across = _cubic_matrix(maps.shape[-1], size[1]).to(maps)
    down = _cubic_matrix(maps.shape[-2], size[0]).to(maps)
    out = maps @ across.T
    out = out if clip is None else out.clamp(*clip)
    out = down @ out
    return out if clip is None else out.clamp(*clip)


def dilate(masks: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """Grey-level dilation of (rows, h, w) masks by ``pixels`` in every direction."""
    size = 2 * pixels + 1
    return F.max_pool2d(masks[:, None], size, stride=1, padding=pixels)[:, 0]
