"""Atomic file writes: a temporary file beside the target, renamed over it when complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _read_umask() -> int:
    # os.umask both sets and returns it; read once, at import, while nothing else runs
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the permissions a newly created file gets here (mkstemp's own are 0600)
NEW_FILE_MODE = 0o666 & ~_read_umask()


@contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder to write to. When the block succeeds the
    file gets a new file's usual permissions and is renamed over ``path`` in one step, so
    a crash or a full disk never leaves a half-written file; when it fails, the temporary
    file is removed and ``path`` is untouched."""
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, NEW_FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
