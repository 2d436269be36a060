"""Model families: how a checkpoint turns prompts into what its UNet is conditioned on.

A family encodes prompts into the per-token embeddings the cross-attention layers read,
plus any extra per-row UNet inputs (``added_cond_kwargs``) its UNet takes. The
:class:`~laspa.engine.Engine` stacks both the same way for guidance rows, so methods never
see which family runs:

- :class:`StableDiffusionText`: SD 1.x/2.x, one CLIP text encoder, no extra inputs;
- :class:`StableDiffusionXLText`: SDXL, two CLIP text encoders (penultimate hidden states
  concatenated), the second one's pooled projection as ``text_embeds``, and the
  ``text_time`` micro-conditioning ``time_ids`` (original size, crop corner, target size);
- :class:`StableDiffusion3Text`: SD3, two CLIP text encoders (penultimate hidden states
  concatenated, zero-padded to T5's width) followed by T5's tokens (zeros where the
  checkpoint has no T5), and both pooled projections side by side as
  ``pooled_projections``;
- :class:`FluxText`: FLUX, T5's tokens as the embeddings and CLIP's pooled output as
  ``pooled_projections``.

Each also names the tokenizer whose tokens the attention's text columns are, from column
0 on (``attention_tokenizer``): a word's map is read from that tokenizer's positions of
the word, and ``has_start_token`` says whether column 0 is a start token (CLIP's is; T5's
sequence starts with the first word); ``word_columns`` is how many columns that tokenizer's
tokens fill (SD3's T5 columns follow its CLIP ones and hold no word map).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

#: per-row extra UNet inputs, each (rows, ...)
Added = dict[str, torch.Tensor]


#: each family's diffusers text-to-image pipeline: its ``__call__`` defaults are the
#: family's own steps and guidance (read from it, never retyped here)
PIPELINES = {
    "sd": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}


@functools.cache
def _pipeline_call(family: str) -> dict:
    import inspect

    import diffusers

    return dict(inspect.signature(getattr(diffusers, PIPELINES[family]).__call__).parameters)


def pipeline_defaults(family: str, guidance_embeds: bool = False) -> dict[str, float | int]:
    """The steps and guidance a family's diffusers pipeline runs when given none.

    FLUX's pipeline guides through the transformer's guidance embedding where there is one
    (FLUX-dev: ``guidance_scale``) and otherwise not at all (``true_cfg_scale`` 1 by
    default: schnell runs one row per step), so without an embedding its guidance is 1,
    which laspa reads as none."""
    call = _pipeline_call(family)
    guidance = call["guidance_scale"].default
    if family == "flux" and not guidance_embeds:
        guidance = call["true_cfg_scale"].default
    return {"steps": call["num_inference_steps"].default, "guidance": float(guidance)}


def token_ids(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's length, as Stable Diffusion pipelines encode."""
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


class _ClipColumns:
    """A family whose attention's text columns begin with a CLIP tokenizer's tokens:
    a start token at column 0, then the words, over the tokenizer's length."""

    has_start_token = True

    @property
    def word_columns(self) -> int:
        return self.attention_tokenizer.model_max_length


class StableDiffusionText(_ClipColumns):
    """One CLIP text encoder's last hidden states; the UNet takes nothing else."""

    def __init__(self, text_encoder, tokenizer, device: torch.device):
        self.text_encoder, self.tokenizer, self.device = text_encoder, tokenizer, device
        self.attention_tokenizer = tokenizer

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, Added]:
        """(embeddings (n, tokens, dim), per-prompt extra inputs) in float32."""
        with torch.no_grad():
            ids = token_ids(self.tokenizer, prompts).to(self.device)
            return self.text_encoder(ids)[0].float(), {}

    def size_inputs(self, rows: int, pixel_hw: tuple[int, int]) -> Added:
        """Extra inputs that depend on the image size, not the prompt: none here."""
        return {}


class StableDiffusionXLText(_ClipColumns):
    """SDXL's two text encoders, pooled embeddings and size micro-conditioning, encoded
    as diffusers' StableDiffusionXLPipeline does (no clip skip, crop corner (0, 0),
    original size = target size = the image's size)."""

    def __init__(
        self, text_encoders: Sequence, tokenizers: Sequence, device: torch.device,
        force_zeros_for_empty_prompt: bool = True,
    ):  # fmt: skip
        self.text_encoders, self.tokenizers, self.device = text_encoders, tokenizers, device
        # both CLIP tokenizers split a prompt alike; their states sit side by side per token
        self.attention_tokenizer = tokenizers[0]
        # SDXL checkpoints define the empty prompt's condition as zeros, not its encoding
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, Added]:
        hidden, pooled = [], None
        with torch.no_grad():
            for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
                ids = token_ids(tokenizer, prompts).to(self.device)
                out = encoder(ids, output_hidden_states=True)
                hidden.append(out.hidden_states[-2].float())
                pooled = out[0].float()  # the last encoder's projection (text_embeds)
        embeddings = torch.cat(hidden, dim=-1)
        if self.force_zeros_for_empty_prompt:
            empty = torch.tensor([p == "" for p in prompts], device=embeddings.device)
            embeddings = torch.where(empty.view(-1, 1, 1), 0.0, embeddings)
            pooled = torch.where(empty.view(-1, 1), 0.0, pooled)
        return embeddings, {"text_embeds": pooled}

    def size_inputs(self, rows: int, pixel_hw: tuple[int, int]) -> Added:
        height, width = pixel_hw
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
        return {"time_ids": time_ids.to(self.device).expand(rows, -1)}


class StableDiffusion3Text(_ClipColumns):
    """SD3's three text encoders, as diffusers' StableDiffusion3Pipeline encodes a prompt
    (no clip skip; the empty prompt encoded like any other): each CLIP encoder's
    penultimate hidden states side by side, zero-padded to the transformer's
    ``joint_attention_dim``, then T5's ``max_sequence_length`` tokens (zeros without
    ``text_encoder_3``); ``pooled_projections`` is both CLIP projections side by side.

    Without T5 the pipeline's ``max_sequence_length`` zero tokens stay identical through
    every block, so in every softmax they act as one key counted that many times. With
    ``merge_zero_tokens`` (the default) the embeddings end in one zero token and
    ``last_token_repeats`` says how many it stands for: the joint-attention processor
    adds ``log(repeats)`` to its logits (laspa.attention.LaspaJointAttnProcessor), which
    computes what the pipeline computes with far fewer tokens."""

    def __init__(
        self, text_encoders: Sequence, tokenizers: Sequence, device: torch.device,
        joint_attention_dim: int, text_encoder_3=None, tokenizer_3=None,
        max_sequence_length: int = 256, merge_zero_tokens: bool = True,
    ):  # fmt: skip
        self.text_encoders, self.tokenizers, self.device = text_encoders, tokenizers, device
        # the joint attention's first text columns are the CLIP tokens (T5's follow them)
        self.attention_tokenizer = tokenizers[0]
        self.joint_attention_dim = joint_attention_dim
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        self.max_sequence_length = max_sequence_length
        merged = merge_zero_tokens and text_encoder_3 is None and max_sequence_length > 1
        #: how many of the pipeline's tokens the embeddings' last token stands for
        self.last_token_repeats = max_sequence_length if merged else 1

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, Added]:
        hidden, pooled = [], []
        with torch.no_grad():
            # the pipeline pads both CLIP tokenizers to the first one's length
            length = self.tokenizers[0].model_max_length
            for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
                ids = tokenizer(
                    list(prompts), padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt",
                ).input_ids.to(self.device)  # fmt: skip
                out = encoder(ids, output_hidden_states=True)
                hidden.append(out.hidden_states[-2].float())
                pooled.append(out[0].float())
            clip = torch.cat(hidden, dim=-1)
            t5 = self._t5(prompts)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5], dim=-2), {"pooled_projections": torch.cat(pooled, dim=-1)}

    def _t5(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.max_sequence_length // self.last_token_repeats
        shape = (len(prompts), tokens, self.joint_attention_dim)
        if self.text_encoder_3 is None:
            return torch.zeros(shape, device=self.device)
        ids = self.tokenizer_3(
            list(prompts), padding="max_length", max_length=self.max_sequence_length,
            truncation=True, add_special_tokens=True, return_tensors="pt",
        ).input_ids.to(self.device)  # fmt: skip
        return self.text_encoder_3(ids)[0].float()

    def size_inputs(self, rows: int, pixel_hw: tuple[int, int]) -> Added:
        return {}


class FluxText:
    """FLUX's two text encoders, as diffusers' FluxPipeline encodes a prompt: T5's last
    hidden states (``max_sequence_length`` tokens) are the embeddings, the CLIP text
    encoder's pooled output is ``pooled_projections``. The joint attention sees T5's
    tokens alone: words are placed by T5's tokenizer, and there is no start token."""

    has_start_token = False

    def __init__(
        self, clip, clip_tokenizer, t5, t5_tokenizer, device: torch.device,
        max_sequence_length: int = 512,
    ):  # fmt: skip
        self.clip, self.clip_tokenizer, self.device = clip, clip_tokenizer, device
        self.t5, self.t5_tokenizer = t5, t5_tokenizer
        self.attention_tokenizer = t5_tokenizer
        self.word_columns = max_sequence_length
        self.max_sequence_length = max_sequence_length

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, Added]:
        with torch.no_grad():
            ids = token_ids(self.clip_tokenizer, prompts).to(self.device)
            pooled = self.clip(ids, output_hidden_states=False).pooler_output.float()
            t5_ids = self.t5_tokenizer(
                list(prompts), padding="max_length", max_length=self.max_sequence_length,
                truncation=True, return_tensors="pt",
            ).input_ids.to(self.device)  # fmt: skip
            embeddings = self.t5(t5_ids, output_hidden_states=False)[0].float()
        return embeddings, {"pooled_projections": pooled}

    def size_inputs(self, rows: int, pixel_hw: tuple[int, int]) -> Added:
        return {}
