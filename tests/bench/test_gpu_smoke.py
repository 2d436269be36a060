"""benchmarks/gpu_smoke.py: every method once, finite and repeatable, on a tiny folder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from laspa import METHODS


def gpu_smoke():
    path = Path(__file__).parents[2] / "benchmarks" / "gpu_smoke.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_smoke_runs_every_method_on_a_tiny_folder(tiny_model_dir, capsys):
    code = gpu_smoke().main(["--model", str(tiny_model_dir), "--device", "cpu", "--steps", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "on cpu in float32, 2 steps" in out and "peak RSS MB" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [row[0] for row in rows] == sorted(METHODS)
    for row in rows:
        assert row[-1] == "ok" and float(row[1]) > 0 and float(row[3]) > 0


def test_gpu_smoke_reports_what_fails():
    module = gpu_smoke()
    image = np.zeros((4, 4, 3), np.uint8)
    assert module.problems_of(image, image, torch.zeros(1)) == []
    other = image.copy()
    other[0, 0, 0] = 1
    assert module.problems_of(image, other, torch.tensor([float("nan")])) == [
        "output latent not finite",
        "same seed, different image",
    ]


def test_gpu_smoke_usage_errors_are_one_line(tiny_model_dir, capsys, tmp_path):
    module = gpu_smoke()
    assert module.main(["--methods", "laspa-x0,nope"]) == 2
    assert capsys.readouterr().err.strip() == "gpu_smoke: unknown method 'nope'"
    assert module.main(["--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu_smoke: model folder not found") and "\n" not in err
