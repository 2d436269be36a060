"""Steps whose UNet output every row discards (alignment weight 1) skip the UNet, and the
result keeps every bit of the run that evaluates it."""

import numpy as np
import pytest
import torch
from PIL import Image

from laspa.loop import Conditioning, sample
from laspa.methods.laspa import EpsAlignment, InputAlignment, RowNoise, X0Alignment
from laspa.testing import tiny_editor

STEPS = 10


@pytest.fixture(scope="module")
def editor():
    return tiny_editor()


def step_weight(rows: list[float], K: int):
    """Per-row weights ``rows`` while t > K, zero after (as LASPA's constant schedule)."""
    on = torch.tensor(rows).view(-1, 1, 1, 1)

    def weight(t: int) -> torch.Tensor:
        return on if t > K else torch.zeros_like(on)

    return weight


def make_hooks(kind: str, reference, weight, rows: int):
    if kind == "input-fixed" or kind == "input-fresh":
        generators = [torch.Generator().manual_seed(7 + row) for row in range(rows)]
        fresh = [kind == "input-fresh"] * rows
        return InputAlignment(reference, weight, RowNoise(generators, reference, fresh))
    if kind.startswith("eps"):
        return EpsAlignment(reference, weight, [kind.split("-")[1]] * rows)
    return X0Alignment(reference, weight, [kind.split("-")[1]] * rows)


def run(editor, kind: str, rows_weight: list[float], K: int, skip: bool):
    """Latents and UNet rows evaluated, with the hooks' skipping on or forced off."""
    rows = len(rows_weight)
    reference = editor.encode(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    reference = reference.expand(rows, -1, -1, -1) * 2 - 1
    hooks = make_hooks(kind, reference, step_weight(rows_weight, K), rows)
    if not skip:
        hooks.needs_unet = lambda step, next_step: True
    cond = Conditioning(
        editor.text_embeddings(["a red cat"] * rows),
        editor.text_embeddings([""]).expand(rows, -1, -1),
        7.5,
    )
    x_T = torch.randn(rows, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    editor.denoiser.unet_evals = 0
    out = sample(editor.denoiser, x_T, editor.denoiser.steps(STEPS), cond, hooks)
    return out, editor.denoiser.unet_evals


SKIPPING = ["x0-consistent", "eps-exact", "eps-literal", "input-fixed", "input-fresh"]


@pytest.mark.parametrize("kind", SKIPPING)
def test_weight_one_skips_the_unet_and_keeps_every_bit(editor, kind):
    skipped, skipped_evals = run(editor, kind, [1.0, 1.0], K=500, skip=True)
    full, full_evals = run(editor, kind, [1.0, 1.0], K=500, skip=False)
    assert torch.equal(skipped, full)
    assert not skipped.isnan().any()
    assert full_evals == 2 * 2 * STEPS  # two rows, unconditional and conditional
    # the 10 steps run t = 901, 801, ..., 1: five of them have t > 500; input alignment
    # discards a step's result when the next step is aligned, so four steps for it
    discarded = 4 if kind.startswith("input") else 5
    assert skipped_evals == full_evals - discarded * 2 * 2


@pytest.mark.parametrize("kind", ["x0-asymmetric", *SKIPPING])
def test_a_row_below_weight_one_keeps_the_unet(editor, kind):
    """One row at 0.5 needs the UNet at every step; the asymmetric direction always does."""
    weights = [1.0, 1.0] if kind == "x0-asymmetric" else [1.0, 0.5]
    out, evals = run(editor, kind, weights, K=500, skip=True)
    full, _ = run(editor, kind, weights, K=500, skip=False)
    assert evals == 2 * 2 * STEPS
    assert torch.equal(out, full)


def test_beta_one_edits_cost_fewer_unet_evals_and_keep_their_bytes(editor):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))
    common = {"steps": STEPS, "K": 500, "beta": 1.0}
    aligned = editor.edit(image, "a cat", method="laspa-x0", **common)
    assert aligned.unet_evals == 2 * (STEPS - 5)
    # attention hooks read every step's UNet, so recording maps evaluates it throughout
    recorded = editor.edit(image, "a cat", method="laspa-x0", record_attention=True, **common)
    assert recorded.unet_evals == 2 * STEPS
    assert editor.edit(image, "a cat", method="laspa-x0", **common).image.tobytes() == (
        aligned.image.tobytes()
    )
    below = editor.edit(image, "a cat", method="laspa-x0", **{**common, "beta": 0.9})
    assert below.unet_evals == 2 * STEPS
    assert editor.edit(image, "a cat", method="generate", steps=STEPS).unet_evals == 2 * STEPS
