"""The mini-flow trainer (laspa_train.flow): the T5-slot identity it trains with, the
flow-matching loss, export as a diffusers StableDiffusion3Pipeline folder that samples
as the trainer does, and exact resumption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from safetensors.torch import load_file

from laspa.mini import WEIGHTS_DIR
from laspa_train import flow

PROMPTS = ["a red circle", "two blue squares on a green background"]


@pytest.fixture(scope="module")
def text_parts():
    return flow.load_text_encoder()


def _random_transformer(seed: int = 0) -> SD3Transformer2DModel:
    """The trainer's architecture with every weight non-zero (adaLN-Zero would make the
    blocks identities and hide a wrong attention)."""
    torch.manual_seed(seed)
    model = flow.make_transformer().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def test_one_weighted_zero_token_computes_as_the_pipelines_256(text_parts) -> None:
    tokenizer, encoder = text_parts
    model = _random_transformer()
    full, added = flow.text_model(tokenizer, encoder, merged=False).encode(PROMPTS)
    short, added_short = flow.text_model(tokenizer, encoder).encode(PROMPTS)
    assert full.shape[1] == 40 + 256 and short.shape[1] == 40 + 1
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([250.0, 900.0])
    with torch.no_grad():
        stock = model(x, full, added["pooled_projections"], t).sample
        sink = flow.velocity(model, x, short, added_short["pooled_projections"], t, 256)
        # no weight: a different computation
        unweighted = flow.velocity(model, x, short, added_short["pooled_projections"], t, 1)
    assert torch.allclose(sink, stock, atol=1e-5)
    assert (unweighted - stock).abs().max() > 1e-2


def test_the_pooled_text_is_the_encoders_own_output(text_parts) -> None:
    tokenizer, encoder = text_parts
    ids = tokenizer(PROMPTS, padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        out = encoder(ids)
        pooled = flow.text_model(tokenizer, encoder).encode(PROMPTS)[1]["pooled_projections"]
    assert torch.allclose(out.text_embeds, encoder.text_model(ids).pooler_output)
    assert torch.equal(pooled, torch.cat([out.text_embeds, out.text_embeds], dim=-1))


def test_a_fresh_transformer_predicts_zero_and_the_loss_is_the_velocitys() -> None:
    model = flow.make_transformer()
    x0 = torch.randn(3, 4, 16, 16)
    context, pooled = torch.randn(3, 41, 128), torch.randn(3, 128)
    loss = flow.flow_loss(x0, context, pooled, model, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    flow.logit_normal(3, generator)  # the draws flow_loss makes, in its order
    eps = torch.randn(x0.shape, generator=generator)
    assert loss.item() == pytest.approx(((eps - x0) ** 2).mean().item(), rel=1e-6)


def test_noise_levels_are_logit_normal() -> None:
    s = flow.logit_normal(20000, torch.Generator().manual_seed(0))
    assert s.min() > 0 and s.max() < 1
    logits = torch.log(s / (1 - s))
    assert abs(logits.mean().item()) < 0.03 and abs(logits.std().item() - 1) < 0.03


def _with_bundled_links(folder: Path) -> Path:
    """A place for an exported folder whose links (../weights/...) resolve."""
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(WEIGHTS_DIR, folder / "weights")
    return folder / "flow"


def test_the_export_runs_in_diffusers_as_the_trainer_samples(text_parts, tmp_path: Path) -> None:
    tokenizer, encoder = text_parts
    model, vae = _random_transformer(1), flow.load_vae()
    folder = _with_bundled_links(tmp_path)
    flow.export(folder, model, vae, tokenizer, encoder, step=7)
    pipe = StableDiffusion3Pipeline.from_pretrained(
        str(folder), text_encoder_3=None, tokenizer_3=None
    )
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPTS, num_inference_steps=3, guidance_scale=5.0, height=64, width=64,
                  generator=torch.Generator().manual_seed(0), output_type="pt").images  # fmt: skip
    unmerged = flow.text_model(tokenizer, encoder, merged=False)
    ours = flow.sample(model, vae, unmerged, PROMPTS, 3, 5.0, 0)
    assert torch.allclose(theirs, (ours / 2 + 0.5).clamp(0, 1), atol=1e-5)
    sink = flow.sample(model, vae, flow.text_model(tokenizer, encoder), PROMPTS, 3, 5.0, 0)
    assert torch.allclose(theirs, (sink / 2 + 0.5).clamp(0, 1), atol=1e-4)
    # only the transformer, one text encoder and configs are its own files
    assert (folder / "text_encoder_2").is_symlink() and (folder / "tokenizer").is_symlink()
    assert (folder / "vae" / "diffusion_pytorch_model.safetensors").is_symlink()
    assert json.loads((folder / "vae" / "config.json").read_text())["shift_factor"] == 0.0


def _run(root: Path, *extra: str) -> None:
    flow.main([
        "--run-dir", str(root / "run"), "--checkpoint-dir", str(root / "ckpt"),
        "--export-dir", str(root / "flow"), "--batch-size", "4", "--warmup", "2",
        "--quick-eval-every", "0", "--minutes", "5", *extra,
    ])  # fmt: skip


def test_an_interrupted_run_resumes_exactly(tmp_path: Path) -> None:
    """Two steps, stop, one more with --resume: the same weights as three in one go."""
    for name in ("whole", "split"):
        _with_bundled_links(tmp_path / name)
    _run(tmp_path / "whole", "--max-steps", "3")
    _run(tmp_path / "split", "--max-steps", "2")
    _run(tmp_path / "split", "--max-steps", "3", "--resume")
    whole = load_file(str(tmp_path / "whole" / "run" / "state" / "weights.safetensors"))
    split = load_file(str(tmp_path / "split" / "run" / "state" / "weights.safetensors"))
    assert whole.keys() == split.keys()
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    assert json.loads((tmp_path / "split" / "ckpt" / "state.json").read_text())["step"] == 3
    exported = SD3Transformer2DModel.from_pretrained(
        str(tmp_path / "split" / "flow" / "transformer")
    )
    assert exported.config.in_channels == 4
