"""The web UI's Video tab: its limits (bytes, frames, duration, unreadable files) checked
before any model work, the edit through the session on the tiny model, the result folder,
``laspa serve``'s flags, and ``/edit_video`` through gradio_client on the bundled model."""

from __future__ import annotations

import socket
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from laspa.errors import ImageError, ParameterError
from laspa.testing import run_cli, tiny_editor
from laspa.web.clips import (
    OUTPUT_SUFFIX,
    ClipProgress,
    ResultFolder,
    VideoLimits,
    check_clip,
)
from laspa.web.session import ModelShelf, WebSession

av = pytest.importorskip("av")

SIZE = (48, 32)


def frame(index: int, size=SIZE) -> Image.Image:
    """A square moving right on a grey ground: frame ``index`` of a continuous clip."""
    pixels = np.full((size[1], size[0], 3), 90, np.uint8)
    left = 2 + 3 * index
    pixels[8:20, left : left + 10] = (255, 128, 0)
    return Image.fromarray(pixels)


def write_clip(path: Path, frames: list[Image.Image], fps=12) -> Path:
    if path.suffix == ".gif":
        duration = 1000 / fps
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration, loop=0)
        return path
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for picture in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(picture)))
        container.mux(stream.encode(None))
    return path


def read(path: Path) -> tuple[int, tuple[int, int], Fraction, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, (stream.width, stream.height), stream.average_rate, stream.codec_context.name


@pytest.fixture()
def clip(tmp_path) -> Path:
    return write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(5)])


# ----------------------------------------------------------------- limits
def test_a_clip_within_the_limits_is_described(clip):
    info = check_clip(clip, VideoLimits(max_bytes=10**6, max_frames=5, max_seconds=1))
    assert (info.frames, info.size, info.fps) == (5, SIZE, 12)
    session = WebSession(tiny_editor(), video_limits=VideoLimits(max_frames=5))
    assert session.load_clip(clip) == "clip.mp4: 5 frames, 48x32 at 12 fps (0.4 s)"


def test_too_many_bytes_are_refused_before_a_byte_is_decoded(tmp_path, clip):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0junk" * 300)  # unreadable too: the size decides first
    with pytest.raises(ImageError, match="^the clip is 1.5 kB; the limit is 1000 bytes$"):
        check_clip(junk, VideoLimits(max_bytes=1000))
    size = clip.stat().st_size
    with pytest.raises(ImageError, match=f"^the clip is {size} bytes; the limit is {size - 1} "):
        check_clip(clip, VideoLimits(max_bytes=size - 1))
    assert check_clip(clip, VideoLimits(max_bytes=size)).frames == 5


def test_too_many_frames_or_seconds_are_refused(clip):
    with pytest.raises(ImageError, match="^the clip has more than 4 frames, the most accepted$"):
        check_clip(clip, VideoLimits(max_frames=4))
    with pytest.raises(ImageError, match=r"^the clip lasts 0.4 s; the limit is 0.3 s$"):
        check_clip(clip, VideoLimits(max_seconds=0.3))


def test_files_that_are_not_readable_videos_are_refused_in_one_line_without_server_paths(
    tmp_path,
):
    text = tmp_path / "holiday.mp4"
    text.write_text("this is a text file, not a video\n")
    picture = tmp_path / "still.webm"
    frame(0).save(picture, format="PNG")
    empty = tmp_path / "empty.gif"
    empty.write_bytes(b"")
    limits = VideoLimits()
    for path, reason in (
        (text, "cannot read video holiday.mp4"),
        (empty, "input video is empty (0 bytes): empty.gif"),
        (tmp_path / "gone.mp4", "input video not found: gone.mp4"),
        (None, "no clip: upload a video"),
    ):
        with pytest.raises(ImageError) as refused:
            check_clip(path, limits)
        message = str(refused.value)
        assert message.startswith(reason) and "\n" not in message
        assert str(tmp_path) not in message
    # a still image is a one-frame clip to FFmpeg: accepted, as `laspa video` accepts it
    assert check_clip(picture, limits).frames == 1


def test_a_refused_clip_costs_no_model_work(clip):
    loads, edits = [], []

    def load(name):
        loads.append(name)
        editor = tiny_editor()
        original = editor.edit_frames
        editor.edit_frames = lambda *a, **k: edits.append(1) or original(*a, **k)
        return editor

    session = WebSession(ModelShelf(["a", "b"], load), video_limits=VideoLimits(max_frames=4))
    for values, model, reason in (
        ({"steps": 2}, "b", "more than 4 frames"),  # the other model is not even loaded
        ({"beta": 3.0}, None, "beta must be in"),
        ({"steps": 2}, "c", "offers no model 'c'"),
    ):
        with pytest.raises((ImageError, ParameterError), match=reason):
            session.edit_video(clip, "a red cat", "laspa-x0", 0, "fixed", values, model=model)
    with pytest.raises(ParameterError, match="noise must be one of"):
        session.edit_video(clip, "a red cat", "laspa-x0", 0, "warm", {})
    assert loads == ["a"] and edits == [] and not session.lock.locked()
    assert not session._results or not any(session.results.root.iterdir())


# ----------------------------------------------------------------- editing
def test_the_edited_clip_keeps_frames_size_and_rate_and_progress_reaches_the_end(clip):
    session = WebSession(tiny_editor())
    seen = []
    outcome = session.edit_video(
        clip, "a red cat", "laspa-x0", 0, "fixed", {"steps": 3, "K": 300.0},
        progress=lambda text, fraction: seen.append((text, fraction)),
    )  # fmt: skip
    assert outcome.path.suffix == OUTPUT_SUFFIX and outcome.path.is_file()
    assert read(outcome.path) == (5, SIZE, 12, "vp9")
    assert outcome.info.startswith("laspa-x0: 5 frames 48x32 at 12 fps, fixed noise, ")
    assert outcome.info.endswith(" s per frame)")
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[0][0] == "frames 1-4 of 5: edit" and seen[-1][0] == "5/5 frames written"
    assert session.editor.progress is None
    assert not list(outcome.path.parent.glob("*.frames"))  # the frames folder is gone


def test_fresh_noise_gives_frames_their_own_seeds(tmp_path):
    still = write_clip(tmp_path / "still.mp4", [frame(0)] * 3)
    session = WebSession(tiny_editor())
    edited = {}
    for noise in ("fixed", "fresh"):
        path = session.edit_video(still, "a red cat", "sdedit", 0, noise, {"steps": 3}).path
        with av.open(str(path)) as container:
            edited[noise] = [np.asarray(f.to_image(), float) for f in container.decode(video=0)]
    fixed, fresh = edited["fixed"], edited["fresh"]
    assert np.abs(fixed[0] - fixed[2]).mean() < 1.0  # one x_T for identical frames
    assert np.abs(fresh[0] - fresh[2]).mean() > 2 * np.abs(fixed[0] - fixed[2]).mean() + 1.0


def test_an_odd_sized_gif_comes_back_at_its_own_size(tmp_path):
    gif = write_clip(tmp_path / "odd.gif", [frame(i, (33, 21)) for i in range(3)], fps=10)
    outcome = WebSession(tiny_editor()).edit_video(
        gif, "a red cat", "laspa-x0", 0, "fixed", {"steps": 2}
    )
    count, size, rate, codec = read(outcome.path)
    assert (count, size, rate, codec) == (3, (33, 21), 10, "vp9")


def test_a_failed_edit_leaves_no_files_and_old_results_are_pruned(clip):
    editor = tiny_editor()
    session = WebSession(editor)
    paths = [
        session.edit_video(clip, "a red cat", "laspa-x0", seed, "fixed", {"steps": 2}).path
        for seed in range(session.results.keep + 1)
    ]
    assert not paths[0].exists() and all(path.is_file() for path in paths[1:])
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second batch: the first batch's frames are on disk
            raise ImageError("disk full")
        return original(*args, **kwargs)

    original, editor.edit_frames = editor.edit_frames, failing
    with pytest.raises(ImageError, match="disk full"):
        session.edit_video(clip, "a red cat", "laspa-x0", 0, "fixed", {"steps": 2})
    folders = sorted(session.results.root.iterdir())
    assert [p.parent for p in paths[1:]] == folders  # the failed request's folder is gone
    assert not session.lock.locked()


def test_the_result_folder_goes_when_the_process_ends():
    import subprocess
    import sys

    code = (
        "from laspa.web.clips import ResultFolder\n"
        "folder = ResultFolder()\n"
        "with folder.request() as f: (f / 'x.webm').write_bytes(b'x')\n"
        "print(folder.root)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not Path(out.stdout.strip()).exists()


def test_clip_progress_counts_frames_and_the_steps_of_the_batch():
    seen = []
    progress = ClipProgress(6, lambda text, fraction: seen.append((text, fraction)))
    progress.steps("edit", 1, 2)
    progress.frames(4)
    progress.steps("edit", 1, 2)
    progress.frames(2)
    assert seen == [
        ("frames 1-4 of 6: edit", 2 / 6),
        ("4/6 frames written", 4 / 6),
        ("frames 5-6 of 6: edit", 5 / 6),
        ("6/6 frames written", 1.0),
    ]
    ClipProgress(3, None).steps("edit", 1, 2)  # no bar: nothing to report


def test_result_folder_keeps_the_last_few(tmp_path):
    results = ResultFolder(keep=2)
    made = []
    for _ in range(4):
        with results.request() as folder:
            made.append(folder)
    assert sorted(results.root.iterdir()) == made[2:]


# ----------------------------------------------------------------- serve and the app
@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        ("--max-video-mb", "0", "--max-video-mb must be > 0"),
        ("--max-video-seconds", "-1", "--max-video-seconds must be > 0"),
        ("--max-video-seconds", "nan", "--max-video-seconds must be > 0"),
        ("--max-video-frames", "0", "--max-video-frames must be >= 1"),
    ],
)
def test_serve_refuses_bad_video_limits_in_one_line(capsys, flag, value, reason):
    pytest.importorskip("gradio")
    code, _, err = run_cli(capsys, "serve", flag, value, "--model", "/nonexistent")
    assert code == 2
    assert err.strip().splitlines() == [f"laspa: error: {reason}, got {value}"]


def test_the_app_offers_edit_video_with_the_documented_parameters(editor):
    pytest.importorskip("gradio")
    from laspa.web import build_app

    demo = build_app(editor, video_limits=VideoLimits(max_frames=7))
    endpoint = demo.get_api_info()["named_endpoints"]["/edit_video"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert names == ["video", "prompt", "method", "seed", "noise", "options"]
    assert len(endpoint["returns"]) == 2
    shown = [str(c.get("props", {}).get("value")) for c in demo.config["components"]]
    assert any("Clips of at most 20 MB, 7 frames and 10 s." in text for text in shown)


# ---------------------------------------------------------------- gradio_client, mini
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mini_client(tmp_path_factory):
    """gradio_client over HTTP to the app on the bundled model, served in-process."""
    pytest.importorskip("gradio")
    from gradio_client import Client

    from laspa import Editor
    from laspa.web import build_app
    from laspa.web.app import launch

    limits = VideoLimits(max_bytes=2**20, max_frames=6, max_seconds=5)
    demo = build_app(Editor.mini(), video_limits=limits)
    url = launch(demo, port=_free_port(), block=False, quiet=True, max_upload_bytes=2**20)
    try:
        yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("client")))
    finally:
        demo.close()


def test_gradio_client_edits_a_clip_on_the_bundled_model(mini_client, tmp_path):
    from gradio_client import handle_file

    from laspa.world.clips import sample_clip

    case = sample_clip(0, frames=4, size=64)
    source = write_clip(tmp_path / "scene.mp4", case.source_frames(), fps=8)
    edited, info = mini_client.predict(
        video=handle_file(str(source)), prompt=case.prompts[1], method="laspa-x0", seed=0,
        noise="fixed", options={"steps": 4}, api_name="/edit_video",
    )  # fmt: skip
    edited = Path(edited)
    assert edited.suffix == OUTPUT_SUFFIX
    assert read(edited) == (4, (64, 64), 8, "vp9")
    assert info.startswith("laspa-x0: 4 frames 64x64 at 8 fps, fixed noise")


def test_gradio_client_gets_one_line_reasons_for_refused_clips(mini_client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    long = write_clip(tmp_path / "long.mp4", [frame(i) for i in range(7)])
    junk = tmp_path / "junk.webm"
    junk.write_bytes(b"\0junk" * 99)
    for path, reason in (
        (long, "the clip has more than 6 frames, the most accepted"),
        (junk, "cannot read video junk.webm"),
    ):
        with pytest.raises(AppError, match=reason):
            mini_client.predict(
                video=handle_file(str(path)), prompt="a red circle", options={"steps": 2},
                api_name="/edit_video",
            )  # fmt: skip
    with pytest.raises(AppError, match="is not in the list of choices"):
        mini_client.predict(
            video=handle_file(str(long)), prompt="a red circle", noise="warm",
            api_name="/edit_video",
        )  # fmt: skip
