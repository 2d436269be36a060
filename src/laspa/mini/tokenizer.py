"""A hand-built CLIP-format BPE tokenizer for the miniature model.

CLIP's tokenizer is byte-level BPE: text is lower-cased, split into words, each
byte mapped to a printable unicode character, and the last symbol of a word
carries a ``</w>`` suffix. We build the same files (``vocab.json``,
``merges.txt``) from the scene world's vocabulary, learning merges in the
order real BPE training would, so every world word becomes exactly one token
and any other text still tokenises (it falls back to single characters).
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
MERGES_HEADER = "#version: 0.2"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable character table.

    Printable bytes map to themselves, the rest to code points above 255, so
    the BPE never sees whitespace or control characters.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _base_alphabet() -> list[str]:
    """All 256 byte symbols, bare and word-final: any UTF-8 text is covered."""
    symbols = list(bytes_to_unicode().values())
    return symbols + [s + END_OF_WORD for s in symbols]


def _word_symbols(word: str) -> tuple[str, ...]:
    table = bytes_to_unicode()
    chars = [table[b] for b in word.lower().encode("utf-8")]
    chars[-1] += END_OF_WORD
    return tuple(chars)


def _merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Merge every left-to-right occurrence of ``pair`` (as CLIP's encoder does)."""
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Classic BPE training on the word list until every word is one symbol.

    Merges are recorded in the order learned; replaying them by rank (what the
    tokenizer does at encode time) reproduces the same segmentation, which is
    why each training word ends up as a single token.
    """
    corpus = {w: _word_symbols(w) for w in sorted(set(words)) if w}
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter[tuple[str, str]] = Counter()
        for symbols in corpus.values():
            counts.update(zip(symbols, symbols[1:], strict=False))
        if not counts:
            return merges
        # Most frequent pair first; ties broken lexicographically so the result is
        # deterministic across runs and machines.
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        corpus = {w: _merge_pair(s, best) for w, s in corpus.items()}


def build_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token -> id: byte alphabet, then merge results, then the two specials."""
    tokens = _base_alphabet() + [a + b for a, b in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def write_tokenizer(words: Iterable[str], folder: Path, max_length: int) -> Path:
    """Write vocab.json, merges.txt and the transformers tokenizer files into folder."""
    return write_bpe_tokenizer(learn_merges(words), folder, max_length)


def write_bpe_tokenizer(merges: Sequence[tuple[str, str]], folder: Path, max_length: int) -> Path:
    """A CLIP-format tokenizer folder from BPE merges (ours, or CLIP's own merges file:
    CLIP's vocabulary is built from its merges exactly like :func:`build_vocab`)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(merges)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = [MERGES_HEADER] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    # Round-trip through CLIPTokenizer so tokenizer.json / tokenizer_config.json
    # are written in whatever form the installed transformers expects, next to
    # the plain vocab/merges files older versions read.
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=list(merges),
        model_max_length=max_length,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )
    tokenizer.save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------ T5-style pieces

#: SentencePiece's mark of a piece that starts a word (the space before it)
WORD_START = "\u2581"
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # T5's ids 0, 1, 2


def unigram_pieces(words: Iterable[str], split: dict[str, Sequence[str]] | None = None):
    """Scored pieces for a SentencePiece-style Unigram model: each word as one piece
    marked with :data:`WORD_START`, each word of ``split`` as the pieces given (the first
    one marked), and every letter and digit alone (so any word tokenises, in pieces, as
    T5's vocabulary splits words it lacks; case is kept, as T5's is). Whole words score
    above their pieces, so Viterbi picks them."""
    pieces: dict[str, float] = {}
    for word in words:
        pieces.setdefault(WORD_START + word.lower(), -5.0)
    for parts in (split or {}).values():
        for index, part in enumerate(parts):
            pieces.setdefault((WORD_START if index == 0 else "") + part, -6.0)
    pieces.setdefault(WORD_START, -8.0)
    alphabet = string.ascii_letters + string.digits + string.punctuation
    for char in alphabet:
        pieces.setdefault(char, -10.0)
        pieces.setdefault(WORD_START + char, -10.5)
    return list(pieces.items())


def write_unigram_tokenizer(
    words: Iterable[str],
    folder: Path,
    max_length: int,
    split: dict[str, Sequence[str]] | None = None,
) -> Path:
    """A T5-kind tokenizer folder (``T5TokenizerFast``): a ``tokenizers`` Unigram model over
    :func:`unigram_pieces`, SentencePiece's word-start mark (Metaspace), no start token,
    ``</s>`` after the text, ``<pad>`` as padding: what FLUX's and SD3's T5 tokenizers
    are, over a small vocabulary (no SentencePiece model file needed)."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import T5TokenizerFast

    vocab = [(special, 0.0) for special in T5_SPECIALS] + unigram_pieces(words, split)
    backend = Tokenizer(models.Unigram(vocab, unk_id=T5_SPECIALS.index("<unk>")))
    backend.normalizer = normalizers.Replace(Regex(" {2,}"), " ")  # T5 keeps case
    backend.pre_tokenizer = pre_tokenizers.Metaspace(WORD_START, prepend_scheme="always")
    backend.decoder = decoders.Metaspace(WORD_START, prepend_scheme="always")
    end = T5_SPECIALS.index("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", end)]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_ids=0, model_max_length=max_length,
    )  # fmt: skip
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return folder
