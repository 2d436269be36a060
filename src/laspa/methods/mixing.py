"""LASPA semantic latent mixing (paper sec. 3.7), for edits with large background changes.

Two branches per edit share every UNet call: the *aligned* branch is LASPA x0 alignment on
the aligned prompt (default: the edit prompt itself), the *free* branch is plain DDIM on
the edit prompt. While ``t > K`` the free branch takes the aligned branch's latent where
the subject word's cross-attention mask M_t says the subject is, and its cross-attention
probabilities are swapped for the aligned branch's. The output is the free branch.

``keep="rest"`` (our addition) turns the mask around: M_t = 1 - map of the ``change``
word, so the free branch keeps everything the changed word does not cover. The paper's
subject mask keeps one named object; on a prompt that names only what changes ("... on a
teal background") every object it leaves unnamed is regenerated, and a background edit
loses them. The rest-mask keeps them, named or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import ddim
from .. import maps as maps_lib
from ..attention import CrossAttentionSwap, StepInfo
from ..errors import ParameterError
from ..loop import Step
from .base import EditBatch, MethodOutput, option, register
from .laspa import X0Alignment, X0Params, _Laspa, weight_schedule


@dataclass
class MixParams(X0Params):
    subject: str = option("", help="the word of the object to keep (must be in the prompt)")
    change: str = option("", help="keep=rest: the word of the region to redo (in the prompt)")
    keep: str = option(
        "subject",
        choices=("subject", "rest"),
        help="keep the subject word's region (the paper) or all but the change word's region",
    )
    aligned_prompt: str = option("", help="prompt of the aligned branch (default: the prompt)")
    mask: str = option("soft", choices=("soft", "hard"), help="M_t as is, or thresholded")
    threshold: float = option(0.5, low=0.0, high=1.0, help="threshold of a hard mask")
    swap: str = option(
        "on", choices=("on", "off"), help="cross-attention swap into the free branch"
    )

    @classmethod
    def implied(cls, options: dict[str, Any]) -> dict[str, Any]:
        """A ``change`` word means ``keep=rest`` (redo its region, keep all else); a
        ``subject`` word keeps its own region: one or the other, not both."""
        options = super().implied(options)
        if options.get("subject") and options.get("change"):
            raise ParameterError("laspa-mix takes subject (keep it) or change (redo it), not both")
        if options.get("change") and options.get("keep", "subject") == "subject":
            options["keep"] = "rest"  # a default value is the same as none (make_params)
        return options

    def idle_options(self, sampler: str) -> dict[str, str]:
        idle = super().idle_options(sampler)
        if self.keep == "subject":
            idle["change"] = "change acts only with keep=rest (laspa-mix keeps the subject)"
        else:
            idle["subject"] = (
                "laspa-mix with keep=rest needs a change word (the region to redo); subject "
                "acts only with keep=subject"
            )
        if self.mask == "soft":
            idle["threshold"] = "threshold acts only with mask=hard"
        return idle


class SemanticMixing(X0Alignment):
    """x0 alignment on the aligned rows (the first N), mixing into the free rows' latents
    at every timestep ``t > K``, with the mask of each edit's word (the subject, or with
    ``keep=rest`` what changes) from this step's maps."""

    def __init__(self, reference, weight, direction, store, mask_words, K, hard, threshold, rest):
        super().__init__(reference, weight, direction)
        self.store = store
        self.mask_words = mask_words  # token positions of the mask's word per edit
        self.rest = rest.view(-1, 1, 1, 1)  # per edit: keep all but the word's region
        self.K = K  # (N,)
        self.hard = hard.view(-1, 1, 1, 1)
        self.threshold = threshold.view(-1, 1, 1, 1)
        #: the last map of the mask's word (N, 1, h, w): the subject, or what changes
        self.mask: torch.Tensor | None = None

    def word_mask(self, size: tuple[int, int]) -> torch.Tensor:
        token_maps = self.store.current()
        maps = torch.cat(
            [maps_lib.word_map(token_maps[i : i + 1], p) for i, p in enumerate(self.mask_words)]
        )
        soft = maps_lib.minmax(maps_lib.resize(maps, size))[:, None]
        return torch.where(self.hard, (soft > self.threshold).float(), soft)

    def after_step(self, step: Step, x_prev: torch.Tensor) -> torch.Tensor:
        # eq. 10 mixes x_t for t > K: x_prev is the latent at t_prev
        active = (step.t_prev > self.K).view(-1, 1, 1, 1)
        if not bool(active.any()):
            return x_prev
        aligned, free = x_prev.chunk(2)
        self.mask = self.word_mask(tuple(x_prev.shape[-2:]))
        keep = torch.where(self.rest, 1 - self.mask, self.mask)
        mixed = ddim.blend(aligned, free, keep)
        return torch.cat([aligned, torch.where(active, mixed, free)])


@register
class LaspaMix(_Laspa):
    name = "laspa-mix"
    summary = "LASPA with semantic latent mixing: keeps the subject, frees the background"
    case_inputs = ("subject", "change")
    Params = MixParams
    makes_mask = True
    many_images = False  # its two branches expand one reference

    def run(self, engine, batch: EditBatch) -> MethodOutput:
        n = batch.size
        free_prompts = [row.prompt for row in batch.rows]
        aligned_prompts = [row.params.aligned_prompt or row.prompt for row in batch.rows]
        mask_words = []
        for row, prompt in zip(batch.rows, aligned_prompts, strict=True):
            name = "change" if row.params.keep == "rest" else "subject"
            word = getattr(row.params, name)
            if not word.strip():
                also = " or a change word to redo (--change)" if name == "subject" else ""
                raise ParameterError(f"laspa-mix needs a {name} word (--{name}){also}")
            try:
                mask_words.append(engine.positions_of(prompt, word))
            except ValueError as error:
                raise ParameterError(f"{name}: {error}") from None

        if engine.family == "flux" and "on" in batch.param("swap"):
            raise ParameterError(
                "laspa-mix's cross-attention swap does not run on FLUX yet: use swap=off"
            )
        steps = engine.steps(batch)
        device = batch.reference.device
        reference = batch.reference.expand(2 * n, -1, -1, -1)
        generators = engine.generators(batch)
        x_T = engine.noise(generators, (n, *reference.shape[1:]))
        # the two branches of an edit share their step noise, as they share x_T
        noise = engine.step_noise(batch, generators, x_T, branches=2)
        aligned_weight = weight_schedule(batch, engine.num_train_timesteps, device)

        def weight(t: int) -> torch.Tensor:  # the free rows are never aligned
            w = aligned_weight(t)
            return torch.cat([w, torch.zeros_like(w)])

        K = batch.column("K", device)
        store = engine.attention_store(rows=slice(0, n))
        hooks = SemanticMixing(
            reference, weight, batch.param("direction") * 2, store, mask_words, K,
            hard=torch.tensor([m == "hard" for m in batch.param("mask")], device=device),
            threshold=batch.column("threshold", device),
            rest=torch.tensor([k == "rest" for k in batch.param("keep")], device=device),
        )  # fmt: skip
        # on the CPU, like the step's timestep: deciding whether a layer swaps needs no sync
        swap_rows = torch.tensor([s == "on" for s in batch.param("swap")])
        swap_K = batch.column("K")
        pairs = zip(aligned_prompts, free_prompts, strict=True)
        token_map = torch.tensor([engine.token_alignment(a, f) for a, f in pairs])

        def swapping(step: StepInfo) -> torch.Tensor:
            return swap_rows & (step.timestep > swap_K)

        swap = CrossAttentionSwap(list(range(n)), list(range(n, 2 * n)), token_map, swapping)
        conditioning = engine.conditioning(batch, prompts=aligned_prompts + free_prompts)
        x = torch.cat([x_T, x_T])
        latents = engine.sample(x, steps, conditioning, hooks, attention=[store, swap], noise=noise)
        return MethodOutput(
            latents[n:],
            masks=hooks.mask,
            token_maps=store.mean() if batch.record_attention else None,
            map_prompts=aligned_prompts,
        )
