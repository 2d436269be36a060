"""Hours of use: many distinct prompts through one Editor (issue #30, the crash after
about 257 prompts). The embedding cache is made small so that eviction happens often:
a call mixing a cached prompt and a new one, flowedit's cached source prompt and fpe's
empty source prompt must all survive it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from laspa import engine as engine_module
from laspa.editor import Editor
from laspa.testing import save_tiny_sd3_model, tiny_editor

CACHE = 4  # prompts kept: a handful, so every few calls evict
PROMPTS = 300


def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def prompts(start: int, count: int) -> list[str]:
    return [f"a photo of cat number {i}" for i in range(start, start + count)]


@pytest.fixture()
def small_cache(monkeypatch):
    monkeypatch.setattr(engine_module, "PROMPT_CACHE_SIZE", CACHE)


@pytest.mark.parametrize("method", ["laspa-x0", "fpe"])
def test_hundreds_of_distinct_prompts_with_a_small_cache(small_cache, method):
    editor = tiny_editor()
    image, seen = picture(), []
    for start in range(0, PROMPTS, 6):
        batch = prompts(start, 6)
        # one prompt read before (cached or just evicted) beside new ones, in one call
        variants = [{"prompt": p, "steps": 1} for p in [*batch, *seen[-2:]]]
        results = editor.edit_many(image, variants, method=method)
        assert len(results) == len(variants)
        seen += batch
    cache = editor.engine._embeddings
    assert 0 < len(cache) <= CACHE


def test_one_call_with_more_prompts_than_the_cache_holds(small_cache):
    editor = tiny_editor()
    variants = [{"prompt": p, "steps": 1} for p in prompts(0, 3 * CACHE)]
    results = editor.edit_many(picture(), variants, method="laspa-x0")
    assert len(results) == 3 * CACHE


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    folder = save_tiny_sd3_model(tmp_path_factory.mktemp("sd3") / "tiny-sd3")
    return Editor.from_pretrained(folder, device="cpu", dtype=torch.float32)


def test_flowedit_keeps_its_cached_source_prompt_through_evictions(small_cache, sd3):
    source = "a photo of a cat"
    image = picture()
    for start in range(0, 60, 3):
        variants = [{"prompt": p, "steps": 2, "n_max": 1} for p in prompts(start, 3)]
        for variant in variants:
            variant["source_prompt"] = source
        results = sd3.edit_many(image, variants, method="flowedit")
        assert len(results) == 3
    assert 0 < len(sd3.engine._embeddings) <= CACHE
