"""The commands' thread count: --threads, else torch's own."""

import pytest
import torch
from typer.testing import CliRunner

from laspa import ParameterError
from laspa.threads import apply_threads, check_threads


def test_threads_given_set_torch_and_none_keeps_torchs_own(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert apply_threads(2) == 2 == torch.get_num_threads()
        assert apply_threads(None) == 2  # left alone: torch's own (or the variables')
        torch.set_num_threads(1)
        assert apply_threads(None) == 1
    finally:
        torch.set_num_threads(before)


def test_threads_below_one_are_refused():
    with pytest.raises(ParameterError, match="--threads must be >= 1"):
        check_threads(0)
    check_threads(None)
    check_threads(1)


@pytest.mark.parametrize("command", ["edit", "sweep", "attention", "demo", "bench", "serve"])
def test_every_model_command_offers_threads_and_explains_the_default(command):
    from laspa.cli import _mount_subcommands, app

    _mount_subcommands()
    text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
    assert "--threads" in text
    assert "torch's own" in " ".join(text.split())


def test_threads_below_one_is_a_one_line_usage_error(tmp_path, capsys):
    from laspa.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["edit", str(tmp_path / "in.png"), "a cat", "-o", "out.png", "--threads", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0]
