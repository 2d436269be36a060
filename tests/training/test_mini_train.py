"""Trainer plumbing: resumable checkpoints, thread tuning, faithfulness scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from laspa.world import Scene, SceneObject
from laspa_train.checkpoint import load_checkpoint, save_checkpoint
from laspa_train.evaluate import score_scene
from laspa_train.threads import ThreadTuner


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))


def _trained_state() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    for _ in range(3):
        loss = model(torch.randn(5, 4)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("compact", [False, True])
def test_checkpoint_round_trip(tmp_path: Path, compact: bool) -> None:
    model, opt = _trained_state()
    rng = np.random.default_rng(3)
    rng.random(7)
    ema = {f"m.{k}": v.detach() * 0.5 for k, v in model.named_parameters()}
    save_checkpoint(tmp_path / "ck", {"m": model}, ema, opt, rng, {"step": 3}, compact=compact)
    expected_draw, expected_noise = rng.random(), torch.randn(3)

    torch.manual_seed(99)
    fresh = _model()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), 1e-2)
    fresh_rng = np.random.default_rng(0)
    state, loaded_ema = load_checkpoint(tmp_path / "ck", {"m": fresh}, fresh_opt, fresh_rng)
    assert state["step"] == 3 and state["compact"] is compact
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    tol = {"atol": 1e-2, "rtol": 1e-2} if compact else {}
    for name, value in ema.items():
        torch.testing.assert_close(loaded_ema[name], value, **tol)
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        torch.testing.assert_close(
            fresh_opt.state[q]["exp_avg_sq"], opt.state[p]["exp_avg_sq"], **tol
        )
    # The data stream and the noise continue exactly where they stopped.
    assert fresh_rng.random() == expected_draw
    torch.testing.assert_close(torch.randn(3), expected_noise)


def test_thread_tuner_drops_to_one_thread_when_contended() -> None:
    tuner = ThreadTuner(2, probe_every=5, probe_len=2)
    for _ in range(4):  # the 1-thread yardstick
        tuner.record(0.4)
    assert tuner.threads == 2
    tuner.record(0.2)
    tuner.record(0.2)  # probe ends: 2 threads are faster, keep them
    tuner.record(0.2)
    assert tuner.threads == 2
    tuner.record(3.0)  # someone else started a job
    assert tuner.threads == 1
    torch.set_num_threads(1)


def _scene(*objects: tuple[str, str, str]) -> Scene:
    return Scene("gray", tuple(SceneObject(s, c, "large", cell) for s, c, cell in objects))


def test_score_scene_counts_attributes() -> None:
    truth = _scene(("circle", "red", "top left"), ("star", "blue", "center"))
    assert score_scene(truth, truth) == (6, 6)
    assert score_scene(truth, None) == (0, 6)
    # One object read with the wrong colour and the other missing:
    # background + shape of the first (count wrong, second object lost).
    read = _scene(("circle", "green", "top left"))
    assert score_scene(truth, read) == (2, 6)
    # A slightly misplaced object still counts for colour and shape.
    moved = _scene(("circle", "red", "top"), ("star", "blue", "center"))
    assert score_scene(truth, moved) == (6, 6)
