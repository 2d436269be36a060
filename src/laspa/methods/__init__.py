"""Editing methods, each a small plug-in on the sampler loop; importing registers them."""

from . import generate, inversion, laspa, mixing, sdedit  # noqa: F401  (registration)
from .base import METHODS, EditBatch, EditRow, Method, MethodOutput, get_method, make_params

__all__ = ["METHODS", "EditBatch", "EditRow", "Method", "MethodOutput", "get_method", "make_params"]
