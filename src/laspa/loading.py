"""The Editor a front end names with ``--model``, ``--device`` and ``--threads``.

Every front end (the CLI's commands, ``laspa serve``, batch jobs, Ray workers, the
bench) loads its model here, so that a model name means the same everywhere; it sits
above :mod:`laspa.editor` and below the front ends, none of which it imports.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .editor import Editor


def quiet_libraries() -> None:
    """diffusers and transformers log loading chatter and progress bars of their own; the
    CLI prints its own progress and keeps stderr to what the user needs."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


@contextmanager
def library_warnings_silenced() -> Iterator[None]:
    """No library warning or warning-level log line reaches stderr while a command runs
    (PIL's "Corrupt EXIF data", huggingface_hub's deprecations and retries, ...): an error
    stays one line, and a success ends in laspa's own notes. Errors logged by libraries
    still show (the web server's log needs them)."""
    disabled = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(disabled)


def model_description(model: str | None) -> str:
    """What a closing note calls the model ``--model`` names (None: the default)."""
    from .mini import MODEL_NAMES

    if model is None:
        return "the bundled miniature model (--model selects another)"
    if model in MODEL_NAMES:
        return f"the bundled model {model}"
    return f"model {model}"


def load_editor(model: str | None, device: str | None = None, threads: int | None = None) -> Editor:
    """The Editor for --model, or the bundled miniature when none is named, with torch's
    thread count set by --threads (laspa.threads; None keeps torch's own)."""
    from .editor import Editor
    from .mini import MODEL_NAMES
    from .threads import apply_threads, check_threads

    check_threads(threads)
    quiet_libraries()
    if model is None:
        editor = Editor.mini(device=device)
    elif model in MODEL_NAMES:
        editor = Editor.mini(MODEL_NAMES[model], device=device)
    else:
        editor = Editor.from_pretrained(model, device=device)
    apply_threads(threads)
    return editor
