"""``laspa video --ray``: frames sharded over Ray workers write the bytes this process
writes, with the noise fixed across the clip. Select with ``-m ray``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_video_edit import frame, pngs, write_clip

from laspa.testing import run_cli

pytestmark = pytest.mark.ray

if os.environ.get("CI"):  # CI installs the ray extra: a missing Ray must fail there
    import ray  # noqa: F401
else:
    pytest.importorskip("ray")

SOURCE = Path(__file__).resolve().parents[2] / "src"


def test_ray_writes_the_frames_this_process_writes(capsys, tiny_model_dir, tmp_path):
    source = write_clip(tmp_path / "still", [frame(1)] * 3 + [frame(i) for i in range(2, 7)])
    common = ["a red cat", "--model", tiny_model_dir, "--steps", 3, "--batch-size", 2]
    common += ["--threads", 1, "-q"]
    code, _, err = run_cli(capsys, "video", source, "-o", tmp_path / "local", *common)
    assert code == 0, err
    local = pngs(tmp_path / "local")
    path = os.pathsep.join(p for p in (str(SOURCE), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}
    command = [sys.executable, "-m", "laspa", "video", source, "-o", tmp_path / "ray", *common]
    finished = subprocess.run(
        [str(a) for a in command] + ["--ray", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    assert "8 frames 48x32 at 24 fps, 8 edited, 0 already there" in finished.stderr
    assert "Traceback" not in finished.stderr
    remote = pngs(tmp_path / "ray")
    assert remote == local and len(remote) == 8
    assert remote["frame_000000.png"] == remote["frame_000002.png"]  # one x_T across workers
