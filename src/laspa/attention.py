"""Attention control through diffusers' attention-processor API.

One :class:`LaspaAttnProcessor` is installed on every attention module of the UNet
(``unet.set_attn_processor``). Each instance knows its :class:`LayerInfo`; all of
them share one :class:`AttentionState` that the sampler loop sets explicitly before
every UNet call (step index, timestep, batch layout). Hooks declare their
:class:`HookKind`: observers and query-key replacements keep PyTorch's fused
scaled-dot-product attention; only the layers and steps a probability replacement
asks for pay for explicit ``softmax(QK^T)``, which is diffusers' own
``Attention.get_attention_scores`` (scale inside the matmul, the layer's
``upcast_attention`` / ``upcast_softmax``), so half-precision maps match diffusers'.
"""

from __future__ import annotations

import inspect
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LayerInfo:
    """Where an attention module sits in the UNet."""

    name: str
    place: str  # "down", "mid" or "up"
    order: int  # forward-order index among all attention modules
    kind_order: int  # forward-order index among modules of the same kind (self or cross)
    is_cross: bool
    downsample: int  # query grid = latent grid / downsample

    @property
    def is_self(self) -> bool:
        return not self.is_cross


@dataclass
class StepInfo:
    """What the loop tells the processors before a UNet call."""

    index: int = 0  # 0-based step of the sampling loop
    num_steps: int = 1
    timestep: int = 0
    rows: int = 1  # latent rows in the batch
    # The UNet batch is [unconditional rows; conditional rows]. The conditional half holds
    # every latent row in order; the unconditional half holds the last ``uncond_rows`` of
    # them (rows without guidance, e.g. FPE's source branch, come first and skip it).
    uncond_rows: int = 1
    latent_hw: tuple[int, int] = (64, 64)

    def half(self, batch: int, conditional: bool = True) -> slice:
        """The slice of a UNet batch holding the conditional (or unconditional) rows."""
        return slice(self.uncond_rows, batch) if conditional else slice(0, self.uncond_rows)


class HookKind(Enum):
    """What an attention hook does to its layers, which decides how they compute."""

    #: reads the conditional rows' probabilities; the layer's output stays fused attention
    OBSERVE = "observe"
    #: replaces queries and keys before attention; the output stays fused attention
    REPLACE_QUERY_KEY = "replace query-key"
    #: reads or replaces the whole batch's probabilities; the layer computes them explicitly
    REPLACE_PROBABILITIES = "replace probabilities"


class AttentionHook(ABC):
    """What a method plugs into the attention processors (``sample(attention=...)``).

    A hook says which layers and steps it wants and declares its :class:`HookKind`
    by deriving from one of :class:`AttentionObserver`, :class:`QueryKeyReplacement`
    or :class:`ProbabilityReplacement`, each with the one method the processor calls.
    """

    kind: ClassVar[HookKind]

    @abstractmethod
    def wants(self, layer: LayerInfo, step: StepInfo) -> bool:
        """Whether this hook acts on this layer at this step."""


class AttentionObserver(AttentionHook):
    """Reads probabilities without changing the layer's output."""

    kind = HookKind.OBSERVE

    @abstractmethod
    def observe(self, layer: LayerInfo, step: StepInfo, probs: torch.Tensor) -> None:
        """``probs``: (conditional rows, heads, queries, keys), computed beside the fused
        attention of the layer (half the batch, no explicit softmax(QK^T) V)."""


class QueryKeyReplacement(AttentionHook):
    """Replaces whole probability rows by another batch row's: since softmax(Q_s K_s^T) V_t
    is attention with the source's queries and keys and the target's values, the layer
    keeps running fused attention."""

    kind = HookKind.REPLACE_QUERY_KEY

    @abstractmethod
    def query_key(
        self, layer: LayerInfo, step: StepInfo, query: torch.Tensor, key: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (query, key) the layer attends with, each (batch, heads, tokens, dim)."""


class ProbabilityReplacement(AttentionHook):
    """Reads or replaces the probabilities of every row: the layer computes
    softmax(QK^T) explicitly and multiplies the returned probabilities by V."""

    kind = HookKind.REPLACE_PROBABILITIES

    @abstractmethod
    def replace_probabilities(
        self, layer: LayerInfo, step: StepInfo, probs: torch.Tensor
    ) -> torch.Tensor:
        """The probabilities the layer uses, (batch, heads, queries, keys); ``probs`` as
        they are, or changed."""


@dataclass
class AttentionState:
    """Shared by all processors of one UNet."""

    step: StepInfo = field(default_factory=StepInfo)
    hooks: list[AttentionHook] = field(default_factory=list)


class LaspaAttnProcessor:
    """Attention that exposes its probabilities to hooks, and is fused otherwise."""

    def __init__(self, layer: LayerInfo, state: AttentionState):
        self.layer = layer
        self.state = state

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial_shape = None
        if hidden_states.ndim == 4:
            batch, channels, height, width = hidden_states.shape
            spatial_shape = (channels, height, width)
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:
            # (batch * heads, 1 or queries, keys), the layout get_attention_scores takes
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)

        query, key, value = (
            _split_heads(projection, attn.heads)
            for projection in (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context))
        )
        step = self.state.step
        active = []  # hooks that need (and may change) the probabilities themselves
        observers = []  # hooks that only read the conditional rows' probabilities
        for hook in self.state.hooks:
            if not hook.wants(self.layer, step):
                continue
            if hook.kind is HookKind.REPLACE_QUERY_KEY:
                query, key = hook.query_key(self.layer, step, query, key)
            elif hook.kind is HookKind.OBSERVE:
                observers.append(hook)
            elif hook.kind is HookKind.REPLACE_PROBABILITIES:
                active.append(hook)
            else:
                raise TypeError(f"unknown attention hook kind {hook.kind!r}")
        if active:
            probs = _probabilities(attn, query, key, attention_mask).to(value.dtype)
            for hook in active:
                probs = hook.replace_probabilities(self.layer, step, probs)
            out = torch.matmul(probs, value)
            conditional = probs[step.half(batch)]
        else:
            mask = None
            if attention_mask is not None:
                mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, scale=attn.scale
            )
            if observers:
                rows = step.half(batch)
                mask = None if mask is None else mask[rows].flatten(0, 1)
                conditional = _probabilities(attn, query[rows], key[rows], mask)
        for hook in observers:
            hook.observe(self.layer, step, conditional)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1])
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial_shape is not None:
            out = out.transpose(-1, -2).reshape(batch, *spatial_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


# diffusers' Attention.forward calls inspect.signature on its processor's __call__ at every
# call (to filter cross_attention_kwargs); a signature set here spares parsing it again,
# a few percent of a step on a small UNet.
LaspaAttnProcessor.__call__.__signature__ = inspect.signature(LaspaAttnProcessor.__call__)


def _probabilities(attn, query, key, attention_mask) -> torch.Tensor:
    """softmax(Q K^T * scale + mask) of (batch, heads, tokens, dim) queries and keys, as
    diffusers' own processor computes it for this layer: (batch, heads, queries, keys)."""
    batch, heads = query.shape[:2]
    probs = attn.get_attention_scores(query.flatten(0, 1), key.flatten(0, 1), attention_mask)
    return probs.view(batch, heads, *probs.shape[1:])


def scaled_scores(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """Q K^T * scale of (batch, heads, queries, dim) and (batch, heads, keys, dim), in their
    dtype with the scale inside the matmul, as diffusers' ``get_attention_scores`` computes
    them: in half precision the product is scaled before it is rounded, so it does not
    overflow where unscaled scores would."""
    flat_query, flat_key = query.flatten(0, 1), key.flatten(0, 1)
    empty = flat_query.new_empty(flat_query.shape[0], flat_query.shape[1], flat_key.shape[1])
    scores = torch.baddbmm(empty, flat_query, flat_key.transpose(-1, -2), beta=0, alpha=scale)
    return scores.unflatten(0, query.shape[:2])


#: the most bytes one chunk of explicit joint probabilities may take (float32)
JOINT_CHUNK_BYTES = 256 * 2**20


def query_chunk(heads: int, keys: int, budget: int = JOINT_CHUNK_BYTES) -> int:
    """How many queries of one row fit ``budget`` bytes of float32 scores over ``keys``."""
    return max(1, budget // (4 * heads * keys))


def _split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, dim = tensor.shape
    return tensor.view(batch, length, heads, dim // heads).transpose(1, 2)


_NAME = re.compile(r"^(down_blocks|mid_block|up_blocks)\.?(\d*)\.attentions\.(\d+)\.(.*)attn([12])")


def describe_layers(unet) -> dict[str, LayerInfo]:
    """LayerInfo for every attention processor name of a diffusers UNet2DConditionModel."""
    names = list(unet.attn_processors)
    num_down = len(unet.config.block_out_channels)
    parsed = []
    for name in names:
        match = _NAME.match(name)
        if match is None:
            raise ValueError(f"unrecognised attention module name {name!r}")
        group, block, attention, inner, which = match.groups()
        block_index = int(block) if block else 0
        if group == "down_blocks":
            place, rank, level = "down", 0, block_index
        elif group == "mid_block":
            place, rank, level = "mid", 1, num_down - 1
        else:
            place, rank, level = "up", 2, num_down - 1 - block_index
        inner_index = tuple(int(n) for n in re.findall(r"\d+", inner))
        sort_key = (rank, block_index, int(attention), inner_index, int(which))
        parsed.append((sort_key, name, place, which == "2", 2**level))
    parsed.sort()
    infos: dict[str, LayerInfo] = {}
    counts = {True: 0, False: 0}
    for order, (_, name, place, is_cross, downsample) in enumerate(parsed):
        infos[name] = LayerInfo(name, place, order, counts[is_cross], is_cross, downsample)
        counts[is_cross] += 1
    return infos


def install_processors(unet) -> AttentionState:
    """Install one LaspaAttnProcessor per attention module; return their shared state."""
    return _install(unet, describe_layers(unet), LaspaAttnProcessor)


def _install(model, layers: dict[str, LayerInfo], make, keep_others: bool = False):
    """One laspa processor (``make(info, state)``) per described layer, all sharing one
    AttentionState; with ``keep_others`` the model's own processors stay elsewhere."""
    state = AttentionState()
    processors = dict(model.attn_processors) if keep_others else {}
    processors.update({name: make(info, state) for name, info in layers.items()})
    model.set_attn_processor(processors)
    return state


def query_grid(layer: LayerInfo, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) grid of a layer's queries for a latent of the given size."""
    height, width = latent_hw
    return math.ceil(height / layer.downsample), math.ceil(width / layer.downsample)


# ----------------------------------------------------------------------------- hooks


def coarse_cross_levels(layers: dict[str, LayerInfo]) -> set[int]:
    """The default cross-attention level for maps: the coarsest one outside the mid block.

    On SD 1.x at 512 px this is the 16x16 level (5 layers), the one LASPA and InstDiffEdit
    read; on a smaller UNet it is the analogous level.
    """
    levels = {info.downsample for info in layers.values() if info.is_cross and info.place != "mid"}
    if not levels:
        raise ValueError("this UNet has no cross-attention outside its mid block")
    return {max(levels)}


class StepMean:
    """Maps recorded layer by layer: this step's mean over layers, and the running mean of
    those step means over the steps recorded so far."""

    def __init__(self):
        self.step_index: int | None = None
        self._step_sum: torch.Tensor | None = None
        self._step_layers = 0
        self._total: torch.Tensor | None = None
        self.steps_recorded = 0

    def add(self, step_index: int, maps: torch.Tensor) -> None:
        if step_index != self.step_index:
            self._close_step()
            self.step_index = step_index
        self._step_sum = maps if self._step_sum is None else self._step_sum + maps
        self._step_layers += 1

    def _close_step(self) -> None:
        if self._step_sum is None:
            return
        mean = self._step_sum / self._step_layers
        self._total = mean if self._total is None else self._total + mean
        self.steps_recorded += 1
        self._step_sum, self._step_layers = None, 0

    def current(self) -> torch.Tensor:
        """This step's mean over layers."""
        if self._step_sum is None:
            raise RuntimeError("no attention recorded in this step")
        return self._step_sum / self._step_layers

    def mean(self) -> torch.Tensor:
        """Running mean over the recorded steps, this step included."""
        self._close_step()
        if self._total is None:
            raise RuntimeError("no attention was recorded")
        return self._total / self.steps_recorded


class CrossAttentionStore(StepMean, ProbabilityReplacement):
    """Records cross-attention probabilities of chosen levels, averaged over heads and layers.

    Keeps, per latent row, this step's map and the running mean over the steps recorded so
    far, both of shape (rows, h, w, tokens) on the grid of the coarsest chosen level (finer
    levels are area-averaged down to it). Maps of the conditional half only by default:
    the unconditional branch attends to the empty prompt.
    """

    def __init__(
        self,
        levels: set[int],
        rows: slice | None = None,
        conditional: bool = True,
        record_step: Callable[[StepInfo], bool] | None = None,
    ):
        super().__init__()
        self.levels = levels
        self.rows = rows  # which latent rows to keep (default: all)
        self.conditional = conditional
        self.record_step = record_step

    def wants(self, layer: LayerInfo, step: StepInfo) -> bool:
        if not layer.is_cross or layer.downsample not in self.levels:
            return False
        return self.record_step is None or self.record_step(step)

    def replace_probabilities(
        self, layer: LayerInfo, step: StepInfo, probs: torch.Tensor
    ) -> torch.Tensor:
        half = probs[step.half(probs.shape[0], self.conditional)]
        if self.rows is not None:
            half = half[self.rows]
        height, width = query_grid(layer, step.latent_hw)
        maps = half.float().mean(dim=1).reshape(half.shape[0], height, width, -1)
        target = query_grid(LayerInfo("", "", 0, 0, True, max(self.levels)), step.latent_hw)
        if (height, width) != target:
            maps = F.adaptive_avg_pool2d(maps.permute(0, 3, 1, 2), target).permute(0, 2, 3, 1)
        self.add(step.index, maps)
        return probs


def self_attention_level(layers: dict[str, LayerInfo], cross_levels: set[int]) -> int:
    """The self-attention level for affinities that sharpen cross-attention maps: one level
    finer than the finest map level, where the UNet has self-attention there (on SD 1.x at
    512 px the 32x32 level under the 16x16 maps), else the map level itself."""
    self_levels = {
        info.downsample for info in layers.values() if info.is_self and info.place != "mid"
    }
    finer = [level for level in self_levels if level < min(cross_levels)]
    return max(finer) if finer else min(cross_levels)


class SelfAttentionStore(StepMean, AttentionObserver):
    """Records the conditional half's self-attention probabilities of one level, averaged
    over heads and layers: a pixel-to-pixel affinity (rows, queries, keys), each query row
    summing to 1, as a running mean over the steps recorded so far."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def grid(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) grid of the affinities' pixels for a latent of the given size."""
        return query_grid(LayerInfo("", "", 0, 0, False, self.level), latent_hw)

    def wants(self, layer: LayerInfo, step: StepInfo) -> bool:
        return layer.is_self and layer.downsample == self.level

    def observe(self, layer: LayerInfo, step: StepInfo, probs: torch.Tensor) -> None:
        # the head mean in float32 without a float32 copy of every head's map (fp16 on GPU)
        self.add(step.index, probs.mean(dim=1, dtype=torch.float32))


class CrossAttentionSwap(ProbabilityReplacement):
    """Prompt-to-prompt style swap: the conditional cross-attention of ``targets`` rows is
    replaced by that of ``sources`` rows, with token positions mapped between the prompts
    (``token_map[i, j]`` = the source position for token j of target i, or -1 to keep the
    target's own), in the steps where ``active(step)`` is true for that target row."""

    def __init__(
        self,
        sources: list[int],
        targets: list[int],
        token_map: torch.Tensor,
        active: Callable[[StepInfo], torch.Tensor],
    ):
        self.sources, self.targets = sources, targets
        self.token_map = token_map  # (targets, tokens) long
        self.active = active  # step -> (targets,) bool

    def wants(self, layer: LayerInfo, step: StepInfo) -> bool:
        return layer.is_cross and bool(self.active(step).any())

    def replace_probabilities(
        self, layer: LayerInfo, step: StepInfo, probs: torch.Tensor
    ) -> torch.Tensor:
        start = step.half(probs.shape[0]).start
        sources = [start + s for s in self.sources]
        targets = [start + t for t in self.targets]
        token_map = self.token_map.to(probs.device)
        if token_map.shape[1] < probs.shape[-1]:  # SD3: T5's tokens after CLIP's keep their own
            token_map = F.pad(token_map, (0, probs.shape[-1] - token_map.shape[1]), value=-1)
        index = token_map.clamp(min=0)[:, None, None, :].expand(-1, *probs.shape[1:3], -1)
        swapped = torch.gather(probs[sources], -1, index)
        keep = (token_map < 0)[:, None, None, :]
        new = torch.where(keep, probs[targets], swapped)
        new = new / new.sum(-1, keepdim=True).clamp_min(1e-12)
        active = self.active(step).to(probs.device).view(-1, 1, 1, 1)
        probs = probs.clone()
        probs[targets] = torch.where(active, new, probs[targets])
        return probs


class SelfAttentionReplace(QueryKeyReplacement):
    """FPE: in chosen self-attention layers and steps, the conditional self-attention
    probabilities of each ``targets[i]`` row are replaced by those of ``sources[i]``."""

    def __init__(
        self, layer_names: set[str], last_step: int, sources: list[int], targets: list[int]
    ):
        self.layer_names = layer_names
        self.last_step = last_step  # replace while step.index < last_step
        self.sources, self.targets = sources, targets
        self.calls: list[tuple[str, int]] = []  # (layer, step) of every replacement, for tests

    def wants(self, layer: LayerInfo, step: StepInfo) -> bool:
        return layer.is_self and layer.name in self.layer_names and step.index < self.last_step

    def query_key(
        self, layer: LayerInfo, step: StepInfo, query: torch.Tensor, key: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The target rows take the source rows' queries and keys (so their probabilities)
        and keep their own values: the replacement without materialising the maps."""
        self.calls.append((layer.name, step.index))
        start = step.half(query.shape[0]).start
        targets = [start + t for t in self.targets]
        sources = [start + s for s in self.sources]
        query, key = query.clone(), key.clone()
        query[targets], key[targets] = query[sources], key[sources]
        return query, key


# ------------------------------------------------------------------ MMDiT (SD3) attention


class LaspaJointAttnProcessor:
    """SD3's joint attention (diffusers' ``JointAttnProcessor2_0``: image and text tokens
    attend together, image first) that exposes its image-to-text attention to hooks.

    An MMDiT has no cross-attention layer; its image-to-text attention is the text block of
    the joint softmax. Hooks see it as cross-attention: the image queries' scores over the
    text keys, softmaxed over the text keys alone (batch, heads, image tokens, text tokens).
    Observers (maps) read it beside the fused attention. A probability replacement (the
    laspa-mix swap) replaces the text block of the joint probabilities, keeping each image
    query's total attention to the text, so the layer then computes the image queries'
    attention explicitly. The text queries, and every layer no hook wants, stay fused.
    """

    def __init__(self, layer: LayerInfo, state: AttentionState):
        self.layer = layer
        self.state = state

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        last_token_repeats: int = 1,
        *args,
        **kwargs,
    ):
        batch, images = hidden_states.shape[:2]
        query, key, value = (
            _split_heads(projection, attn.heads)
            for projection in (attn.to_q(hidden_states), attn.to_k(hidden_states),
                               attn.to_v(hidden_states))
        )  # fmt: skip
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if encoder_hidden_states is not None:
            text_query, text_key, text_value = (
                _split_heads(projection, attn.heads)
                for projection in (attn.add_q_proj(encoder_hidden_states),
                                   attn.add_k_proj(encoder_hidden_states),
                                   attn.add_v_proj(encoder_hidden_states))
            )  # fmt: skip
            if attn.norm_added_q is not None:
                text_query = attn.norm_added_q(text_query)
            if attn.norm_added_k is not None:
                text_key = attn.norm_added_k(text_key)
            query = torch.cat([query, text_query], dim=2)
            key = torch.cat([key, text_key], dim=2)
            value = torch.cat([value, text_value], dim=2)
        bias = None
        if last_token_repeats > 1 and encoder_hidden_states is not None:
            # the last text token stands for that many identical ones (SD3 without T5)
            bias = torch.zeros(key.shape[2], dtype=query.dtype, device=query.device)
            bias[-1] = math.log(last_token_repeats)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=None if bias is None else bias.view(1, 1, 1, -1),
            dropout_p=0.0, is_causal=False,
        )  # fmt: skip
        hooks = [hook for hook in self.state.hooks if hook.wants(self.layer, self.state.step)]
        if hooks and encoder_hidden_states is not None:
            out = self._hooked(attn, hooks, query, key, value, out, images, bias)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1])
        out = out.to(query.dtype)
        if encoder_hidden_states is None:
            return attn.to_out[1](attn.to_out[0](out))
        out, text_out = out[:, :images], out[:, images:]
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out)
        return attn.to_out[1](attn.to_out[0](out)), text_out

    def _hooked(self, attn, hooks, query, key, value, out, images: int, bias) -> torch.Tensor:
        step = self.state.step
        scale = attn.scale
        image_query = query[:, :, :images]
        text_scores = scaled_scores(image_query, key[:, :, images:], scale).float()
        if bias is not None:
            text_scores = text_scores + bias[images:]
        cross = text_scores.softmax(dim=-1).to(query.dtype)
        replacing = [h for h in hooks if h.kind is HookKind.REPLACE_PROBABILITIES]
        for hook in hooks:
            if hook.kind is HookKind.OBSERVE:
                hook.observe(self.layer, step, cross[step.half(cross.shape[0])])
            elif hook.kind is not HookKind.REPLACE_PROBABILITIES:
                raise TypeError(f"{hook.kind.value} hooks do not run on joint attention")
        if not replacing:
            return out
        new = cross
        for hook in replacing:
            new = hook.replace_probabilities(self.layer, step, new)
        if new is cross:  # recorders hand the probabilities back unchanged: stay fused
            return out
        # the rows whose maps changed: their image queries' joint probabilities, the text
        # block replaced at equal mass (the other rows keep the fused result)
        rows = (new != cross).flatten(1).any(dim=1).nonzero().flatten().tolist()
        out = out.clone()
        for row in rows:
            out[row : row + 1, :, :images] = swapped_attention(
                image_query[row : row + 1], key[row : row + 1], value[row : row + 1],
                new[row : row + 1], scale, bias,
            )  # fmt: skip
        return out


LaspaJointAttnProcessor.__call__.__signature__ = inspect.signature(LaspaJointAttnProcessor.__call__)


def swapped_attention(
    image_query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    text_probs: torch.Tensor,
    scale: float,
    bias: torch.Tensor | None = None,
    budget: int = JOINT_CHUNK_BYTES,
) -> torch.Tensor:
    """Image queries' joint attention (batch, heads, images, dim) with the text block of
    its probabilities replaced by ``text_probs`` (batch, heads, images, texts) at the mass
    the queries gave the text. Keys and values hold the image tokens, then the text's.
    Computed a chunk of queries at a time, so its float32 probabilities never take more
    than ``budget`` bytes (at 1024 x 1024 a whole row's would take gigabytes)."""
    images = image_query.shape[2]
    chunk = query_chunk(image_query.shape[0] * image_query.shape[1], key.shape[2], budget)
    parts = []
    for start in range(0, images, chunk):
        query = image_query[:, :, start : start + chunk]
        probs = scaled_scores(query, key, scale).float()
        if bias is not None:
            probs = probs + bias
        probs = probs.softmax(dim=-1)
        text_mass = probs[..., images:].sum(-1, keepdim=True)
        replaced = text_probs[:, :, start : start + chunk].float() * text_mass
        probs = torch.cat([probs[..., :images], replaced], dim=-1)
        parts.append(torch.matmul(probs.to(value.dtype), value))
    return torch.cat(parts, dim=2)


def describe_joint_layers(transformer) -> dict[str, LayerInfo]:
    """LayerInfo for the joint-attention processors of an SD3 transformer: every one is a
    "cross" layer (its image-to-text block) on the patch grid, in block order."""
    patch = int(transformer.config.patch_size)
    infos: dict[str, LayerInfo] = {}
    counts = {True: 0, False: 0}
    for order, name in enumerate(transformer.attn_processors):
        joint = not name.endswith("attn2.processor")  # SD3.5's attn2: image tokens only
        infos[name] = LayerInfo(name, "down", order, counts[joint], joint, patch)
        counts[joint] += 1
    return infos


def install_joint_processors(transformer) -> AttentionState:
    """Install one LaspaJointAttnProcessor per attention module of an SD3 transformer."""
    return _install(transformer, describe_joint_layers(transformer), LaspaJointAttnProcessor)


# ------------------------------------------------------------------ FLUX attention


def flux_processor(layer: LayerInfo, state: AttentionState):
    """A processor for one of FLUX's double-stream attention layers that computes exactly
    as diffusers' ``FluxAttnProcessor`` and, where a hook wants the layer, also hands it
    the image queries' attention over the text keys (rotary positions applied, softmaxed
    over the text keys alone), as on SD3. Hooks there only read: a replacement (a swap)
    is refused, since the layer's own computation stays diffusers'."""
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.transformers.transformer_flux import (
        FluxAttnProcessor,
        _get_qkv_projections,
    )

    from .errors import ParameterError

    class LaspaFluxAttnProcessor(FluxAttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None,
                     attention_mask=None, image_rotary_emb=None):  # fmt: skip
            out = super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb
            )
            step = state.step
            hooks = [hook for hook in state.hooks if hook.wants(layer, step)]
            if not hooks or encoder_hidden_states is None:
                return out
            query, _, _, _, text_key, _ = _get_qkv_projections(
                attn, hidden_states, encoder_hidden_states
            )
            query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
            text_key = attn.norm_added_k(text_key.unflatten(-1, (-1, attn.head_dim)))
            texts = encoder_hidden_states.shape[1]
            if image_rotary_emb is not None:
                cos, sin = image_rotary_emb
                query = apply_rotary_emb(query, (cos[texts:], sin[texts:]), sequence_dim=1)
                text_key = apply_rotary_emb(text_key, (cos[:texts], sin[:texts]), sequence_dim=1)
            scores = scaled_scores(
                query.transpose(1, 2), text_key.transpose(1, 2), attn.head_dim**-0.5
            )
            cross = scores.float().softmax(dim=-1).to(query.dtype)
            for hook in hooks:
                if hook.kind is HookKind.OBSERVE:
                    hook.observe(layer, step, cross[step.half(cross.shape[0])])
                elif hook.kind is HookKind.REPLACE_PROBABILITIES:
                    if hook.replace_probabilities(layer, step, cross) is not cross:
                        raise ParameterError(
                            "attention swaps do not run on FLUX yet (laspa-mix: swap=off)"
                        )
                else:
                    raise ParameterError(f"{hook.kind.value} hooks do not run on FLUX")
            return out

    return LaspaFluxAttnProcessor()


def describe_flux_layers(transformer) -> dict[str, LayerInfo]:
    """LayerInfo for FLUX's double-stream attention layers (image-to-text maps on the
    packed 2 x 2 grid); its single-stream layers keep diffusers' processors."""
    names = [n for n in transformer.attn_processors if n.startswith("transformer_blocks.")]
    return {name: LayerInfo(name, "down", i, i, True, 2) for i, name in enumerate(names)}


def install_flux_processors(transformer) -> AttentionState:
    """laspa's processor on FLUX's double-stream layers, diffusers' own elsewhere."""
    return _install(
        transformer, describe_flux_layers(transformer), flux_processor, keep_others=True
    )
