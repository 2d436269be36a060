"""benchmarks/parity.py's argument checking: every mistake is one line and exit 2, before
any model loads. (The parity run itself needs the authors' code, which the tests never
use: docs/results.md, "Parity with the released code".)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch


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


def flowedit_checkout(folder: Path) -> Path:
    """A stand-in for FlowEdit's checkout holding only the lines the patches replace (the
    tests never use the authors' code)."""
    module = parity()
    text = "\n".join(patch.old for patch in module.FLOWEDIT_PATCHES)
    (folder / "FlowEdit_utils.py").write_text(text + "\n")
    return folder


def model_folder(folder: Path, pipeline: str) -> Path:
    folder.mkdir()
    (folder / "model_index.json").write_text(f'{{"_class_name": "{pipeline}"}}')
    return folder


def test_flowedit_checks_its_checkout_and_model_before_loading(tmp_path, capsys, monkeypatch):
    err = refused(capsys, monkeypatch, ["flowedit", str(tmp_path), "--model", str(tmp_path)])
    assert "FlowEdit checkout" in err and "FlowEdit_utils.py" in err
    code = flowedit_checkout(tmp_path)
    assert "needs --model" in refused(capsys, monkeypatch, ["flowedit", str(code)])
    err = refused(capsys, monkeypatch, ["flowedit", str(code), "--model", str(tmp_path / "no")])
    assert "no model_index.json" in err
    sd = model_folder(tmp_path / "sd", "StableDiffusionPipeline")
    err = refused(capsys, monkeypatch, ["flowedit", str(code), "--model", str(sd)])
    assert "StableDiffusionPipeline" in err and "SD3 and FLUX" in err
    flux = model_folder(tmp_path / "flux", "FluxPipeline")
    # FLUX's published n_max is 24: n_min 25 cannot be; n_min past the steps neither
    err = refused(capsys, monkeypatch, ["flowedit", str(code), "--model", str(flux),
                                        "--n-min", "25"])  # fmt: skip
    assert "--n-min (25) must be at most n_max (24)" in err
    err = refused(capsys, monkeypatch, ["flowedit", str(code), "--model", str(flux),
                                        "--steps", "4", "--n-min", "5", "--n-max", "9"])  # fmt: skip
    assert "the steps (4)" in err
    err = refused(capsys, monkeypatch, ["instdiffedit", str(code), "--model", str(flux)])
    assert "--model is for flowedit" in err


def test_flowedit_options_are_the_published_ones_unless_given(tmp_path):
    module = parity()
    code = str(flowedit_checkout(tmp_path))
    sd3 = str(model_folder(tmp_path / "sd3", "StableDiffusion3Pipeline"))
    args = module.parse(["flowedit", code, "--model", sd3])
    assert args.options == {"steps": 50, "n_max": 33, "src_guidance_scale": 3.5,
                            "tar_guidance_scale": 13.5, "n_min": 0, "n_avg": 1}  # fmt: skip
    flux = str(model_folder(tmp_path / "flux", "FluxPipeline"))
    args = module.parse(["flowedit", code, "--model", flux, "--steps", "10", "--n-avg", "2",
                         "--tar-guidance", "7"])  # fmt: skip
    assert args.options == {"steps": 10, "n_max": 24, "src_guidance_scale": 1.5,
                            "tar_guidance_scale": 7.0, "n_min": 0, "n_avg": 2}  # fmt: skip


def test_their_noise_is_the_edit_generators_draws_in_order():
    """What replaces their torch.randn_like: the draws laspa's Engine.noise makes for a
    one-row edit of that seed, one per call, packed for FLUX's token layout."""
    module = parity()
    shape = (1, 4, 4, 6)
    generator = torch.Generator().manual_seed(7)
    expected = [torch.randn(shape, generator=generator) for _ in range(3)]
    randn_like = module.their_noise(7, shape, None)
    for draw in expected:
        assert torch.equal(randn_like(torch.zeros(shape)), draw)
    packed = module.their_noise(7, shape, lambda x: x.reshape(1, 6, 16))
    assert torch.equal(packed(torch.zeros(1, 6, 16)), expected[0].reshape(1, 6, 16))
