"""Atomic file writes: a temporary file beside the target, renamed over it when complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


def _read_umask() -> int:
    # os.umask both sets and returns it; read once, at import, while nothing else runs
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the permissions a newly created file gets here (mkstemp's own are 0600)
NEW_FILE_MODE = 0o666 & ~_read_umask()

#: how much of the target's name the temporary file's name repeats: enough to tell whose
#: it is, short enough that a target name at the file system's limit still has a partner
_TEMPORARY_NAME_PART = 32


def _temporary_in(folder: Path, name: str) -> Path:
    prefix = f".{name[:_TEMPORARY_NAME_PART]}."
    handle, temporary = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    os.close(handle)
    return Path(temporary)


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def shortened(path: str | os.PathLike) -> str:
    """A path short enough for a one-line message."""
    text = str(path)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-16:]}"


@contextmanager
def output_checks(path: str | os.PathLike) -> Iterator[None]:
    """Around checks of an output path: a path the file system refuses even to look at
    (a name longer than it allows, too many links) ends as a one-line OutputError."""
    try:
        yield
    except OSError as error:
        raise OutputError(f"cannot use output {shortened(path)}: {_reason(error)}") from None


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output whose folder cannot take a new file (read-only
    folder or file system, no permission) or whose name the file system refuses: by
    creating and removing the temporary file the write will use, so the answer is the
    file system's own, whoever runs."""
    path = Path(path)
    try:
        name_limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_limit = 255
    if len(os.fsencode(path.name)) > name_limit:
        raise OutputError(
            f"output file name is longer than the file system allows ({name_limit} bytes): "
            f"{shortened(path.name)}"
        )
    try:
        _temporary_in(path.parent, path.name).unlink()
    except OSError as error:
        raise OutputError(f"cannot write in {path.parent}: {_reason(error)}") from None


@contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder to write to. When the block succeeds the
    file gets a new file's usual permissions and is renamed over ``path`` in one step, so
    a crash or a full disk never leaves a half-written file; when it fails, the temporary
    file is removed and ``path`` is untouched. A failure of the file system (full disk,
    no permission) becomes an OutputError with its one-line reason."""
    path = Path(path)
    try:
        temporary = _temporary_in(path.parent, path.name)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    try:
        yield temporary
        os.chmod(temporary, NEW_FILE_MODE)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
