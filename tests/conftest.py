import os

import pytest

# Tests share two cores with other work; one thread each keeps timings sane.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random SD model saved as a diffusers folder (safetensors)."""
    from laspa.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture()
def editor():
    from laspa.testing import tiny_editor

    return tiny_editor()


@pytest.fixture(scope="session")
def clip_tokenizer(tmp_path_factory):
    """Stable Diffusion's real CLIP BPE tokenizer, built offline from the merges file that
    open-clip-torch ships in its package (a test dependency, installed without its own
    dependencies: the README's "Set up" installs it)."""
    import gzip
    import importlib.util
    from pathlib import Path

    from transformers import CLIPTokenizer

    from laspa.mini.tokenizer import write_bpe_tokenizer

    spec = importlib.util.find_spec("open_clip")  # found, not imported: it needs torchvision
    if spec is None:
        pytest.fail(
            "the CLIP tokenizer tests need open-clip-torch: run the README's 'Set up' commands "
            "(pip install --no-deps open-clip-torch==3.3.0)"
        )
    merges_file = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(merges_file, "rt", encoding="utf-8") as lines_file:
        lines = lines_file.read().split("\n")
    # CLIP keeps the first 49152 - 256 - 2 merges (after a header line): 49408 tokens in all
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    folder = write_bpe_tokenizer(merges, tmp_path_factory.mktemp("clip") / "tokenizer", 77)
    return CLIPTokenizer.from_pretrained(folder)
