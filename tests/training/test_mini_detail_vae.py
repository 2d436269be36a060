"""The detail fine-tune of the miniature's VAE: its data and its anchor measure."""

from __future__ import annotations

import numpy as np
import torch

from laspa.testing import tiny_components
from laspa.world import sample_scene
from laspa_train.data import make_batch
from laspa_train.detail_vae import anchor_drift, detailed_images


def test_detailed_images_are_seeded_in_range_and_differ_from_the_plain_render():
    scenes = [sample_scene(np.random.default_rng(i)) for i in range(4)]
    first = detailed_images(scenes, np.random.default_rng(0))
    again = detailed_images(scenes, np.random.default_rng(0))
    plain = make_batch(scenes).images
    assert first.shape == plain.shape == (4, 3, 64, 64)
    assert torch.equal(first, again)
    assert first.min() >= -1 and first.max() <= 1
    assert (first - plain).abs().flatten(1).max(1).values.min() > 0.02  # every image changed


def test_anchor_drift_is_zero_for_the_same_vae_and_grows_when_weights_move():
    vae = tiny_components()[0]
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert anchor_drift(vae, vae, images) == 0.0
    drifts = []
    for shift in (0.02, 0.05, 0.1):
        moved = tiny_components()[0]
        with torch.no_grad():
            for param in moved.encoder.parameters():
                param.add_(shift)
        drifts.append(anchor_drift(moved, vae, images))
    assert 0.0 < drifts[0] < drifts[1] < drifts[2]  # the further the weights, the larger
