"""Training and evaluation data for the miniature: rendered scenes and captions.

Rendering one 64x64 scene costs ~0.2 ms, so data is drawn fresh for every
batch (an unbounded training set, nothing to cache). Held-out scenes come from
a separate seed and their captions are excluded from training batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from laspa.world import Scene, caption, coverage, object_phrase, render_array, sample_scene

EVAL_SEED = 1_000_003


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    object_mask: torch.Tensor  # (B, 1, H, W) in [0, 1]: pixels any object touches
    captions: list[str]
    scenes: list[Scene]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def object_mask(scene: Scene, size: int) -> np.ndarray:
    """Union of the objects' footprints, softened by the antialiased coverage."""
    mask = np.zeros((size, size), dtype=np.float32)
    for obj in scene.objects:
        # Any touched pixel counts fully: the edges are where colour bleeds.
        mask = np.maximum(mask, (coverage(obj, size) > 0).astype(np.float32))
    return mask


def caption_regions(scene: Scene, size: int = 64) -> list[tuple[int, str, np.ndarray]]:
    """The caption words whose cross-attention should lie on a known region.

    Returns ``(word index, word, mask)`` for each object's size, colour and shape word
    (mask: the pixels the object touches) and for the background colour word (mask: the
    pixels no object touches); word indices count the words of ``caption(scene)`` from 0.
    Function and position words ("a", "at the top left", "background") get no region.
    """
    regions: list[tuple[int, str, np.ndarray]] = []
    union = np.zeros((size, size), dtype=bool)
    index = 0
    for i, obj in enumerate(scene.objects):
        if i:
            index += 1  # "and"
        footprint = coverage(obj, size) > 0
        union |= footprint
        words = object_phrase(obj).split()  # a SIZE COLOR SHAPE place...
        for offset, word in ((1, obj.size), (2, obj.color), (3, obj.shape)):
            regions.append((index + offset, word, footprint.astype(np.float32)))
        index += len(words)
    # "on a BACKGROUND background"
    regions.append((index + 2, scene.background, (~union).astype(np.float32)))
    return regions


def make_batch(scenes: list[Scene], size: int = 64) -> Batch:
    images = np.stack([render_array(s, size) for s in scenes])
    masks = np.stack([object_mask(s, size) for s in scenes])[:, None]
    return Batch(
        images=to_tensor(images),
        object_mask=torch.from_numpy(masks),
        captions=[caption(s) for s in scenes],
        scenes=scenes,
    )


def eval_scenes(n: int, n_objects: int | None = None, seed: int = EVAL_SEED) -> list[Scene]:
    """The fixed held-out scenes (same list every call for the same arguments)."""
    offset = 0 if n_objects is None else n_objects
    rng = np.random.default_rng(seed + offset)
    return [sample_scene(rng, n_objects) for _ in range(n)]


def held_out_captions(n: int = 512) -> frozenset[str]:
    """Captions reserved for evaluation: training never shows them."""
    scenes = eval_scenes(n) + eval_scenes(n, 1) + eval_scenes(n, 2)
    return frozenset(caption(s) for s in scenes)


def training_scenes(rng: np.random.Generator, n: int, excluded: frozenset[str]) -> list[Scene]:
    """n random 1-3 object scenes whose captions are not held out."""
    scenes: list[Scene] = []
    while len(scenes) < n:
        scene = sample_scene(rng)
        if caption(scene) not in excluded:
            scenes.append(scene)
    return scenes
