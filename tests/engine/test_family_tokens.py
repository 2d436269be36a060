"""A word's attention columns come from the tokenizer whose tokens that attention sees:
CLIP's (with its start token) on SD 1.x, 2.x, SDXL and SD3; T5's on FLUX, whose joint
attention reads T5's tokens alone. The tiny FLUX and SD3-with-T5 models carry a T5-kind
tokenizer (SentencePiece-style pieces, no start token, ``</s>`` after the text), so a test
that placed FLUX's words with CLIP's tokenizer fails here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import maps as maps_lib
from laspa.editor import Editor
from laspa.testing import (
    run_cli,
    save_tiny_flux_model,
    save_tiny_model,
    save_tiny_sd3_model,
    tiny_t5_tokenizer,
)

PROMPT = "a photo of a cat wearing sunglasses"


def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    return save_tiny_flux_model(tmp_path_factory.mktemp("flux") / "tiny-flux")


@pytest.fixture(scope="module")
def flux(flux_folder):
    return Editor.from_pretrained(flux_folder, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    folder = save_tiny_sd3_model(tmp_path_factory.mktemp("sd3") / "tiny-sd3", t5=True)
    return Editor.from_pretrained(folder, device="cpu", dtype=torch.float32)


def pieces(tokenizer, prompt: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer(prompt).input_ids)


def test_the_tiny_t5_tokenizer_is_of_t5s_kind():
    tokenizer = tiny_t5_tokenizer()
    assert type(tokenizer).__name__.startswith("T5Tokenizer")
    assert pieces(tokenizer, PROMPT) == [
        "▁a", "▁photo", "▁of", "▁a", "▁cat", "▁w", "e", "a", "r", "i", "n", "g",
        "▁sun", "glasses", "</s>",
    ]  # fmt: skip
    assert pieces(tokenizer, "A cat") == ["▁A", "▁cat", "</s>"]  # case kept, as T5 keeps it
    padded = tokenizer(PROMPT, padding="max_length", max_length=512).input_ids
    assert len(padded) == 512 and padded[-1] == tokenizer.pad_token_id


def test_flux_places_words_on_t5s_pieces(flux):
    assert type(flux.engine.attention_tokenizer).__name__.startswith("T5Tokenizer")
    t5 = pieces(flux.engine.attention_tokenizer, PROMPT)
    assert flux.engine.positions_of(PROMPT, "cat") == (t5.index("▁cat"),) == (4,)
    assert flux.engine.positions_of(PROMPT, "sunglasses") == (12, 13)  # "▁sun", "glasses"
    assert [w.word for w in flux.engine.word_tokens(PROMPT)][:5] == ["a", "photo", "of", "a", "cat"]
    # no start token: the end token and the padding stand in for it
    assert flux.engine.start_positions(PROMPT) == tuple(range(t5.index("</s>"), 512))


def test_sd3_places_words_on_its_clip_columns(sd3):
    assert type(sd3.engine.attention_tokenizer).__name__ == "CLIPTokenizer"
    assert sd3.engine.positions_of(PROMPT, "cat") == (5,)  # after CLIP's start token
    assert sd3.engine.start_positions(PROMPT) == (0,)


def test_a_flux_word_map_is_the_mean_of_its_own_t5_columns(flux):
    result = flux.edit(picture(), PROMPT, steps=4, record_attention=True)
    token_maps = result.extras["token_maps"]
    assert token_maps.shape[-1] == 512  # one column per T5 token
    size = tuple(result.latent.shape[-2:])
    for word, columns in [("cat", (4,)), ("sunglasses", (12, 13))]:
        expected = maps_lib.minmax(
            maps_lib.resize(maps_lib.word_map(token_maps[None], columns), size)
        )[0]
        np.testing.assert_allclose(result.attention[word], expected.numpy(), atol=1e-6)


def test_instdiffedit_on_flux_reads_the_start_map_from_the_end_and_padding(flux, monkeypatch):
    import laspa.masks as masks

    seen = []
    prepared = masks.prepared_word_maps

    def spy(token_maps, words, size, resize="bilinear", start=(0,)):
        seen.append(start)
        return prepared(token_maps, words, size, resize, start)

    monkeypatch.setattr(masks, "prepared_word_maps", spy)
    result = flux.edit(picture(), PROMPT, method="instdiffedit", steps=4)
    assert result.mask is not None and seen
    end = pieces(flux.engine.attention_tokenizer, PROMPT).index("</s>")
    assert set(seen) == {tuple(range(end, 512))}


def test_laspa_attention_tokens_lists_every_column_with_its_token_and_word(
    flux_folder, tmp_path, capsys
):
    import json

    image = tmp_path / "in.png"
    picture().save(image)
    code, out, err = run_cli(
        capsys, "attention", image, PROMPT, "--tokens", "--json", "--model", flux_folder
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 512 and [r["column"] for r in rows] == list(range(512))
    assert rows[4] == {"column": 4, "token": "▁cat", "word": "cat"}
    assert rows[13] == {"column": 13, "token": "glasses", "word": "sunglasses"}
    assert rows[14] == {"column": 14, "token": "</s>", "word": None}
    sd = save_tiny_model(tmp_path / "sd")
    code, out, err = run_cli(capsys, "attention", image, "a red cat", "--tokens", "--model", sd)
    lines = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and lines[0] == ["0", "<|startoftext|>", ""]
    assert lines[3] == ["3", "cat</w>", "cat"] and len(lines) == 40  # the tiny CLIP's length
    code, out, err = run_cli(
        capsys, "attention", image, "a red cat", "--tokens", "-o", tmp_path / "x.png", "--model", sd
    )
    assert (
        code == 2
        and err.strip().splitlines()
        == ["laspa: error: -o cannot act with --tokens (it reads no map)"]
        and not (tmp_path / "x.png").exists()
    )
