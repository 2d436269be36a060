"""Train the bundled miniature Stable Diffusion on the procedural scene world.

    PYTHONPATH=training python -m laspa_train.train --stage vae  --minutes 35
    PYTHONPATH=training python -m laspa_train.train --stage unet --minutes 90 [--resume]
    PYTHONPATH=training python -m laspa_train.train --stage unet \
        --init-from training/checkpoints/unet \
        --attention-loss 0.1 --run-dir runs/ft --minutes 70      # fine-tune


Stage "vae" trains the AutoencoderKL until the held-out PSNR target or the
time budget, measures the latent std (-> `scaling_factor`, as SD does) and
exports a loadable pipeline. Stage "unet" freezes that VAE and trains the
UNet and the CLIP text encoder jointly (epsilon-prediction DDPM loss, 10%
empty captions for classifier-free guidance, AdamW with warmup, EMA), and
exports the EMA weights to the bundled folder every --export-every minutes.

`--attention-loss W` adds W times an attention-supervision loss: the
cross-attention of each object's size, colour and shape word should fall on
that object's pixels and that of the background colour word on the
background (see `attention_region_loss`). A from-scratch causal text encoder
otherwise spreads caption information over later tokens, so its word maps do
not localise anything, unlike Stable Diffusion's, on which the map-reading
methods (InstDiffEdit, LASPA semantic mixing) rely.

`--brief-captions P` lets a multi-object scene's caption name only a random
subset of its objects with probability P (`laspa_train.data.brief_selection`).
With complete captions only, a caption fixes the image, so the conditional
model ignores the noisy latent and every editor regenerates the caption;
with brief captions what the caption leaves out must come from the latent,
as with Stable Diffusion and real prompts. `--start-token-loss` supervises
the start token's attention towards the background, like Stable Diffusion's
start token (which InstDiffEdit inverts to find the object).

State lives in --run-dir (exact, every --checkpoint-every minutes); a compact
copy for git goes to --checkpoint-dir at each export. `--resume` continues
from the run dir, or from the committed compact copy when the run dir is gone;
`--init-from DIR` starts a fine-tune from a checkpoint folder (weights, EMA,
optimizer moments, step) when the run dir holds no state of its own yet.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image
from transformers import CLIPTokenizer

from laspa.attention import (
    AttentionState,
    LayerInfo,
    ProbabilityReplacement,
    StepInfo,
    coarse_cross_levels,
    describe_layers,
    install_processors,
    query_grid,
)
from laspa.families import token_ids as tokenize
from laspa.mini import WEIGHTS_DIR
from laspa.mini.tokenizer import write_tokenizer
from laspa.tokens import word_tokens
from laspa.world import VOCABULARY, Scene, SceneObject, caption, named_caption
from laspa_train.checkpoint import (
    load_checkpoint,
    named_params,
    replace_folder,
    save_checkpoint,
)
from laspa_train.components import (
    assemble_pipeline,
    count_params,
    make_scheduler,
    make_text_encoder,
    make_unet,
    make_vae,
    save_pipeline,
)
from laspa_train.data import (
    brief_selection,
    caption_regions,
    eval_scenes,
    held_out_captions,
    make_batch,
    training_scenes,
)
from laspa_train.evaluate import faithfulness, generate, vae_psnr
from laspa_train.threads import ThreadTuner

MAX_LENGTH = 40  # longest caption is 32 tokens with bos/eos; room for free prompts


# --------------------------------------------------------------------------- setup


@dataclass
class Clock:
    """Wall-clock budget of this run plus the time spent in earlier runs."""

    budget_s: float
    previous_s: float = 0.0
    start: float = field(default_factory=time.time)

    def run_elapsed(self) -> float:
        return time.time() - self.start

    def total_elapsed(self) -> float:
        return self.previous_s + self.run_elapsed()

    def done(self) -> bool:
        return self.run_elapsed() >= self.budget_s


class StopFlag:
    """Set by SIGTERM/SIGINT so the loop saves a checkpoint before exiting."""

    def __init__(self) -> None:
        self.stop = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_: Any) -> None:
        self.stop = True


def run_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a resumable trainer (laspa_train.lcd, laspa_train.flow) with the
    flags they share: the run's budget and resumption."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of this run")
    p.add_argument("--stop-at", default=None, help="also stop at this local time, HH:MM")
    p.add_argument("--max-steps", type=int, default=None, help="also stop after this step")
    p.add_argument("--resume", action="store_true")
    return p


def log_line(path: Path, record: dict[str, Any]) -> None:
    record = {"time": time.strftime("%H:%M:%S"), **record}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def warmup_lr(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / warmup)


def build_tokenizer(folder: Path) -> CLIPTokenizer:
    write_tokenizer(VOCABULARY, folder, MAX_LENGTH)
    return CLIPTokenizer.from_pretrained(str(folder))


def export(folder: Path, vae, text_encoder, tokenizer, unet) -> None:
    """Replace the bundled folder atomically-ish, keeping its model card."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pipeline(assemble_pipeline(vae, text_encoder, tokenizer, unet), tmp)
    # Use the files write_tokenizer made: save_pretrained writes tokenizer.json only
    # under transformers 5 (older loaders need vocab/merges) and would also freeze
    # the padding state of the last training call into it.
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        src = Path(tokenizer.name_or_path) / name
        if src.exists():
            shutil.copy(src, tmp / "tokenizer" / name)
    card = folder / "README.md"
    if card.exists():
        shutil.copy(card, tmp / "README.md")
    replace_folder(tmp, folder)


def save_image_grid(rows: list[list[Image.Image]], path: Path) -> None:
    """Rows of equally sized images into one PNG (scaled 2x for viewing)."""
    w, h = rows[0][0].size
    grid = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), "white")
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            grid.paste(im, (j * w, i * h))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(path)


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


# --------------------------------------------------------------------------- VAE


def vae_loss(vae: AutoencoderKL, batch, object_weight: float, kl_weight: float):
    """Object-weighted L1 + L2 reconstruction plus a small KL term.

    Objects cover ~5-15% of a scene, so an unweighted loss lets the VAE get
    colours of small objects wrong; the weight makes their pixels count more.
    """
    posterior = vae.encode(batch.images).latent_dist
    recon = vae.decode(posterior.sample()).sample
    weight = 1.0 + object_weight * batch.object_mask
    err = recon - batch.images
    rec = (weight * (err.abs() + err.square())).mean() / weight.mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    return rec + kl_weight * kl, rec.detach(), kl.detach()


@torch.no_grad()
def latent_std(vae: AutoencoderKL, n: int = 512) -> float:
    """Std of the VAE latents over scenes: SD scales latents by its inverse."""
    batch = make_batch(eval_scenes(n, seed=7))
    return float(vae.encode(batch.images).latent_dist.sample().std())


def vae_samples(vae: AutoencoderKL, path: Path) -> None:
    batch = make_batch(eval_scenes(8))
    with torch.no_grad():
        recon = vae.decode(vae.encode(batch.images).latent_dist.mode()).sample
    save_image_grid([to_pil(batch.images), to_pil(recon)], path)


def train_vae(args: argparse.Namespace) -> None:
    run = args.run_dir / "vae"
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    vae = make_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0, "best_psnr": 0.0}
    source = _resume_source(args, "vae")
    if source is not None:
        state, _ = load_checkpoint(source, {"vae": vae}, optimizer, rng)
        print(f"resumed vae from {source} at step {state['step']}", flush=True)
    log = run / "log.jsonl"
    excluded = held_out_captions()
    held_out = eval_scenes(128)
    clock = Clock(args.minutes * 60, state["elapsed_s"])
    flag = StopFlag()
    step = state["step"]
    last_eval = last_ckpt = last_sample = time.time()
    losses: list[float] = []
    print(f"vae params {count_params(vae)}", flush=True)

    def checkpoint() -> None:
        state.update(step=step, elapsed_s=clock.total_elapsed())
        save_checkpoint(run / "state", {"vae": vae}, None, optimizer, rng, state)

    tuner = ThreadTuner(args.threads)
    while not (clock.done() or flag.stop or _past(args.stop_at)):
        t0 = time.time()
        lr = warmup_lr(step, args.lr, 200) * _tail_decay(clock, args.lr_tail)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = make_batch(training_scenes(rng, args.batch_size, excluded))
        loss, rec, _ = vae_loss(vae, batch, args.object_weight, args.kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(float(rec))
        tuner.record(time.time() - t0)
        now = time.time()
        if now - last_eval >= args.eval_every * 60:
            vae.eval()
            value = vae_psnr(vae, held_out)
            vae.train()
            state["best_psnr"] = max(state["best_psnr"], value)
            log_line(
                log,
                {
                    "stage": "vae",
                    "step": step,
                    "rec": float(np.mean(losses)),
                    "lr": lr,
                    "threads": tuner.threads,
                    "psnr": round(value, 3),
                    "elapsed_s": round(clock.total_elapsed()),
                },
            )
            losses.clear()
            last_eval = now
            if value >= args.target_psnr:
                print(f"held-out PSNR {value:.2f} >= target {args.target_psnr}", flush=True)
                break
        if now - last_sample >= args.sample_every * 60:
            vae_samples(vae, args.run_dir / "samples" / f"vae_{step:06d}.png")
            last_sample = now
        if now - last_ckpt >= args.checkpoint_every * 60:
            checkpoint()
            last_ckpt = now
    checkpoint()
    finish_vae(args, vae, step)
    save_checkpoint(
        args.checkpoint_dir / "vae",
        {"vae": vae},
        None,
        optimizer,
        rng,
        {**state, "step": step},
        compact=True,
    )


def _tail_decay(clock: Clock, fraction: float) -> float:
    """1 until the last `fraction` of the run's budget, then linear down to 0.1."""
    left = 1.0 - clock.run_elapsed() / clock.budget_s
    return 1.0 if left >= fraction else 0.1 + 0.9 * max(left, 0.0) / fraction


def finish_vae(args: argparse.Namespace, vae: AutoencoderKL, step: int) -> None:
    """Set scaling_factor from the measured latent std; save and export."""
    vae.eval()
    std = latent_std(vae)
    vae.register_to_config(scaling_factor=1.0 / std)
    value = vae_psnr(vae, eval_scenes(256))
    log_line(
        args.run_dir / "vae" / "log.jsonl",
        {
            "stage": "vae",
            "final": True,
            "step": step,
            "psnr": round(value, 3),
            "latent_std": std,
            "scaling_factor": 1.0 / std,
        },
    )
    vae.save_pretrained(str(args.run_dir / "vae" / "final"), safe_serialization=True)
    vae_samples(vae, args.run_dir / "samples" / f"vae_final_{step:06d}.png")
    if args.export:
        # A loadable pipeline right away (UNet untrained until stage unet exports).
        tokenizer = build_tokenizer(args.run_dir / "tokenizer")
        torch.manual_seed(args.seed)
        export(WEIGHTS_DIR, vae, make_text_encoder(tokenizer), tokenizer, make_unet())


# --------------------------------------------------------------------------- UNet


def load_frozen_vae(args: argparse.Namespace) -> AutoencoderKL:
    local = args.run_dir / "vae" / "final"
    folder = local if local.exists() else WEIGHTS_DIR / "vae"
    vae = AutoencoderKL.from_pretrained(str(folder))
    vae.requires_grad_(False)
    return vae.eval()


class EMA:
    """Exponential moving average of parameters, kept as module copies."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float) -> None:
        self.modules = {
            k: copy.deepcopy(m).requires_grad_(False).eval() for k, m in modules.items()
        }
        self.source = modules
        self.decay = decay

    def update(self, step: int) -> None:
        # Shorter memory early on so the EMA is not dominated by the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        ema = list(named_params(self.modules, trainable_only=False).values())
        live = list(named_params(self.source).values())
        with torch.no_grad():
            torch._foreach_lerp_(ema, live, 1.0 - decay)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in named_params(self.modules, trainable_only=False).items()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param in named_params(self.modules, trainable_only=False).items():
                param.copy_(tensors[name])


def diffusion_loss(
    batch_latents: torch.Tensor, ids: torch.Tensor, unet, text_encoder, scheduler
) -> torch.Tensor:
    noise = torch.randn_like(batch_latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(ids),))
    noisy = scheduler.add_noise(batch_latents, noise, t)
    hidden = text_encoder(ids).last_hidden_state
    return F.mse_loss(unet(noisy, t, hidden).sample, noise)


# ----------------------------------------------------------------- attention supervision


@dataclass
class AttentionTargets:
    """The supervised tokens of one batch: for each, its batch row, token position and
    region (1 inside, 0 outside) at image resolution."""

    rows: torch.Tensor  # (N,) long
    positions: torch.Tensor  # (N,) long
    regions: torch.Tensor  # (N, H, W) float in [0, 1]
    #: (N,) bool: the token's map should spread evenly over its region (KL to the region
    #: normalised), not merely lie inside it; None: no such token
    spread: torch.Tensor | None = None
    _on_grid: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def on_grid(self, grid: tuple[int, int]) -> torch.Tensor:
        """Regions area-averaged to a query grid, each rescaled to peak 1, (N, h*w).

        A grid cell counts by the fraction of its pixels the region touches; rescaling
        lets a small object, which fills no coarse cell completely, still reach a
        fraction of 1 when all the token's attention sits on its best cells.
        """
        if grid not in self._on_grid:
            pooled = F.adaptive_avg_pool2d(self.regions[:, None], grid)[:, 0].flatten(1)
            peak = pooled.amax(dim=1, keepdim=True).clamp_min(1e-6)
            self._on_grid[grid] = pooled / peak
        return self._on_grid[grid]


def attention_targets(
    tokenizer: CLIPTokenizer,
    scenes: Sequence[Scene],
    keep: Sequence[bool],
    size: int = 64,
    named: Sequence[Sequence[SceneObject]] | None = None,
    start_token: str | None = None,
) -> AttentionTargets:
    """Targets for the rows whose caption was kept (dropped captions are skipped); row i's
    caption names ``named[i]`` (every object of its scene by default).

    With ``start_token`` ("inside" or "spread"), the start token (position 0) is supervised
    towards the pixels no object touches ("spread": evenly over them, see
    `attention_region_loss`). Stable
    Diffusion's start token behaves so, as an attention sink that avoids salient objects
    (InstDiffEdit inverts its map to find the edited object); a from-scratch encoder has
    no reason to, so the miniature is taught it.
    """
    rows: list[int] = []
    positions: list[int] = []
    regions: list[np.ndarray] = []
    named = [scene.objects for scene in scenes] if named is None else named
    for row, (scene, kept, objects) in enumerate(zip(scenes, keep, named, strict=True)):
        if not kept:
            continue
        text = named_caption(scene, objects)
        words = word_tokens(tokenizer, text)
        for index, word, mask in caption_regions(scene, size, objects):
            if index >= len(words):
                continue  # cut off by the tokenizer's length (never for scene captions)
            if words[index].word != word:
                raise ValueError(f"word {index} of {text!r} is not {word!r}")
            for position in words[index].positions:
                rows.append(row)
                positions.append(position)
                regions.append(mask)
        if start_token:
            rows.append(row)
            positions.append(0)
            regions.append(regions[-1])  # the background word's region: no object there
    shape = (0, size, size)
    positions_tensor = torch.tensor(positions, dtype=torch.long)
    return AttentionTargets(
        rows=torch.tensor(rows, dtype=torch.long),
        positions=positions_tensor,
        regions=torch.from_numpy(np.stack(regions)) if regions else torch.zeros(shape),
        spread=(positions_tensor == 0) if start_token == "spread" else None,
    )


def attention_region_loss(
    maps: torch.Tensor, grid: tuple[int, int], targets: AttentionTargets
) -> torch.Tensor:
    """Mean over supervised tokens of -log(fraction of the token's attention mass inside
    its region).

    ``maps``: one layer's cross-attention probabilities averaged over heads, (batch,
    queries, tokens) with queries on ``grid``. A token's mass is its column summed over
    the query pixels (the map the editing methods read, before normalisation), so the
    loss asks where a word attends, not how much attention it takes from other tokens.
    """
    if not len(targets):
        return maps.new_zeros(())
    token_maps = maps[targets.rows, :, targets.positions]  # (N, queries)
    region = targets.on_grid(grid).to(token_maps)
    inside = (token_maps * region).sum(dim=1)
    mass = token_maps.sum(dim=1)
    # Scale-free on purpose: an additive epsilon (log(mass + e) - log(inside + e)) has a
    # loophole the first fine-tune found within ~1,000 steps, driving every supervised
    # token's attention mass to ~1e-10 so that both logs equal log(e).
    fraction = inside / mass.clamp_min(1e-30)
    losses = -torch.log(fraction.clamp(1e-6, 1.0))
    if targets.spread is not None and bool(targets.spread.any()):
        # KL(region || map), both normalised: zero only for a map even over the region,
        # so a map peaked on a few region cells (which the fraction accepts) is penalised
        rows = targets.spread
        wanted = region[rows] / region[rows].sum(dim=1, keepdim=True).clamp_min(1e-12)
        got = token_maps[rows] / mass[rows, None].clamp_min(1e-30)
        kl = (torch.xlogy(wanted, wanted) - wanted * torch.log(got.clamp_min(1e-12))).sum(1)
        losses = losses.index_put((rows,), kl)
    return losses.mean()


class AttentionSupervision(ProbabilityReplacement):
    """Attention hook that reads the probabilities, leaves them unchanged and collects
    `attention_region_loss` of every cross-attention layer at the chosen levels
    (query-grid downsampling factors; None: all)."""

    def __init__(self, levels: set[int] | None = None) -> None:
        self.levels = levels
        self.targets: AttentionTargets | None = None
        self.terms: list[torch.Tensor] = []

    def wants(self, layer: LayerInfo, step: StepInfo) -> bool:
        if self.targets is None or not layer.is_cross:
            return False
        return self.levels is None or layer.downsample in self.levels

    def replace_probabilities(
        self, layer: LayerInfo, step: StepInfo, probs: torch.Tensor
    ) -> torch.Tensor:
        assert self.targets is not None
        conditional = probs[step.half(probs.shape[0])]  # training batches are unguided: all
        maps = conditional.float().mean(dim=1)
        grid = query_grid(layer, step.latent_hw)
        self.terms.append(attention_region_loss(maps, grid, self.targets))
        return probs

    def take(self) -> torch.Tensor:
        """Mean of the collected layer terms (0 when none), and forget them."""
        loss = torch.stack(self.terms).mean() if self.terms else torch.zeros(())
        self.terms = []
        return loss


@dataclass
class AttentionLoss:
    """Attention supervision installed on a UNet: processors, their state and the hook."""

    weight: float
    state: AttentionState
    hook: AttentionSupervision

    @classmethod
    def install(cls, unet, weight: float, levels: str = "all") -> AttentionLoss:
        chosen = None if levels == "all" else coarse_cross_levels(describe_layers(unet))
        state = install_processors(unet)
        hook = AttentionSupervision(chosen)
        state.hooks.append(hook)
        return cls(weight, state, hook)


def unet_loss(
    latents: torch.Tensor,
    ids: torch.Tensor,
    unet,
    text_encoder,
    scheduler,
    attention: AttentionLoss | None = None,
    targets: AttentionTargets | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, diffusion, attention) losses of one batch. Without ``attention`` (or with
    weight 0) this is exactly `diffusion_loss`, the same random draws included."""
    if attention is None or attention.weight == 0 or targets is None:
        loss = diffusion_loss(latents, ids, unet, text_encoder, scheduler)
        return loss, loss.detach(), torch.zeros(())
    # a training batch is unguided: every row conditional, no unconditional half
    attention.state.step = StepInfo(
        rows=len(ids), uncond_rows=0, latent_hw=(latents.shape[-2], latents.shape[-1])
    )
    attention.hook.targets = targets
    try:
        diffusion = diffusion_loss(latents, ids, unet, text_encoder, scheduler)
    finally:
        attention.hook.targets = None
    supervised = attention.hook.take()
    return diffusion + attention.weight * supervised, diffusion.detach(), supervised.detach()


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    return vae.encode(images).latent_dist.sample() * vae.config.scaling_factor


def unet_samples(args, vae, tokenizer, ema: EMA, step: int) -> None:
    scenes = eval_scenes(4, 1) + eval_scenes(4, 2) + eval_scenes(4, 3)
    pipe = assemble_pipeline(vae, ema.modules["text_encoder"], tokenizer, ema.modules["unet"])
    pipe.set_progress_bar_config(disable=True)
    images = generate(pipe, [caption(s) for s in scenes], steps=25, guidance=args.guidance, seed=0)
    truth = to_pil(make_batch(scenes).images)
    path = args.run_dir / "samples" / f"unet_{step:06d}.png"
    save_image_grid([truth[:6], images[:6], truth[6:], images[6:]], path)
    path.with_suffix(".txt").write_text("\n".join(caption(s) for s in scenes) + "\n")


def train_unet(args: argparse.Namespace) -> None:
    run = args.run_dir / "unet"
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    vae = load_frozen_vae(args)
    tokenizer = build_tokenizer(args.run_dir / "tokenizer")
    text_encoder, unet = make_text_encoder(tokenizer), make_unet()
    modules: dict[str, torch.nn.Module] = {"unet": unet, "text_encoder": text_encoder}
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema = EMA(modules, args.ema_decay)
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0}
    source = _resume_source(args, "unet")
    if source is not None:
        state, ema_state = load_checkpoint(source, modules, optimizer, rng)
        ema.load(ema_state if ema_state is not None else ema.state())
        print(f"resumed unet from {source} at step {state['step']}", flush=True)
        if args.init_from is not None and source == args.init_from:
            state["fine_tune"] = {"from": str(source), "from_step": state["step"]}
    if args.brief_captions:
        state["brief_captions"] = args.brief_captions
    if args.start_token_loss:
        state["start_token_loss"] = args.start_token_loss
    if args.attention_loss:
        state["attention_loss"] = args.attention_loss
        state["attention_levels"] = args.attention_levels
    # Installed after the EMA copy, so the EMA (sampled and exported) keeps the stock
    # processors; with weight 0 the UNet keeps them too (the old training exactly).
    attention = (
        AttentionLoss.install(unet, args.attention_loss, args.attention_levels)
        if args.attention_loss
        else None
    )
    scheduler = make_scheduler()
    excluded = held_out_captions()
    empty_ids = tokenize(tokenizer, [""])[0]
    log = run / "log.jsonl"
    clock = Clock(args.minutes * 60, state["elapsed_s"])
    flag = StopFlag()
    step = state["step"]
    last = dict.fromkeys(("log", "ckpt", "sample", "export", "eval"), time.time())
    losses: list[float] = []
    attention_losses: list[float] = []
    step_times: list[float] = []
    print(
        f"unet params {count_params(unet)}, text encoder {count_params(text_encoder)}, "
        f"vae scaling {vae.config.scaling_factor:.4f}",
        flush=True,
    )

    def checkpoint(folder: Path, compact: bool) -> None:
        state.update(step=step, elapsed_s=clock.total_elapsed(), batch_size=args.batch_size)
        save_checkpoint(folder, modules, ema.state(), optimizer, rng, state, compact=compact)

    def export_now() -> None:
        export(args.export_dir, vae, ema.modules["text_encoder"], tokenizer, ema.modules["unet"])
        checkpoint(args.checkpoint_dir / "unet", compact=True)
        log_line(log, {"stage": "unet", "export": True, "step": step})

    # A fine-tune warms the learning rate up again: a new loss term brings gradients
    # that AdamW's second moments (built on the old loss) would turn into huge steps.
    warmup_from = state.get("fine_tune", {}).get("from_step", 0)
    tuner = ThreadTuner(args.threads)
    while not (clock.done() or flag.stop or _past(args.stop_at)):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = warmup_lr(step - warmup_from, args.lr, args.warmup)
        scenes = training_scenes(rng, args.batch_size, excluded)
        named = brief_selection(rng, scenes, args.brief_captions, excluded)
        batch = make_batch(scenes, named=named)
        ids = tokenize(tokenizer, batch.captions)
        drop = torch.from_numpy(rng.random(len(ids)) < args.caption_dropout)
        ids[drop] = empty_ids
        latents = encode_latents(vae, batch.images)
        targets = None
        if attention is not None:
            targets = attention_targets(
                tokenizer,
                batch.scenes,
                (~drop).tolist(),
                named=batch.named,
                start_token=args.start_token_loss,
            )
        loss, diffusion, supervised = unet_loss(
            latents, ids, unet, text_encoder, scheduler, attention, targets
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        ema.update(step)
        losses.append(diffusion.item())
        attention_losses.append(supervised.item())
        step_times.append(time.time() - t0)
        tuner.record(step_times[-1])
        now = time.time()
        if now - last["log"] >= 60:
            log_line(
                log,
                {
                    "stage": "unet",
                    "step": step,
                    "loss": round(float(np.mean(losses)), 5),
                    **(
                        {"attn_loss": round(float(np.mean(attention_losses)), 4)}
                        if attention is not None
                        else {}
                    ),
                    "s_per_step": round(float(np.mean(step_times)), 3),
                    "threads": tuner.threads,
                    "elapsed_s": round(clock.total_elapsed()),
                },
            )
            losses.clear()
            attention_losses.clear()
            step_times.clear()
            last["log"] = now
        if now - last["sample"] >= args.sample_every * 60:
            unet_samples(args, vae, tokenizer, ema, step)
            last["sample"] = now
        if args.quick_eval_every and now - last["eval"] >= args.quick_eval_every * 60:
            _quick_eval(args, vae, tokenizer, ema, step, log)
            last["eval"] = now
        if now - last["ckpt"] >= args.checkpoint_every * 60:
            checkpoint(run / "state", compact=False)
            last["ckpt"] = now
        if args.export and now - last["export"] >= args.export_every * 60:
            export_now()
            last["export"] = now
    checkpoint(run / "state", compact=False)
    if args.export:
        export_now()
    unet_samples(args, vae, tokenizer, ema, step)


def _quick_eval(args, vae, tokenizer, ema: EMA, step: int, log: Path) -> None:
    """Small faithfulness check (25 DDIM steps) once the world's reader exists."""
    pipe = assemble_pipeline(vae, ema.modules["text_encoder"], tokenizer, ema.modules["unet"])
    pipe.set_progress_bar_config(disable=True)
    one = faithfulness(pipe, eval_scenes(24, 1), steps=25, guidance=args.guidance)
    if one is None:
        return
    two = faithfulness(pipe, eval_scenes(24, 2), steps=25, guidance=args.guidance)
    log_line(
        log,
        {
            "stage": "unet",
            "step": step,
            "quick_faithfulness_one": round(one, 3),
            "quick_faithfulness_two": round(two or 0.0, 3),
        },
    )


def _past(stop_at: str | None) -> bool:
    """True once the local wall clock passes HH:MM (a hard end for the session)."""
    if not stop_at:
        return False
    hour, minute = (int(x) for x in stop_at.split(":"))
    now = time.localtime()
    return (now.tm_hour, now.tm_min) >= (hour, minute)


def _resume_source(args: argparse.Namespace, stage: str) -> Path | None:
    own = args.run_dir / stage / "state"
    if args.resume and (own / "state.json").exists():
        return own
    init_from = getattr(args, "init_from", None)
    if init_from is not None:
        if not (init_from / "state.json").exists():
            raise SystemExit(f"--init-from: no checkpoint (state.json) in {init_from}")
        return init_from
    if not args.resume:
        return None
    for folder in (args.run_dir / stage / "state", args.checkpoint_dir / stage):
        if (folder / "state.json").exists():
            return folder
    raise SystemExit(f"--resume: no {stage} checkpoint in {args.run_dir} or {args.checkpoint_dir}")


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m laspa_train.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stage", choices=("vae", "unet"), required=True)
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of this run")
    p.add_argument("--stop-at", default=None, help="also stop at this local time, HH:MM")
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="unet: start (a fine-tune) from this checkpoint folder unless --resume finds "
        "state in the run dir, e.g. training/checkpoints/unet",
    )
    p.add_argument(
        "--attention-loss",
        type=float,
        default=0.0,
        help="unet: weight of the cross-attention supervision loss (0 = off)",
    )
    p.add_argument(
        "--brief-captions",
        type=float,
        default=0.0,
        help="unet: probability that a multi-object scene's caption names only some objects",
    )
    p.add_argument(
        "--start-token-loss",
        nargs="?",
        const="inside",
        choices=("inside", "spread"),
        default=None,
        help="unet: also supervise the start token's attention: inside the background, or "
        "spread evenly over it (KL)",
    )
    p.add_argument(
        "--attention-levels",
        choices=("all", "coarse"),
        default="all",
        help="unet: supervise every cross-attention level, or only the one maps are read at",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="vae 16, unet 32")
    p.add_argument("--lr", type=float, default=None, help="vae 1e-3, unet 1e-3")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument(
        "--lr-tail",
        type=float,
        default=0.25,
        help="vae: decay the lr linearly to 10%% over this last fraction of the run",
    )
    p.add_argument("--object-weight", type=float, default=4.0, help="vae: extra loss on objects")
    p.add_argument("--kl-weight", type=float, default=1e-5)
    p.add_argument("--target-psnr", type=float, default=31.0)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--guidance", type=float, default=5.0, help="for sample grids / quick eval")
    p.add_argument("--eval-every", type=float, default=2.0, help="vae: minutes between PSNR checks")
    p.add_argument(
        "--quick-eval-every",
        type=float,
        default=15.0,
        help="unet: minutes between small faithfulness checks (0 = off)",
    )
    p.add_argument("--sample-every", type=float, default=10.0, help="minutes")
    p.add_argument("--checkpoint-every", type=float, default=3.0, help="minutes")
    p.add_argument("--export-every", type=float, default=30.0, help="minutes")
    p.add_argument("--no-export", dest="export", action="store_false")
    p.add_argument(
        "--export-dir", type=Path, default=WEIGHTS_DIR, help="unet: where to export (bundled)"
    )
    p.add_argument("--run-dir", type=Path, default=Path("runs/mini"))
    p.add_argument("--checkpoint-dir", type=Path, default=Path("training/checkpoints"))
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 16 if args.stage == "vae" else 32
    if args.lr is None:
        args.lr = 1e-3
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    (train_vae if args.stage == "vae" else train_unet)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
