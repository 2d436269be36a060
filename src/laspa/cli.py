"""The ``laspa`` command: a thin layer over :class:`laspa.Editor`.

Errors a user can cause end in one line on stderr and exit status 2; outputs are
written atomically and never over the input.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperOption

from .errors import LaspaError, ModelError
from .interrupts import Interrupted, exit_interrupted, signals_as_exceptions
from .loading import library_warnings_silenced, load_editor, model_description
from .mini import MODEL_HELP
from .threads import THREADS_HELP

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
COMMAND_MODULES = (
    "laspa.bench.cli", "laspa.web", "laspa.demo", "laspa.batch.cli", "laspa.video_cli"
)  # fmt: skip


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


def done(model: str | None, message: str) -> None:
    """The closing note: what was written, and with which model (``--model``). Said at the
    end so that a user error, whenever it happens, stays the only line on stderr."""
    note(f"laspa: {message}; used {model_description(model)}")


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
            # a delay, however small, keeps the constructor from drawing: the bar is ours
            # (and close() can wipe it) before its first character reaches the terminal,
            # so an interrupt at any moment leaves the one closing line alone
            self.bar = tqdm(
                total=total, desc=phase, unit="step", file=sys.stderr, leave=False, delay=1e-9
            )
            self.phase = phase
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def method_options(
    method: str, given: dict[str, Any], settings: list[str] = (), sampler: str | None = None
) -> dict[str, Any]:
    """The options the user gave (None = not given) plus ``--set NAME=VALUE`` ones,
    checked against the method before any work (laspa.methods.base.make_params, as every
    front end's). ``sampler``: what "auto" runs on the model, where known before it loads
    (laspa.editor.auto_sampler), so that an option that cannot act on it is refused now."""
    from .methods.base import get_method, make_params

    get_method(method)
    options = {name: value for name, value in given.items() if value is not None}
    for setting in settings:
        name, value = parse_setting(method, setting)
        options[name] = value
    make_params(method, options, sampler=sampler)  # names, types, ranges, applicability
    return options


def parse_setting(method: str, setting: str) -> tuple[str, Any]:
    """``NAME=VALUE`` -> (name, value typed like the method's option)."""
    from .methods.base import METHODS
    from .methods.options import parse_option

    name, sep, text = setting.partition("=")
    name = name.strip().replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(METHODS[method].Params)}
    if not sep or name not in fields:
        known = ", ".join(sorted(fields))
        raise LaspaError(f"--set takes NAME=VALUE with NAME one of: {known} (got {setting!r})")
    return name, parse_option(fields[name], text, f"--set {name}")


def parse_list(text: str | None, cast, name: str) -> list:
    """``--K 100,200`` -> [100, 200]; none given -> []."""
    from .methods.options import parse_values

    return parse_values(text, cast, f"--{name} takes comma-separated numbers, got {{text!r}}")


class SchemaHelp(TyperCommand):
    """A command whose ``--help`` completes each method option's words with its range and
    each method's default, read from the method schema when help is shown (so that the
    numbers are written once, in the methods, and the plain commands need no torch)."""

    completed = False  # help can be shown more than once in one process (tests)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from .methods.options import option_help

        self.get_params(ctx)  # a subclass adds options of its own there
        for param in [] if self.completed else self.params:
            extra = option_help(param.name) if isinstance(param, TyperOption) else ""
            if extra:
                param.help = f"{param.help} ({extra})"
        self.completed = True
        super().format_help(ctx, formatter)


KEYWORD = inspect.Parameter.KEYWORD_ONLY
#: where a SchemaOptions command hands its method options to the command's function
METHOD_OPTIONS = "laspa.method_options"


class SchemaOptions(SchemaHelp):
    """A command that takes every option of every method as a flag (``--K``,
    ``--beta-schedule``, ...), made from the methods' Params (laspa.methods.options) when
    the command parses its arguments or shows its help, so that the plain commands import
    no torch and a new option needs no change here. The function reads the values given
    (None: not given) from ``ctx.meta[METHOD_OPTIONS]``; the method's Params then refuse
    the ones it does not take."""

    schema_names: frozenset[str] = frozenset()

    def get_params(self, ctx: Any) -> list[Any]:
        if not self.schema_names:
            flags = schema_flags({param.name for param in self.params})
            self.schema_names = frozenset(flag.name for flag in flags)
            after = next(i for i, p in enumerate(self.params) if p.name == "method") + 1
            self.params[after:after] = flags
        return super().get_params(ctx)

    def invoke(self, ctx: Any) -> Any:
        given = {name: ctx.params.pop(name) for name in self.schema_names if name in ctx.params}
        ctx.meta[METHOD_OPTIONS] = given
        return super().invoke(ctx)


def schema_flags(taken: set[str]) -> list[Any]:
    """A typer option per method option (``--K``; ``beta_schedule``: ``--beta-schedule``),
    typed and described by the Params; names in ``taken`` (the command's own) are left
    out. typer builds them from a signature, as it builds every command's."""
    from .methods.base import METHODS
    from .methods.options import options_by_name

    parameters = []
    for name, (spec, methods) in options_by_name().items():
        if name in taken:
            continue
        words = spec.help if len(methods) == len(METHODS) else f"{', '.join(methods)}: {spec.help}"
        flag = typer.Option(None, "--" + name.replace("_", "-"), help=words)
        kind = inspect.Parameter.KEYWORD_ONLY
        parameters.append(
            inspect.Parameter(name, kind, default=flag, annotation=spec.python_type | None)
        )

    def options(**values: Any) -> None:
        """The method options, as typer reads them."""

    options.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    probe = typer.Typer()
    probe.command()(options)
    return list(typer.main.get_command(probe).params)


# Options shared by the editing commands, declared once.
ModelOption = typer.Option(None, "--model", help=MODEL_HELP)
DeviceOption = typer.Option(None, "--device", help="cpu, cuda, ... (default: auto)")
ThreadsOption = typer.Option(None, "--threads", min=1, help=THREADS_HELP)
SamplerOption = typer.Option(
    None,
    "--sampler",
    help="ddim, ancestral (DDPM), lcm or tcd; flow on SD3 / FLUX (default: the model's scheduler)",
)
SetOption = typer.Option(
    [], "--set", help="any method option as NAME=VALUE (repeatable), e.g. --set phi=0.3"
)
RayAddressOption = typer.Option(
    None,
    "--ray-address",
    help="join this Ray cluster (HOST:PORT, ray://HOST:PORT or auto); implies --ray",
)
WorkersOption = typer.Option(
    None, "--workers", help="Ray workers (default: one per GPU, else one per --threads CPUs)"
)


@app.command(cls=SchemaOptions)
def edit(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="input image (any format PIL reads)"),
    prompt: str = typer.Argument(..., help="text describing the wanted result"),
    output: Path = typer.Option(..., "-o", "--output", help="output image (.png, .jpg, .webp)"),
    method: str = typer.Option("laspa-x0", "--method", "-m", help="editing method (laspa methods)"),
    settings: list[str] = SetOption,
    mask_out: Path | None = typer.Option(
        None, "--mask-out", help="write the method's mask (instdiffedit, laspa-mix, diffedit) here"
    ),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    threads: int | None = ThreadsOption,
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Edit IMAGE towards PROMPT and write the result to -o."""
    from . import images
    from .editor import auto_sampler, check_method_fits, check_model_source
    from .methods.base import METHODS, check_prompt, check_seed

    given = ctx.meta[METHOD_OPTIONS]
    options = method_options(method, given, settings, auto_sampler(model))
    check_prompt(prompt)
    check_seed(seed)
    check_method_fits(method, options.get("sampler"), model)  # FPE on SD3, ...: before loading
    if options.get("inpaint_model"):  # loaded late, in the method's last pass: check now
        check_model_source(options["inpaint_model"], unet_channels=9)
    output = images.check_output_path(output, inputs=(image,))
    if mask_out is not None:
        if not METHODS[method].makes_mask:
            raise LaspaError(f"method {method} makes no mask (--mask-out)")
        mask_out = images.check_output_path(mask_out, inputs=(image, output))
    picture = images.load_image(image)
    editor = load_editor(model, device, threads)
    result = run_with_progress(
        editor, quiet, lambda: editor.edit(picture, prompt, method=method, seed=seed, **options)
    )
    images.save_image(result.image, output)
    record = {**result.summary(), "model": editor.name, "output": str(output)}
    if mask_out is not None:
        images.save_image(mask_image(result.mask, picture.size), mask_out)
        record["mask"] = str(mask_out)
    if as_json:
        print(json.dumps(record))
        note(f"laspa: used {model_description(model)}")
    else:
        cost = f"{result.seconds:.2f} s, {result.unet_evals:g} UNet evals"
        done(model, f"wrote {output} ({method}, {cost})")


def run_with_progress(editor, quiet: bool, work):
    progress = TqdmProgress(enabled=not quiet)
    editor.progress = progress
    try:
        return work()
    finally:
        progress.close()
        editor.progress = None


def mask_image(mask, size: tuple[int, int]):
    """A (1, h, w) mask in [0, 1] as a grey PNG at the input's size (white = edited)."""
    from PIL import Image

    array = (mask[0].clamp(0, 1).numpy() * 255).round().astype("uint8")
    return Image.fromarray(array, mode="L").resize(size, Image.NEAREST)


@app.command(cls=SchemaHelp)
def attention(
    image: Path = typer.Argument(..., help="input image"),
    prompt: str = typer.Argument(..., help="prompt whose words' maps to read"),
    output: Path | None = typer.Option(None, "-o", "--output", help="output PNG"),
    word: list[str] = typer.Option([], "--word", "-w", help="word (or phrase) to map; repeatable"),
    all_words: bool = typer.Option(False, "--all-words", help="a labelled grid of every word"),
    tokens: bool = typer.Option(
        False, "--tokens", help="print every attention column: its index, token and word"
    ),
    as_json: bool = typer.Option(False, "--json", help="with --tokens: a JSON list"),
    method: str = typer.Option(
        "laspa-x0", "--method", "-m", help="a LASPA method, or instdiffedit (its mask's maps)"
    ),
    K: int | None = typer.Option(None, "--K", help="align while t > K"),
    beta: float | None = typer.Option(None, "--beta", help="alignment strength"),
    steps: int | None = typer.Option(None, "--steps", help="sampler steps"),
    sampler: str | None = SamplerOption,
    settings: list[str] = SetOption,
    seed: int = typer.Option(0, "--seed", help="random seed"),
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    threads: int | None = ThreadsOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Cross-attention map of prompt words on IMAGE, from one aligned pass (no inversion);
    --tokens: the columns those maps are read from, each with its token and word."""
    from . import images
    from .methods.base import check_prompt, check_seed, check_text, get_method
    from .tokens import phrase_occurs
    from .visual import labelled_grid, map_overlay

    if tokens:
        _print_columns(image, prompt, as_json, model, device, threads, {
            "-o": output, "--word": word or None, "--all-words": all_words or None, "--K": K,
            "--beta": beta, "--steps": steps, "--sampler": sampler, "--set": settings or None,
        })  # fmt: skip
        return
    if as_json:
        raise LaspaError("--json acts only with --tokens")
    if output is None:
        raise LaspaError("name the output PNG with -o (or ask for --tokens)")
    if not word and not all_words:
        raise LaspaError("name a --word, or ask for --all-words")
    given = {"K": K, "beta": beta, "steps": steps, "sampler": sampler}
    options = method_options(method, given, settings)
    if not get_method(method).records_attention:
        raise LaspaError(f"method {method} does not record attention maps")
    check_prompt(prompt)
    check_seed(seed)
    for phrase in [] if all_words else word:  # before the model loads, not after a pass
        check_text("--word", phrase)
        if not phrase_occurs(prompt, phrase):
            raise LaspaError(f"the word {phrase!r} does not occur in the prompt {prompt!r}")
    output = images.check_output_path(output, inputs=(image,))
    picture = images.load_image(image)
    editor = load_editor(model, device, threads)
    words = None if all_words else word
    maps = run_with_progress(
        editor, quiet,
        lambda: editor.attention_maps(picture, prompt, words, method, seed, **options),
    )  # fmt: skip
    overlays = [map_overlay(picture, heat) for heat in maps.values()]
    picture_out = labelled_grid([overlays], [""], list(maps)) if len(maps) > 1 else overlays[0]
    images.save_image(picture_out, output)
    done(model, f"wrote {output} ({', '.join(maps)})")


def _print_columns(image, prompt, as_json, model, device, threads, idle) -> None:
    """``laspa attention --tokens``: every column, its token and its word, to stdout."""
    import json

    from . import images
    from .methods.base import check_prompt

    for name, value in idle.items():
        if value is not None:
            raise LaspaError(f"{name} cannot act with --tokens (it reads no map)")
    check_prompt(prompt)
    images.load_image(image)  # the same IMAGE the maps would be read on
    columns = load_editor(model, device, threads).attention_columns(prompt)
    if as_json:
        rows = [{"column": c, "token": t, "word": w} for c, t, w in columns]
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for column, token, word in columns:
        typer.echo(f"{column}\t{token}\t{word or ''}")


@app.command(cls=SchemaHelp)
def sweep(
    image: Path = typer.Argument(..., help="input image"),
    prompt: str = typer.Argument(..., help="edit prompt"),
    output: Path = typer.Option(..., "-o", "--output", help="output grid PNG"),
    method: str = typer.Option("laspa-x0", "--method", "-m", help="editing method"),
    K: str | None = typer.Option(None, "--K", help="values of K, e.g. 100,200,400"),
    beta: str | None = typer.Option(None, "--beta", help="values of beta, e.g. 0.2,0.3,0.5"),
    strength: str | None = typer.Option(None, "--strength", help="values of strength"),
    guidance: str | None = typer.Option(None, "--guidance", help="values of the guidance"),
    seeds: str | None = typer.Option(None, "--seeds", help="values of the seed"),
    steps: int | None = typer.Option(None, "--steps", help="sampler steps"),
    sampler: str | None = SamplerOption,
    settings: list[str] = SetOption,
    model: str | None = ModelOption,
    device: str | None = DeviceOption,
    threads: int | None = ThreadsOption,
    batch_size: int | None = typer.Option(None, "--batch-size", help="UNet rows per batch"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON line per cell"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """The preservation / edit trade-off as a picture: a grid over one or two parameters,
    every cell of it from one batched run."""
    from . import images
    from .methods.base import check_prompt, check_seed
    from .methods.options import sweep_grid
    from .visual import labelled_grid

    check_prompt(prompt)
    axes = {
        name: values
        for name, values in (
            ("K", parse_list(K, int, "K")), ("beta", parse_list(beta, float, "beta")),
            ("strength", parse_list(strength, float, "strength")),
            ("guidance", parse_list(guidance, float, "guidance")),
            ("seed", parse_list(seeds, int, "seeds")),
        )
        if values
    }  # fmt: skip
    if not 1 <= len(axes) <= 2:
        raise LaspaError("sweep one or two of --K, --beta, --strength, --guidance, --seeds")
    fixed = method_options(method, {"steps": steps, "sampler": sampler}, settings)
    (row_name, row_values), *rest = axes.items()
    column_name, column_values = rest[0] if rest else ("", [None])
    variants = sweep_grid({"prompt": prompt, **fixed}, *axes.items())
    for variant in variants:  # every cell validated before any work
        method_options(method, {k: v for k, v in variant.items() if k not in ("prompt", "seed")})
        check_seed(variant.get("seed", 0))
    output = images.check_output_path(output, inputs=(image,))
    picture = images.load_image(image)
    editor = load_editor(model, device, threads)
    results = run_with_progress(
        editor, quiet, lambda: editor.edit_many(picture, variants, method, batch_size)
    )
    width = len(column_values)
    cells = [[r.image for r in results[i : i + width]] for i in range(0, len(results), width)]
    grid = labelled_grid(
        cells,
        [f"{row_name}={v}" for v in row_values],
        [f"{column_name}={v}" if column_name else "" for v in column_values],
    )
    images.save_image(grid, output)
    if as_json:
        for result in results:
            print(json.dumps(result.summary()))
    total = sum(r.seconds for r in results)
    done(model, f"wrote {output} ({len(results)} edits, {total:.2f} s in all)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2; Ctrl-C and
    SIGTERM one line and 130 / 143 (laspa.console takes them over even earlier)."""
    try:
        with signals_as_exceptions(), library_warnings_silenced():
            code = _run(argv)
    except Interrupted as stop:
        exit_interrupted(stop)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def _run(argv: list[str] | None) -> Any:
    _mount_subcommands()
    try:
        # without standalone mode, click returns a typer.Exit's code instead of raising it
        return app(args=argv, prog_name="laspa", standalone_mode=False)
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


if __name__ == "__main__":
    main()
