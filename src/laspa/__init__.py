"""laspa: fast, training-free, text-guided editing of one real image.

LASPA (latent spatial alignment), InstDiffEdit, FPE and their baselines on diffusers.

The names below load on first use, so that ``import laspa.cli`` (the command's start)
does not import torch: a Ctrl-C while the command starts then ends in its one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ImageError, LaspaError, ModelError, OutputError, ParameterError

if TYPE_CHECKING:
    from .editor import DEFAULT_METHOD, Editor, EditResult
    from .methods import METHODS

__version__ = "0.1.0"

_LAZY = {
    "DEFAULT_METHOD": ".editor",
    "Editor": ".editor",
    "EditResult": ".editor",
    "METHODS": ".methods",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Editor",
    "EditResult",
    "ImageError",
    "LaspaError",
    "ModelError",
    "OutputError",
    "ParameterError",
]
