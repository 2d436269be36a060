"""docs/cli.md is what `python -m laspa.docgen` writes from the live CLI and option schema."""

from __future__ import annotations

from pathlib import Path

from laspa import docgen
from laspa.methods.base import METHODS

ROOT = Path(__file__).resolve().parents[2]


def test_docs_cli_md_is_what_the_generator_writes():
    written = (ROOT / "docs/cli.md").read_text(encoding="utf-8")
    assert written == docgen.render(), "docs/cli.md is stale: run python -m laspa.docgen"


def test_every_command_and_every_method_option_is_in_it():
    text = docgen.render()
    for path, command, _ in docgen.commands():
        assert f"## {' '.join(path)}\n" in text
        for param in command.params:
            if param.param_type_name == "option":
                assert f"`{param.opts[-1]}" in text or param.opts[-1] in text
    from laspa.methods.options import method_options

    for method in METHODS:
        assert f"### {method}\n" in text
        for spec in method_options(method):
            assert f"| `{spec.name}` |" in text


def test_check_mode_says_when_the_file_is_stale(tmp_path, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text("# old\n")
    assert docgen.main(["--output", str(stale), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert docgen.main(["--output", str(stale)]) == 0
    assert docgen.main(["--output", str(stale), "--check"]) == 0
    assert stale.read_text() == docgen.render()
