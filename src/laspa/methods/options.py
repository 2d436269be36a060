"""Every method's options, read once from its ``Params`` dataclass, for all front ends.

The CLI (``edit``'s help, ``--set``, ``sweep``), the web UI (widgets, sweep axes) and
the bench (``--param``, sweeps) read a method's options here: name, type, default,
range, choices and help come from each field's ``option()`` metadata, so no default is
written twice and a newly registered method needs no change in the front ends.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ParameterError
from .base import METHODS

#: widget kinds: a slider for a bounded number, a number box for a half-open range,
#: a radio for a fixed set of words, a checkbox for a flag and a textbox for free text
KINDS = ("slider", "number", "radio", "checkbox", "text")


@dataclass(frozen=True)
class OptionSpec:
    """One option of one method."""

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
    def range_text(self) -> str:
        """The valid range or choices, e.g. ``[0, 1000]``, ``(0, 1]``, ``>= 0``, ``a|b``."""
        if self.choices:
            return "|".join(self.choices)
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return ""

    @property
    def info(self) -> str:
        """Help text with the valid range, shown under the web UI's widget."""
        text = self.help
        if not self.choices and self.range_text:
            bounded = self.low is not None and self.high is not None
            text = f"{text} {self.range_text if bounded else f'({self.range_text})'}"
        if self.optional:
            text += "; empty: automatic"
        return text.strip()

    def convert(self, value: Any) -> Any:
        """A widget's or an API client's value as the method expects it (sliders hand back
        floats for ints); None means "not given": the method's default applies."""
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
        name=field.name, kind=kind, default=default, python_type=python_type, low=low,
        high=high, low_open=bool(meta.get("low_open")),
        choices=tuple(choices) if choices else None, help=meta.get("help", ""),
        optional=optional,
    )  # fmt: skip


def describe(params_cls: type) -> list[OptionSpec]:
    """The options of a Params dataclass, in the order it declares them."""
    try:
        hints = typing.get_type_hints(params_cls)
    except (NameError, TypeError):  # an annotation we cannot resolve: fall back on defaults
        hints = {}
    return [_spec(field, hints.get(field.name, Any)) for field in dataclasses.fields(params_cls)]


def method_options(method: str) -> list[OptionSpec]:
    """The options of the registered ``method``, in the order its Params declares them."""
    try:
        params = METHODS[method].Params
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise ParameterError(f"unknown method {method!r}; choose one of: {known}") from None
    return describe(params)


def options_by_name() -> dict[str, tuple[OptionSpec, list[str]]]:
    """Every option name any method takes, in the order the methods (by name) declare
    them: its spec, as the first method declares it, and the methods that take it. The
    CLI's per-method flags (``--K``, ``--beta-schedule``, ...) are made from it."""
    union: dict[str, tuple[OptionSpec, list[str]]] = {}
    for method in sorted(METHODS):
        for spec in method_options(method):
            union.setdefault(spec.name, (spec, []))[1].append(method)
    return union


def option_help(name: str) -> str:
    """What the CLI's help says of option ``name`` beyond its own words: the range and
    each method's default, e.g. ``[0, 1]; default 0.9 (laspa-eps, laspa-x0), 0.7
    (laspa-input)``. Empty for a name no method takes."""
    range_text, methods_by_default = "", {}
    for method in sorted(METHODS):
        spec = {s.name: s for s in method_options(method)}.get(name)
        if spec is None:
            continue
        range_text = range_text or spec.range_text
        if spec.default not in (None, ""):
            default = f"{spec.default:g}" if isinstance(spec.default, float) else spec.default
            methods_by_default.setdefault(str(default), []).append(method)
    defaults = ", ".join(
        value if len(methods_by_default) == 1 else f"{value} ({', '.join(methods)})"
        for value, methods in methods_by_default.items()
    )
    return "; ".join(part for part in (range_text, defaults and f"default {defaults}") if part)


def parse_option(spec: dataclasses.Field, raw: str, where: str) -> Any:
    """A textual option value (CLI, bench) typed like the Params field ``spec``. The type
    comes from the annotation, so optional fields (default None) parse too."""
    kind = str(spec.type)
    if "bool" in kind:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ParameterError(f"{where} must be true or false, got {raw!r}")
    try:
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
    except ValueError:
        number = "an integer" if "int" in kind else "a number"
        raise ParameterError(f"{where} must be {number}; {raw!r} is not a number") from None
    return raw


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c "`` -> ``["a", "b", "c"]``: the items of a comma-separated list."""
    return [item for item in (part.strip() for part in (text or "").split(",")) if item]


def parse_values(text: str | None, parse: Callable[[str], Any], refusal: str) -> list[Any]:
    """A comma-separated value list, ``"100, 200,400"``, each item ``parse``d (empty items
    are skipped). An item ``parse`` rejects with a ValueError ends in ``refusal``,
    formatted with ``{item}`` (the item) and ``{text}`` (the whole list); a
    ParameterError of ``parse`` passes as it is."""
    values = []
    for item in split_list(text):
        try:
            values.append(parse(item))
        except ParameterError:
            raise
        except ValueError:
            raise ParameterError(refusal.format(item=item, text=text)) from None
    return values


Axis = tuple[str, Sequence[Any]]


def sweep_grid(base: dict[str, Any], rows: Axis, columns: Axis | None = None) -> list[dict]:
    """The options of every cell of a sweep over one or two options, row by row: ``base``
    with the row's (and the column's) value set."""
    row_name, row_values = rows
    column_name, column_values = columns if columns else ("", [None])
    cells = []
    for row_value in row_values:
        for column_value in column_values:
            cell = {**base, row_name: row_value}
            if column_name:
                cell[column_name] = column_value
            cells.append(cell)
    return cells


def mix_words(method: str, subject: str | None, change: str | None) -> dict[str, Any]:
    """The ``subject`` / ``change`` words as ``method``'s options, with what they imply
    (laspa-mix: ``change`` means ``keep=rest``; laspa-local: ``region=change``). The rule
    itself is the method's (``Params.implied``), which every front end goes through."""
    words = {name: value for name, value in (("subject", subject), ("change", change))}
    words = {name: value for name, value in words.items() if value is not None}
    implied = getattr(METHODS[method].Params, "implied", None) if method in METHODS else None
    return implied(words) if callable(implied) else words
