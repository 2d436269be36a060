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
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..edit_rows import EditBatch, EditRow, check_model_kind
from ..errors import ParameterError

__all__ = ["EditBatch", "EditRow", "check_model_kind"]  # re-exported: the methods' names

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

    #: whether an edit that names no steps or guidance runs its model family's own
    #: (Editor.family_defaults); False where a method carries its own table per family
    uses_family_defaults: ClassVar[bool] = True

    @classmethod
    def few_step_defaults(cls, steps: list) -> dict[str, Any]:
        """Defaults that differ on a few-step schedule (LCM, TCD) of ``steps``, so that a
        method's defaults edit at 1-8 steps as they do at 50: none here."""
        return {}

    @classmethod
    def implied(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the values other given options imply (an alias such as
        laspa-mix's ``change``, which means ``keep=rest``); every front end's options pass
        here, in :func:`make_params`, so that they all mean the same."""
        return dict(options)

    def idle_options(self, sampler: str) -> dict[str, str]:
        """The options that cannot act in this edit, each with why; ``sampler``: the one
        the edit runs ("auto" while the model, which resolves it, is not known)."""
        from ..samplers import SAMPLERS

        idle = {}
        if sampler not in ("auto", "tcd"):
            idle["gamma"] = f"gamma acts only with the tcd sampler; this edit's is {sampler}"
        if sampler != "auto" and SAMPLERS[sampler].is_deterministic(self.gamma):
            idle["step_noise"] = (
                "step_noise acts only with a sampler that adds noise (ancestral, lcm, tcd "
                f"with gamma > 0); this edit's is {sampler}"
                + (f" with gamma {self.gamma:g}" if sampler == "tcd" else "")
            )
        return idle


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


def make_params(
    method: str,
    overrides: dict[str, Any],
    params_cls: type | None = None,
    *,
    sampler: str | None = None,
) -> Any:
    """The method's Params with ``overrides`` applied and validated: the one place where
    every front end's options (CLI, Python, batch manifest, web, bench) are built. Names,
    types and ranges are checked, aliases resolved (``Params.implied``) and an option
    given a value it cannot act on refused (``Params.idle_options``; a value equal to the
    default is the same as none). ``params_cls``: its Params, when it is not a registered
    method (a bench peer). ``sampler``: what "auto" runs on the loaded model (None: not
    known yet, so options that depend on it are checked once it is)."""
    params_cls = params_cls or METHODS[method].Params
    check_option_names(method, overrides, params_cls)
    implied = getattr(params_cls, "implied", None)
    options = implied(overrides) if callable(implied) else dict(overrides)
    params = params_cls(**typed_options(params_cls, options))
    validate(params)
    # options that are each in range but together impossible (e.g. strength x steps)
    check_together = getattr(params, "check_together", None)
    if callable(check_together):
        check_together()
    if method in METHODS:
        check_sampler(method, getattr(params, "sampler", "auto"))
    check_idle(params, overrides, sampler)
    return params


def check_idle(params: Any, given: dict[str, Any], model_sampler: str | None) -> None:
    """Refuse the first given option that cannot act in this edit (``--gamma`` with the lcm
    sampler, ``--step-noise`` with ddim, ...), in one line."""
    idle_options = getattr(params, "idle_options", None)
    if not callable(idle_options):
        return
    sampler = getattr(params, "sampler", "auto")
    if sampler == "auto" and model_sampler is not None:
        sampler = model_sampler
    idle = idle_options(sampler)
    defaults = {spec.name: spec.default for spec in dataclasses.fields(params)}
    for name in given:
        if name in idle and given[name] != defaults.get(name):
            raise ParameterError(idle[name])


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def typed_options(params_cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with each value checked against its field's type, as the CLI's own
    parsing would: a wrong one (``K="200"``, ``K=None``, ``beta=True``) is refused in one
    line, whatever front end it came from. A whole number given for a float option
    becomes a float (``beta=1`` is ``beta=1.0``), so equal options make equal Params."""
    hints = _field_types(params_cls)
    typed = dict(options)
    for name, value in options.items():
        wanted, optional = hints.get(name, (None, True))
        if wanted is None or (value is None and optional):
            continue
        if isinstance(value, bool):
            fits = wanted is bool
        elif wanted is float:
            fits = isinstance(value, int | float)
        else:
            fits = isinstance(value, wanted)
        if not fits:
            raise ParameterError(f"{name} must be {_TYPE_WORDS[wanted]}, got {value!r}")
        if wanted is float:
            typed[name] = float(value)
    return typed


def _field_types(params_cls: type) -> dict[str, tuple[type | None, bool]]:
    """Each field's value type (bool, int, float or str; None: another) and whether None
    is allowed (an optional field, or one whose default is None)."""
    try:
        hints = typing.get_type_hints(params_cls)
    except (NameError, TypeError):  # an annotation we cannot resolve: no type check
        return {}
    types_of = {}
    for spec in dataclasses.fields(params_cls):
        members = typing.get_args(hints.get(spec.name)) or (hints.get(spec.name),)
        concrete = [m for m in members if m in _TYPE_WORDS]
        optional = type(None) in members or spec.default is None
        types_of[spec.name] = (concrete[0] if len(concrete) == 1 else None, optional)
    return types_of


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
