"""How many CPU threads torch uses: the commands' ``--threads`` option.

Measured on a quiet 2-core machine (docs/profile.md, "Thread defaults"), the bundled
miniature runs faster on two threads than on one (diffusers' own text-to-image pipeline
0.82 s against 0.97 s, laspa-x0 0.81 s against 0.93 s), and a Stable Diffusion UNet does
far more work per operation; so every model keeps torch's default (one thread per
core). Two threads on two cores lose badly only while another process holds a core
(OpenMP threads then wait for a descheduled peer), which is what ``--threads 1`` is for.
The commands (``laspa edit``, ``sweep``, ``attention``, ``demo``, ``bench``, ``serve``)
apply the option; the library itself never changes torch's thread count, so a program's
own ``torch.set_num_threads`` stands.
"""

from __future__ import annotations

from .errors import ParameterError

THREADS_HELP = (
    "CPU threads for torch (default: torch's own, one per core, or OMP_NUM_THREADS / "
    "MKL_NUM_THREADS when set; measured fastest on the bundled model too; use 1 on a "
    "machine whose other cores are busy)"
)


def check_threads(requested: int | None) -> None:
    """Raise ParameterError for a thread count that cannot be used (before any work)."""
    if requested is not None and requested < 1:
        raise ParameterError(f"--threads must be >= 1, got {requested}")


def apply_threads(requested: int | None) -> int:
    """Set torch's thread count to ``requested`` (None: leave torch's own, which already
    follows OMP_NUM_THREADS / MKL_NUM_THREADS); return the count in use."""
    import torch  # here: the CLI imports this module for its help text and starts fast

    check_threads(requested)
    if requested is not None:
        torch.set_num_threads(requested)
    return torch.get_num_threads()
