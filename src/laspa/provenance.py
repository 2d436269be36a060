"""What made an output: the settings of a batch item or a video's frames, as a digest, so
that a rerun resumes only what the same settings made (and refuses, or with --overwrite
redoes, the rest)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .files import replaced_atomically

#: how much of a file is hashed at a time
_CHUNK = 2**20


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (read in chunks; raises OSError)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(paths: list[Path]) -> str:
    """One SHA-256 over the names and bytes of ``paths`` (a folder of frames)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.fsencode(path.name) + b"\0" + file_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def model_identity(model: str | os.PathLike | None) -> str:
    """What --model names, the same however it was spelled: the bundled model's folder for
    None or a bundled name, a folder's real path, else the hub id as given. An Editor's
    ``source`` gives the same answer (see :func:`editor_identity`)."""
    from .mini import MODEL_NAMES, model_dir

    if model is None or str(model) in MODEL_NAMES:
        variant = "base" if model is None else MODEL_NAMES[str(model)]
        try:
            model = model_dir(variant)
        except (RuntimeError, ValueError):
            return f"bundled:{variant}"
    return os.path.realpath(model) if Path(model).exists() else str(model)


def editor_identity(editor: Any) -> str:
    """:func:`model_identity` of the model an Editor was loaded from."""
    source = getattr(editor, "source", None)
    if source is not None:
        return model_identity(source)
    return f"in-memory:{getattr(editor, 'name', None) or type(editor).__name__}"


def params_record(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of the method as it will run (given ones and defaults alike), so that
    naming a default explicitly is the same setting as leaving it out."""
    from .methods.base import make_params

    return dataclasses.asdict(make_params(method, dict(options)))


def digest(settings: dict[str, Any]) -> str:
    """A short, stable digest of a settings record."""
    text = json.dumps(settings, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def read_record(path: Path) -> dict[str, Any] | None:
    """A record written by :func:`write_record`, or None when missing or unreadable."""
    try:
        data = json.loads(path.read_bytes()[: 2**20])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a record atomically (a crash leaves the old one or the new one)."""
    with replaced_atomically(path) as temporary:
        temporary.write_text(json.dumps(record, sort_keys=True, default=str) + "\n")
