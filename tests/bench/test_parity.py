"""benchmarks/parity.py's argument checking: every mistake is one line and exit 2, before
any model loads. (The parity run itself needs the authors' code, which the tests never
use: docs/results.md, "Parity with the released code".)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def parity():
    path = Path(__file__).parents[2] / "benchmarks" / "parity.py"
    spec = importlib.util.spec_from_file_location("parity", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def refused(capsys, monkeypatch, args: list[str]) -> str:
    module = parity()

    def no_model(*args, **kwargs):
        raise AssertionError("a model loaded before the arguments were checked")

    monkeypatch.setattr(module, "run", no_model)
    assert module.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("parity: error:")
    return err


def test_a_wrong_checkout_path_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    err = refused(capsys, monkeypatch, ["instdiffedit", str(missing)])
    assert str(missing) in err and "InstDiffEdit checkout" in err
    err = refused(capsys, monkeypatch, ["fpe", str(tmp_path)])
    assert "FreePromptEditing" in err and "Freeprompt/diffuser_utils.py" in err


def test_a_checkout_the_patches_do_not_fit_is_refused(tmp_path, capsys, monkeypatch):
    for name in ("diffuser_utils", "freeprompt", "freeprompt_utils"):
        path = tmp_path / "diffusion" / "FreePromptEditing" / "Freeprompt" / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# another version\n")
    err = refused(capsys, monkeypatch, ["fpe", str(tmp_path)])  # EasyNLP's root is accepted
    assert "0.18215" in err and "where 3 were expected" in err


@pytest.mark.parametrize(
    "args",
    [
        ["flowedit", "."],
        ["instdiffedit"],
        ["instdiffedit", ".", "--cases", "0"],
        ["fpe", ".", "--fraction", "1.5"],
        ["fpe", ".", "--threads", "0"],
        ["fpe", ".", "--json", "/no/such/folder/out.json"],
    ],
)
def test_bad_options_are_one_line_and_exit_2(args, capsys, monkeypatch):
    refused(capsys, monkeypatch, args)
