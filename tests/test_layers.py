"""The package's layers (pyproject.toml's [tool.importlinter]) hold: front ends above the
Editor above the methods above the engine above the sampler loop and the maths, and no
import circles. import-linter reads every import, lazy and TYPE_CHECKING ones included."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports  # the dev extra has it

import laspa

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]


def test_the_import_contracts_are_kept(capfd):
    status = lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    report = capfd.readouterr().out
    assert status == EXIT_STATUS_SUCCESS, report


def test_every_module_of_the_package_has_a_layer():
    (layers,) = [c["layers"] for c in _config()["contracts"] if c["type"] == "layers"]
    named = {
        name.strip().split(".")[0]
        for layer in layers
        for name in layer.replace("|", ":").split(":")
    }
    modules = {info.name for info in pkgutil.iter_modules(laspa.__path__)}
    assert modules - named == set(), "name the new module's place in [tool.importlinter]"
