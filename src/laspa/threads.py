"""How many CPU threads torch uses for a model: the commands' default, chosen by measurement.

On CPU, a small UNet's operations are too small to share between threads: on the bundled
miniature (1.5 M UNet parameters, 16x16 latents) diffusers' own text-to-image pipeline and
every method run faster on one thread than on two (docs/profile.md), the synchronisation
of the second thread costing more than it saves. A Stable Diffusion UNet (860 M
parameters, 64x64 latents) does enough work per operation to gain from every core, so
large models keep torch's default. The commands (``laspa edit``, ``sweep``,
``attention``, ``demo``, ``bench``, ``serve``) apply this; the library itself never
changes torch's thread count, so a program's own ``torch.set_num_threads`` stands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import ParameterError

#: UNets below this many parameters count as small (one thread). The bundled miniature has
#: 1.5 M and measured faster on one thread; SD 1.x/2.x have 860 M. Nothing between them was
#: measured, so the line sits well above the miniature: its size times 20.
SMALL_UNET_PARAMETERS = 30_000_000
#: threads for a small model
SMALL_MODEL_THREADS = 1
#: environment variables by which a user already sets torch's thread count
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

THREADS_HELP = (
    "CPU threads for torch (default: 1 for small models such as the bundled miniature, "
    "which run faster on one; torch's default for large ones, or OMP_NUM_THREADS / "
    "MKL_NUM_THREADS when set)"
)


def check_threads(requested: int | None) -> None:
    """Raise ParameterError for a thread count that cannot be used (before any work)."""
    if requested is not None and requested < 1:
        raise ParameterError(f"--threads must be >= 1, got {requested}")


def resolve_threads(
    requested: int | None,
    unet_parameters: int,
    environ: Mapping[str, str],
    device_type: str = "cpu",
) -> int | None:
    """The thread count to set, or None to leave torch's own.

    An explicit ``requested`` count wins; then a thread variable in ``environ`` (torch
    already follows it); then, on CPU, one thread for a small UNet; else torch's default.
    """
    check_threads(requested)
    if requested is not None:
        return requested
    if any(environ.get(name, "").strip() for name in THREAD_VARIABLES):
        return None
    if device_type == "cpu" and unet_parameters < SMALL_UNET_PARAMETERS:
        return SMALL_MODEL_THREADS
    return None


def apply_threads(requested: int | None, unet, device_type: str = "cpu") -> int:
    """Set torch's thread count for ``unet`` by :func:`resolve_threads`; return the count
    in use."""
    import torch  # here: the CLI imports this module for its help text and starts fast

    parameters = sum(p.numel() for p in unet.parameters())
    threads = resolve_threads(requested, parameters, os.environ, device_type)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
