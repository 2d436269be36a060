"""What the engine and the methods exchange: one batch of edit rows of one image.

It sits below both (laspa.engine reads a batch's shared options, the methods build
their work from it), so that neither imports the other's module to name it; the
methods' own module re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .errors import ParameterError


@dataclass
class EditRow:
    """One requested edit of the batch's image."""

    prompt: str
    seed: int
    params: Any  # the method's Params dataclass


@dataclass
class EditBatch:
    """Edits of one image that share one UNet batch."""

    #: (1, C, h, w): enc(I), scaled like diffusers does; (N, C, h, w), one image per row,
    #: for methods with ``many_images``
    reference: torch.Tensor | None
    rows: list[EditRow]
    record_attention: bool = False  # return each row's cross-attention token maps
    pixels: torch.Tensor | None = None  # (1, 3, H, W) in [-1, 1]: the input at model size

    @property
    def size(self) -> int:
        return len(self.rows)

    def param(self, name: str) -> list[Any]:
        return [getattr(row.params, name) for row in self.rows]

    def shared(self, name: str) -> Any:
        """A parameter every row must share (e.g. the number of steps)."""
        values = set(self.param(name))
        if len(values) != 1:
            raise ParameterError(f"{name} must be equal for all edits of one batch, got {values}")
        return values.pop()

    def column(self, name: str, device: torch.device | None = None) -> torch.Tensor:
        """A numeric parameter as a per-row float32 tensor of shape (N,)."""
        return torch.tensor([float(v) for v in self.param(name)], device=device)


_KIND_NAMES = {"unet": "UNet (eps / v) models", "flow": "flow models"}


def check_model_kind(what: str, kind: str, kinds) -> None:
    """Refuse, in one line, a method or sampler (``what``) whose ``kinds`` leave out the
    model's ``kind`` ("unet" or "flow")."""
    if kind not in kinds:
        model = "a flow model (SD3 or FLUX)" if kind == "flow" else "a UNet (eps / v) model"
        runs = " or ".join(_KIND_NAMES[k] for k in kinds)
        raise ParameterError(f"{what} runs on {runs} only; this is {model}")
