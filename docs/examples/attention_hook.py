"""A new attention hook: how much of the cross-attention a word draws, per step, reported
in the result's notes (docs/architecture.md, "An attention hook").

Run it: ``PYTHONPATH=src python docs/examples/attention_hook.py`` (the tiny random model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from laspa.attention import AttentionObserver, LayerInfo, StepInfo
from laspa.methods.base import CommonParams, EditBatch, Method, MethodOutput, option, register


class WordShare(AttentionObserver):
    """Per step, the mean share of cross-attention that each row's word receives
    (``positions``: the word's token positions in each row's prompt)."""

    def __init__(self, positions: list[tuple[int, ...]]):
        self.positions = [list(p) for p in positions]
        self.shares: dict[int, list[float]] = {}

    def wants(self, layer: LayerInfo, step: StepInfo) -> bool:
        return layer.is_cross  # every step, cross-attention layers only

    def observe(self, layer: LayerInfo, step: StepInfo, probs: torch.Tensor) -> None:
        # probs: (conditional rows, heads, queries, keys); an observer only reads them,
        # so the layer keeps computing fused attention
        rows = [probs[row, ..., p].sum(-1).mean() for row, p in enumerate(self.positions)]
        self.shares.setdefault(step.index, []).append(torch.stack(rows).mean().item())


@dataclass
class WatchParams(CommonParams):
    word: str = option("cat", help="the word whose share of attention is reported")


@register
class Watch(Method):
    name = "example-watch"
    summary = "text-to-image, reporting a word's share of cross-attention (an example)"
    Params = WatchParams
    reads_image = False  # the input is not encoded; batch.reference is None
    batch_key = ("steps", "word")

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        word = batch.shared("word")
        hook = WordShare([engine.positions_of(row.prompt, word) for row in batch.rows])
        shape = (batch.size, *engine.latent_shape(batch.pixels)[1:])
        generators = engine.generators(batch)
        x_T = engine.noise(generators, shape)
        noise = engine.step_noise(batch, generators, x_T)
        latents = engine.sample(
            x_T, engine.steps(batch), engine.conditioning(batch), attention=[hook], noise=noise
        )
        per_step = [sum(v) / len(v) for _, v in sorted(hook.shares.items())]
        return MethodOutput(latents, notes=[{"word_share": per_step}] * batch.size)


def main() -> list[float]:
    from PIL import Image

    from laspa.testing import tiny_editor

    image = Image.new("RGB", (32, 32))
    result = tiny_editor().edit(image, "a photo of a cat", method="example-watch", steps=3)
    return result.notes["word_share"]


if __name__ == "__main__":
    print(main())
