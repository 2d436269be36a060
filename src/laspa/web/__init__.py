"""``laspa serve``: the web UI, a thin gradio layer over :class:`laspa.Editor` (one model
at a time of those ``--model`` names).

This module stays light (typer only): gradio is imported when the UI is built, so the
CLI starts fast whether or not the ``web`` extra is installed.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import TYPE_CHECKING

import typer

from ..cli import DeviceOption, ThreadsOption
from ..errors import LaspaError, first_line
from ..mini import MODEL_HELP

if TYPE_CHECKING:
    import gradio as gr


def _require_gradio() -> None:
    # before gradio's first import: no usage reports or version checks leave the machine
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        raise LaspaError("laspa serve needs gradio: pip install 'laspa[web]'") from None


def build_app(editor, **kwargs) -> gr.Blocks:
    """The web UI over ``editor`` as a gradio Blocks app (see laspa.web.app.build_app)."""
    _require_gradio()
    from .app import build_app as build

    return build(editor, **kwargs)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback by default)"),
    port: int = typer.Option(7860, "--port", help="TCP port"),
    models: list[str] = typer.Option(
        [],
        "--model",
        help=f"{MODEL_HELP}; repeat to offer several (the page's Model menu; one is loaded "
        "at a time). Default: the bundled models, mini, mini-lcm and mini-flow",
    ),  # fmt: skip
    device: str | None = DeviceOption,
    threads: int | None = ThreadsOption,
    max_upload_mb: float = typer.Option(
        10.0, "--max-upload-mb", help="largest image upload accepted, in MB"
    ),
    max_video_mb: float = typer.Option(
        20.0, "--max-video-mb", help="Video tab: largest clip file accepted, in MB"
    ),
    max_video_frames: int = typer.Option(
        120, "--max-video-frames", help="Video tab: most frames a clip may have"
    ),
    max_video_seconds: float = typer.Option(
        10.0, "--max-video-seconds", help="Video tab: longest clip accepted, in seconds"
    ),
    max_queue: int = typer.Option(
        64,
        "--max-queue",
        help="requests that may wait their turn (one edits at a time); "
        "one more is refused in one line naming this limit",
    ),  # fmt: skip
) -> None:
    """Serve the web UI (edit, sweep, attention maps, video) on HOST:PORT."""
    from ..cli import load_editor, note
    from ..editor import check_model_source
    from ..mini import MODEL_NAMES

    if not 0 < port < 65536:
        raise LaspaError(f"--port must be in 1..65535, got {port}")
    for flag, value in (
        ("--max-upload-mb", max_upload_mb),
        ("--max-video-mb", max_video_mb),
        ("--max-video-seconds", max_video_seconds),
    ):
        if not value > 0 or value == float("inf"):  # NaN and inf too
            raise LaspaError(f"{flag} must be > 0, got {value:g}")
    if max_video_frames < 1:
        raise LaspaError(f"--max-video-frames must be >= 1, got {max_video_frames}")
    if max_queue < 1:
        raise LaspaError(f"--max-queue must be >= 1, got {max_queue}")
    _require_gradio()
    _check_address(host, port)  # before loading a model that may take minutes
    names = list(dict.fromkeys(models)) or list(MODEL_NAMES)
    for name in names:  # every model checked now: the others load only when chosen
        if name not in MODEL_NAMES:
            check_model_source(name)
    from .app import build_app as build
    from .app import launch
    from .clips import VideoLimits
    from .session import ModelShelf

    shelf = ModelShelf(names, lambda name: load_editor(name, device, threads))

    limit = int(max_upload_mb * 2**20)
    clips = VideoLimits(int(max_video_mb * 2**20), max_video_frames, max_video_seconds)
    # gradio's own bound is per server: the larger of the two; each tab checks its own
    largest = max(limit, clips.max_bytes)
    if host not in ("127.0.0.1", "localhost", "::1"):
        note(f"laspa: serving on {host}: anyone who can reach this address can use the model")
    note(f"laspa: starting the web UI on http://{host}:{port} (Ctrl-C stops it)")
    demo = build(shelf, max_upload_bytes=limit, video_limits=clips, queue_size=max_queue)
    try:
        launch(demo, host, port, max_upload_bytes=largest, block=False)
    except OSError as error:  # taken since the check, or an address gradio cannot use
        raise LaspaError(f"cannot serve on {host}:{port}: {first_line(error)}") from None
    try:
        while True:  # until Ctrl-C or SIGTERM, which the CLI reports in one line
            time.sleep(0.5)
    finally:
        demo.close()


def _check_address(host: str, port: int) -> None:
    """Fail in one line when the address cannot be bound (port taken, unknown host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise LaspaError(f"cannot serve on {host}:{port}: {first_line(error)}") from None
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(address)
        except OSError as error:
            reason = "the port is in use" if error.errno == errno.EADDRINUSE else error.strerror
            raise LaspaError(
                f"cannot serve on {host}:{port}: {reason}; choose another with --port"
            ) from None


def register(app: typer.Typer) -> None:
    """Add ``laspa serve`` to the CLI."""
    app.command("serve")(serve)


__all__ = ["build_app", "register", "serve"]
