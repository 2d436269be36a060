"""Scene-world clips (laspa.world.clips, ``laspa world clip``) and ``laspa bench --suite
clips``: exact per-frame ground truth and the flicker measure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from laspa.bench.clips import flicker
from laspa.testing import run_cli
from laspa.world import read_scene
from laspa.world.clips import CLIP_KINDS, sample_clip


@pytest.mark.parametrize("index", range(len(CLIP_KINDS)))
def test_every_frame_has_an_exact_target_and_mask(index):
    case = sample_clip(7, index, frames=5)
    sources, targets, masks = case.source_frames(), case.target_frames(), case.masks()
    assert len(sources) == len(targets) == len(masks) == 5
    for source, target, mask in zip(sources, targets, masks, strict=True):
        a, b = np.asarray(source, int), np.asarray(target, int)
        assert np.array_equal(a[~mask], b[~mask])  # outside the mask nothing may change
        assert (a != b).any(axis=-1)[mask].any()  # and inside it the edit shows
        assert read_scene(source) == case.source and read_scene(target) == case.target
    shifts = np.diff(case.shifts)
    assert (shifts > 0).all() and np.allclose(shifts, shifts[0])  # a steady slide
    assert not np.array_equal(np.asarray(sources[0]), np.asarray(sources[-1]))


def test_flicker_is_zero_for_a_consistent_edit_and_grows_with_jitter():
    case = sample_clip(1, 0, frames=4)
    targets = [np.asarray(f) for f in case.target_frames()]
    assert flicker(targets, targets) == 0
    shifted = [np.clip(t.astype(int) + 10, 0, 255).astype(np.uint8) for t in targets]
    assert flicker(shifted, targets) < 0.5  # the same offset on every frame: no flicker
    rng = np.random.default_rng(0)
    jitter = [np.clip(t + rng.integers(-20, 20, t.shape), 0, 255) for t in targets]
    assert flicker(jitter, targets) > 5


def test_world_clip_writes_source_target_and_mask_frames(capsys, tmp_path):
    code, out, err = run_cli(
        capsys, "world", "clip", "--seed", 2, "-o", tmp_path / "c", "--frames", 3
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["frames"] == 3 and record["kind"] in CLIP_KINDS
    for part in ("source", "target", "mask"):
        assert sorted(p.name for p in (tmp_path / "c" / part).iterdir()) == [
            f"frame_{i:06d}.png" for i in range(3)
        ]


def test_bench_clips_reports_each_method_with_fixed_and_fresh_noise(
    capsys, tiny_model_dir, tmp_path
):
    args = ["bench", "--suite", "clips", "--cases", 1, "--frames", 3, "--steps", 2]
    args += ["--methods", "laspa-x0,sdedit", "--model", tiny_model_dir, "--threads", 1, "-q"]
    code, out, err = run_cli(capsys, *args, "--json", tmp_path / "c.json")
    assert code == 0, err
    assert "| laspa-x0 | fixed |" in out and "| sdedit | fresh |" in out
    result = json.loads((tmp_path / "c.json").read_text())
    assert set(result["summary"]) == {
        f"{m}/{n}" for m in ("laspa-x0", "sdedit") for n in ("fixed", "fresh")
    }
    row = result["rows"][0]
    assert len(row["frame_bg_psnr"]) == 3 and row["flicker"] >= 0
    assert "seconds_per_frame_one_by_one" in row


def test_bench_clips_draws_each_clips_noise_from_its_own_seed(monkeypatch):
    """Fixed noise is one x_T per clip, not one for the whole suite: every method and
    both noises of a clip share the clip's seed, and the clips' seeds differ."""
    from laspa.bench import clips as clips_bench

    calls = []

    def fake_edit(editor, case, method, noise, seed, params, batch):
        calls.append((case.id, method, noise, seed))
        return case.target_frames(), 0.0

    monkeypatch.setattr(clips_bench, "edit_clip", fake_edit)
    monkeypatch.setattr(clips_bench, "edit_success", lambda picture, scene: True)
    editor = type("Editor", (), {"resolution": 32})()
    result = clips_bench.run_clips(
        editor, ["laspa-x0", "sdedit"], {}, clips=3, frames=2, seed=5, batch=2
    )
    seeds = {}
    for clip, _, _, seed in calls:
        seeds.setdefault(clip, set()).add(seed)
    assert len(seeds) == 3 and all(len(s) == 1 for s in seeds.values())
    assert len({next(iter(s)) for s in seeds.values()}) == 3
    assert {row["seed"] for row in result["rows"]} == {next(iter(s)) for s in seeds.values()}
