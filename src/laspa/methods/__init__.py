"""Editing methods, each a small plug-in on the sampler loop; importing registers them."""

from . import (  # noqa: F401
    diffedit,
    flowedit,
    fpe,
    generate,
    instdiffedit,
    inversion,
    laspa,
    local,
    mixing,
    sdedit,
)
from .base import METHODS, EditBatch, EditRow, Method, MethodOutput, get_method, make_params

__all__ = ["METHODS", "EditBatch", "EditRow", "Method", "MethodOutput", "get_method", "make_params"]
