"""Video editing, frame by frame with fixed noise (LASPA A.1): each frame is edited on its
own, and the unrestricted random latent x_T (and, for input alignment, z) is the same for
every frame, which keeps the edit consistent from frame to frame without any temporal
model.

Inputs and outputs are video files (read: anything FFmpeg reads, e.g. mp4, webm, gif,
mov, mkv; written: mp4, webm, gif) or folders of frames (PNG / JPEG / WebP, in name
order), read and written with PyAV (``pip install laspa[video]``; its wheels ship FFmpeg).
Frames stream through: at most one batch of them is in memory.

Resuming: edited frames are written one by one, atomically, as ``frame_000000.png``, ...
into the output folder, or, for a video file output, into the side folder
``OUTPUT.frames`` beside it, with ``.laspa-video.json`` there recording what made them
(model, method, options, prompt, seed, noise, the clip's bytes); a rerun with the same
settings skips the frames there, one with other settings is refused unless
``overwrite``, which removes them first. A video file is muxed from the side folder when
every frame is done (written atomically), and the side folder is then removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from . import images, provenance
from .errors import ImageError, LaspaError, OutputError, ParameterError
from .files import check_writable, output_checks, replaced_atomically, shortened

#: Video files written, by suffix: container format, codec, pixel format.
WRITERS = {
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".gif": ("gif", "gif", "pal8"),  # written by Pillow (see _write_gif)
}
#: Frame files a folder input may hold.
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: The frame rate of a folder of frames, unless given.
DEFAULT_FPS = Fraction(24)
NOISE_KINDS = ("fixed", "fresh")
#: libx264's constant quality factor: visually lossless, so that the edit, not the codec,
#: decides what a viewer sees
MP4_CRF = "17"
#: the record, in the frames folder, of what made its frames
RECORD_NAME = ".laspa-video.json"
_FRAME_NAME = re.compile(r"frame_\d{6}\.png")


@dataclass
class ClipInfo:
    """What a clip is: its frame count, size (width, height) and frame rate."""

    frames: int
    size: tuple[int, int]
    fps: Fraction
    #: the digest of the clip's bytes, once asked for (see :func:`clip_sha256`)
    sha256: str | None = field(default=None, compare=False)


@dataclass
class VideoSummary:
    """What an edit of a clip did."""

    output: Path
    frames: int
    edited: int  # frames edited by this run
    skipped: int  # frames found done (a resumed run)
    size: tuple[int, int]
    fps: Fraction
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.edited / self.seconds if self.edited and self.seconds > 0 else 0.0


def _av():
    try:
        import av
    except ModuleNotFoundError:
        raise ParameterError(
            "video needs PyAV: pip install 'laspa[video]' (or pip install av)"
        ) from None
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's own chatter would add lines to stderr
    return av


def frame_name(index: int) -> str:
    return f"frame_{index:06d}.png"


# ----------------------------------------------------------------------------- reading
def folder_frames(folder: Path) -> list[Path]:
    """The frame files of a folder, in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())


def probe(
    source: str | os.PathLike, fps: float | None = None, max_frames: int | None = None
) -> ClipInfo:
    """Check that ``source`` is a readable, non-empty clip of one frame size, and say what
    it is; raises ImageError with a one-line reason. A video file is decoded once through
    (cheap next to editing), so a damaged one is refused before any work. ``max_frames``:
    refuse a longer clip, decoding no more than one frame past the bound (laspa serve)."""
    path = Path(source)
    try:
        if not path.exists():
            raise ImageError(f"input video not found: {shortened(path)}")
        if path.is_dir():
            info = _probe_folder(path, fps)
            _check_length(info.frames, max_frames)
            return info
        if path.stat().st_size == 0:
            raise ImageError(f"input video is empty (0 bytes): {shortened(path)}")
    except OSError as error:
        raise ImageError(f"cannot read {shortened(path)}: {error.strerror}") from None
    return _probe_file(path, fps, max_frames)


def _check_length(frames: int, max_frames: int | None) -> None:
    if max_frames is not None and frames > max_frames:
        raise ImageError(f"the clip has more than {max_frames} frames, the most accepted")


def _check_fps(fps: float | None) -> Fraction | None:
    if fps is None:
        return None
    if not (isinstance(fps, int | float | Fraction) and 0 < fps <= 1000):
        raise ParameterError(f"fps must be in (0, 1000], got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _probe_folder(folder: Path, fps: float | None) -> ClipInfo:
    frames = folder_frames(folder)
    if not frames:
        raise ImageError(
            f"input folder holds no frames ({', '.join(FRAME_SUFFIXES)}): {shortened(folder)}"
        )
    size = None
    for frame in frames:
        picture = _header(frame)
        if size is None:
            size = picture
        elif picture != size:
            raise ImageError(
                f"frames differ in size: {frames[0].name} is {size[0]}x{size[1]}, "
                f"{frame.name} is {picture[0]}x{picture[1]}"
            )
    # every frame decoded once through, as a video file is: a truncated or damaged frame
    # is refused before any model loads, not halfway through the edit
    for frame in frames:
        images.load_image(frame).close()
    return ClipInfo(len(frames), size, _check_fps(fps) or DEFAULT_FPS)


def _header(frame: Path) -> tuple[int, int]:
    """A frame's size from its header (the pixels are read when the frame is edited)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(frame) as picture:
                width, height = picture.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"frame is too large (decompression bomb guard): {shortened(frame)}"
        ) from None
    except (OSError, SyntaxError, ValueError):
        raise ImageError(f"not an image file: {shortened(frame)}") from None
    if width * height > images.MAX_PIXELS:
        raise ImageError(f"frame is too large ({width}x{height} pixels): {shortened(frame)}")
    return width, height


def _probe_file(path: Path, fps: float | None, max_frames: int | None = None) -> ClipInfo:
    av = _av()
    count, size = 0, None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ImageError(f"no video stream in {shortened(path)}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            for frame in container.decode(stream):
                count += 1
                _check_length(count, max_frames)  # a long clip is not decoded to its end
                if size is None:
                    size = (frame.width, frame.height)
                    if size[0] * size[1] > images.MAX_PIXELS:
                        raise ImageError(f"video frames are too large: {shortened(path)}")
                elif (frame.width, frame.height) != size:
                    raise ImageError(f"video changes frame size at frame {count - 1}")
    except ImageError:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise ImageError(f"cannot read video {shortened(path)}: {reason}") from None
    if count == 0:
        raise ImageError(f"input video has no frames: {shortened(path)}")
    given = _check_fps(fps)
    return ClipInfo(count, size, given or (Fraction(rate) if rate else DEFAULT_FPS))


def read_frames(source: str | os.PathLike) -> Iterator[Image.Image]:
    """The frames of a clip (probed already), one at a time, as RGB images."""
    path = Path(source)
    if path.is_dir():
        for frame in folder_frames(path):
            yield images.load_image(frame)
        return
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_image().convert("RGB")


# ----------------------------------------------------------------------------- writing
def output_kind(output: str | os.PathLike) -> str:
    """The kind of output: "folder", or the suffix of a video file we write."""
    path = Path(output)
    if path.is_dir() or not path.suffix:
        return "folder"
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise OutputError(
            f"output {shortened(path)} must be a folder or end in {', '.join(WRITERS)}"
        )
    return suffix


def check_output(output: str | os.PathLike, source: str | os.PathLike, info: ClipInfo) -> str:
    """Refuse, before any work, an output of the wrong kind, over the input, in a missing
    or read-only folder, or that the codec cannot take; returns its kind."""
    path = Path(output)
    with output_checks(path):
        kind = output_kind(path)
        if os.path.realpath(path) == os.path.realpath(source):
            raise OutputError(f"output {shortened(path)} would overwrite the input")
        if kind == "folder":
            if path.exists() and not path.is_dir():
                raise OutputError(f"output {shortened(path)} exists and is not a folder")
            parent = path if path.exists() else path.parent
            if not parent.is_dir():
                raise OutputError(f"output folder's parent does not exist: {shortened(parent)}")
            check_writable(parent / frame_name(0))
            return kind
        if not path.parent.is_dir():
            raise OutputError(f"output directory does not exist: {shortened(path.parent)}")
        side = frames_folder(path, kind)
        if side.exists() and not side.is_dir():
            raise OutputError(
                f"{shortened(side)}, where the frames go until the video is written, "
                "exists and is not a folder"
            )
        if os.path.realpath(side) == os.path.realpath(source):
            raise OutputError(f"output {shortened(path)} would write its frames into the input")
        check_writable(path)
        # libx264 takes no odd side in 4:2:0; VP9 does (it rounds the chroma planes up)
        if kind == ".mp4" and (info.size[0] % 2 or info.size[1] % 2):
            raise OutputError(
                f"{kind} needs even frame sides, the input is {info.size[0]}x{info.size[1]}: "
                "write a .webm, a .gif or a folder of frames"
            )
    return kind


def frames_folder(output: Path, kind: str) -> Path:
    """Where the edited frames go: the output folder, or a video file's side folder."""
    return output if kind == "folder" else output.with_name(output.name + ".frames")


def write_video(frames: Path, count: int, output: Path, info: ClipInfo) -> None:
    """Mux ``count`` PNG frames of ``frames`` into ``output`` at the clip's rate and size,
    atomically."""
    if output.suffix.lower() == ".gif":
        _write_gif(frames, count, output, info)
        return
    av = _av()
    container_format, codec, pixel_format = WRITERS[output.suffix.lower()]
    with (
        replaced_atomically(output) as temporary,
        av.open(str(temporary), mode="w", format=container_format) as container,
    ):
        options = {"crf": MP4_CRF} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=info.fps, options=options)
        stream.width, stream.height = info.size
        stream.pix_fmt = pixel_format
        for index in range(count):
            with Image.open(frames / frame_name(index)) as picture:
                frame = av.VideoFrame.from_image(picture.convert("RGB"))
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_gif(frames: Path, count: int, output: Path, info: ClipInfo) -> None:
    """GIFs are written by Pillow: FFmpeg's GIF encoder takes palette frames only, and its
    scaler makes none. Pillow keeps the clip's frames, palettised (one byte a pixel), until
    the file is written; GIF stores a frame's duration in 10 ms units, so 24 fps comes back
    as 25."""
    paths = [frames / frame_name(index) for index in range(count)]

    def rest() -> Iterator[Image.Image]:
        for path in paths[1:]:
            with Image.open(path) as picture:
                yield picture.convert("RGB")

    with Image.open(paths[0]) as first, replaced_atomically(output) as temporary:
        first.convert("RGB").save(
            temporary, format="GIF", save_all=True, append_images=rest(),
            duration=1000 / float(info.fps), loop=0,
        )  # fmt: skip


# ----------------------------------------------------------------------------- resuming
def clip_sha256(source: str | os.PathLike, info: ClipInfo) -> str:
    """The digest of the clip's bytes (a file's, or a folder's frames' names and bytes),
    computed once per probe."""
    if info.sha256 is None:
        path = Path(source)
        try:
            if path.is_dir():
                info.sha256 = provenance.folder_sha256(folder_frames(path))
            else:
                info.sha256 = provenance.file_sha256(path)
        except OSError as error:
            raise ImageError(f"cannot read {shortened(path)}: {error.strerror}") from None
    return info.sha256


def settings_record(
    model_id: str, source, info: ClipInfo, prompt: str, method: str, seed: int, noise: str,
    params: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """What makes the frames: a rerun resumes only frames made with the same."""
    return {
        "model": model_id, "method": method, "prompt": prompt, "seed": seed, "noise": noise,
        "params": provenance.params_record(method, params),
        "clip_sha256": clip_sha256(source, info),
    }  # fmt: skip


@dataclass
class FrameFolder:
    """The folder the edited frames go to, and what made the frames already there."""

    path: Path
    settings: dict[str, Any]
    #: the frames there were made with other settings: removed before the first new one
    stale: bool = False
    made: bool = False  # whether this run made the folder
    started: bool = False

    @property
    def key(self) -> str:
        return provenance.digest(self.settings)

    def done(self, index: int) -> bool:
        """Whether frame ``index`` was made, with these settings, before this run."""
        return not self.stale and (self.path / frame_name(index)).is_file()

    def start(self) -> None:
        """Make the folder, remove stale frames, record the settings: before the first
        frame is written, so that a refusal before then leaves nothing behind."""
        if self.started:
            return
        try:
            if not self.path.is_dir():
                self.path.mkdir()
                self.made = True
            if self.stale:
                for frame in written_frames(self.path):
                    frame.unlink()
        except OSError as error:
            raise OutputError(f"cannot write in {shortened(self.path)}: {error.strerror}") from None
        record = {"settings": self.key, "what": self.settings}
        provenance.write_record(self.path / RECORD_NAME, record)
        self.stale, self.started = False, True

    def abandon(self) -> None:
        """After a refusal: remove what this run made, where it wrote no frame."""
        if not self.started or written_frames(self.path):
            return
        (self.path / RECORD_NAME).unlink(missing_ok=True)
        if self.made and not any(self.path.iterdir()):
            self.path.rmdir()


def written_frames(folder: Path) -> list[Path]:
    """The frames an edit wrote in ``folder`` (by their names)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _FRAME_NAME.fullmatch(p.name))


def frame_folder(
    output: Path, kind: str, settings: dict[str, Any], overwrite: bool = False
) -> FrameFolder:
    """The frames folder of ``output``; refuses (OutputError, before any work) frames there
    that other settings made, or that no record vouches for, unless ``overwrite``."""
    folder = FrameFolder(frames_folder(output, kind), settings)
    there = written_frames(folder.path)
    if not there:
        return folder
    record = provenance.read_record(folder.path / RECORD_NAME) or {}
    if record.get("settings") == folder.key:
        return folder
    if not overwrite:
        raise OutputError(
            f"{shortened(folder.path)} holds {len(there)} frames made with other settings "
            "(or by another run): add --overwrite to redo them, or choose another -o"
        )
    folder.stale = True
    return folder


# ----------------------------------------------------------------------------- editing
def check_noise(noise: str) -> str:
    if noise not in NOISE_KINDS:
        raise ParameterError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {noise!r}")
    return noise


def frame_seed(seed: int, noise: str, index: int) -> int:
    """Fixed noise: one seed (one x_T and z) for the clip; fresh: one per frame."""
    return seed if noise == "fixed" else (seed + index) % 2**63


def edit_video(
    editor,
    source: str | os.PathLike,
    prompt: str,
    output: str | os.PathLike,
    method: str = "laspa-x0",
    seed: int = 0,
    frame_noise: str = "fixed",
    batch_size: int = 4,
    fps: float | None = None,
    progress: Callable[[int], Any] | None = None,
    info: ClipInfo | None = None,
    overwrite: bool = False,
    **params: Any,
) -> VideoSummary:
    """Edit every frame of ``source`` into ``output`` (see the module's docstring);
    ``Editor.edit_video`` is the public face. ``info``: the probe's, if already made.
    ``overwrite``: redo frames there that other settings made (else refused)."""
    from .methods.base import check_prompt, check_seed, get_method, make_params

    start = time.perf_counter()
    check_prompt(prompt)
    check_seed(seed)
    check_noise(frame_noise)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    get_method(method)
    make_params(method, params)  # the options, checked before any frame is read
    info = info or probe(source, fps)
    output = Path(output)
    kind = check_output(output, source, info)
    settings = settings_record(
        provenance.editor_identity(editor), source, info, prompt, method, seed, frame_noise, params
    )
    frames_there = frame_folder(output, kind, settings, overwrite)
    folder = frames_there.path
    edited = skipped = 0
    pending: list[tuple[int, Image.Image]] = []

    def flush() -> None:
        nonlocal edited
        indices = [index for index, _ in pending]
        seeds = [frame_seed(seed, frame_noise, index) for index in indices]
        frames = [frame for _, frame in pending]
        results = editor.edit_frames(frames, prompt, method, seeds, **params)
        frames_there.start()
        for index, result in zip(indices, results, strict=True):
            images.save_image(result.image, folder / frame_name(index))
        edited += len(indices)
        pending.clear()
        if progress is not None:
            progress(len(indices))

    try:
        for index, frame in enumerate(read_frames(source)):
            if frames_there.done(index):  # a resumed run: done before, the same way
                skipped += 1
                if progress is not None:
                    progress(1)
                continue
            pending.append((index, frame))
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
    except LaspaError:
        frames_there.abandon()
        raise
    if kind != "folder":
        write_video(folder, info.frames, output, info)
        shutil.rmtree(folder)
    seconds = time.perf_counter() - start
    return VideoSummary(output, info.frames, edited, skipped, info.size, info.fps, seconds)


# ----------------------------------------------------------------------------- on Ray
def plan_chunks(
    folder: Path | FrameFolder, frames: int, batch_size: int
) -> tuple[list[list[int]], int]:
    """The frames not yet in ``folder``, in chunks of ``batch_size`` in clip order (the
    chunks an in-process run edits, so both write the same bytes), and how many are done."""
    if isinstance(folder, FrameFolder):
        pending = [i for i in range(frames) if not folder.done(i)]
    else:
        pending = [i for i in range(frames) if not (folder / frame_name(i)).is_file()]
    chunks = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
    return chunks, frames - len(pending)


def edit_chunk(editor, payload: str) -> str:
    """A Ray handler: read the chunk's frames from the clip, edit them, write them; safe
    to repeat (a restarted worker reruns its chunk; the frames are written atomically)."""
    job = json.loads(payload)
    indices = job["indices"]
    folder = Path(job["folder"])
    if not all((folder / frame_name(i)).is_file() for i in indices):
        wanted, frames = set(indices), []
        for index, picture in enumerate(read_frames(job["source"])):
            if index in wanted:
                frames.append(picture)
            if index >= indices[-1]:
                break
        seeds = [frame_seed(job["seed"], job["noise"], i) for i in indices]
        results = editor.edit_frames(frames, job["prompt"], job["method"], seeds, **job["params"])
        for index, result in zip(indices, results, strict=True):
            images.save_image(result.image, folder / frame_name(index))
    return json.dumps(indices)


def edit_video_on_ray(
    source: str | os.PathLike,
    prompt: str,
    output: str | os.PathLike,
    info: ClipInfo,
    *,
    method: str,
    seed: int,
    frame_noise: str,
    batch_size: int,
    params: dict[str, Any],
    model: str | None,
    device: str | None,
    threads: int | None,
    workers: int | None,
    address: str | None,
    progress: Callable[[int], Any] | None = None,
    map_with_editors: Callable[..., list[str]],
    overwrite: bool = False,
) -> VideoSummary:
    """``edit_video`` with the frames sharded over Ray workers (laspa.batch.on_ray), each
    holding one Editor: chunks of ``batch_size`` frames, the noise still fixed (or
    fresh by frame index) across the whole clip. Workers read the clip and write the
    frames themselves, so on a cluster both paths must be on storage they share.
    ``map_with_editors``: laspa.batch.on_ray's, handed in by the front end, because this
    module sits below the Editor (Editor.edit_video) and the Ray runner above it."""
    start = time.perf_counter()
    output = Path(output)
    kind = output_kind(output)
    settings = settings_record(
        provenance.model_identity(model), source, info, prompt, method, seed, frame_noise, params
    )
    frames_there = frame_folder(output, kind, settings, overwrite)
    folder = frames_there.path
    chunks, skipped = plan_chunks(frames_there, info.frames, batch_size)
    frames_there.start()  # the workers write into it
    if progress is not None and skipped:
        progress(skipped)
    base = {
        "source": str(Path(source).resolve()), "folder": str(folder.resolve()),
        "prompt": prompt, "method": method, "seed": seed, "noise": frame_noise,
        "params": params,
    }  # fmt: skip
    payloads = [json.dumps({**base, "indices": chunk}) for chunk in chunks]
    tick = None if progress is None else (lambda done: progress(len(json.loads(done))))
    if payloads:
        try:
            map_with_editors(
                payloads, edit_chunk, model=model, device=device, threads=threads,
                workers=workers, address=address, progress=tick,
            )  # fmt: skip
        except LaspaError:
            frames_there.abandon()
            raise
    if kind != "folder":
        write_video(folder, info.frames, output, info)
        shutil.rmtree(folder)
    edited = info.frames - skipped
    seconds = time.perf_counter() - start
    return VideoSummary(output, info.frames, edited, skipped, info.size, info.fps, seconds)
