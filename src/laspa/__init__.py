"""laspa: fast, training-free, text-guided editing of one real image.

LASPA (latent spatial alignment), InstDiffEdit, FPE and their baselines on diffusers.
"""

from .editor import DEFAULT_METHOD, Editor, EditResult
from .errors import ImageError, LaspaError, ModelError, OutputError, ParameterError
from .methods import METHODS

__version__ = "0.1.0"

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
