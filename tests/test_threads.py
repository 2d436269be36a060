"""The commands' thread count: --threads, then the torch variables, then the model size."""

import pytest
import torch
from typer.testing import CliRunner

from laspa import ParameterError
from laspa.threads import SMALL_UNET_PARAMETERS, apply_threads, resolve_threads

MINIATURE = 1_500_000  # the bundled model's UNet
SD = 860_000_000  # Stable Diffusion 1.x


def test_a_small_model_runs_on_one_thread_by_default():
    assert resolve_threads(None, MINIATURE, {}) == 1
    assert resolve_threads(None, SMALL_UNET_PARAMETERS - 1, {}) == 1


def test_a_large_model_keeps_torchs_default():
    assert resolve_threads(None, SD, {}) is None
    assert resolve_threads(None, SMALL_UNET_PARAMETERS, {}) is None


def test_the_torch_variables_override_the_default():
    assert resolve_threads(None, MINIATURE, {"OMP_NUM_THREADS": "2"}) is None
    assert resolve_threads(None, MINIATURE, {"MKL_NUM_THREADS": "4"}) is None
    assert resolve_threads(None, MINIATURE, {"OMP_NUM_THREADS": ""}) == 1  # set but empty


def test_threads_given_override_everything():
    assert resolve_threads(2, MINIATURE, {}) == 2
    assert resolve_threads(3, SD, {"OMP_NUM_THREADS": "1"}) == 3
    with pytest.raises(ParameterError, match="--threads must be >= 1"):
        resolve_threads(0, MINIATURE, {})


def test_off_the_cpu_a_small_model_keeps_torchs_default():
    assert resolve_threads(None, MINIATURE, {}, device_type="cuda") is None


def test_apply_threads_sets_torch(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    small = torch.nn.Linear(4, 4)
    try:
        assert apply_threads(2, small) == 2 == torch.get_num_threads()
        assert apply_threads(None, small) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["edit", "sweep", "attention", "demo", "bench", "serve"])
def test_every_model_command_offers_threads_and_explains_the_default(command):
    from laspa.cli import _mount_subcommands, app

    _mount_subcommands()
    text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
    assert "--threads" in text
    assert "1 for small models" in " ".join(text.split())


def test_threads_below_one_is_a_one_line_usage_error(tmp_path, capsys):
    from laspa.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["edit", str(tmp_path / "in.png"), "a cat", "-o", "out.png", "--threads", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0]
