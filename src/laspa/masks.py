"""InstDiffEdit's instant mask from attention maps (docs/methods.md, "InstDiffEdit").

Pure functions, testable on hand-made maps: word maps from one edit's token maps, the
index word, the adaptive aggregation of alike and unlike words, and the smoothings that
turn the refined map into a binary mask (blur, or along self-attention: snap, spread).
"""

from __future__ import annotations

from typing import Any

import torch

from . import maps as maps_lib

#: the threshold after each smoothing: the released code's 0.2 after blurring; 0.35 after
#: self-attention, measured (docs/results.md, "Masks along self-attention")
DEFAULT_PHI = {"blur": 0.2, "snap": 0.35, "spread": 0.35}


def prepared_word_maps(
    token_maps: torch.Tensor,
    words: list[tuple[int, ...]],
    size,
    resize: str = "bilinear",
    start: tuple[int, ...] = (0,),
) -> tuple:
    """(start-token map inverted, word maps): each scaled to its max, upsampled to ``size``
    (``resize``: ``"bilinear"``, or ``"bicubic"``, Pillow's bicubic clipped to [0, 1], as
    the released code resizes 8-bit images with Pillow's default), min-max normalised;
    ``token_maps`` is one edit's (h, w, tokens), seeds already averaged. All maps go
    through each operation together: this runs after every step. ``start``: the columns
    whose mean map stands for the start token's (:meth:`laspa.engine.Engine.start_positions`:
    CLIP's start token; on a T5 family, which has none, the end and padding tokens)."""
    maps = maps_lib.scale_to_max(maps_lib.word_maps(token_maps, [start, *words]))
    if resize == "bicubic":
        maps = maps_lib.cubic_resize(maps, size, clip=(0.0, 1.0))
    elif resize == "bilinear":
        maps = maps_lib.resize(maps, size)
    else:
        raise ValueError(f"unknown word-map resize {resize!r} (expected bilinear or bicubic)")
    maps = maps_lib.minmax(maps)
    return 1 - maps[0], maps[1:]


#: English function words and punctuation, which ``index_words="content"`` never picks as
#: the index word: their maps carry no object (docs/results.md, "Index word")
# fmt: off
FUNCTION_WORDS = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "no",
    "of", "in", "on", "at", "to", "for", "with", "by", "from", "into", "onto", "over", "under",
    "above", "below", "near", "behind", "beside", "between", "through", "and", "or", "but",
    "nor", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "do",
    "does", "did", "it", "its", "as", "than", "then", "there", "their", "his", "her", "our",
    "your", "my", "one",
))
# fmt: on


def content_words(words: list[str]) -> list[bool]:
    """Which words may be the index word under ``index_words="content"``: all but function
    words and punctuation (every word, if that would leave none)."""
    allowed = [w not in FUNCTION_WORDS and any(c.isalnum() for c in w) for w in words]
    return allowed if any(allowed) else [True] * len(words)


def changed_words(source: list[str], target: list[str]) -> list[int]:
    """The positions in ``target`` of the content words (:func:`content_words`) that
    ``source`` does not hold at that place of the word order (difflib's alignment of the
    two word lists, case-insensitive): what a prompt changes against a caption of the
    input. ``source`` empty: none (without a caption nothing is known to change)."""
    from difflib import SequenceMatcher

    if not source:
        return []
    lowered = [w.lower() for w in target]
    allowed = content_words(lowered)
    matcher = SequenceMatcher(a=[w.lower() for w in source], b=lowered, autojunk=False)
    return [
        i
        for tag, _, _, b0, b1 in matcher.get_opcodes()
        if tag != "equal"
        for i in range(b0, b1)
        if allowed[i]
    ]


def on_background(word_map: torch.Tensor, start_inverted: torch.Tensor) -> bool:
    """Whether a word's map (h, w) is more alike (cosine) the start token's map, which lies
    on the background, than its inverse, the foreground InstDiffEdit reads objects from:
    a background word (on the bundled model, the background's colour word)."""
    pair = torch.stack([1 - start_inverted, start_inverted])
    sims = maps_lib.cosine_similarity(pair, word_map[None].expand_as(pair))
    return bool(sims[0] > sims[1])


def background_mask(start_inverted: torch.Tensor, phi: float) -> torch.Tensor:
    """The background (h, w): the start token's map (min-max normalised, as
    :func:`prepared_word_maps` inverts it) above ``phi``."""
    return ((1 - start_inverted) > phi).float()


def index_word(
    start_inverted: torch.Tensor, word_maps: torch.Tensor, allowed: list[bool] | None = None
) -> int:
    """The word (among the ``allowed``, default all) whose map is most alike (cosine) to the
    inverted start-token map."""
    sims = maps_lib.cosine_similarity(word_maps, start_inverted[None].expand_as(word_maps))
    if allowed is not None:
        sims = sims.masked_fill(~torch.tensor(allowed, device=sims.device), -torch.inf)
    return int(sims.argmax())


#: each word's weight as an object word and as a background word, (words,) each
WordWeights = tuple[torch.Tensor, torch.Tensor]


def word_weights(
    word_maps: torch.Tensor,
    index: int,
    object_threshold: float,
    background_threshold: float,
    soft: bool = False,
) -> WordWeights:
    """Adaptive aggregation's split of the words by cosine similarity to the index word's
    map: object words (>= ``object_threshold``) and background words (<=
    ``background_threshold``); ``soft`` weighs the words between them linearly."""
    sims = maps_lib.cosine_similarity(word_maps, word_maps[index][None].expand_as(word_maps))
    if soft:
        span = max(object_threshold - background_threshold, 1e-6)
        object_weight = ((sims - background_threshold) / span).clamp(0, 1)
        return object_weight, 1 - object_weight
    return (sims >= object_threshold).float(), (sims <= background_threshold).float()


def refine(word_maps: torch.Tensor, weights: WordWeights) -> torch.Tensor:
    """Adaptive aggregation: object words minus background words, clamped at 0."""
    if word_maps.shape[0] == 1:
        return word_maps[0]
    object_weight, background_weight = weights
    objects = maps_lib.minmax(_weighted_mean(word_maps, object_weight)[None])[0]
    if float(background_weight.sum()) == 0:
        return objects
    background = maps_lib.minmax(_weighted_mean(word_maps, background_weight)[None])[0]
    return (objects - background).clamp(min=0)


def _weighted_mean(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (maps * weights.view(-1, 1, 1)).sum(0) / weights.sum().clamp_min(1e-8)


def binarise(mask: torch.Tensor, phi: float) -> torch.Tensor:
    """OpenCV's 5x5 Gaussian blur (the binomial kernel) twice, min-max normalise,
    threshold at phi: the released code's post-processing."""
    blurred = maps_lib.gaussian_blur(maps_lib.gaussian_blur(mask[None]))
    return (maps_lib.minmax(blurred)[0] > phi).float()


def spread_along(
    mask: torch.Tensor, affinity: torch.Tensor, grid: tuple[int, int], steps: int
) -> torch.Tensor:
    """``mask`` (h, w) carried ``steps`` times along a row-stochastic pixel affinity
    (queries, keys) on ``grid``, m <- A m, back at (h, w) and min-max normalised: each pixel
    takes the mean of the map where it attends, so the map fills the regions it touches
    and stops at their edges."""
    size = tuple(mask.shape)
    spread = maps_lib.resize(mask[None], grid).flatten(1).T  # (queries, 1)
    for _ in range(steps):
        spread = affinity @ spread
    return maps_lib.minmax(maps_lib.resize(spread.T.reshape(1, *grid), size))[0]


def smooth_and_threshold(
    refined: torch.Tensor,
    smoothing: str,
    phi: float | None = None,
    affinity: torch.Tensor | None = None,
    grid: tuple[int, int] | None = None,
    spread_steps: int = 4,
) -> torch.Tensor:
    """The binary mask from a refined map (h, w), by ``smoothing``:

    - ``blur``: the released code's blur-and-threshold (:func:`binarise`);
    - ``spread``: the map spread along the self-attention ``affinity`` on ``grid``
      (:func:`spread_along`), thresholded; it reaches whatever the map's pixels attend
      to, so it can find an object the word map only touches, and flood a plain
      background that the map touches;
    - ``snap``: the blur mask grown by one pixel and kept only where the spread map
      passes the threshold: the blur mask's place, self-attention's edges.

    ``phi`` (default :data:`DEFAULT_PHI` of the smoothing) is the final threshold;
    ``spread_steps`` is how many times the map is carried along the affinity."""
    phi = DEFAULT_PHI[smoothing] if phi is None else phi
    if smoothing == "blur":
        return binarise(refined, phi)
    if affinity is None or grid is None:
        raise ValueError(f"smoothing={smoothing!r} needs a self-attention affinity")
    spread = spread_along(refined, affinity, grid, spread_steps) > phi
    if smoothing == "snap":
        near = maps_lib.dilate(binarise(refined, DEFAULT_PHI["blur"])[None])[0] > 0
        spread &= near
    return spread.float()


def seed_mean(per_seed: torch.Tensor, seeds: int) -> torch.Tensor:
    """(N * B, ...) rows, each edit's B seed rows averaged: (N, ...)."""
    return per_seed.view(-1, seeds, *per_seed.shape[1:]).mean(1)


#: what an edit's mask keeps from its first step: the index word and the word weights
Chosen = tuple[int, WordWeights]


def instant_mask(
    token_maps: torch.Tensor,
    words: list[tuple[int, ...]],
    size: tuple[int, int],
    options: Any,
    chosen: Chosen | None = None,
    word_texts: list[str] | None = None,
    affinity: torch.Tensor | None = None,
    grid: tuple[int, int] | None = None,
    start: tuple[int, ...] = (0,),
) -> tuple[torch.Tensor, Chosen]:
    """One edit's binary mask (h, w) at ``size``, and the index word and word weights it
    was made with.

    ``token_maps``: the edit's (h, w, tokens) running-mean cross-attention, seeds averaged;
    ``words``: each word's token positions; ``options``: the edit's InstDiffEdit
    parameters (thresholds, weighting, smoothing, phi, spread_steps, index_words,
    word_resize);
    ``chosen``: the index word and word weights of the first step, or None to choose them
    now (the index among ``word_texts``' content words, or all words): the released code
    splits the words once, at the first step, and keeps the split; ``affinity`` on
    ``grid``: the self-attention for snap and spread; ``start``: the start token's columns
    (:func:`prepared_word_maps`).
    """
    start, word_maps = prepared_word_maps(token_maps, words, size, options.word_resize, start)
    if chosen is None:
        allowed = None
        if options.index_words == "content":
            allowed = content_words(word_texts)
        index = index_word(start, word_maps, allowed)
        chosen = index, word_weights(
            word_maps, index, options.object_threshold, options.background_threshold,
            soft=options.weighting == "soft",
        )  # fmt: skip
    refined = refine(word_maps, chosen[1])
    mask = smooth_and_threshold(
        refined, options.smoothing, options.phi, affinity, grid, options.spread_steps
    )
    return mask, chosen
