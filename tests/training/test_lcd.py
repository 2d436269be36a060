"""Latent consistency distillation (laspa_train.lcd): the maths against diffusers'
LCMScheduler, the student's initialisation, gradients, and exact resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import LCMScheduler, UNet2DConditionModel
from safetensors.torch import load_file

from laspa.ddim import guidance_embedding
from laspa.mini import LCM_DIR
from laspa.testing import tiny_components
from laspa_train import lcd


def _scheduler() -> LCMScheduler:
    return LCMScheduler.from_pretrained(str(LCM_DIR / "scheduler"))


@pytest.mark.parametrize("t", [0, 1, 19, 259, 999])
def test_boundary_scalings_are_lcm_schedulers(t: int) -> None:
    expected = _scheduler().get_scalings_for_boundary_condition_discrete(t)
    c_skip, c_out = lcd.boundary_scalings(torch.tensor([t]))
    assert c_skip.item() == pytest.approx(expected[0], rel=1e-6)
    assert c_out.item() == pytest.approx(expected[1], rel=1e-6, abs=1e-12)


def test_the_consistency_function_is_the_identity_at_the_boundary() -> None:
    c_skip, c_out = lcd.boundary_scalings(torch.tensor([0]))
    x, x0 = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    assert torch.equal(lcd.consistency(x, x0, c_skip, c_out), x)


def test_solver_grid_is_the_schedulers_original_timesteps() -> None:
    scheduler = _scheduler()
    scheduler.set_timesteps(50)
    grid = lcd.solver_timesteps(1000, scheduler.config.original_inference_steps)
    assert sorted(scheduler.timesteps.tolist()) == grid.tolist()


def test_ddim_step_reaches_x0_and_noise_consistently() -> None:
    x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    a_t, a_s = torch.tensor(0.3).view(1, 1, 1, 1), torch.tensor(0.7).view(1, 1, 1, 1)
    x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
    assert torch.allclose(lcd.x0_from_eps(x_t, eps, a_t), x0, atol=1e-5)
    x_s = lcd.ddim_step(x0, eps, a_s)
    assert torch.allclose(lcd.x0_from_eps(x_s, eps, a_s), x0, atol=1e-5)


def _teacher() -> UNet2DConditionModel:
    return tiny_components(0)[3].eval().requires_grad_(False)


def test_the_student_starts_as_the_teacher_for_every_guidance() -> None:
    teacher = _teacher()
    student = lcd.student_from_teacher(teacher).eval()
    assert student.config.time_cond_proj_dim == lcd.TIME_COND_PROJ_DIM
    x, text = torch.randn(2, 4, 16, 16), torch.randn(2, 8, 32)
    t = torch.tensor([999, 259])
    with torch.no_grad():
        expected = teacher(x, t, text).sample
        for w in (2.0, 7.0):
            w_cond = guidance_embedding(torch.full((2,), w), lcd.TIME_COND_PROJ_DIM)
            assert torch.equal(student(x, t, text, timestep_cond=w_cond).sample, expected)


def test_only_the_student_learns() -> None:
    teacher = _teacher()
    student = lcd.student_from_teacher(teacher)
    target = lcd.student_from_teacher(teacher).requires_grad_(False)
    loss = lcd.lcd_loss(
        torch.randn(2, 4, 16, 16), torch.randn(2, 8, 32), torch.zeros(2, 8, 32),
        student, target, teacher, _scheduler().alphas_cumprod.float(),
        lcd.solver_timesteps(1000, 50), (3.0, 8.0), 0.001,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    loss.backward()
    assert loss.item() > 0
    assert student.time_embedding.cond_proj.weight.grad is not None
    assert all(p.grad is None for p in [*teacher.parameters(), *target.parameters()])


def test_target_update_moves_towards_the_student() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    lcd.update_target(a, b, decay=0.95)
    assert torch.allclose(a.weight, 0.95 * before + 0.05 * b.weight)


def _run(tmp: Path, *extra: str) -> None:
    code = lcd.main([
        "--no-quick-eval", "--batch-size", "2", "--threads", "1",
        "--run-dir", str(tmp / "run"), "--checkpoint-dir", str(tmp / "ckpt"),
        "--export-dir", str(tmp / "model"), *extra,
    ])  # fmt: skip
    assert code == 0


@pytest.mark.slow
def test_an_interrupted_run_resumes_exactly(tmp_path: Path) -> None:
    """Two steps, stop, two more with --resume: the same weights as four in one go."""
    _run(tmp_path / "whole", "--max-steps", "4")
    _run(tmp_path / "split", "--max-steps", "2")
    _run(tmp_path / "split", "--max-steps", "4", "--resume")
    whole = load_file(str(tmp_path / "whole" / "run" / "state" / "weights.safetensors"))
    split = load_file(str(tmp_path / "split" / "run" / "state" / "weights.safetensors"))
    assert whole.keys() == split.keys()
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    state = json.loads((tmp_path / "split" / "ckpt" / "state.json").read_text())
    assert state["step"] == 4
    exported = UNet2DConditionModel.from_pretrained(str(tmp_path / "split" / "model" / "unet"))
    assert exported.config.time_cond_proj_dim == lcd.TIME_COND_PROJ_DIM
