"""The Video tab's rules, without gradio: the limits a clip is checked against before any
model work, one progress bar over a clip's frames, and the folder edited clips are written
to (bounded, removed when the process ends).

The edit itself is ``laspa video``'s (:func:`laspa.video.edit_video`): the same frames,
noise, batching and writer, so the tab and the command give the same clip.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import video
from ..errors import ImageError
from ..files import shortened

#: the tab's defaults, and so ``laspa serve``'s: a few seconds of video; 120 frames are
#: about 50 s of the bundled model at 25 steps on one CPU thread (docs/web.md)
MAX_VIDEO_BYTES = 20 * 2**20
MAX_VIDEO_FRAMES = 120
MAX_VIDEO_SECONDS = 10.0

#: frames edited in one UNet batch, as ``laspa video``'s default
VIDEO_BATCH = 4

#: what the page's file picker offers; any file FFmpeg reads is accepted (checked by content)
VIDEO_TYPES = [".mp4", ".webm", ".gif", ".mov", ".mkv"]

#: edited clips are VP9 WebM: every current browser plays it in a <video> element without
#: a patent-encumbered codec, and it takes odd frame sides (H.264 in 4:2:0 does not, and a
#: GIF plays in no <video> element), so every clip comes back at its own size
OUTPUT_SUFFIX = ".webm"

#: edited clips kept on disk: gradio copies a result into its own cache (whose files it
#: deletes after an hour) as the request returns, so a few are plenty
KEEP_RESULTS = 4


@dataclass(frozen=True)
class VideoLimits:
    """The largest clip the tab edits: its file size in bytes, its frames, its duration."""

    max_bytes: int = MAX_VIDEO_BYTES
    max_frames: int = MAX_VIDEO_FRAMES
    max_seconds: float = MAX_VIDEO_SECONDS

    def describe(self) -> str:
        return (
            f"at most {_size(self.max_bytes)}, {self.max_frames} frames and {self.max_seconds:g} s"
        )


def _size(size: int) -> str:
    for unit, scale in (("MB", 2**20), ("kB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _sizes(size: int, limit: int) -> tuple[str, str]:
    """Both sizes short, or in bytes where the short forms would read the same."""
    shown = _size(size), _size(limit)
    return shown if shown[0] != shown[1] else (f"{size} bytes", f"{limit} bytes")


def check_clip(path: str | os.PathLike | None, limits: VideoLimits) -> video.ClipInfo:
    """The uploaded clip's frames, size and rate, or ImageError saying in one line why it
    is refused: no file, too many bytes (checked before a byte is decoded), not a readable
    video, more frames than the limit (decoding stops one frame past it), too long."""
    if path is None or str(path) == "":
        raise ImageError("no clip: upload a video (mp4, webm or gif) first")
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size > limits.max_bytes:
        shown, limit = _sizes(size, limits.max_bytes)
        raise ImageError(f"the clip is {shown}; the limit is {limit}")
    try:
        info = video.probe(path, max_frames=limits.max_frames)
    except ImageError as error:
        raise ImageError(_without_path(str(error), path)) from None
    seconds = info.frames / info.fps
    if seconds > limits.max_seconds:
        raise ImageError(
            f"the clip lasts {float(seconds):.1f} s; the limit is {limits.max_seconds:g} s"
        )
    return info


def _without_path(message: str, path: Path) -> str:
    """A probe's message with the server-side upload path reduced to the file's name,
    which is the user's own (the folders mean nothing to the user)."""
    for shown in (str(path), shortened(path)):
        message = message.replace(shown, path.name)
    return message


def describe_clip(path: str | os.PathLike, info: video.ClipInfo) -> str:
    seconds = float(info.frames / info.fps)
    return (
        f"{Path(path).name}: {info.frames} frames, {info.size[0]}x{info.size[1]} at "
        f"{float(info.fps):g} fps ({seconds:.1f} s)"
    )


class ClipProgress:
    """One bar over a whole clip: the frames finished, and within the batch being edited
    its sampler's own steps (which :class:`laspa.Editor` reports per batch)."""

    def __init__(self, frames: int, report: Callable[[str, float], None] | None):
        self.total = frames
        self.done = 0
        self.report = report

    def frames(self, count: int) -> None:
        """``laspa.video.edit_video``'s callback: ``count`` more frames are written."""
        self.done = min(self.total, self.done + count)
        if self.report is not None:
            self.report(f"{self.done}/{self.total} frames written", self._fraction(0.0))

    def steps(self, phase: str, done: int, total: int) -> None:
        """The Editor's callback: ``done`` of ``total`` steps of the batch's ``phase``."""
        if self.report is None:
            return
        first, last = self.done + 1, min(self.total, self.done + VIDEO_BATCH)
        frames = f"frame {first}" if first == last else f"frames {first}-{last}"
        part = done / total if total else 0.0
        self.report(f"{frames} of {self.total}: {phase}", self._fraction(part))

    def _fraction(self, part: float) -> float:
        """The clip's share done: the frames written and ``part`` of the batch after them."""
        batch = min(VIDEO_BATCH, self.total - self.done)
        return (self.done + part * batch) / self.total if self.total else 1.0


class ResultFolder:
    """Where edited clips are written: a folder per request, removed whole when its edit
    fails (the frames of a half-edited clip included) and, once done, kept only while it is
    among the last ``keep``; the whole folder is removed when the process ends."""

    def __init__(self, keep: int = KEEP_RESULTS):
        self.root = Path(tempfile.mkdtemp(prefix="laspa-web-video-"))
        self.keep = keep
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        atexit.register(shutil.rmtree, self.root, True)

    @contextmanager
    def request(self) -> Iterator[Path]:
        """A new, empty folder for one edited clip."""
        with self._lock:
            folder = self.root / f"{next(self._counter):06d}"
            folder.mkdir()
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            self._prune()

    def _prune(self) -> None:
        with self._lock:
            folders = sorted(p for p in self.root.iterdir() if p.is_dir())
            for old in folders[: max(0, len(folders) - self.keep)]:
                shutil.rmtree(old, ignore_errors=True)
