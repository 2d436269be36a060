"""Word -> token positions, from the model's own tokenizer (CLIP's real BPE, the miniature's
word-level vocabulary, and a tokenizer without character offsets)."""

from __future__ import annotations

import pytest

from laspa.mini import model_dir
from laspa.tokens import positions_of, token_alignment, word_tokens

# (prompt, words as the model's tokens group them, CLIP's pieces per word)
CLIP_CASES = [
    # a punctuation run is one CLIP token: "mat" must stay on its own token
    ("a cat... on a mat", ["a", "cat", "...", "on", "a", "mat"], [1, 1, 1, 1, 1, 1]),
    ("is it a dog?! yes", ["is", "it", "a", "dog", "?!", "yes"], [1, 1, 1, 1, 1, 1]),
    # CLIP's clitic "'s" is one token; numbers are split digit by digit
    ("the dog's 2024 toy", ["the", "dog", "'s", "2024", "toy"], [1, 1, 1, 4, 1]),
    # words of several BPE pieces, and non-ASCII letters (byte-level pieces)
    (
        "photorealistic zürich café, naïve élan",
        ["photorealistic", "zürich", "café", ",", "naïve", "élan"],
        [2, 3, 1, 1, 3, 2],
    ),
    # upper case and repeated white space: CLIP lower-cases and splits on any space
    ("A   CAT  and a cat", ["a", "cat", "and", "a", "cat"], [1, 1, 1, 1, 1]),
]


@pytest.mark.parametrize(("prompt", "words", "pieces"), CLIP_CASES)
def test_clip_word_positions_follow_the_tokenizer(clip_tokenizer, prompt, words, pieces):
    found = word_tokens(clip_tokenizer, prompt)
    assert [w.word for w in found] == words
    assert [len(w.positions) for w in found] == pieces
    ids = clip_tokenizer(prompt).input_ids
    # every content token belongs to exactly one word, in order, between start and end
    assert [p for w in found for p in w.positions] == list(range(1, len(ids) - 1))
    assert ids[0] == clip_tokenizer.bos_token_id and ids[-1] == clip_tokenizer.eos_token_id


def test_the_clip_tokenizer_is_the_real_one(clip_tokenizer):
    """Known ids of SD's CLIP tokenizer: the built vocabulary is CLIP's own."""
    assert len(clip_tokenizer) == 49408
    assert clip_tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_clip_positions_after_a_punctuation_run(clip_tokenizer):
    prompt = "a cat... on a mat"
    ids = clip_tokenizer(prompt).input_ids
    (mat,) = positions_of(clip_tokenizer, prompt, "mat")
    assert clip_tokenizer.convert_ids_to_tokens(ids[mat]) == "mat</w>"
    assert mat == len(ids) - 2  # the last word, right before the end token


def test_clip_positions_of_pieces_repeats_and_phrases(clip_tokenizer):
    prompt = "a photorealistic cat, a cat's toy and another cat"
    tokens = clip_tokenizer.convert_ids_to_tokens(clip_tokenizer(prompt).input_ids)
    cats = positions_of(clip_tokenizer, prompt, "cat")
    assert len(cats) == 3 and all(tokens[p] == "cat</w>" for p in cats)  # every occurrence
    photo = positions_of(clip_tokenizer, prompt, "photorealistic")
    assert [tokens[p] for p in photo] == ["photo", "realistic</w>"]
    assert [tokens[p] for p in positions_of(clip_tokenizer, prompt, "cat's")] == [
        "cat</w>",
        "'s</w>",
    ]
    assert [tokens[p] for p in positions_of(clip_tokenizer, prompt, "a CAT'S toy")] == [
        "a</w>",
        "cat</w>",
        "'s</w>",
        "toy</w>",
    ]
    other = "cafés in zürich"
    other_tokens = clip_tokenizer.convert_ids_to_tokens(clip_tokenizer(other).input_ids)
    assert [other_tokens[p] for p in positions_of(clip_tokenizer, other, "Zürich")] == [
        "z",
        "Ã¼",
        "rich</w>",
    ]
    for missing in ("dog", "cats", "photo"):  # "photo" is only a piece of a word here
        with pytest.raises(ValueError, match="does not occur"):
            positions_of(clip_tokenizer, prompt, missing)


def test_clip_words_past_77_tokens_are_an_error_not_a_wrong_map(clip_tokenizer):
    prompt = " ".join(["a red cat"] * 30) + " and a zebra"  # 90 words: 1 + 90 + 3 + 1 tokens
    assert len(clip_tokenizer(prompt).input_ids) > 77
    with pytest.raises(ValueError, match="beyond the model's prompt length \\(77 tokens\\)"):
        positions_of(clip_tokenizer, prompt, "zebra")
    cats = positions_of(clip_tokenizer, prompt, "cat")  # only the occurrences the model sees
    assert len(cats) == 25 and max(cats) == 75  # position 76 holds the end token
    words = word_tokens(clip_tokenizer, prompt)
    assert len(words) == 75 and words[-1].positions == (75,)
    # a word cut in two by the limit is not seen whole: left out, and an error by name
    cut = " ".join(["a"] * 75) + " photorealistic"
    assert [w.word for w in word_tokens(clip_tokenizer, cut)] == ["a"] * 75
    with pytest.raises(ValueError, match="beyond"):
        positions_of(clip_tokenizer, cut, "photorealistic")


def test_clip_token_alignment_across_punctuation(clip_tokenizer):
    source, target = "a cat... on a mat", "a dog... on a mat"
    mapping = token_alignment(clip_tokenizer, source, target)
    # "dog" replaces "cat" word for word; "..." and "mat" keep their places across
    assert mapping[:7] == [0, 1, 2, 3, 4, 5, 6]
    assert mapping[7:10] == [7, 8, 9]  # the end token and the padding after it
    longer = token_alignment(clip_tokenizer, "a photo of a cat", "a photorealistic photo of a cat")
    # "photorealistic" (2 tokens) is inserted: the later words shift by two positions
    assert longer[:8] == [0, 1, -1, -1, 2, 3, 4, 5] and longer[8] == 6


class WithoutOffsets:
    """A tokenizer that, like a slow (Python) one, gives no character offsets."""

    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.model_max_length = tokenizer.model_max_length

    def __call__(self, text, **kwargs):
        if kwargs.pop("return_offsets_mapping", False):
            raise NotImplementedError("no offsets")
        return self.inner(text, **kwargs)


@pytest.mark.parametrize("prompt", [case[0] for case in CLIP_CASES])
def test_without_offsets_the_words_are_tokenized_chunk_by_chunk(clip_tokenizer, prompt):
    assert word_tokens(WithoutOffsets(clip_tokenizer), prompt) == word_tokens(
        clip_tokenizer, prompt
    )


def test_the_miniature_tokenizer_maps_one_token_per_world_word():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model_dir() / "tokenizer")
    prompt = "a red circle at the top left, and a blue square"
    words = word_tokens(tokenizer, prompt)
    assert [w.word for w in words] == prompt.replace(",", " ,").split()
    assert [w.positions for w in words] == [(p,) for p in range(1, len(words) + 1)]
    assert positions_of(tokenizer, prompt, "blue square") == (len(words) - 1, len(words))
