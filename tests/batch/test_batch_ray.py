"""``laspa batch --ray`` on a local Ray cluster: the same bytes as in this process, and a
worker killed mid-job loses and duplicates nothing. Select with ``-m ray``; each test
starts its own small cluster (about 10 s) in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_batch import files, summary, write_images, write_manifest

from laspa.testing import run_cli

pytestmark = pytest.mark.ray

if os.environ.get("CI"):  # CI installs the ray extra: a missing Ray must fail there
    import ray  # noqa: F401
else:
    pytest.importorskip("ray")

SOURCE = Path(__file__).resolve().parents[2] / "src"


def laspa_command(*args) -> list[str]:
    return [sys.executable, "-m", "laspa", *map(str, args)]


def environment() -> dict[str, str]:
    # the workers import this checkout's laspa, as the driver does
    path = os.pathsep.join(p for p in (str(SOURCE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}


def job(tmp_path: Path, groups: int, steps: int) -> Path:
    """``groups`` images with two edits each (one UNet batch per image) and two methods."""
    write_images(tmp_path / "images", groups)
    lines = []
    for index in range(groups):
        image = f"images/im{index}.png"
        lines.append({"image": image, "prompt": "a red cat", "seed": index, "steps": steps})
        lines.append({"image": image, "prompt": "a blue dog", "seed": 7, "steps": steps, "K": 300})
    lines.append({"image": "images/im0.png", "prompt": "a cat", "method": "sdedit", "steps": steps})
    lines.append({"image": "images/missing.png", "prompt": "a cat"})
    return write_manifest(tmp_path / "job.jsonl", lines)


@pytest.fixture()
def cluster():
    """A local Ray cluster this test process starts (and alone stops): its address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_writes_the_bytes_this_process_writes(capsys, tiny_model_dir, tmp_path, cluster):
    """On a cluster that was already running (--ray-address), with two workers."""
    manifest = job(tmp_path, groups=3, steps=3)
    local, remote = tmp_path / "local", tmp_path / "ray"
    common = ["--model", tiny_model_dir, "--threads", 1, "-q"]
    code, _, err = run_cli(capsys, "batch", manifest, "-o", local, *common)
    assert code == 1, err  # the missing image
    too_many = subprocess.run(
        laspa_command("batch", manifest, "-o", remote, "--ray-address", cluster, "--workers", 3,
                      *common),
        env=environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert too_many.returncode == 2
    assert too_many.stderr.strip().endswith("needs more than the Ray cluster holds (2 CPUs)")
    assert not remote.exists()
    finished = subprocess.run(
        laspa_command("batch", manifest, "-o", remote, "--ray-address", cluster, "--workers", 2,
                      *common),
        env=environment(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 1, finished.stderr
    assert "on Ray: 7 done, 0 already there, 1 failed" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert files(remote) == files(local) and len(files(local)) == 7
    ran = {row["worker"] for row in summary(remote).values() if row["status"] == "done"}
    assert len(ran) == 2  # both workers edited (each loads its model before work goes out)
    rows = {n: {k: v for k, v in row.items() if k not in ("worker", "seconds")}
            for n, row in summary(remote).items()}  # fmt: skip
    assert rows == {n: {k: v for k, v in row.items() if k not in ("worker", "seconds")}
                    for n, row in summary(local).items()}  # fmt: skip
    import ray

    assert ray.is_initialized()  # the job left the cluster it joined running


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live process below ``root`` (walking /proc)."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = {}
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor > 1:
            if ancestor == root:
                found[pid] = commands[pid].decode(errors="replace")
                break
            ancestor = parents.get(ancestor)
    return found


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(capsys, tiny_model_dir, tmp_path):
    manifest = job(tmp_path, groups=8, steps=40)
    local, remote = tmp_path / "local", tmp_path / "ray"
    common = ["--model", tiny_model_dir, "--threads", 1, "-q"]
    run_cli(capsys, "batch", manifest, "-o", local, *common)
    expected = files(local)
    process = subprocess.Popen(
        laspa_command("batch", manifest, "-o", remote, "--ray", "--workers", 2, *common),
        env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and process.poll() is None:
            written = [p for p in remote.glob("*.png")] if remote.exists() else []
            if written:  # both workers are editing: kill one in the middle of the job
                workers = [pid for pid, command in _descendants(process.pid).items()
                           if "MapWorker" in command]  # fmt: skip
                if workers:
                    assert len(written) < len(expected), "the job ended before the kill"
                    os.kill(workers[0], signal.SIGKILL)
                    killed = workers[0]
            time.sleep(0.05)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert killed is not None, "no worker was found to kill"
    assert process.returncode == 1, stderr  # the missing image only
    assert "Traceback" not in stderr
    assert files(remote) == expected  # every output once, whole, the same bytes
    rows = summary(remote)
    assert sorted(rows) == list(range(1, 19))
    assert sum(row["status"] == "failed" for row in rows.values()) == 1
    assert {row["status"] for row in rows.values()} <= {"done", "exists", "failed"}
    workers = {row["worker"] for row in rows.values() if row["status"] == "done"}
    assert len(workers) >= 2
    assert not list(remote.glob(".*.tmp"))
    assert json.loads((remote / "summary.jsonl").read_text().splitlines()[0])["line"] == 1


def test_bench_on_ray_scores_what_the_bench_in_this_process_scores(
    capsys, tiny_model_dir, tmp_path
):
    common = ["--model", tiny_model_dir, "--cases", 3, "--steps", 2, "--samples", 0,
              "--methods", "laspa-x0,sdedit", "--threads", 1, "-q"]  # fmt: skip
    code, _, err = run_cli(capsys, "bench", *common, "--json", tmp_path / "local.json")
    assert code in (0, None), err
    finished = subprocess.run(
        laspa_command("bench", *common, "--json", tmp_path / "ray.json", "--ray", "--workers", 2),
        env=environment(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    local, remote = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    timing = ("seconds", "cpu_seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in remote["per_case"]] == [
        {k: v for k, v in r.items() if k not in timing} for r in local["per_case"]
    ]
    assert remote["cases"] == local["cases"] == 3
    assert remote["vae_ceiling_psnr"] == local["vae_ceiling_psnr"]
