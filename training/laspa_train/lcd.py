"""Latent consistency distillation (LCD) of the bundled miniature into ``mini-lcm``.

    PYTHONPATH=training python -m laspa_train.lcd --minutes 60 [--resume]

Luo et al. 2023, "Latent Consistency Models", Algorithm 1 (as diffusers'
``train_lcm_distill_sd_wds.py`` runs it), on the scene world:

- **teacher**: the bundled UNet and text encoder, frozen, sampled with a skipping-step
  DDIM solver on the 50 timesteps t_n = 20 n - 1 (``--solver-steps``), with
  classifier-free guidance w ~ U[w_min, w_max] drawn per example (w = scale - 1, the
  convention of diffusers' LCM pipeline, which embeds ``guidance_scale - 1``);
- **student** f_theta(x_t, t, c, w) = c_skip(t) x_t + c_out(t) x0_theta(x_t, t, c, w): the
  teacher's UNet with ``time_cond_proj_dim`` = 32, the w-embedding entering through a
  zero-initialised projection, so the student starts as the teacher;
- **target** f_theta-(x_s, s, c, w): an EMA of the student (``--target-decay``), evaluated
  at the teacher's DDIM step x_s from x_t;
- **loss**: pseudo-Huber d(a, b) = sqrt(|a - b|^2 + c^2) - c.

c_skip and c_out are LCMScheduler's discrete boundary scalings (sigma_data 0.5,
timestep scaling 10), so f(x, 0) = x at the boundary and the exported UNet runs in
diffusers' ``LatentConsistencyModelPipeline`` and laspa's ``lcm`` sampler.

Training state: ``runs/mini/lcm/state`` (exact, every ``--checkpoint-every`` minutes) and
``training/checkpoints/lcm`` (compact, committed; written at every export). ``--resume``
continues from the first that exists. The online student is exported to
``src/laspa/mini/lcm/unet`` every ``--export-every`` minutes and at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import LatentConsistencyModelPipeline, LCMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from laspa.ddim import guidance_embedding
from laspa.families import token_ids as tokenize
from laspa.mini import LCM_DIR, WEIGHTS_DIR
from laspa_train.checkpoint import load_checkpoint, named_params, replace_folder, save_checkpoint
from laspa_train.data import (
    brief_selection,
    eval_scenes,
    held_out_captions,
    make_batch,
    training_scenes,
)
from laspa_train.train import (
    Clock,
    StopFlag,
    _past,
    encode_latents,
    load_frozen_vae,
    log_line,
    run_parser,
)

#: the w-embedding's width (diffusers' LCM-distilled SD 1.5 uses 256; 32 suffices for a
#: scalar on a 1.7 M parameter UNet and keeps the export small)
TIME_COND_PROJ_DIM = 32


# ------------------------------------------------------------------- the maths


def boundary_scalings(
    timesteps: torch.Tensor, timestep_scaling: float = 10.0, sigma_data: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of the consistency function at integer timesteps, as LCMScheduler's
    ``get_scalings_for_boundary_condition_discrete``: c_skip(0) = 1, c_out(0) = 0."""
    scaled = timesteps.double() * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2).sqrt()
    return c_skip.float(), c_out.float()


def solver_timesteps(num_train_timesteps: int, solver_steps: int) -> torch.Tensor:
    """The skipping-step solver's grid t_n = n k - 1 (n = 1..N, k = T / N): the same
    timesteps LCMScheduler draws its inference steps from (``original_inference_steps``)."""
    k = num_train_timesteps // solver_steps
    return torch.arange(1, solver_steps + 1) * k - 1


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - a) eps) / sqrt(a), with ``alpha_bar`` shaped (B, 1, 1, 1)."""
    return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (eta 0) to the previous timestep."""
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev).sqrt() * eps


def consistency(x: torch.Tensor, x0: torch.Tensor, c_skip, c_out) -> torch.Tensor:
    """f(x, t) = c_skip(t) x + c_out(t) x0(x, t)."""
    return c_skip.view(-1, 1, 1, 1) * x + c_out.view(-1, 1, 1, 1) * x0


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """Mean of sqrt((a - b)^2 + c^2) - c, elementwise as diffusers' LCD script does."""
    return (torch.sqrt((a.float() - b.float()) ** 2 + c**2) - c).mean()


def student_from_teacher(teacher: UNet2DConditionModel) -> UNet2DConditionModel:
    """The teacher's architecture and weights plus a zero-initialised w-embedding input, so
    that before training the student predicts exactly the teacher's unguided noise."""
    config = {**teacher.config, "time_cond_proj_dim": TIME_COND_PROJ_DIM}
    student = UNet2DConditionModel.from_config(config)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any("cond_proj" not in name for name in missing):
        raise RuntimeError(f"student does not match the teacher: {missing} {unexpected}")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student


def lcd_loss(
    latents: torch.Tensor,
    text: torch.Tensor,
    empty_text: torch.Tensor,
    student: UNet2DConditionModel,
    target: UNet2DConditionModel,
    teacher: UNet2DConditionModel,
    alphas_cumprod: torch.Tensor,
    grid: torch.Tensor,
    w_range: tuple[float, float],
    huber_c: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The LCD loss of one batch: clean latents (B, 4, h, w), text states (B, L, D)."""
    batch = latents.shape[0]
    k = int(grid[0]) + 1  # solver stride
    index = torch.randint(0, len(grid), (batch,), generator=generator)
    t = grid[index]
    s = (t - k).clamp_min(0)
    noise = torch.randn(latents.shape, generator=generator)
    a_t = alphas_cumprod[t].view(-1, 1, 1, 1)
    a_s = alphas_cumprod[s].view(-1, 1, 1, 1)
    x_t = a_t.sqrt() * latents + (1 - a_t).sqrt() * noise
    w = w_range[0] + (w_range[1] - w_range[0]) * torch.rand(batch, generator=generator)
    w_cond = guidance_embedding(w, student.config.time_cond_proj_dim)
    c_skip_t, c_out_t = boundary_scalings(t)
    c_skip_s, c_out_s = boundary_scalings(s)

    eps = student(x_t, t, text, timestep_cond=w_cond).sample
    prediction = consistency(x_t, x0_from_eps(x_t, eps, a_t), c_skip_t, c_out_t)
    with torch.no_grad():
        both = teacher(
            torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, empty_text])
        ).sample
        cond, uncond = both.chunk(2)
        guided = cond + w.view(-1, 1, 1, 1) * (cond - uncond)
        x_s = ddim_step(x0_from_eps(x_t, guided, a_t), guided, a_s)
        eps_s = target(x_s, s, text, timestep_cond=w_cond).sample
        goal = consistency(x_s, x0_from_eps(x_s, eps_s, a_s), c_skip_s, c_out_s)
    return pseudo_huber(prediction, goal, huber_c)


@torch.no_grad()
def update_target(target: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """theta- <- decay theta- + (1 - decay) theta."""
    torch._foreach_lerp_(list(target.parameters()), list(student.parameters()), 1.0 - decay)


# ------------------------------------------------------------------- the run


def load_teacher(folder: Path) -> tuple[CLIPTokenizer, CLIPTextModel, UNet2DConditionModel]:
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder")).eval()
    teacher = UNet2DConditionModel.from_pretrained(str(folder / "unet")).eval()
    return tokenizer, text_encoder.requires_grad_(False), teacher.requires_grad_(False)


def export_student(student: UNet2DConditionModel, folder: Path, step: int) -> None:
    """Replace ``folder/unet`` (whole folder swapped in when written) and note the step
    in the model card."""
    tmp = folder / "unet.tmp"
    student.save_pretrained(str(tmp), safe_serialization=True)
    replace_folder(tmp, folder / "unet")
    card = folder / "README.md"
    if card.exists():
        text = re.sub(r"distillation step \d+", f"distillation step {step}", card.read_text())
        card.write_text(text)


@torch.no_grad()
def quick_faithfulness(
    folder: Path, student: UNet2DConditionModel, steps: int, guidance: float
) -> dict[str, float | None]:
    """Faithfulness (laspa_train.evaluate) of the student at ``steps`` LCM steps on 24
    one- and two-object held-out captions."""
    from laspa_train.evaluate import faithfulness

    pipe = LatentConsistencyModelPipeline.from_pretrained(
        str(folder), unet=student, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    one = faithfulness(pipe, eval_scenes(24, 1), steps=steps, guidance=guidance)
    two = faithfulness(pipe, eval_scenes(24, 2), steps=steps, guidance=guidance)
    return {"faithfulness_one": one, "faithfulness_two": two}


def _resume_source(args: argparse.Namespace) -> Path | None:
    for folder in (args.run_dir / "state", args.checkpoint_dir):
        if (folder / "state.json").exists():
            return folder
    raise SystemExit(f"--resume: no lcm checkpoint in {args.run_dir} or {args.checkpoint_dir}")


def train(args: argparse.Namespace) -> int:
    args.run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    tokenizer, text_encoder, teacher = load_teacher(args.teacher)
    vae = load_frozen_vae(argparse.Namespace(run_dir=args.run_dir.parent))
    student = student_from_teacher(teacher)
    if args.init_from_export is not None:
        exported = UNet2DConditionModel.from_pretrained(str(args.init_from_export))
        student.load_state_dict(exported.state_dict())
    target = UNet2DConditionModel.from_config(student.config).eval().requires_grad_(False)
    target.load_state_dict(student.state_dict())
    student.train()
    modules: dict[str, torch.nn.Module] = {"unet": student}
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0}
    if args.resume:
        source = _resume_source(args)
        state, target_state = load_checkpoint(source, modules, optimizer, rng)
        if target_state is not None:
            with torch.no_grad():
                for name, param in named_params({"unet": target}, False).items():
                    param.copy_(target_state[name])
        print(f"resumed lcm from {source} at step {state['step']}", flush=True)
    elif args.init_from_export is not None:
        state["init_from_export"] = str(args.init_from_export)
    state.update(
        w_range=[args.w_min, args.w_max],
        solver_steps=args.solver_steps,
        brief_captions=args.brief_captions,
    )
    scheduler = LCMScheduler.from_pretrained(str(LCM_DIR / "scheduler"))
    alphas_cumprod = scheduler.alphas_cumprod.float()
    grid = solver_timesteps(scheduler.config.num_train_timesteps, args.solver_steps)
    excluded = held_out_captions()
    with torch.no_grad():
        empty = text_encoder(tokenize(tokenizer, [""])).last_hidden_state
    log = args.run_dir / "log.jsonl"
    clock = Clock(args.minutes * 60, state["elapsed_s"])
    flag = StopFlag()
    step = state["step"]
    last = dict.fromkeys(("log", "ckpt", "export"), time.time())
    losses: list[float] = []
    times: list[float] = []

    def checkpoint(folder: Path, compact: bool) -> None:
        state.update(step=step, elapsed_s=clock.total_elapsed(), batch_size=args.batch_size)
        target_state = {k: v.detach() for k, v in named_params({"unet": target}, False).items()}
        save_checkpoint(folder, modules, target_state, optimizer, rng, state, compact=compact)

    def export_now() -> None:
        if args.export_dir is not None:
            export_student(student, args.export_dir, step)
        checkpoint(args.checkpoint_dir, compact=True)
        record: dict[str, Any] = {"stage": "lcm", "export": True, "step": step}
        if args.quick_eval:
            record.update(quick_faithfulness(args.teacher_view, student.eval(), 4, args.guidance))
            student.train()
        log_line(log, record)

    def finished() -> bool:
        past_steps = args.max_steps is not None and step >= args.max_steps
        return past_steps or clock.done() or flag.stop or _past(args.stop_at)

    while not finished():
        t0 = time.time()
        scenes = training_scenes(rng, args.batch_size, excluded)
        named = brief_selection(rng, scenes, args.brief_captions, excluded)
        batch = make_batch(scenes, named=named)
        with torch.no_grad():
            text = text_encoder(tokenize(tokenizer, batch.captions)).last_hidden_state
        latents = encode_latents(vae, batch.images)
        loss = lcd_loss(
            latents, text, empty.expand_as(text), student, target, teacher,
            alphas_cumprod, grid, (args.w_min, args.w_max), args.huber_c,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        update_target(target, student, args.target_decay)
        step += 1
        losses.append(loss.item())
        times.append(time.time() - t0)
        now = time.time()
        if now - last["log"] >= 60:
            log_line(log, {
                "stage": "lcm", "step": step, "loss": round(float(np.mean(losses)), 5),
                "s_per_step": round(float(np.mean(times)), 3),
                "elapsed_s": round(clock.total_elapsed()),
            })  # fmt: skip
            losses.clear()
            times.clear()
            last["log"] = now
        if now - last["ckpt"] >= args.checkpoint_every * 60:
            checkpoint(args.run_dir / "state", compact=False)
            last["ckpt"] = now
        if now - last["export"] >= args.export_every * 60:
            export_now()
            last["export"] = now
    checkpoint(args.run_dir / "state", compact=False)
    export_now()
    print(json.dumps({"step": step, "elapsed_s": round(clock.total_elapsed())}), flush=True)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = run_parser("python -m laspa_train.lcd", __doc__)
    p.add_argument(
        "--init-from-export",
        type=Path,
        default=None,
        help="start the student (and target) from an exported LCM unet folder",
    )
    p.add_argument("--teacher", type=Path, default=WEIGHTS_DIR, help="the bundled model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--w-min", type=float, default=3.0, help="guidance scale - 1, lowest")
    p.add_argument("--w-max", type=float, default=8.0, help="guidance scale - 1, highest")
    p.add_argument("--solver-steps", type=int, default=50, help="DDIM solver grid size N")
    p.add_argument("--target-decay", type=float, default=0.95, help="EMA of the target net")
    p.add_argument("--huber-c", type=float, default=0.001, help="pseudo-Huber constant")
    p.add_argument("--brief-captions", type=float, default=0.5, help="as the teacher was trained")
    p.add_argument("--guidance", type=float, default=8.0, help="quick evaluation's scale")
    p.add_argument("--no-quick-eval", dest="quick_eval", action="store_false")
    p.add_argument("--checkpoint-every", type=float, default=3.0, help="minutes")
    p.add_argument("--export-every", type=float, default=30.0, help="minutes")
    p.add_argument(
        "--export-dir", type=Path, default=LCM_DIR, help="the LCM folder whose unet/ to replace"
    )
    p.add_argument("--run-dir", type=Path, default=Path("runs/mini/lcm"))
    p.add_argument("--checkpoint-dir", type=Path, default=Path("training/checkpoints/lcm"))
    args = p.parse_args(argv)
    # the quick evaluation loads the whole LCM folder (vae, tokenizer, scheduler) around
    # the live student
    args.teacher_view = args.export_dir if args.export_dir is not None else LCM_DIR
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
