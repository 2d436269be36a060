"""Which token positions of a prompt belong to which word, as the model's tokenizer says.

A *word* is a run of letters and digits, or a run of other non-space characters
(punctuation), of the prompt; runs that the tokenizer covers with one shared token are one
word (CLIP's ``'s`` in "cat's", a run it keeps whole). A word's positions are the tokens
whose characters overlap it, taken from the tokenizer itself: the character offsets of a
fast tokenizer, else each whitespace-separated chunk tokenized alone (and checked against
the whole prompt's tokens). A word split into several pieces is represented by all of
them (its map is their mean).

The model reads at most ``tokenizer.model_max_length`` tokens: a word that does not fit
whole is not seen by it, so it is left out of :func:`word_tokens`, and
:func:`positions_of` raises an error naming the limit when every occurrence of the word
lies beyond it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: letter-and-digit runs, and runs of anything else that is not white space
_RUN = re.compile(r"[^\W_]+|(?:[^\w\s]|_)+")
_CHUNK = re.compile(r"\S+")

Span = tuple[int, int]


@dataclass(frozen=True)
class WordTokens:
    word: str  # lower-cased
    positions: tuple[int, ...]  # token positions in the padded sequence (0 is the start token)


@dataclass(frozen=True)
class _Encoding:
    words: list[WordTokens]  # every word of the prompt, including those past the limit
    visible: list[bool]  # per word: all its tokens fit in the model's sequence
    end: int  # the position of the first token after the visible words (the end token)

    def seen(self) -> list[WordTokens]:
        return [w for w, seen in zip(self.words, self.visible, strict=True) if seen]


def word_tokens(tokenizer, prompt: str) -> list[WordTokens]:
    """Every word of ``prompt`` that the model sees whole, with its token positions."""
    return _encode(tokenizer, prompt).seen()


def trailing_positions(tokenizer, prompt: str, length: int | None = None) -> tuple[int, ...]:
    """The positions after the words the model sees, up to ``length`` (default the
    tokenizer's): the end token and the padding, which no word owns (what stands in for a
    start token where a tokenizer has none, as T5's)."""
    length = tokenizer.model_max_length if length is None else length
    return tuple(range(_encode(tokenizer, prompt).end, length))


def phrase_occurs(prompt: str, phrase: str) -> bool:
    """Whether the words of ``phrase`` occur in a row in ``prompt`` (case ignored): the
    check that needs no tokenizer, so it can run before a model loads."""
    wanted, words = _RUN.findall(phrase.lower()), _RUN.findall(prompt.lower())
    return bool(wanted) and any(
        words[start : start + len(wanted)] == wanted
        for start in range(len(words) - len(wanted) + 1)
    )


def positions_of(tokenizer, prompt: str, word: str) -> tuple[int, ...]:
    """Token positions of ``word`` in ``prompt`` (every occurrence the model sees); a phrase
    of several words gives the positions of all of them. Raises ValueError if it does not
    occur, or occurs only beyond the model's prompt length."""
    wanted = [w.word for w in _encode(tokenizer, word).words]
    encoding = _encode(tokenizer, prompt)
    texts = [w.word for w in encoding.words]
    found: list[int] = []
    beyond = False
    for start in range(len(texts) - len(wanted) + 1):
        if wanted and texts[start : start + len(wanted)] == wanted:
            span = range(start, start + len(wanted))
            if all(encoding.visible[i] for i in span):
                for i in span:
                    found.extend(encoding.words[i].positions)
            else:
                beyond = True
    if found:
        return tuple(dict.fromkeys(found))
    if beyond:
        raise ValueError(
            f"the word {word!r} lies beyond the model's prompt length "
            f"({tokenizer.model_max_length} tokens) in {prompt!r}"
        )
    raise ValueError(f"the word {word!r} does not occur in the prompt {prompt!r}")


def token_alignment(tokenizer, source: str, target: str) -> list[int]:
    """For each token position of ``target``, the position of the same word's token in
    ``source`` (words matched in order, as difflib aligns them), or -1 where the target
    word is new. The start and padding positions map to themselves."""
    from difflib import SequenceMatcher

    length = tokenizer.model_max_length
    mapping = list(range(length))
    source_encoding, target_encoding = _encode(tokenizer, source), _encode(tokenizer, target)
    source_words, target_words = source_encoding.seen(), target_encoding.seen()
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
    end_target, end_source = target_encoding.end, source_encoding.end
    for p in range(min(end_target, length), length):
        mapping[p] = min(end_source + (p - end_target), length - 1)
    return mapping


# ----------------------------------------------------------------------- internals


def _encode(tokenizer, text: str) -> _Encoding:
    spans, kept = _token_spans(tokenizer, text)
    words = _group_words(text, spans)
    visible = [all(p < kept for p in w.positions) for w in words]
    content = [p for w, seen in zip(words, visible, strict=True) if seen for p in w.positions]
    leading = next((p for p, span in enumerate(spans) if span is not None), 1)
    return _Encoding(words, visible, max(content) + 1 if content else leading)


def _token_spans(tokenizer, text: str) -> tuple[list[Span | None], int]:
    """The character span of every token of ``text`` in the model's sequence (None for
    special tokens), untruncated, and how many leading positions survive truncation to the
    model's length (special tokens after the content keep their places at the end)."""
    try:
        encoded = tokenizer(
            text, return_offsets_mapping=True, return_special_tokens_mask=True, verbose=False
        )
    except NotImplementedError:  # older slow tokenizers refuse offsets, newer ones omit them
        encoded = {}
    if "offset_mapping" in encoded:
        spans = [
            None if special else (int(start), int(end))
            for (start, end), special in zip(
                encoded["offset_mapping"], encoded["special_tokens_mask"], strict=True
            )
        ]
    else:
        spans = _spans_chunk_by_chunk(tokenizer, text)
    trailing = 0
    while trailing < len(spans) and spans[len(spans) - 1 - trailing] is None:
        trailing += 1
    return spans, tokenizer.model_max_length - trailing


def _spans_chunk_by_chunk(tokenizer, text: str) -> list[Span | None]:
    """Token spans without offsets: each whitespace-separated chunk tokenized alone, its
    tokens given to its runs by tokenizing the chunk's prefixes (a token that first
    appears with a run belongs to it). Raises ValueError where the chunks' tokens differ
    from the whole text's, rather than guess."""
    content: list[int] = []
    spans: list[Span | None] = []
    for chunk in _CHUNK.finditer(text):
        before = 0
        for run in _RUN.finditer(chunk.group()):
            pieces = tokenizer(chunk.group()[: run.end()], add_special_tokens=False).input_ids
            spans.extend([(chunk.start() + run.start(), chunk.start() + run.end())] * max(
                0, len(pieces) - before
            ))  # fmt: skip
            before = max(before, len(pieces))
        content.extend(tokenizer(chunk.group(), add_special_tokens=False).input_ids)
        if len(content) != len(spans):
            raise ValueError(f"cannot place the tokens of {chunk.group()!r} in {text!r}")
    ids = tokenizer(text, verbose=False).input_ids
    for start in range(len(ids) - len(content) + 1):
        if ids[start : start + len(content)] == content:
            return [None] * start + spans + [None] * (len(ids) - start - len(content))
    raise ValueError(f"the tokenizer splits {text!r} differently word by word than whole")


def _group_words(text: str, spans: list[Span | None]) -> list[WordTokens]:
    """Words of ``text`` with the positions of the tokens that overlap them; a run joins
    the word before it when it touches it and shares a token with it (or has none)."""
    words: list[tuple[int, int, list[int]]] = []  # start, end, positions
    for run in _RUN.finditer(text):
        positions = [
            p
            for p, span in enumerate(spans)
            if span is not None and span[0] < run.end() and span[1] > run.start()
        ]
        if (
            words
            and words[-1][1] == run.start()
            and (not positions or set(positions) & set(words[-1][2]))
        ):
            start, _, previous = words.pop()
            words.append((start, run.end(), previous + [p for p in positions if p not in previous]))
        elif positions:
            words.append((run.start(), run.end(), positions))
    return [WordTokens(text[start:end].lower(), tuple(found)) for start, end, found in words]
