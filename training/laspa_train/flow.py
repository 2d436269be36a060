"""Train ``mini-flow``: a small SD3 (MMDiT) transformer on the scene world, by flow matching.

    PYTHONPATH=training python -m laspa_train.flow --minutes 120 [--resume]

The model is a diffusers ``StableDiffusion3Pipeline``: the bundled VAE and text encoder
are reused frozen (the text encoder with an identity ``text_projection`` so that its
pooled output is SD3's ``text_embeds``; it serves as both CLIP encoders, no T5), and
only the ``SD3Transformer2DModel`` is trained, from scratch, with rectified flow
matching as SD3 was (Esser et al. 2024, section 2 and 3.1):

    x_s = (1 - s) x0 + s eps,   s = sigmoid(n), n ~ N(0, 1)   (logit-normal)
    loss = | v_theta(x_s, s, c) - (eps - x0) |^2

with 10% empty captions for classifier-free guidance, brief captions as the bundled
model was trained (``--brief-captions``), AdamW with warmup and an EMA of the weights.
The transformer starts as DiT's adaLN-Zero (every block's modulation and the output
projection zero), so each block starts as the identity.

**The T5 slot.** Without T5, diffusers' SD3 pipeline conditions on the CLIP tokens
followed by ``max_sequence_length`` (256) zero tokens. Those 256 tokens are identical
all through the network (same input, same per-token operations), so in every softmax
they act as one key with multiplicity 256: one zero token whose key gets ``+log 256``
on its logits computes exactly the same. Training uses that (laspa's joint-attention
processor with ``last_token_repeats``, as the engine runs SD3 without T5),
which makes a step ~4x cheaper than with 296 text tokens; the exported model is run
by the stock pipeline with its 256 zeros. ``tests/training/test_flow_train.py`` checks
the identity.

State: ``runs/flow/state`` (exact, every ``--checkpoint-every`` minutes) and
``training/checkpoints/flow`` (compact, committed; written at every export); ``--resume``
continues from the first that exists. The EMA transformer is exported to
``src/laspa/mini/flow`` every ``--export-every`` minutes and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from laspa.attention import install_joint_processors
from laspa.families import StableDiffusion3Text
from laspa.mini import FLOW_DIR, WEIGHTS_DIR
from laspa_train.checkpoint import load_checkpoint, replace_folder, save_checkpoint
from laspa_train.data import (
    brief_selection,
    eval_scenes,
    held_out_captions,
    make_batch,
    training_scenes,
)
from laspa_train.train import (
    EMA,
    Clock,
    StopFlag,
    _past,
    encode_latents,
    log_line,
    run_parser,
    save_image_grid,
    to_pil,
    warmup_lr,
)

#: patch 2 on the 16 x 16 x 4 latent: 64 image tokens; width 128 = 4 heads of 32
TRANSFORMER_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "patch_size": 2,
    "in_channels": 4,
    "out_channels": 4,
    "num_layers": 5,
    "attention_head_dim": 32,
    "num_attention_heads": 4,
    "joint_attention_dim": 128,  # both CLIP encoders' 64 side by side
    "caption_projection_dim": 128,
    "pooled_projection_dim": 128,
    "pos_embed_max_size": 16,
    "qk_norm": "rms_norm",
}
#: 64 px images on a 16 x 16 latent need no shift towards noise (SD3 uses 3.0 at 1024 px)
SHIFT = 1.0
#: what diffusers' StableDiffusion3Pipeline puts in T5's place without T5
T5_TOKENS = 256


# ------------------------------------------------------------------- components


def make_transformer() -> SD3Transformer2DModel:
    """The MMDiT with adaLN-Zero initialisation (DiT, Peebles & Xie 2023)."""
    model = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
    install_joint_processors(model)  # takes last_token_repeats (the merged T5 tokens)
    with torch.no_grad():
        for block in model.transformer_blocks:
            for norm in (block.norm1, block.norm1_context):
                norm.linear.weight.zero_()
                norm.linear.bias.zero_()
        model.norm_out.linear.weight.zero_()
        model.norm_out.linear.bias.zero_()
        model.proj_out.weight.zero_()
        model.proj_out.bias.zero_()
    return model


def load_text_encoder(
    folder: Path = WEIGHTS_DIR,
) -> tuple[CLIPTokenizer, CLIPTextModelWithProjection]:
    """The bundled tokenizer and text encoder, the latter with an identity projection
    (its pooled output becomes ``text_embeds``), frozen."""
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    encoder = CLIPTextModelWithProjection.from_pretrained(str(folder / "text_encoder"))
    with torch.no_grad():
        encoder.text_projection.weight.copy_(torch.eye(encoder.config.projection_dim))
    encoder.config.architectures = ["CLIPTextModelWithProjection"]
    return tokenizer, encoder.eval().requires_grad_(False)


def load_vae(folder: Path = WEIGHTS_DIR) -> AutoencoderKL:
    """The bundled VAE, frozen, with ``shift_factor`` 0 (SD3's pipeline needs a number)."""
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"))
    vae.register_to_config(shift_factor=0.0)
    return vae.eval().requires_grad_(False)


def text_model(tokenizer, encoder, merged: bool = True) -> StableDiffusion3Text:
    """SD3's prompt encoding (laspa.families), without T5: the pipeline's 256 zero tokens,
    or with ``merged`` one of them standing for all (``last_token_repeats``)."""
    return StableDiffusion3Text(
        (encoder, encoder), (tokenizer, tokenizer), torch.device("cpu"),
        TRANSFORMER_CONFIG["joint_attention_dim"], max_sequence_length=T5_TOKENS,
        merge_zero_tokens=merged,
    )  # fmt: skip


def velocity(transformer, x, context, pooled, t, repeats: int = 1) -> torch.Tensor:
    """The transformer's output; with ``repeats`` > 1 the context's last token counts that
    many times in every softmax (laspa's joint-attention processor, installed by
    `make_transformer`), as the engine runs SD3 without T5."""
    kwargs = {"last_token_repeats": repeats} if repeats > 1 else None
    return transformer(x, context, pooled, t, joint_attention_kwargs=kwargs, return_dict=False)[0]


# ------------------------------------------------------------------- the maths


def logit_normal(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise levels s = sigmoid(N(0, 1)) (SD3's default training density)."""
    return torch.sigmoid(torch.randn(n, generator=generator))


def flow_loss(
    x0: torch.Tensor, text: torch.Tensor, pooled: torch.Tensor, transformer,
    generator: torch.Generator | None = None, repeats: int = 1,
) -> torch.Tensor:  # fmt: skip
    """Conditional flow matching on the straight path x_s = (1 - s) x0 + s eps."""
    s = logit_normal(len(x0), generator).view(-1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=generator)
    x = (1 - s) * x0 + s * eps
    v = velocity(transformer, x, text, pooled, s.flatten() * 1000, repeats)
    return F.mse_loss(v, eps - x0)


def make_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SHIFT)


@torch.no_grad()
def sample(
    transformer, vae, text: StableDiffusion3Text, prompts: Sequence[str], steps: int,
    guidance: float, seed: int,
) -> torch.Tensor:  # fmt: skip
    """Images in [-1, 1] as StableDiffusion3Pipeline draws them (Euler on the scheduler's
    sigmas, guidance on the empty prompt), with whatever text tokens ``text`` gives."""
    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    cond, added = text.encode(list(prompts))
    uncond, added_u = text.encode([""] * len(prompts))
    context = torch.cat([uncond, cond])
    pooled = torch.cat([added_u["pooled_projections"], added["pooled_projections"]])
    shape = (len(prompts), TRANSFORMER_CONFIG["in_channels"], 16, 16)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    for t in scheduler.timesteps:
        v = velocity(transformer, torch.cat([x, x]), context, pooled, t.expand(2 * len(x)),
                     text.last_token_repeats)  # fmt: skip
        v_uncond, v_cond = v.chunk(2)
        x = scheduler.step(v_uncond + guidance * (v_cond - v_uncond), t, x).prev_sample
    return vae.decode(x / vae.config.scaling_factor + vae.config.shift_factor).sample


# ------------------------------------------------------------------- export


def assemble(transformer, vae, tokenizer, encoder) -> StableDiffusion3Pipeline:
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=make_scheduler(), vae=vae,
        text_encoder=encoder, tokenizer=tokenizer, text_encoder_2=encoder,
        tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None,
    )  # fmt: skip


def _link(path: Path, target: str) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    os.symlink(target, path)


def export(folder: Path, transformer, vae, tokenizer, encoder, step: int) -> None:
    """Write the diffusers folder atomically. The VAE weights, tokenizers and second text
    encoder are links to the bundled model's files (as mini-lcm's), so the folder adds
    the transformer, one text encoder with its projection and the configs."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = assemble(transformer, vae, tokenizer, encoder)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    weights = "diffusion_pytorch_model.safetensors"
    _link(tmp / "vae" / weights, f"../../weights/vae/{weights}")
    _link(tmp / "text_encoder_2", "text_encoder")
    _link(tmp / "tokenizer", "../weights/tokenizer")
    _link(tmp / "tokenizer_2", "../weights/tokenizer")
    card = folder / "README.md"
    if card.exists():
        text = card.read_text(encoding="utf-8")
        (tmp / "README.md").write_text(re.sub(r"training step \d+", f"training step {step}", text))
    replace_folder(tmp, folder)


# ------------------------------------------------------------------- training


def quick_faithfulness(transformer, vae, text, guidance: float, steps: int = 25) -> dict:
    """laspa_train.evaluate's faithfulness on 24 held-out one- and two-object captions."""
    from laspa.world import caption
    from laspa_train.evaluate import scene_faithfulness

    result = {}
    for count, name in ((1, "one"), (2, "two")):
        scenes = eval_scenes(24, count)
        prompts = [caption(s) for s in scenes]
        images = to_pil(sample(transformer, vae, text, prompts, steps, guidance, seed=0))
        result[f"quick_faithfulness_{name}"] = round(scene_faithfulness(scenes, images), 3)
    return result


def samples(path: Path, transformer, vae, text, guidance: float) -> None:
    from laspa.world import caption

    scenes = eval_scenes(4, 1) + eval_scenes(4, 2) + eval_scenes(4, 3)
    images = to_pil(sample(transformer, vae, text, [caption(s) for s in scenes], 25, guidance, 0))
    truth = to_pil(make_batch(scenes).images)
    save_image_grid([truth[:6], images[:6], truth[6:], images[6:]], path)


def _resume_source(args: argparse.Namespace) -> Path:
    for folder in (args.run_dir / "state", args.checkpoint_dir):
        if (folder / "state.json").exists():
            return folder
    raise SystemExit(f"--resume: no flow checkpoint in {args.run_dir} or {args.checkpoint_dir}")


def train(args: argparse.Namespace) -> int:
    args.run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    generator = torch.Generator().manual_seed(args.seed + 2)
    tokenizer, encoder = load_text_encoder()
    vae = load_vae()
    transformer = make_transformer().train()
    modules: dict[str, torch.nn.Module] = {"transformer": transformer}
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.lr, weight_decay=0.01)
    ema = EMA(modules, args.ema_decay)
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0}
    if args.resume:
        source = _resume_source(args)
        state, ema_state = load_checkpoint(source, modules, optimizer, rng)
        ema.load(ema_state if ema_state is not None else ema.state())
        if "generator" in state:
            generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        print(f"resumed flow from {source} at step {state['step']}", flush=True)
    state.update(brief_captions=args.brief_captions, config=TRANSFORMER_CONFIG, shift=SHIFT)
    text = text_model(tokenizer, encoder)
    excluded = held_out_captions()
    log = args.run_dir / "log.jsonl"
    clock = Clock(args.minutes * 60, state["elapsed_s"])
    flag = StopFlag()
    step = state["step"]
    last = dict.fromkeys(("log", "ckpt", "export", "eval", "sample"), time.time())
    losses: list[float] = []
    times: list[float] = []
    params = sum(p.numel() for p in transformer.parameters())
    print(f"transformer params {params}, step {step}", flush=True)

    def checkpoint(folder: Path, compact: bool) -> None:
        state.update(step=step, elapsed_s=clock.total_elapsed(), batch_size=args.batch_size,
                     generator=generator.get_state().tolist())  # fmt: skip
        save_checkpoint(folder, modules, ema.state(), optimizer, rng, state, compact=compact)

    def export_now() -> None:
        if args.export_dir is not None:
            export(args.export_dir, ema.modules["transformer"], vae, tokenizer, encoder, step)
        checkpoint(args.checkpoint_dir, compact=True)
        log_line(log, {"stage": "flow", "export": True, "step": step})

    def finished() -> bool:
        past_steps = args.max_steps is not None and step >= args.max_steps
        return past_steps or clock.done() or flag.stop or _past(args.stop_at)

    while not finished():
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = warmup_lr(step, args.lr, args.warmup)
        scenes = training_scenes(rng, args.batch_size, excluded)
        named = brief_selection(rng, scenes, args.brief_captions, excluded)
        batch = make_batch(scenes, named=named)
        captions = [
            "" if drop else c
            for c, drop in zip(batch.captions, rng.random(len(scenes)) < args.caption_dropout,
                               strict=True)
        ]  # fmt: skip
        context, added = text.encode(captions)
        x0 = encode_latents(vae, batch.images)
        loss = flow_loss(
            x0, context, added["pooled_projections"], transformer, generator,
            text.last_token_repeats,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        step += 1
        ema.update(step)
        losses.append(loss.item())
        times.append(time.time() - t0)
        now = time.time()
        if now - last["log"] >= 60:
            log_line(log, {
                "stage": "flow", "step": step, "loss": round(float(np.mean(losses)), 5),
                "s_per_step": round(float(np.mean(times)), 3),
                "elapsed_s": round(clock.total_elapsed()),
            })  # fmt: skip
            losses.clear()
            times.clear()
            last["log"] = now
        if now - last["ckpt"] >= args.checkpoint_every * 60:
            checkpoint(args.run_dir / "state", compact=False)
            last["ckpt"] = now
        if args.quick_eval_every and now - last["eval"] >= args.quick_eval_every * 60:
            record = quick_faithfulness(ema.modules["transformer"], vae, text, args.guidance)
            log_line(log, {"stage": "flow", "step": step, **record})
            last["eval"] = now
        if now - last["sample"] >= args.sample_every * 60:
            samples(args.run_dir / "samples" / f"flow_{step:06d}.png",
                    ema.modules["transformer"], vae, text, args.guidance)  # fmt: skip
            last["sample"] = now
        if now - last["export"] >= args.export_every * 60:
            export_now()
            last["export"] = now
    checkpoint(args.run_dir / "state", compact=False)
    export_now()
    print(json.dumps({"step": step, "elapsed_s": round(clock.total_elapsed())}), flush=True)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = run_parser("python -m laspa_train.flow", __doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--brief-captions", type=float, default=0.5, help="as the bundled model")
    p.add_argument("--guidance", type=float, default=5.0, help="quick evaluation and samples")
    p.add_argument("--quick-eval-every", type=float, default=15.0, help="minutes (0 = off)")
    p.add_argument("--sample-every", type=float, default=15.0, help="minutes")
    p.add_argument("--checkpoint-every", type=float, default=3.0, help="minutes")
    p.add_argument("--export-every", type=float, default=30.0, help="minutes")
    p.add_argument("--export-dir", type=Path, default=FLOW_DIR, help="the mini-flow folder")
    p.add_argument("--run-dir", type=Path, default=Path("runs/flow"))
    p.add_argument("--checkpoint-dir", type=Path, default=Path("training/checkpoints/flow"))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
