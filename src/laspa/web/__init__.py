"""``laspa serve``: the web UI, a thin gradio layer over one :class:`laspa.Editor`.

This module stays light (typer only): gradio is imported when the UI is built, so the
CLI starts fast whether or not the ``web`` extra is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from ..errors import LaspaError

if TYPE_CHECKING:
    import gradio as gr


def _require_gradio() -> None:
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
    model: str | None = typer.Option(
        None, "--model", help="diffusers SD folder or hub id (default: bundled miniature)"
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: auto)"),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="largest upload accepted"),
) -> None:
    """Serve the web UI (edit, sweep, attention maps) on HOST:PORT."""
    from ..cli import load_editor, note

    if not 0 < port < 65536:
        raise LaspaError(f"--port must be in 1..65535, got {port}")
    if max_upload_mb <= 0:
        raise LaspaError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
    _require_gradio()
    editor = load_editor(model, device)
    from .app import build_app as build
    from .app import launch

    limit = int(max_upload_mb * 2**20)
    if host not in ("127.0.0.1", "localhost", "::1"):
        note(f"laspa: serving on {host}: anyone who can reach this address can use the model")
    note(f"laspa: web UI on http://{host}:{port} (Ctrl-C stops it)")
    try:
        launch(build(editor, max_upload_bytes=limit), host, port, max_upload_bytes=limit)
    except OSError as error:  # port taken, address not available
        raise LaspaError(f"cannot serve on {host}:{port}: {error}") from None


def register(app: typer.Typer) -> None:
    """Add ``laspa serve`` to the CLI."""
    app.command("serve")(serve)


__all__ = ["build_app", "register", "serve"]
