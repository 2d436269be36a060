"""Video editing (laspa.video, Editor.edit_video, ``laspa video``) on the tiny model and tiny
synthetic clips: frames, size and rate kept, fixed noise, resuming, determinism."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from laspa import video
from laspa.errors import ImageError, OutputError
from laspa.testing import run_cli

av = pytest.importorskip("av")

SIZE = (48, 32)


def frame(index: int, size=SIZE) -> Image.Image:
    """A square moving right on a grey ground: frame ``index`` of a continuous clip."""
    pixels = np.full((size[1], size[0], 3), 90, np.uint8)
    left = 4 + 4 * index
    pixels[8:20, left : left + 10] = (255, 128, 0)
    return Image.fromarray(pixels)


def write_clip(path: Path, frames: list[Image.Image], fps=12) -> Path:
    if not path.suffix:  # a folder of frames
        path.mkdir()
        for index, picture in enumerate(frames):
            picture.save(path / f"f{index:03d}.png")
        return path
    codec = {".mp4": "libx264", ".webm": "libvpx-vp9"}[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for picture in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(picture)))
        container.mux(stream.encode(None))
    return path


def read(path: Path) -> tuple[list[np.ndarray], tuple[int, int], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [np.asarray(f.to_image().convert("RGB")) for f in container.decode(stream)]
        return frames, (stream.width, stream.height), stream.average_rate


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("frame_*.png"))}


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_a_clip_keeps_its_frame_count_size_and_rate(editor, tmp_path, suffix):
    source = write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(5)])
    output = tmp_path / f"out{suffix}"
    summary = editor.edit_video(source, "a red cat", output, steps=3, batch_size=2)
    frames, size, rate = read(output)
    assert len(frames) == summary.frames == summary.edited == 5
    assert size == SIZE and frames[0].shape == (SIZE[1], SIZE[0], 3)
    # GIF stores durations in 10 ms units: 12 fps is 80 ms, read back as 12.5
    assert rate == (Fraction(25, 2) if suffix == ".gif" else 12)
    assert not (tmp_path / f"out{suffix}.frames").exists()  # the side folder is gone


def test_a_folder_of_frames_gives_a_folder_of_frames(editor, tmp_path):
    source = write_clip(tmp_path / "frames", [frame(i, (40, 24)) for i in range(3)])
    summary = editor.edit_video(source, "a red cat", tmp_path / "out", steps=3, fps=8)
    written = sorted((tmp_path / "out").glob("frame_*"))
    assert [p.name for p in written] == [video.frame_name(i) for i in range(3)]
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {*(p.name for p in written), video.RECORD_NAME}  # and what made them
    assert all(Image.open(p).size == (40, 24) for p in written)
    assert summary.fps == 8


@pytest.mark.parametrize("method", ["laspa-x0", "laspa-input", "sdedit", "instdiffedit"])
def test_fixed_noise_edits_identical_frames_identically(editor, tmp_path, method):
    """One x_T (and z) for the whole clip: a still clip stays still, in one batch or not."""
    source = write_clip(tmp_path / "still", [frame(2)] * 3 + [frame(5)])
    fixed = editor.edit_video(
        source, "a red cat", tmp_path / "fixed", method, steps=3, batch_size=2
    )
    assert fixed.edited == 4
    out = list(pngs(tmp_path / "fixed").values())
    assert out[0] == out[1] == out[2] != out[3]
    editor.edit_video(source, "a red cat", tmp_path / "fresh", method, steps=3, frame_noise="fresh")
    fresh = list(pngs(tmp_path / "fresh").values())
    assert fresh[0] == out[0]  # frame 0 has the seed itself
    assert fresh[1] != fresh[0]  # frame 1 has seed + 1


def test_frames_in_one_batch_match_frames_edited_alone(editor):
    frames = [frame(i) for i in range(3)]
    together = editor.edit_frames(frames, "a red cat", "laspa-x0", seeds=[4, 5, 6], steps=3)
    for picture, seed, result in zip(frames, [4, 5, 6], together, strict=True):
        alone = editor.edit(picture, "a red cat", "laspa-x0", seed=seed, steps=3)
        difference = np.abs(np.asarray(alone.image, int) - np.asarray(result.image, int))
        assert difference.max() <= 1  # the same edit; batched float sums may round apart


def test_a_rerun_skips_finished_frames_and_is_deterministic(editor, tmp_path, monkeypatch):
    source = write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(5)])
    editor.edit_video(source, "a red cat", tmp_path / "a", steps=3, batch_size=1)
    editor.edit_video(source, "a red cat", tmp_path / "b", steps=3, batch_size=1)
    first = pngs(tmp_path / "a")
    assert first == pngs(tmp_path / "b")  # the same command, the same bytes
    (tmp_path / "a" / video.frame_name(3)).unlink()
    edited = []
    original = editor.edit_frames
    monkeypatch.setattr(
        editor,
        "edit_frames",
        lambda frames, *a, **k: edited.append(len(frames)) or original(frames, *a, **k),
    )
    summary = editor.edit_video(source, "a red cat", tmp_path / "a", steps=3, batch_size=1)
    assert (summary.edited, summary.skipped, edited) == (1, 4, [1])
    assert pngs(tmp_path / "a") == first


def test_an_interrupted_video_file_resumes_from_its_side_folder(editor, tmp_path):
    source = write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(6)])
    output = tmp_path / "out.mp4"
    seen = []

    def stop_after_four(count: int) -> None:
        seen.append(count)
        if sum(seen) >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        editor.edit_video(
            source, "a red cat", output, steps=3, batch_size=2, progress=stop_after_four
        )
    side = tmp_path / "out.mp4.frames"
    assert not output.exists() and len(pngs(side)) == 4
    summary = editor.edit_video(source, "a red cat", output, steps=3, batch_size=2)
    assert (summary.edited, summary.skipped) == (2, 4)
    assert len(read(output)[0]) == 6 and not side.exists()


def test_the_command_edits_a_clip_and_says_what_it_wrote(capsys, tiny_model_dir, tmp_path):
    source = write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(3)])
    output = tmp_path / "out.webm"
    args = ["video", source, "a red cat", "-o", output, "--model", tiny_model_dir]
    code, out, err = run_cli(capsys, *args, "--steps", 3, "--threads", 1, "-q", "--noise", "fresh")
    assert code == 0, err
    assert "3 frames 48x32 at 12 fps, 3 edited, 0 already there" in err.splitlines()[-1]
    assert len(read(output)[0]) == 3
    code, out, err = run_cli(capsys, *args, "--steps", 3, "--threads", 1, "-q", "-m", "sdedit")
    assert code == 0 and "3 edited" in err  # a finished video file is made anew


def test_a_webm_takes_odd_frame_sides_an_mp4_does_not(editor, tmp_path):
    source = write_clip(tmp_path / "frames", [frame(i, (33, 21)) for i in range(3)])
    summary = editor.edit_video(source, "a red cat", tmp_path / "out.webm", steps=2, fps=10)
    frames, size, rate = read(tmp_path / "out.webm")
    assert (len(frames), size, rate, summary.size) == (3, (33, 21), 10, (33, 21))
    with pytest.raises(OutputError, match="needs even frame sides.*write a .webm"):
        editor.edit_video(source, "a red cat", tmp_path / "out.mp4", steps=2)
    assert not (tmp_path / "out.mp4").exists()


def test_probe_refuses_more_frames_than_asked_for(tmp_path):
    source = write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(5)])
    assert video.probe(source, max_frames=5).frames == 5
    with pytest.raises(ImageError, match="^the clip has more than 4 frames, the most accepted$"):
        video.probe(source, max_frames=4)
    folder = write_clip(tmp_path / "frames", [frame(i) for i in range(3)])
    with pytest.raises(ImageError, match="more than 2 frames"):
        video.probe(folder, max_frames=2)


def test_a_rerun_with_other_settings_is_refused_unless_overwrite(editor, tmp_path):
    """Frames another prompt made are never kept as this prompt's (issue #30)."""
    source = write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(3)])
    out = tmp_path / "out"
    editor.edit_video(source, "a red cat", out, steps=2, batch_size=3)
    first = pngs(out)
    summary = editor.edit_video(source, "a red cat", out, steps=2, batch_size=1)
    assert (summary.edited, summary.skipped) == (0, 3)  # the same settings: resumed
    with pytest.raises(OutputError, match="3 frames made with other settings.*--overwrite"):
        editor.edit_video(source, "a blue dog", out, steps=2)
    assert pngs(out) == first
    summary = editor.edit_video(source, "a blue dog", out, steps=2, overwrite=True)
    assert (summary.edited, summary.skipped) == (3, 0) and pngs(out) != first
    again = editor.edit_video(source, "a blue dog", out, steps=2)
    assert (again.edited, again.skipped) == (0, 3)
    (out / video.RECORD_NAME).unlink()  # frames no record vouches for
    with pytest.raises(OutputError, match="--overwrite"):
        editor.edit_video(source, "a blue dog", out, steps=2)


def test_the_command_refuses_frames_of_another_prompt_before_loading(
    capsys, tiny_model_dir, tmp_path, monkeypatch
):
    source = write_clip(tmp_path / "clip.mp4", [frame(i) for i in range(2)])
    output = tmp_path / "out.webm"
    args = ["video", source, "a red cat", "-o", output, "--model", tiny_model_dir, "--steps", 2]
    # an interrupted run of another prompt left its frames in the side folder
    side = tmp_path / "out.webm.frames"
    editor_frames = video.frame_folder(output, ".webm", {"prompt": "a blue dog"})
    editor_frames.start()
    Image.new("RGB", SIZE).save(side / video.frame_name(0))
    monkeypatch.setattr("laspa.cli.load_editor", lambda *a, **k: pytest.fail("loaded"))
    code, out, err = run_cli(capsys, *args, "-q")
    assert code == 2 and "1 frames made with other settings" in err and "--overwrite" in err
    monkeypatch.undo()
    code, out, err = run_cli(capsys, *args, "-q", "--threads", 1, "--overwrite")
    assert code == 0 and "2 edited, 0 already there" in err
    assert not side.exists() and len(read(output)[0]) == 2
