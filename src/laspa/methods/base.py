"""What every editing method is: validated parameters and a ``run`` over one batch.

A method never loads a model, parses arguments or writes files. It receives an
:class:`EditBatch` (the reference latent of one image and one row per requested
edit: prompt, seed, parameters) and the :class:`~laspa.engine.Engine`, its only way to
the model (conditioning, noise, the sampler loop, inversion, attention stores), and
returns latents.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import ParameterError

if TYPE_CHECKING:
    from ..engine import Engine


def option(
    default: Any,
    *,
    low=None,
    high=None,
    low_open=False,
    choices=None,
    help: str = "",
    widget: str | None = None,
):
    """A dataclass field with its valid range, for validation and for the CLI's help.
    ``widget="number"`` asks the web UI for a number box where a bounded option would
    otherwise get a slider (a wide range whose useful values sit at one end)."""
    meta = {
        "low": low, "high": high, "low_open": low_open, "choices": choices, "help": help,
        "widget": widget,
    }  # fmt: skip
    return field(default=default, metadata=meta)


#: The guidance scales accepted. Above the top, the guided noise prediction can outgrow
#: what half precision holds. Measured on the bundled miniature (10 steps, one scene;
#: benchmarks/guidance_range.py), the output first turns non-finite between 3e3 and 5e3
#: in float16 (generation, FPE, DDIM inversion; SDEdit at 7e3, the aligned methods at
#: 1e5-2e5) and between 1e15 and 1e20 in float32. 100 leaves a margin of 30 below the
#: float16 threshold, for models whose conditional and unconditional predictions differ
#: more, and lies far above the scales editing uses (1-30).
GUIDANCE_RANGE = (0.0, 100.0)


def guidance_option(default: float) -> Any:
    """The classifier-free guidance scale, with the range every method shares."""
    low, high = GUIDANCE_RANGE
    return option(
        default, low=low, high=high, widget="number", help="classifier-free guidance scale"
    )


#: the samplers an edit may name (laspa.samplers); "auto" follows the model's scheduler
SAMPLER_CHOICES = ("auto", "ddim", "ancestral", "lcm", "tcd", "flow")
DETERMINISTIC_SAMPLERS = ("ddim",)
#: common options that every row of one batch shares (they shape the whole run)
COMMON_BATCH_KEY = ("sampler", "step_noise", "guidance_mode", "gamma")


@dataclass
class CommonParams:
    """Options every method takes."""

    steps: int = option(50, low=1, high=1000, help="sampler steps")
    guidance: float = guidance_option(10.0)
    sampler: str = option(
        "auto", choices=SAMPLER_CHOICES,
        help="step rule: ddim, ancestral (DDPM), lcm or tcd on UNet models, flow (Euler) on "
        "flow models (SD3); auto follows the model's scheduler",
    )  # fmt: skip
    gamma: float = option(
        0.3, low=0.0, high=1.0,
        help="tcd's stochasticity: 0 deterministic, 1 the same as lcm",
    )  # fmt: skip
    step_noise: str = option(
        "auto", choices=("auto", "fixed", "fresh"),
        help="noise of ancestral / lcm / tcd steps: one draw per edit or one per step (auto: fixed "
        "for lcm, fresh for ancestral and tcd)",
    )  # fmt: skip
    guidance_mode: str = option(
        "auto", choices=("auto", "cfg", "embedding"),
        help="classifier-free guidance, or the UNet's guidance embedding (LCM); auto: the "
        "embedding where the UNet has one",
    )  # fmt: skip


def check_text(name: str, text: str) -> None:
    """Refuse text the tokenizer cannot take: bytes that are not UTF-8 (a shell argument
    such as $'\\xff') reach Python as lone surrogates, and so do JSON escapes like
    "\\ud800". The message leaves the character out: it cannot be printed or sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ParameterError(
            f"{name} is not valid UTF-8 text (an undecodable character at position {error.start})"
        ) from None


def check_prompt(prompt: Any, name: str = "the prompt") -> None:
    """A prompt must be non-empty text the tokenizer can read."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ParameterError(f"{name} must be a non-empty text")
    check_text(name, prompt)


def validate(params: Any) -> None:
    """Raise ParameterError naming the first field outside its documented range; numbers
    must be finite and text must be valid UTF-8."""
    for spec in dataclasses.fields(params):
        value = getattr(params, spec.name)
        meta = spec.metadata
        if value is None and spec.default is None:
            continue  # "not set": the method picks its own default
        if isinstance(value, str):
            check_text(spec.name, value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterError(f"{spec.name} must be a finite number, got {value}")
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise ParameterError(f"{spec.name} must be one of {', '.join(choices)}, got {value!r}")
        low, high = meta.get("low"), meta.get("high")
        if low is None and high is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParameterError(f"{spec.name} must be a number, got {value!r}")
        too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
        too_high = high is not None and value > high
        if value != value or too_low or too_high:  # value != value: NaN
            raise ParameterError(f"{spec.name} must be {_range_text(meta)}, got {value}")


def _range_text(meta) -> str:
    low, high = meta.get("low"), meta.get("high")
    if high is None:
        return f"> {low}" if meta.get("low_open") else f">= {low}"
    if low is None:
        return f"<= {high}"
    return f"in {'(' if meta.get('low_open') else '['}{low}, {high}]"


@dataclass
class EditRow:
    """One requested edit of the batch's image."""

    prompt: str
    seed: int
    params: Any  # the method's Params dataclass


@dataclass
class EditBatch:
    """Edits of one image that share one UNet batch."""

    #: (1, C, h, w): enc(I), scaled like diffusers does; (N, C, h, w), one image per row,
    #: for methods with ``many_images``
    reference: torch.Tensor | None
    rows: list[EditRow]
    record_attention: bool = False  # return each row's cross-attention token maps
    pixels: torch.Tensor | None = None  # (1, 3, H, W) in [-1, 1]: the input at model size

    @property
    def size(self) -> int:
        return len(self.rows)

    def param(self, name: str) -> list[Any]:
        return [getattr(row.params, name) for row in self.rows]

    def shared(self, name: str) -> Any:
        """A parameter every row must share (e.g. the number of steps)."""
        values = set(self.param(name))
        if len(values) != 1:
            raise ParameterError(f"{name} must be equal for all edits of one batch, got {values}")
        return values.pop()

    def column(self, name: str, device: torch.device | None = None) -> torch.Tensor:
        """A numeric parameter as a per-row float32 tensor of shape (N,)."""
        return torch.tensor([float(v) for v in self.param(name)], device=device)


@dataclass
class MethodOutput:
    latents: torch.Tensor  # (N, C, h, w), the edited latents
    masks: torch.Tensor | None = None  # (N, 1, h, w) in [0, 1] for methods that make a mask
    #: (N, h, w, tokens) cross-attention of each row, and the prompt each row's maps read
    token_maps: torch.Tensor | None = None
    map_prompts: list[str] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: per edit, small JSON-ready facts a user may want (InstDiffEdit's index word): they
    #: become ``EditResult.notes`` and the CLI's ``--json`` ``notes``
    notes: list[dict[str, Any]] | None = None
    #: (N, 3, H, W) in [-1, 1]: the latents already decoded, by a VAE other than the
    #: model's (InstDiffEdit's inpainting checkpoint); None: the model's VAE decodes them
    pixels: torch.Tensor | None = None


class Method:
    """Base class of a registered editing method."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type]
    #: parameters that must be equal within one batch; rows differing in them run apart
    batch_key: ClassVar[tuple[str, ...]] = ("steps",)
    #: whether it inverts the image, which only a deterministic sampler (DDIM) can do
    needs_deterministic_sampler: ClassVar[bool] = False
    #: the model kinds it runs on (``engine.kind``): "unet" (eps / v), "flow" (SD3)
    kinds: ClassVar[tuple[str, ...]] = ("unet", "flow")
    #: whether results carry a mask (EditResult.mask)
    makes_mask: ClassVar[bool] = False
    #: whether it can return cross-attention maps (``Editor.attention_maps``)
    records_attention: ClassVar[bool] = False
    #: whether the method reads the image's latent enc(I) (batch.reference); when not, the
    #: image is not encoded and batch.reference is None
    reads_image: ClassVar[bool] = True
    #: parameters a benchmark case may fill from what it knows (the source caption, the
    #: subject word); opt-in, because a same-named option can mean something else (FPE's
    #: ``source_prompt`` switches it to generated-image mode)
    case_inputs: ClassVar[tuple[str, ...]] = ()
    #: whether run() also takes a reference of one row per edit (several images in one
    #: batch: the frames of a video); methods whose rows expand one image stay one by one
    many_images: ClassVar[bool] = False

    def run(self, engine: Engine, batch: EditBatch) -> MethodOutput:
        raise NotImplementedError


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> Method:
    try:
        return METHODS[name]()
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise ParameterError(f"unknown method {name!r}; choose one of: {known}") from None


def check_option_names(method: str, names, params_cls: type | None = None) -> None:
    """Refuse option names ``method`` does not take, listing those it does.
    ``params_cls``: its Params, when it is not a registered method (a bench peer)."""
    known = {spec.name for spec in dataclasses.fields(params_cls or METHODS[method].Params)}
    unknown = sorted(set(names) - known, key=str)
    if unknown:
        raise ParameterError(
            f"method {method} does not take {', '.join(map(str, unknown))} "
            f"(it takes: {', '.join(sorted(known))})"
        )


def check_seed(seed: Any) -> int:
    """A seed is a whole number in [0, 2**63) (what torch.Generator takes)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ParameterError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return seed


def make_params(method: str, overrides: dict[str, Any], params_cls: type | None = None) -> Any:
    """The method's Params with ``overrides`` applied and validated. ``params_cls``: its
    Params, when it is not a registered method (a bench peer)."""
    params_cls = params_cls or METHODS[method].Params
    check_option_names(method, overrides, params_cls)
    params = params_cls(**overrides)
    validate(params)
    # options that are each in range but together impossible (e.g. strength x steps)
    check_together = getattr(params, "check_together", None)
    if callable(check_together):
        check_together()
    if method in METHODS:
        check_sampler(method, getattr(params, "sampler", "auto"))
    return params


def check_sampler(method: str, sampler: str) -> None:
    """Refuse a stochastic sampler for a method that inverts the image."""
    if METHODS[method].needs_deterministic_sampler and sampler not in (
        "auto",
        *DETERMINISTIC_SAMPLERS,
    ):
        raise ParameterError(
            f"{method} inverts the image, which needs a deterministic sampler: "
            f"use --sampler ddim, not {sampler}"
        )


_KIND_NAMES = {"unet": "UNet (eps / v) models", "flow": "flow models"}


def check_model_kind(what: str, kind: str, kinds) -> None:
    """Refuse, in one line, a method or sampler (``what``) whose ``kinds`` leave out the
    model's ``kind`` ("unet" or "flow")."""
    if kind not in kinds:
        model = "a flow model (SD3 or FLUX)" if kind == "flow" else "a UNet (eps / v) model"
        runs = " or ".join(_KIND_NAMES[k] for k in kinds)
        raise ParameterError(f"{what} runs on {runs} only; this is {model}")
