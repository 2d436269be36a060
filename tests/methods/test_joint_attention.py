"""SD3's and FLUX's explicit attention (maps, the laspa-mix swap) as diffusers computes
attention: scores scaled inside the matmul, so half precision does not overflow where
the unscaled product would; and the swap's explicit joint probabilities computed a
chunk of queries at a time, so their memory stays bounded at large sizes."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from laspa.attention import query_chunk, scaled_scores, swapped_attention


def test_half_precision_scores_are_scaled_before_they_are_rounded():
    query = torch.full((1, 2, 4, 64), 40.0)
    key = query.clone()
    # 40 * 40 * 64 = 102,400 overflows float16 (65,504); scaled by 1/8 it does not
    unscaled = query.half() @ key.half().transpose(-1, -2) * 0.125
    assert torch.isinf(unscaled).all()
    half = scaled_scores(query.half(), key.half(), 0.125)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), scaled_scores(query, key, 0.125))


def unchunked(image_query, key, value, text_probs, scale, bias=None):
    images = image_query.shape[2]
    probs = torch.matmul(image_query, key.transpose(-1, -2)) * scale
    if bias is not None:
        probs = probs + bias
    probs = probs.softmax(dim=-1)
    mass = probs[..., images:].sum(-1, keepdim=True)
    probs = torch.cat([probs[..., :images], text_probs * mass], dim=-1)
    return probs @ value


def test_the_chunked_swap_computes_the_whole_one():
    generator = torch.Generator().manual_seed(1)
    images, texts = 24, 7
    query = torch.randn(1, 2, images, 8, generator=generator)
    key = torch.randn(1, 2, images + texts, 8, generator=generator)
    value = torch.randn(1, 2, images + texts, 8, generator=generator)
    text_probs = torch.rand(1, 2, images, texts, generator=generator).softmax(dim=-1)
    bias = torch.zeros(images + texts)
    bias[-1] = 2.0
    budget = 4 * 2 * (images + texts) * 5  # five queries a chunk
    assert query_chunk(2, images + texts, budget) == 5
    torch.testing.assert_close(
        swapped_attention(query, key, value, text_probs, 8**-0.5, bias, budget),
        unchunked(query, key, value, text_probs, 8**-0.5, bias),
    )


class LargestTensor(TorchDispatchMode):
    """The bytes of the largest tensor any operation makes."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                size = tensor.numel() * tensor.element_size()
                self.largest = max(self.largest, size)
        return out


def test_the_swap_at_1024_pixels_stays_within_its_budget():
    # SD3 at 1024 x 1024: 64 x 64 patches, 77 CLIP + 256 T5 tokens, 24 heads of 64
    images, texts, heads = 64 * 64, 77 + 256, 24
    meta = {"device": "meta", "dtype": torch.float16}
    query = torch.empty(1, heads, images, 64, **meta)
    key = torch.empty(1, heads, images + texts, 64, **meta)
    value = torch.empty(1, heads, images + texts, 64, **meta)
    text_probs = torch.empty(1, heads, images, texts, **meta)
    budget = 64 * 2**20
    with LargestTensor() as seen:
        out = swapped_attention(query, key, value, text_probs, 0.125, budget=budget)
    assert out.shape == (1, heads, images, 64)
    whole = 4 * heads * images * (images + texts)  # what one row took unchunked
    assert whole > 1.6e9 and seen.largest <= budget < whole / 20
