"""The ``laspa`` command: a thin layer over :class:`laspa.Editor`.

Errors a user can cause end in one line on stderr and exit status 2; outputs are
written atomically and never over the input.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import typer

from .errors import LaspaError, ModelError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Fast, training-free, text-guided editing of one image with a diffusion model.",
)


@app.callback()
def root() -> None:
    """Fast, training-free, text-guided editing of one image with a diffusion model."""


#: Modules adding commands with ``register(app)``; each imports its heavy libraries lazily.
COMMAND_MODULES = ("laspa.bench.cli", "laspa.web", "laspa.demo")


def _mount_subcommands() -> None:
    from .world.cli import world_app

    app.add_typer(world_app, name="world", help="The procedural scene world.")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name == name:  # not written yet in this checkout
                continue
            raise
        module.register(app)


def note(message: str) -> None:
    """A one-line note for the user on stderr (stdout stays clean for --json)."""
    print(message, file=sys.stderr)


def quiet_libraries() -> None:
    """diffusers and transformers log loading chatter and progress bars of their own; the
    CLI prints its own progress and keeps stderr to what the user needs."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def load_editor(model: str | None, device: str | None = None):
    """The Editor for --model, or the bundled miniature when none is named."""
    from .editor import Editor

    quiet_libraries()
    if model is None:
        editor = Editor.mini(device=device)
        note(f"laspa: using the bundled miniature model ({editor.name}); --model selects another")
    else:
        editor = Editor.from_pretrained(model, device=device)
        note(f"laspa: using model {model}")
    return editor


class TqdmProgress:
    """A progress bar per phase of an edit (inversion, editing), on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.phase = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None or phase != self.phase or done == 1:
            self.close()
            self.bar = tqdm(total=total, desc=phase, unit="step", file=sys.stderr, leave=False)
            self.phase = phase
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def method_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave (None = not given), checked against the method."""
    from .methods.base import get_method, make_params

    get_method(method)
    options = {name: value for name, value in given.items() if value is not None}
    make_params(method, options)  # validates ranges and applicability before any work
    return options


@app.command()
def edit(
    image: Path = typer.Argument(..., help="input image (any format PIL reads)"),
    prompt: str = typer.Argument(..., help="text describing the wanted result"),
    output: Path = typer.Option(..., "-o", "--output", help="output image (.png, .jpg, .webp)"),
    method: str = typer.Option("laspa-x0", "--method", "-m", help="editing method (laspa methods)"),
    K: int | None = typer.Option(None, "--K", help="LASPA: align while t > K [0, 1000] (200)"),
    beta: float | None = typer.Option(
        None, "--beta", help="LASPA: alignment strength [0, 1] (0.3)"
    ),
    beta_schedule: str | None = typer.Option(
        None, "--beta-schedule", help="LASPA: constant (b=beta) or linear (b=beta*t/T)"
    ),
    eps_form: str | None = typer.Option(None, "--eps-form", help="laspa-eps: exact or literal"),
    direction: str | None = typer.Option(
        None, "--direction", help="laspa-x0: asymmetric (UNet eps) or consistent"
    ),
    noise: str | None = typer.Option(None, "--noise", help="laspa-input: fixed or fresh z"),
    steps: int | None = typer.Option(None, "--steps", help="DDIM steps (50)"),
    guidance: float | None = typer.Option(None, "--guidance", help="guidance scale (10)"),
    strength: float | None = typer.Option(None, "--strength", help="sdedit: (0, 1] (0.8)"),
    source_prompt: str | None = typer.Option(
        None, "--source-prompt", help="ddim-inversion: prompt of the inversion ('')"
    ),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    model: str | None = typer.Option(
        None, "--model", help="diffusers SD folder or hub id (default: bundled miniature)"
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: auto)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Edit IMAGE towards PROMPT and write the result to -o."""
    from . import images

    options = method_options(
        method,
        {
            "K": K, "beta": beta, "beta_schedule": beta_schedule, "eps_form": eps_form,
            "direction": direction, "noise": noise, "steps": steps, "guidance": guidance,
            "strength": strength, "source_prompt": source_prompt,
        },
    )  # fmt: skip
    if not prompt.strip():
        raise LaspaError("the prompt must be a non-empty text")
    output = images.check_output_path(output, inputs=(image,))
    picture = images.load_image(image)
    editor = load_editor(model, device)
    progress = TqdmProgress(enabled=not quiet)
    editor.progress = progress
    try:
        result = editor.edit(picture, prompt, method=method, seed=seed, **options)
    finally:
        progress.close()
    images.save_image(result.image, output)
    if as_json:
        print(json.dumps({**result.summary(), "model": editor.name, "output": str(output)}))
    else:
        cost = f"{result.seconds:.2f} s, {result.unet_evals:g} UNet evals"
        note(f"laspa: wrote {output} ({method}, {cost})")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    _mount_subcommands()
    try:
        # without standalone mode, click returns a typer.Exit's code instead of raising it
        code = app(args=argv, prog_name="laspa", standalone_mode=False)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except typer.Abort:
        note("laspa: aborted")
        sys.exit(130)
    except typer.TyperException as error:  # click's usage errors, vendored by typer
        if type(error).__name__ == "NoArgsIsHelpError":
            sys.exit(0)  # help was printed
        note(f"laspa: error: {error.format_message()}")
        sys.exit(2)
    except (LaspaError, ModelError) as error:
        note(f"laspa: error: {error}")
        sys.exit(2)
    except KeyboardInterrupt:
        note("laspa: interrupted")
        sys.exit(130)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
