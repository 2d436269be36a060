"""InstDiffEdit's instant mask maths (laspa.masks) on hand-made maps."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from laspa import maps as maps_lib
from laspa.masks import (
    background_mask,
    binarise,
    changed_words,
    content_words,
    index_word,
    instant_mask,
    on_background,
    prepared_word_maps,
    refine,
    seed_mean,
    smooth_and_threshold,
    spread_along,
    word_weights,
)


def two_halves(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(left half as a bool map, an affinity in which each pixel attends evenly to the
    pixels of its own half): two regions with one straight edge."""
    left = torch.zeros(size, size, dtype=torch.bool)
    left[:, : size // 2] = True
    region = left.flatten()
    same = (region[:, None] == region[None, :]).float()
    return left, same / same.sum(-1, keepdim=True)


def test_spreading_along_self_attention_fills_the_touched_region_and_stops_at_its_edge():
    left, affinity = two_halves(8)
    seed = torch.zeros(8, 8)
    seed[2, 1] = 1.0  # one pixel of the left half
    spread = spread_along(seed, affinity, (8, 8), steps=1)
    assert torch.equal(spread > 0.5, left)
    # the identity affinity changes nothing but the normalisation
    torch.testing.assert_close(spread_along(seed * 3, torch.eye(64), (8, 8), steps=4), seed)
    # on a coarser affinity grid the result comes back at the map's size
    assert spread_along(torch.rand(16, 16), torch.eye(64), (8, 8), steps=2).shape == (16, 16)


def test_mask_smoothings_blur_snap_and_spread():
    # a blob in the left half by the middle line, which the blur carries over the line
    # and the spread carries over the whole left half
    left, affinity = two_halves(16)
    refined = torch.zeros(16, 16)
    refined[2:4, 6:8] = 1.0
    blur = smooth_and_threshold(refined, "blur")
    assert torch.equal(blur, binarise(refined, 0.2)) and blur[:, 8:].any()
    spread = smooth_and_threshold(refined, "spread", affinity=affinity, grid=(16, 16))
    assert torch.equal(spread.bool(), left)
    snap = smooth_and_threshold(refined, "snap", affinity=affinity, grid=(16, 16)).bool()
    near_blur = maps_lib.dilate(blur[None])[0].bool()
    assert torch.equal(snap, left & near_blur)  # the blur's place, the region's edge
    assert snap.any() and not snap[:, 8:].any() and not snap[12:].any()
    with pytest.raises(ValueError, match="affinity"):
        smooth_and_threshold(refined, "snap")


def test_instdiffedit_mask_maths():
    maps = torch.zeros(3, 8, 8)
    maps[0, 2:5, 2:5] = 1  # the object
    maps[1, 2:5, 2:6] = 1  # alike
    maps[2, 5:, :] = 1  # background
    start_inverted = maps[0].clone()
    assert index_word(start_inverted, maps) == 0
    weights = word_weights(maps, 0, 0.8, 0.3)
    assert [w.tolist() for w in weights] == [[1, 1, 0], [0, 0, 1]]  # object, background
    refined = refine(maps, weights)
    assert refined[3, 3] > 0.9 and refined[6, 1] == 0
    mask = binarise(refined, 0.2)
    assert mask[3, 3] == 1 and mask[7, 7] == 0 and set(mask.unique().tolist()) <= {0.0, 1.0}
    one = maps[:1]
    assert torch.equal(refine(one, word_weights(one, 0, 0.9, 0.6)), maps[0])  # its own map


def test_blur_is_opencvs_five_tap_binomial_with_reflect_101_borders():
    delta = torch.zeros(1, 9, 9)
    delta[0, 4, 4] = 1.0
    taps = torch.tensor([1.0, 4, 6, 4, 1]) / 16  # cv2.getGaussianKernel(5, 0)
    expected = torch.zeros(9, 9)
    expected[2:7, 2:7] = taps[:, None] * taps[None, :]
    torch.testing.assert_close(maps_lib.gaussian_blur(delta)[0], expected)
    edge = torch.zeros(1, 9, 9)
    edge[0, 0, 4] = 1.0  # at the border: mirrored without repeating the edge row
    assert maps_lib.gaussian_blur(edge)[0, 0, 4] == pytest.approx(6 / 16 * 6 / 16)


def test_cubic_resize_is_pillows_bicubic():
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for rows, cols, size in [(8, 8, (16, 16)), (5, 7, (13, 3)), (16, 16, (8, 8))]:
        maps = torch.rand(1, rows, cols, generator=generator)
        picture = Image.fromarray(maps[0].numpy(), mode="F")
        pillow = torch.from_numpy(
            np.asarray(picture.resize((size[1], size[0]), Image.BICUBIC)).copy()
        )
        torch.testing.assert_close(maps_lib.cubic_resize(maps, size)[0], pillow)
    # clipped: an 8-bit image's overshoot stops at the range
    step = torch.zeros(1, 4, 4)
    step[..., 2:] = 1.0
    clipped = maps_lib.cubic_resize(step, (8, 8), clip=(0.0, 1.0))
    assert clipped.amin() == 0 and clipped.amax() == 1
    assert maps_lib.cubic_resize(step, (8, 8)).amin() < 0


def test_prepared_word_maps_follow_the_released_recipe_word_by_word():
    token_maps = torch.rand(4, 4, 77)
    words = [(1,), (2, 3), (5,)]  # a two-token word is averaged
    for resize in ("bilinear", "bicubic"):
        start, maps = prepared_word_maps(token_maps, words, (8, 8), resize)

        def one(positions, resize=resize):  # per word: mean of tokens, / max, upsampled, min-max
            word = token_maps[..., list(positions)].mean(-1)[None]
            word = word / word.max()
            if resize == "bicubic":  # the released code's: Pillow's, on 8-bit images
                return maps_lib.minmax(maps_lib.cubic_resize(word, (8, 8), clip=(0.0, 1.0)))[0]
            return maps_lib.minmax(maps_lib.resize(word, (8, 8)))[0]

        torch.testing.assert_close(start, 1 - one((0,)))
        torch.testing.assert_close(maps, torch.stack([one(p) for p in words]))
        assert maps.amin() == 0 and maps.amax() == 1
    with pytest.raises(ValueError, match="bicubic"):
        prepared_word_maps(token_maps, words, (8, 8), "nearest")


def test_index_word_among_content_words():
    words = ["a", "red", "circle", "on", "the", "grass", "."]
    assert content_words(words) == [False, True, True, False, False, True, False]
    assert content_words(["a", "the"]) == [True, True]  # nothing left: every word
    maps = torch.zeros(3, 8, 8)
    maps[1, 2:5, 2:5] = 1.0  # the object
    maps[2, 6:, :] = 1.0  # the ground
    start_inverted = 0.5 + maps[1]
    maps[0] = start_inverted  # a function word that happens to match best
    assert index_word(start_inverted, maps) == 0
    assert index_word(start_inverted, maps, [False, True, True]) == 1


def test_seed_mean_averages_each_edits_own_seed_rows():
    per_seed = torch.arange(12.0).view(6, 2)  # 2 edits x 3 seeds, edit-major
    assert torch.equal(seed_mean(per_seed, 3), torch.tensor([[2.0, 3.0], [8.0, 9.0]]))
    assert torch.equal(seed_mean(per_seed, 1), per_seed)


def options(**changes):
    """InstDiffEdit's defaults, as instant_mask reads them."""
    defaults = dict(object_threshold=0.9, background_threshold=0.6, weighting="hard",
                    smoothing="blur", phi=0.2, spread_steps=4, index_words="content",
                    word_resize="bilinear")  # fmt: skip
    return SimpleNamespace(**{**defaults, **changes})


def test_instant_mask_chooses_the_index_word_once_and_composes_the_steps():
    token_maps = torch.zeros(8, 8, 5)
    token_maps[..., 0] = 1.0
    token_maps[2:5, 2:5, 0] = 0.0  # the start token avoids the object
    token_maps[2:5, 2:5, 1] = 1.0  # "a": exactly the inverted start map
    token_maps[2:5, 2:6, 2] = 1.0  # "cat": the object, a little wider
    token_maps[6:, :, 3] = 1.0  # "grass": the ground
    words, texts = [(1,), (2,), (3,)], ["a", "cat", "grass"]
    mask, (index, weights) = instant_mask(token_maps, words, (8, 8), options(), word_texts=texts)
    assert index == 1  # "a" matches best but is a function word
    _, word_maps = prepared_word_maps(token_maps, words, (8, 8))
    expected = word_weights(word_maps, 1, 0.9, 0.6)
    assert all(torch.equal(a, b) for a, b in zip(weights, expected, strict=True))
    assert torch.equal(mask, binarise(refine(word_maps, weights), 0.2))
    assert mask[3, 3] == 1 and mask[7, 0] == 0
    every_word = options(index_words="all")
    assert instant_mask(token_maps, words, (8, 8), every_word, word_texts=texts)[1][0] == 0
    # the index word and the words' split chosen earlier are kept, whatever the maps say
    # now (the released code splits the words once, at the first step)
    grass = (torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 0.0]))
    kept, chosen = instant_mask(token_maps, words, (8, 8), options(), chosen=(2, grass))
    assert chosen == (2, grass) and kept[7, 0] == 1 and kept[3, 3] == 0


# ------------------------------------------------------------------ changed words
def test_changed_words_are_the_content_words_the_caption_lacks_at_their_place():
    def words(text: str) -> list[str]:
        return text.split(" ")

    caption = words("a large blue star at the top on a navy background")
    assert changed_words(caption, words("a large blue star at the top on a maroon background")) == [
        9
    ]
    # a replaced run, an insertion; function words ("in", "the") never count
    assert changed_words(words("a red cat at the top"), words("a blue dog in the top left")) == [
        1, 2, 6,
    ]  # fmt: skip
    assert changed_words(["A", "Red", "cat"], ["a", "red", "CAT"]) == []  # case-insensitive
    assert changed_words([], ["a", "red", "cat"]) == []  # no caption: nothing known to change


def test_a_background_word_attends_where_the_start_token_does():
    # the start token on the background (as the bundled model was trained), inverted as
    # prepared_word_maps returns it: 1 on the object in the middle, 0 around it
    start_inverted = torch.zeros(8, 8)
    start_inverted[2:6, 2:6] = 1
    on_object, around = start_inverted.clone(), 1 - start_inverted
    assert on_background(around, start_inverted)
    assert not on_background(on_object, start_inverted)
    assert not on_background(0.3 * around + on_object, start_inverted)  # mostly the object
    assert torch.equal(background_mask(start_inverted, 0.2), around)
