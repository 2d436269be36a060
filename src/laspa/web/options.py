"""A method's options as the web UI shows them, from the method schema
(:mod:`laspa.methods.options`).

Nothing here imports gradio: the widgets are described from each field's default and
``metadata`` (low, high, low_open, choices, help), so a newly registered method shows up
in the UI, its sweep axes and its API with no change to the web code.
"""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError
from ..methods import METHODS
from ..methods import options as schema
from ..methods.base import check_option_names
from ..methods.options import KINDS, OptionSpec, method_options

__all__ = [
    "KINDS", "OptionSpec", "all_options", "check_api_options", "default_sweep_values",
    "method_options", "parse_values", "pick_options", "sweepable",
]  # fmt: skip


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
    """Comma-separated sweep values, converted to the option's type, without repeats
    (ranges are checked by the engine when the edits run)."""
    words = spec.choices is not None or spec.python_type is str
    values = schema.parse_values(
        text,
        str if words else lambda item: spec.convert(float(item)),
        f"{spec.name}: {{item!r}} is not a number",
    )
    if not values:
        raise ParameterError(f"give at least one value for {spec.name}")
    return list(dict.fromkeys(values))
