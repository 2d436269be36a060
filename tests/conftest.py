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
