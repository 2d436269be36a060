"""Which token positions of a prompt belong to which word.

CLIP's tokenizer splits text into words and punctuation before BPE, and BPE works inside
a word, so tokenizing each word alone gives the pieces it has inside the prompt. A word
split into several pieces is represented by all of them (its map is their mean).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class WordTokens:
    word: str  # lower-cased, as the tokenizer sees it
    positions: tuple[int, ...]  # token positions in the padded sequence (0 is the start token)


def word_tokens(tokenizer, prompt: str) -> list[WordTokens]:
    """Every word of ``prompt`` with its token positions (words cut off by the model's
    maximum length are left out)."""
    limit = tokenizer.model_max_length - 1  # the last position holds the end token
    position = 1
    words: list[WordTokens] = []
    for word in _WORD.findall(prompt.lower()):
        pieces = tokenizer(word, add_special_tokens=False).input_ids
        span = tuple(p for p in range(position, position + len(pieces)) if p < limit)
        if span:
            words.append(WordTokens(word, span))
        position += len(pieces)
    return words


def phrase_occurs(prompt: str, phrase: str) -> bool:
    """Whether the words of ``phrase`` occur in a row in ``prompt`` (case ignored): the
    check that needs no tokenizer, so it can run before a model loads."""
    wanted, words = _WORD.findall(phrase.lower()), _WORD.findall(prompt.lower())
    return bool(wanted) and any(
        words[start : start + len(wanted)] == wanted
        for start in range(len(words) - len(wanted) + 1)
    )


def positions_of(tokenizer, prompt: str, word: str) -> tuple[int, ...]:
    """Token positions of ``word`` in ``prompt`` (every occurrence); a phrase of several
    words gives the positions of all of them. Raises ValueError if it does not occur."""
    wanted = _WORD.findall(word.lower())
    words = word_tokens(tokenizer, prompt)
    found: list[int] = []
    for start in range(len(words) - len(wanted) + 1):
        if [w.word for w in words[start : start + len(wanted)]] == wanted:
            for w in words[start : start + len(wanted)]:
                found.extend(w.positions)
    if not wanted or not found:
        if wanted and all(w in _WORD.findall(prompt.lower()) for w in wanted):
            raise ValueError(
                f"the word {word!r} lies beyond the model's prompt length "
                f"({tokenizer.model_max_length} tokens) in {prompt!r}"
            )
        raise ValueError(f"the word {word!r} does not occur in the prompt {prompt!r}")
    return tuple(dict.fromkeys(found))


def token_alignment(tokenizer, source: str, target: str) -> list[int]:
    """For each token position of ``target``, the position of the same word's token in
    ``source`` (words matched in order, as difflib aligns them), or -1 where the target
    word is new. The start and padding positions map to themselves."""
    from difflib import SequenceMatcher

    length = tokenizer.model_max_length
    mapping = list(range(length))
    source_words, target_words = word_tokens(tokenizer, source), word_tokens(tokenizer, target)
    for w in target_words:
        for p in w.positions:
            mapping[p] = -1
    matcher = SequenceMatcher(
        a=[w.word for w in source_words], b=[w.word for w in target_words], autojunk=False
    )
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        # equal words keep their source token; a replaced run of as many words maps word
        # to word (prompt-to-prompt's replacement); inserted words keep their own attention
        if tag not in ("equal", "replace") or a1 - a0 != b1 - b0:
            continue
        for src, tgt in zip(source_words[a0:a1], target_words[b0:b1], strict=True):
            if len(src.positions) == len(tgt.positions):
                for s, t in zip(src.positions, tgt.positions, strict=True):
                    mapping[t] = s
    # the end token and padding after the target's words take the source's end position
    end_target = 1 + sum(len(tokenizer(w, add_special_tokens=False).input_ids)
                         for w in _WORD.findall(target.lower()))  # fmt: skip
    end_source = 1 + sum(len(tokenizer(w, add_special_tokens=False).input_ids)
                         for w in _WORD.findall(source.lower()))  # fmt: skip
    for p in range(min(end_target, length), length):
        mapping[p] = min(end_source + (p - end_target), length - 1)
    return mapping
