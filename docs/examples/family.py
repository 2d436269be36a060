"""A new model family's text side: SD 1.x with "clip skip" (the penultimate hidden states
of CLIP, which some fine-tunes were trained on) (docs/architecture.md, "A model family").

Run it: ``PYTHONPATH=src python docs/examples/family.py`` (the tiny random model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from laspa import engine as engine_module
from laspa.families import Added, StableDiffusionText, token_ids


class ClipSkipText(StableDiffusionText):
    """A family's text encoder: ``encode`` gives the per-token embeddings the denoiser's
    cross-attention reads and the extra per-prompt inputs (``added_cond_kwargs``);
    ``size_inputs`` those that depend on the image size (SDXL's micro-conditioning)."""

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, Added]:
        with torch.no_grad():
            ids = token_ids(self.tokenizer, prompts).to(self.device)
            hidden = self.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
            # as diffusers' clip_skip: the final layer norm on the earlier layer's output
            model = getattr(self.text_encoder, "text_model", self.text_encoder)
            return model.final_layer_norm(hidden).float(), {}


# The engine names each family for the methods whose settings differ by model
# (engine.family); a family laspa does not ship registers its name here.
engine_module._FAMILIES[ClipSkipText] = "sd"


def main() -> torch.Tensor:
    from laspa.engine import Engine
    from laspa.methods.base import EditBatch, EditRow, get_method, make_params
    from laspa.testing import tiny_components

    vae, text_encoder, tokenizer, unet, scheduler = tiny_components()
    engine = Engine(
        vae, text_encoder, tokenizer, unet, scheduler, device=torch.device("cpu"),
        dtype=torch.float32, text=ClipSkipText(text_encoder, tokenizer, torch.device("cpu")),
    )  # fmt: skip
    row = EditRow("a cat", seed=0, params=make_params("generate", {"steps": 3}))
    pixels = torch.zeros(1, 3, 32, 32)
    batch = EditBatch(reference=None, rows=[row], pixels=pixels)
    return get_method("generate").run(engine, batch).latents


if __name__ == "__main__":
    print(main().shape)
