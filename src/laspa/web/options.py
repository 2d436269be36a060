"""A method's options as the web UI shows them, read from its ``Params`` dataclass.

Nothing here imports gradio: the widgets are described from each field's default and
``metadata`` (low, high, low_open, choices, help), so a newly registered method shows up
in the UI, its sweep axes and its API with no change to the web code.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from ..errors import ParameterError
from ..methods import METHODS
from ..methods.base import check_option_names

#: widget kinds: a slider for a bounded number, a number box for a half-open range,
#: a radio for a fixed set of words, a checkbox for a flag and a textbox for free text
KINDS = ("slider", "number", "radio", "checkbox", "text")


@dataclass(frozen=True)
class OptionSpec:
    """One option of one method, as the UI needs it."""

    name: str
    kind: str
    default: Any
    python_type: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    help: str = ""
    optional: bool = False  # None is allowed and means "the method decides"

    @property
    def step(self) -> float:
        """Slider step: whole numbers for ints, a hundredth of the range for floats."""
        if self.python_type is int:
            return 1
        span = (self.high or 1.0) - (self.low or 0.0)
        return span / 100 if span > 0 else 0.01

    @property
    def minimum(self) -> float | None:
        """The smallest value a widget offers; an open bound moves one step inside."""
        if self.low is None:
            return None
        return self.low + self.step if self.low_open else self.low

    @property
    def info(self) -> str:
        """Help text with the valid range, shown under the widget."""
        text = self.help
        if self.choices:
            pass
        elif self.low is not None and self.high is not None:
            bracket = "(" if self.low_open else "["
            text = f"{text} {bracket}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            text = f"{text} ({'>' if self.low_open else '>='} {self.low:g})"
        if self.optional:
            text += "; empty: automatic"
        return text.strip()

    def convert(self, value: Any) -> Any:
        """A widget's value as the method expects it (sliders hand back floats for ints);
        None means "not given": the method's default applies."""
        if value is None or (self.optional and value == ""):
            return None
        if self.python_type is bool:
            if not isinstance(value, bool | int):
                raise ParameterError(f"{self.name} must be true or false, got {value!r}")
            return bool(value)
        if self.python_type in (int, float):
            number = _number(self.name, value)
            if self.python_type is float:
                return number
            if number != int(number):
                raise ParameterError(f"{self.name} must be a whole number, got {value!r}")
            return int(number)
        if not isinstance(value, str):
            raise ParameterError(f"{self.name} must be text, got {value!r}")
        return value


def _number(name: str, value: Any) -> float:
    """A widget's or an API client's value as a finite number, or a one-line refusal
    (an API client can send any JSON: text, lists, true)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    return number


def _base_type(annotation: Any, default: Any) -> tuple[type, bool]:
    """The field's value type and whether it may be None (``float | None``)."""
    members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    optional = type(None) in members
    concrete = [m for m in members if m is not type(None) and isinstance(m, type)]
    if concrete:
        return concrete[0], optional
    return (type(default) if default is not None else str), optional or default is None


def _is_union(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union


def _spec(field: dataclasses.Field, annotation: Any) -> OptionSpec:
    meta = field.metadata
    default = field.default
    python_type, optional = _base_type(annotation, default)
    low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices")
    if choices:
        kind = "radio"
    elif python_type is bool:
        kind = "checkbox"
    elif python_type in (int, float):
        # a slider cannot be left empty, so an optional number gets a number box
        bounded = low is not None and high is not None
        slider = bounded and not optional and meta.get("widget") != "number"
        kind = "slider" if slider else "number"
    else:
        kind = "text"
    return OptionSpec(
        name=field.name,
        kind=kind,
        default=default,
        python_type=python_type,
        low=low,
        high=high,
        low_open=bool(meta.get("low_open")),
        choices=tuple(choices) if choices else None,
        help=meta.get("help", ""),
        optional=optional,
    )


def method_options(method: str) -> list[OptionSpec]:
    """The options of ``method``, in the order its Params dataclass declares them."""
    try:
        params = METHODS[method].Params
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise ParameterError(f"unknown method {method!r}; choose one of: {known}") from None
    try:
        hints = typing.get_type_hints(params)
    except (NameError, TypeError):  # an annotation we cannot resolve: fall back on defaults
        hints = {}
    return [_spec(field, hints.get(field.name, Any)) for field in dataclasses.fields(params)]


def all_options(first: str | None = None) -> dict[str, OptionSpec]:
    """Every option name any method takes, each described as the first method that
    declares it (``first`` is asked before the others, so its defaults show first)."""
    names = [first] if first in METHODS else []
    names += [name for name in METHODS if name != first]
    union: dict[str, OptionSpec] = {}
    for method in names:
        for spec in method_options(method):
            union.setdefault(spec.name, spec)
    return union


def check_api_options(method: str, values: dict[str, Any]) -> None:
    """An API client's options must all belong to ``method``, as the CLI requires (the
    page, which keeps every method's widgets, goes through pick_options alone)."""
    method_options(method)  # an unknown method first
    check_option_names(method, values)


def pick_options(method: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values that belong to ``method``, converted to its types; others are dropped
    because the UI keeps every method's widgets (hidden) at once."""
    picked = {}
    for spec in method_options(method):
        value = spec.convert(values.get(spec.name))
        if value is not None:
            picked[spec.name] = value
    return picked


def sweepable(method: str) -> list[OptionSpec]:
    """Options a sweep can vary: numbers and word choices, not free text."""
    return [spec for spec in method_options(method) if spec.kind in ("slider", "number", "radio")]


def default_sweep_values(spec: OptionSpec) -> str:
    """Three values around the default (half, default, double, kept in range), or every
    choice: a sensible first grid without the user looking the range up. An option whose
    default depends on others (default None) gets the quarters of its range, if bounded."""
    if spec.choices:
        return ", ".join(spec.choices)
    if spec.default is None:
        if spec.low is None or spec.high is None:
            return ""
        values = [spec.low + (spec.high - spec.low) * q for q in (0.25, 0.5, 0.75)]
    else:
        values = [spec.default / 2, spec.default, spec.default * 2]
    if spec.high is not None:
        values = [min(v, spec.high) for v in values]
    if spec.python_type is int:
        values = [int(round(v)) for v in values]
    else:
        values = [round(v, 4) for v in values]
    return ", ".join(f"{v:g}" for v in dict.fromkeys(values))


def parse_values(spec: OptionSpec, text: str) -> list[Any]:
    """Comma-separated sweep values, converted to the option's type (ranges are checked
    by the engine when the edits run)."""
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not items:
        raise ParameterError(f"give at least one value for {spec.name}")
    values = []
    for item in items:
        if spec.choices is not None or spec.python_type is str:
            values.append(item)
            continue
        try:
            number = float(item)
        except ValueError:
            raise ParameterError(f"{spec.name}: {item!r} is not a number") from None
        values.append(spec.convert(number))
    return list(dict.fromkeys(values))
