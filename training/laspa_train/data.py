"""Training and evaluation data for the miniature: rendered scenes and captions.

Rendering one 64x64 scene costs ~0.2 ms, so data is drawn fresh for every
batch (an unbounded training set, nothing to cache). Held-out scenes come from
a separate seed and their captions are excluded from training batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from laspa.world import (
    Scene,
    SceneObject,
    caption,
    coverage,
    named_caption,
    object_phrase,
    render_array,
    sample_scene,
)

EVAL_SEED = 1_000_003


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    object_mask: torch.Tensor  # (B, 1, H, W) in [0, 1]: pixels any object touches
    captions: list[str]
    scenes: list[Scene]
    named: list[tuple[SceneObject, ...]]  # the objects each caption names


def brief_selection(
    rng: np.random.Generator, scenes: Sequence[Scene], probability: float, excluded: frozenset[str]
) -> list[tuple[SceneObject, ...]]:
    """The objects each caption names: with ``probability`` a random non-empty proper subset
    of a multi-object scene (a brief caption, as users write prompts), otherwise all.

    Brief captions teach the conditional model that a caption need not name everything:
    what it leaves out must come from the noisy latent, which is what makes an editor's
    preservation of the input measurable (bench suite ``shapes-brief``). A brief caption
    that is a held-out caption falls back to the full one.
    """
    selections = []
    for scene in scenes:
        named = scene.objects
        if len(named) > 1 and rng.random() < probability:
            count = int(rng.integers(1, len(named)))
            keep = np.sort(rng.choice(len(named), size=count, replace=False))
            brief = tuple(named[int(i)] for i in keep)
            if named_caption(scene, brief) not in excluded:
                named = brief
        selections.append(named)
    return selections


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


def caption_regions(
    scene: Scene, size: int = 64, named: Sequence[SceneObject] | None = None
) -> list[tuple[int, str, np.ndarray]]:
    """The caption words whose cross-attention should lie on a known region.

    Returns ``(word index, word, mask)`` for each named object's size, colour and shape
    word (mask: the pixels the object touches) and for the background colour word (mask:
    the pixels no object, named or not, touches); word indices count the words of
    ``named_caption(scene, named)`` (all objects by default) from 0. Function and position
    words ("a", "at the top left", "background") get no region.
    """
    regions: list[tuple[int, str, np.ndarray]] = []
    union = object_mask(scene, size) > 0  # every object, named or not
    index = 0
    for i, obj in enumerate(scene.objects if named is None else named):
        if i:
            index += 1  # "and"
        footprint = coverage(obj, size) > 0
        words = object_phrase(obj).split()  # a SIZE COLOR SHAPE place...
        for offset, word in ((1, obj.size), (2, obj.color), (3, obj.shape)):
            regions.append((index + offset, word, footprint.astype(np.float32)))
        index += len(words)
    # "on a BACKGROUND background"
    regions.append((index + 2, scene.background, (~union).astype(np.float32)))
    return regions


def make_batch(
    scenes: list[Scene], size: int = 64, named: list[tuple[SceneObject, ...]] | None = None
) -> Batch:
    """Images of ``scenes`` with captions naming ``named`` (every object by default)."""
    images = np.stack([render_array(s, size) for s in scenes])
    masks = np.stack([object_mask(s, size) for s in scenes])[:, None]
    named = [s.objects for s in scenes] if named is None else named
    return Batch(
        images=to_tensor(images),
        object_mask=torch.from_numpy(masks),
        captions=[named_caption(s, n) for s, n in zip(scenes, named, strict=True)],
        scenes=scenes,
        named=named,
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
