"""``laspa bench``: the benchmark command (mounted by laspa.cli through ``register``).

Everything heavy (torch, diffusers, torchmetrics, matplotlib) is imported inside the
command, so ``laspa --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from ..cli import DeviceOption, RayAddressOption, ThreadsOption, WorkersOption
from ..mini import MODEL_HELP

DEFAULT_METHODS = "laspa-x0,sdedit,peer-sdedit,peer-diffedit"
DEFAULT_SWEEP_METHODS = "laspa-input,laspa-eps,laspa-x0,sdedit"
DEFAULT_K = "0,100,200,300,500,700"
DEFAULT_BETA = "0.1,0.2,0.3,0.5,0.7,0.9"
DEFAULT_STRENGTH = "0.3,0.4,0.5,0.6,0.7,0.8,0.9"


def number_list(text: str, option: str) -> list[str]:
    """'0.1,0.2' -> ['0.1', '0.2'] after checking each is a number (kept as text, so that
    each parameter converts it to its own type: K=100 is an int, beta=0.3 a float)."""
    from ..errors import ParameterError
    from ..methods.options import parse_values

    values = parse_values(
        text, _number_text, f"{option} must be numbers separated by commas, got {{item!r}}"
    )
    if not values:
        raise ParameterError(f"{option} needs at least one value")
    return values


def _number_text(item: str) -> str:
    float(item)  # a ValueError if it is not a number
    return item


def check_outputs(
    json_out: Path | None, plots: Path | None, cases_file: Path | None, data: Path | None
) -> None:
    """Refuse output paths that cannot be written or would clobber an input, before any
    work is done."""
    from ..files import output_checks

    with output_checks(json_out if json_out is not None else plots):
        _check_outputs(json_out, plots, cases_file, data)


def _check_outputs(json_out, plots, cases_file, data) -> None:
    from ..errors import OutputError
    from ..files import check_writable

    inputs = [p.resolve() for p in (cases_file,) if p is not None]
    if json_out is not None:
        if json_out.is_dir():
            raise OutputError(f"--json {json_out} is a directory")
        if not json_out.parent.is_dir():
            raise OutputError(f"output directory does not exist: {json_out.parent}")
        check_writable(json_out)
        if json_out.resolve() in inputs:
            raise OutputError(f"--json {json_out} would overwrite the cases file")
        if data is not None and json_out.resolve().is_relative_to(data.resolve()):
            raise OutputError(f"--json {json_out} is inside the benchmark data folder {data}")
        _check_replaceable_json(json_out)
    if plots is not None:
        if plots.exists() and not plots.is_dir():
            raise OutputError(f"--plots {plots} exists and is not a directory")
        if not plots.exists() and not plots.parent.is_dir():
            raise OutputError(f"output directory does not exist: {plots.parent}")
        if data is not None and plots.resolve().is_relative_to(data.resolve()):
            raise OutputError(f"--plots {plots} is inside the benchmark data folder {data}")
        if json_out is not None and json_out.resolve() == plots.resolve():
            raise OutputError("--json and --plots name the same path")


#: an existing --json target larger than this is not read to see whether it is JSON
_MAX_REPLACED_JSON_BYTES = 64 * 2**20


#: the keys of a report --json writes (the scene suites', the clips suite's): an existing
#: file holding neither set is not one
_REPORT_KEYS = ({"suite", "methods"}, {"rows", "summary"})


def _check_replaceable_json(json_out: Path) -> None:
    """An existing --json target must be an empty file or an earlier report: anything else
    (an image, a cases file, a manifest, another JSON file) is someone's, which the report
    would replace."""
    import json

    from ..errors import OutputError

    if not json_out.exists():
        return
    if not json_out.is_file():
        raise OutputError(f"--json {json_out} exists and is not a file")
    with open(json_out, "rb") as handle:
        data = handle.read(_MAX_REPLACED_JSON_BYTES + 1)
    if not data.strip():
        return
    try:
        if len(data) > _MAX_REPLACED_JSON_BYTES:
            raise ValueError
        report = json.loads(data)
        if not (isinstance(report, dict) and any(k <= report.keys() for k in _REPORT_KEYS)):
            raise ValueError
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        raise OutputError(
            f"--json {json_out} exists and is not a JSON report of laspa bench; the report "
            "would replace it: remove it or choose another name"
        ) from None


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    suite: str = typer.Option(
        "shapes-brief",
        "--suite",
        help="shapes-brief (the default, the suite of record: prompts name only the edited "
        "object), shapes, shapes-detail, piebench, tedbench, or clips (video editing)",
    ),
    cases: int | None = typer.Option(
        None, "--cases", help="number of cases (scene suites: 24; other suites: all)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the cases and of every edit's noise"),
    kinds: str | None = typer.Option(
        None, "--kinds", help="shapes suites: comma-separated edit kinds (default: all 7)"
    ),
    cases_file: Path | None = typer.Option(
        None, "--cases-file", help="JSON list of {id, source, edit} scene-world cases"
    ),
    data: Path | None = typer.Option(None, "--data", help="folder of piebench or tedbench"),
    methods: str = typer.Option(
        DEFAULT_METHODS, "--methods", help="comma-separated methods (engine methods and peers)"
    ),
    param: list[str] = typer.Option(
        [], "--param", help="METHOD.NAME=VALUE, e.g. laspa-x0.K=300 (repeatable)"
    ),
    steps: int = typer.Option(25, "--steps", help="sampler steps of every method"),
    sampler: str | None = typer.Option(
        None, "--sampler", help="ddim, ancestral, lcm or tcd for all methods (default: the model's)"
    ),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP),
    device: str | None = DeviceOption,
    threads: int | None = ThreadsOption,
    json_out: Path | None = typer.Option(None, "--json", help="write the results as JSON"),
    plots: Path | None = typer.Option(None, "--plots", help="folder for tradeoff.png, samples.png"),
    sweep: bool = typer.Option(False, "--sweep", help="run the trade-off sweeps too"),
    sweep_methods: str = typer.Option(
        DEFAULT_SWEEP_METHODS, "--sweep-methods", help="methods swept over K/beta/strength"
    ),
    sweep_k: str = typer.Option(DEFAULT_K, "--sweep-K", help="K values of the sweep"),
    sweep_beta: str = typer.Option(DEFAULT_BETA, "--sweep-beta", help="beta values"),
    sweep_strength: str = typer.Option(DEFAULT_STRENGTH, "--sweep-strength", help="strengths"),
    samples: int = typer.Option(4, "--samples", help="cases shown in samples.png"),
    clip_model: str = typer.Option(
        "openai/clip-vit-large-patch14", "--clip-model", help="CLIP for piebench/tedbench"
    ),
    ray: bool = typer.Option(
        False,
        "--ray",
        help="shard the cases over Ray workers (a local cluster unless --ray-address)",
    ),
    ray_address: str | None = RayAddressOption,
    workers: int | None = WorkersOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    frames: int = typer.Option(8, "--frames", help="clips suite: frames per clip"),
) -> None:
    """Benchmark editing methods: quality against exact targets, speed, trade-off plots.
    ``--suite clips``: video editing of scene-world clips, fixed against fresh noise
    (bg_psnr, edit_success and flicker per clip)."""
    from ..batch.cli import check_ray_request

    if suite == "clips":
        from ..errors import ParameterError

        given = {
            "--ray": ray or ray_address is not None, "--plots": plots is not None,
            "--sweep": sweep, "--kinds": kinds is not None, "--cases-file": cases_file is not None,
            "--data": data is not None,
        }  # fmt: skip
        for flag in (flag for flag, there in given.items() if there):
            raise ParameterError(f"{flag} is not for --suite clips")
        clips_bench(
            cases, seed, methods, param, steps, sampler, model, device, threads, json_out,
            quiet, frames,
        )  # fmt: skip
        return

    request = check_request(
        suite, cases, seed, kinds, cases_file, data, methods, param, steps, json_out, plots,
        sweep, sweep_methods, {"K": sweep_k, "beta": sweep_beta, "strength": sweep_strength},
        samples, sampler,
    )  # fmt: skip
    use_ray = check_ray_request(ray, ray_address, workers, model, threads)
    if use_ray:
        from ..cli import note

        skipped: dict[str, str] = {}
        for name in drop_unavailable_peers(request.specs, skipped):
            note(f"laspa bench: skipped {name}: {skipped[name]}")
        result = run_request_on_ray(
            request, model, device, threads, workers, ray_address, clip_model, quiet, skipped
        )
    else:
        editor, learned, skipped = load_inputs(request, model, device, threads, clip_model)
        result = run_request(request, editor, learned, skipped, quiet)
    write_outputs(result, json_out, plots)


@dataclass
class BenchRequest:
    """What the user asked for, checked: the methods as specs, the sweep plan, the cases
    (real images already loaded; scene cases once the model's size is known)."""

    suite: str
    seed: int
    steps: int
    samples: int
    specs: dict
    sweep_specs: dict
    plan: dict
    scene_suite: bool
    cases: list | None  # scene cases: None until load_inputs renders them at the model's size
    count: int | None
    cases_file: Path | None
    edit_kinds: tuple[str, ...]
    sweep: bool

    @property
    def sweep_edits(self) -> int:
        return sum(len(variants) for variants in self.plan.values())


def check_request(
    suite, cases, seed, kinds, cases_file, data, methods, param, steps, json_out, plots,
    sweep, sweep_methods, sweep_values, samples, sampler=None,
) -> BenchRequest:  # fmt: skip
    """Everything the user typed, checked before the model loads."""
    from ..errors import ParameterError
    from ..methods.options import split_list
    from . import cases as case_sources
    from . import runner

    if steps < 1:
        raise ParameterError(f"--steps must be >= 1, got {steps}")
    if samples < 0:
        raise ParameterError(f"--samples must be >= 0, got {samples}")
    if suite not in case_sources.SUITES:
        raise case_sources.BenchDataError(
            f"unknown suite {suite!r}; choose one of: {', '.join(case_sources.SUITES)}"
        )
    names = runner.parse_methods(methods)
    if runner.REFERENCE not in names:
        names.append(runner.REFERENCE)  # the time reference of ratio_to_generate
    swept = runner.parse_methods(sweep_methods) if sweep else []
    overrides = runner.parse_params(param, list(dict.fromkeys(names + swept)))
    specs = runner.make_specs(names, overrides, steps, sampler)
    sweep_specs = runner.make_specs(swept, overrides, steps, sampler)
    grids = {axis: number_list(values, f"--sweep-{axis}") for axis, values in sweep_values.items()}
    plan = runner.plan_sweeps(sweep_specs, grids)
    check_outputs(json_out, plots, cases_file, data)
    scene_suite = suite in case_sources.SCENE_SUITES
    if scene_suite and data is not None:
        raise case_sources.BenchDataError("--data is for piebench/tedbench; shapes needs none")
    if cases_file is not None:
        case_sources.read_case_file(cases_file)  # fail on a bad file before loading a model
    edit_kinds = case_sources.EDIT_KINDS
    if kinds is not None:
        if not scene_suite:
            raise case_sources.BenchDataError(f"--kinds is for the shapes suites, not {suite}")
        if cases_file is not None:
            raise case_sources.BenchDataError("--kinds samples cases; a --cases-file has its own")
        edit_kinds = tuple(split_list(kinds))
        case_sources.sample_specs(1, seed, edit_kinds)  # a bad kind fails here
    loaded = None
    if not scene_suite:  # real images: no render size needed, load (and check) them now
        loaded = case_sources.load_cases(suite, size=0, n=cases, data=data)
    return BenchRequest(
        suite=suite, seed=seed, steps=steps, samples=samples, specs=specs,
        sweep_specs=sweep_specs, plan=plan, scene_suite=scene_suite, cases=loaded,
        count=cases, cases_file=cases_file, edit_kinds=edit_kinds, sweep=sweep,
    )  # fmt: skip


def load_inputs(request: BenchRequest, model, device, threads, clip_model: str):
    """The learned metrics a real-image suite uses (each one skipped, with a note, when it
    cannot load), the editor, and the scene cases at the model's size."""
    from ..cli import load_editor, note
    from . import cases as case_sources

    learned, skipped = {}, {}
    for name in drop_unavailable_peers(request.specs, skipped):
        note(f"laspa bench: skipped {name}: {skipped[name]}")
    if not request.scene_suite:
        from .learned import load_clip, load_lpips

        for key, (function, reason) in (("lpips", load_lpips()), ("clip", load_clip(clip_model))):
            if function is None:
                skipped[key] = reason
                note(f"laspa bench: skipped {key}: {reason}")
            else:
                learned[key] = function

    editor = load_editor(model, device, threads)
    if request.scene_suite:
        request.cases = case_sources.load_cases(
            request.suite, size=editor.resolution, n=request.count, seed=request.seed,
            cases_file=request.cases_file, kinds=request.edit_kinds,
        )  # fmt: skip
    return editor, learned, skipped


def drop_unavailable_peers(specs: dict, skipped: dict[str, str]) -> list[str]:
    """Remove the rows of peers the installed diffusers cannot run from ``specs``, with
    the reason in ``skipped``; returns their names."""
    from .peers import PEERS

    dropped = []
    for name, spec in list(specs.items()):
        reason = PEERS[spec.method].unavailable() if spec.is_peer else None
        if reason is not None:
            del specs[name]
            skipped[name] = reason
            dropped.append(name)
    return dropped


def run_request(request: BenchRequest, editor, learned: dict, skipped: dict, quiet: bool):
    """Every case through every method (and the sweeps), under one progress bar."""
    import sys

    from tqdm import tqdm

    from . import runner

    total = len(request.cases) * (len(request.specs) + request.sweep_edits)
    bar = tqdm(total=total, desc="bench", unit="edit", file=sys.stderr, disable=quiet)
    try:
        result = runner.run_bench(
            editor, request.cases, request.specs, suite=request.suite, seed=request.seed,
            steps=request.steps, progress=bar.update, learned=learned, skipped=skipped,
            samples=request.samples,
        )  # fmt: skip
        if request.sweep:
            result.sweeps = runner.run_sweeps(
                editor, request.cases, request.sweep_specs, request.plan, seed=request.seed,
                progress=bar.update,
            )  # fmt: skip
    finally:
        bar.close()
    return result


def run_request_on_ray(
    request, model, device, threads, workers, address, clip_model, quiet, skipped
):
    """The cases sharded over Ray workers (laspa.bench.on_ray), under one progress bar."""
    import sys

    from tqdm import tqdm

    from .on_ray import case_count
    from .on_ray import run_request_on_ray as run_on_ray

    total = case_count(request) * (len(request.specs) + request.sweep_edits)
    bar = tqdm(total=total, desc="bench", unit="edit", file=sys.stderr, disable=quiet)
    try:
        return run_on_ray(
            request, model=model, device=device, threads=threads, workers=workers,
            address=address, clip_model=clip_model, progress=bar.update, skipped=skipped,
        )  # fmt: skip
    finally:
        bar.close()


def clips_bench(
    cases, seed, methods, param, steps, sampler, model, device, threads, json_out, quiet, frames
) -> None:
    """``--suite clips``: checks, the run (laspa.bench.clips), the table and the JSON."""
    import sys

    from tqdm import tqdm

    from ..cli import load_editor, note
    from ..errors import ParameterError
    from ..methods.base import METHODS, check_seed
    from . import clips, report, runner

    check_seed(seed)
    if steps < 1:
        raise ParameterError(f"--steps must be >= 1, got {steps}")
    if not 2 <= frames <= 240:
        raise ParameterError(f"--frames must be in [2, 240], got {frames}")
    count = 4 if cases is None else cases
    if count < 1:
        raise ParameterError(f"--cases must be >= 1, got {count}")
    names = runner.parse_methods(
        clips.DEFAULT_CLIP_METHODS if methods == DEFAULT_METHODS else methods
    )
    peers = [name for name in names if name not in METHODS]
    if peers:
        raise ParameterError(f"--suite clips runs engine methods only, not {peers[0]}")
    overrides = runner.parse_params(param, names)
    common = {"steps": steps} if sampler is None else {"steps": steps, "sampler": sampler}
    params = {name: {**common, **overrides.get(name, {})} for name in names}
    runner.make_specs(names, overrides, steps, sampler)  # a bad value fails before loading
    check_outputs(json_out, None, None, None)
    editor = load_editor(model, device, threads)
    total = count * len(names) * len(clips.NOISES)
    bar = tqdm(total=total, desc="clips", unit="run", file=sys.stderr, disable=quiet)
    try:
        result = clips.run_clips(editor, names, params, count, frames, seed, 4, progress=bar.update)
    finally:
        bar.close()
    if json_out is not None:
        report.write_json(result, json_out)
        note(f"laspa bench: wrote {json_out}")
    print(clips.table(result))


def write_outputs(result, json_out: Path | None, plots: Path | None) -> None:
    """The JSON, the plots and the table on stdout."""
    from ..cli import note
    from . import report

    data_out = result.to_json()
    if json_out is not None:
        report.write_json(data_out, json_out)
        note(f"laspa bench: wrote {json_out}")
    if plots is not None:
        from . import plots as figures

        plots.mkdir(exist_ok=True)
        written = [
            figures.tradeoff(data_out, plots / "tradeoff.png"),
            figures.sample_grid(result.samples, plots / "samples.png"),
        ]
        for path in written:
            if path is not None:
                note(f"laspa bench: wrote {path}")
        if written[0] is None:
            note("laspa bench: no trade-off plot: this suite has no edit_success")
    print(report.render(data_out))
