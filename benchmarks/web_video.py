"""Seconds per frame of the web UI's Video tab against ``laspa video`` on the same clip,
same steps, one thread each, in interleaved rounds.

A clip of the procedural world (``--frames`` frames, 64x64, 8 fps; an mp4) is edited
``--rounds`` times each way with the bundled model:

- ``laspa video CLIP PROMPT -o OUT.webm --steps S --threads 1`` in a fresh process each
  round: ``cli edit`` is the command's own figure (frames over the seconds of its edit:
  reading, editing and writing the clip), ``cli process`` the whole command's wall time
  (Python start, imports, model load included);
- ``/edit_video`` of ``laspa serve --model mini --threads 1`` (started once; a first call
  warms it), through gradio_client: ``tab edit`` is the server's own figure (the same
  edit_video), ``tab round trip`` the client's wall time for the call (upload, queue,
  limits check, edit, the result copied into gradio's cache and downloaded); ``tab
overhead`` is the round trip less the edit, per frame, from the same call (the figure the
machine's load disturbs least).

A third column runs the same ``edit_video`` on an Editor loaded once in the script's own
process (warm, no server): the edit with neither a process start nor a server around it.

Both write a VP9 WebM with 4-frame UNet batches and fixed noise; the script checks that
the two edited clips decode to the same frames (the same work was done). The load average
is printed before and after: the machine may be shared.

    OMP_NUM_THREADS=1 python benchmarks/web_video.py --frames 16 --steps 25 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from fractions import Fraction
from pathlib import Path


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def write_clip(path: Path, frames: int) -> str:
    """A world clip (one object sliding) as an mp4; returns its edit prompt."""
    import av

    from laspa.world.clips import sample_clip

    case = sample_clip(0, frames=frames, size=64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(8), options={"crf": "17"})
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for picture in case.source_frames():
            container.mux(stream.encode(av.VideoFrame.from_image(picture)))
        container.mux(stream.encode(None))
    return case.prompts[1]


def decoded(path: Path):
    import av
    import numpy as np

    with av.open(str(path)) as container:
        return [np.asarray(f.to_image(), np.int16) for f in container.decode(video=0)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, frames: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "laspa.cli", "serve", "--model", "mini", "--threads", "1",
        "--port", str(port), "--max-video-frames", str(frames),
    ]  # fmt: skip
    with open(log, "w") as stream:
        server = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"laspa serve exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("laspa serve did not start in 300 s")


def run_cli(clip: Path, prompt: str, output: Path, steps: int) -> tuple[float, float]:
    """(seconds per frame of the edit as the command reports it, process wall seconds)."""
    output.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "laspa.cli", "video", str(clip), prompt, "-o", str(output),
        "--steps", str(steps), "--threads", "1", "-q",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    rate = float(re.search(r"([0-9.]+) frames/s", done.stderr).group(1))
    return 1 / rate, wall


def run_tab(client, clip: Path, prompt: str, steps: int) -> tuple[float, float, Path]:
    """(server's seconds per frame, client round-trip seconds, the edited clip)."""
    from gradio_client import handle_file

    start = time.perf_counter()
    edited, info = client.predict(
        video=handle_file(str(clip)), prompt=prompt, method="laspa-x0", seed=0, noise="fixed",
        options={"steps": steps}, api_name="/edit_video",
    )  # fmt: skip
    wall = time.perf_counter() - start
    # the clip's seconds (2 decimals) over its frames: finer than the line's own per frame
    seconds, frames = re.search(r"noise, ([0-9.]+) s ", info).group(1), int(info.split()[1])
    each = float(seconds) / frames
    return each, wall, Path(edited)


def in_process(clip: Path, prompt: str, folder: Path, steps: int):
    """A function that runs edit_video on one Editor of this process (one thread), and
    returns its seconds per frame: the edit with no server and no process start."""
    import torch

    from laspa import Editor, video

    torch.set_num_threads(1)
    editor = Editor.mini()

    def run() -> float:
        summary = video.edit_video(editor, clip, prompt, folder / "in-process.webm", steps=steps)
        (folder / "in-process.webm").unlink()
        return summary.seconds / summary.frames

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from gradio_client import Client

    folder = Path(tempfile.mkdtemp(prefix="laspa-web-video-bench-"))
    clip = folder / "clip.mp4"
    prompt = write_clip(clip, args.frames)
    print(f"clip: {args.frames} frames 64x64 at 8 fps; prompt {prompt!r}; {args.steps} steps")
    print(f"load before: {load()}")
    port = free_port()
    server = start_server(port, args.frames, folder / "serve.log")
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(folder))
        run_tab(client, clip, prompt, args.steps)  # warm-up: the server's first request
        local = in_process(clip, prompt, folder, args.steps)
        local()  # warm-up, as the server's
        rows = []
        for index in range(args.rounds):
            cli_each, cli_wall = run_cli(clip, prompt, folder / "cli.webm", args.steps)
            tab_each, tab_wall, edited = run_tab(client, clip, prompt, args.steps)
            local_each = local()
            rows.append(
                (cli_each, cli_wall / args.frames, local_each, tab_each, tab_wall / args.frames)
            )
            print(
                f"round {index + 1}: s/frame  cli edit {cli_each:.3f}  cli process "
                f"{rows[-1][1]:.3f}  in-process {local_each:.3f}  tab edit {tab_each:.3f}  "
                f"tab round trip {rows[-1][4]:.3f}"
            )
        pairs = zip(decoded(folder / "cli.webm"), decoded(edited), strict=True)
        same = [abs(a - b).max() for a, b in pairs]
        print(f"edited clips: {len(same)} frames each, largest pixel difference {max(same)}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(f"load after: {load()}")
    print("\nmedian seconds per frame over", args.rounds, "rounds:")
    # the tab's own cost, from the same call: the round trip less the edit inside it
    overhead = statistics.median(trip - edit for *_, edit, trip in rows)
    print(
        "| laspa video: edit | laspa video: process | edit_video in process (warm) "
        "| tab: edit | tab: round trip | tab round trip / laspa video edit "
        "| tab round trip - tab edit |"
    )
    print("|---|---|---|---|---|---|---|")
    cli_edit, cli_process, local_edit, tab_edit, tab_trip = medians
    print(
        f"| {cli_edit:.3f} | {cli_process:.3f} | {local_edit:.3f} | {tab_edit:.3f} "
        f"| {tab_trip:.3f} | {tab_trip / cli_edit:.2f} | {overhead:.3f} |"
    )


if __name__ == "__main__":
    main()
