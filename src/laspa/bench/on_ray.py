"""``laspa bench --ray``: the benchmark's cases sharded over Ray workers.

Each worker holds one Editor (laspa.batch.on_ray) and runs whole cases: every method of
a case, its VAE ceiling, the SDEdit agreement check and, with --sweep, its sweep
variants. A case's seed follows from the bench seed and the case's number alone
(runner.case_seed), so a case scores the same wherever it runs; the driver puts the
cases back in order (runner.assemble, runner.summarize_sweeps).
"""

from __future__ import annotations

import base64
import pickle
from functools import partial
from typing import Any

#: per worker process: the cases and learned metrics of the bench it serves, built once
_STATE: dict[str, Any] = {}


def case_count(request) -> int:
    """How many cases the request holds, without a model: scene cases are drawn from
    (seed, index) alone, so rendering them small counts them."""
    if request.cases is not None:
        return len(request.cases)
    return len(_cases(request, size=64))


def _cases(request, size: int):
    from . import cases as case_sources

    return case_sources.load_cases(
        request.suite, size=size, n=request.count, seed=request.seed,
        cases_file=request.cases_file, kinds=request.edit_kinds,
    )  # fmt: skip


def _worker_state(editor, request, clip_model: str) -> dict[str, Any]:
    if _STATE.get("request") is not request:
        from .runner import Runner

        learned, skipped = {}, {}
        if not request.scene_suite:
            from .learned import load_clip, load_lpips

            for key, (function, reason) in (
                ("lpips", load_lpips()), ("clip", load_clip(clip_model))
            ):  # fmt: skip
                if function is None:
                    skipped[key] = reason
                else:
                    learned[key] = function
        cases = request.cases if request.cases is not None else _cases(request, editor.resolution)
        runner = Runner(editor)
        runner.prepare(request.specs)
        _STATE.update(request=request, cases=cases, learned=learned, skipped=skipped, runner=runner)
    return _STATE


def run_case_payload(request, clip_model: str, editor, payload: str) -> str:
    """A handler of laspa.batch.on_ray: case number ``payload``, pickled as text."""
    from .runner import run_case, sweep_case

    state = _worker_state(editor, request, clip_model)
    index = int(payload)
    case = state["cases"][index]
    run = run_case(
        state["runner"], index, case, request.specs, request.seed, state["learned"],
        keep_images=index < request.samples,
    )  # fmt: skip
    sweep = None
    if request.sweep:
        sweep = sweep_case(state["runner"], index, case, request.sweep_specs, request.plan,
                           request.seed)  # fmt: skip
    # the case travels back too: the driver never renders cases at the model's size
    answer = {
        "run": run, "sweep": sweep, "case": case, "skipped": state["skipped"],
        "defaults": {name: spec.defaults for name, spec in request.specs.items()},
    }  # fmt: skip
    return base64.b64encode(pickle.dumps(answer)).decode("ascii")


def run_request_on_ray(
    request, *, model, device, threads, workers, address, clip_model: str, progress=None,
    skipped: dict[str, str] | None = None,
):  # fmt: skip
    """The bench of ``request`` on Ray; the BenchResult a run in this process gives.
    ``skipped``: what the driver already left out (peers diffusers cannot run)."""
    import time

    from ..batch.on_ray import map_with_editors
    from ..cli import note
    from .runner import assemble, summarize_sweeps

    count = case_count(request)
    per_case = len(request.specs) + request.sweep_edits

    def tick(_: str) -> None:
        if progress is not None:
            progress(per_case)

    start = time.perf_counter()
    results = map_with_editors(
        [str(index) for index in range(count)],
        partial(run_case_payload, request, clip_model),
        model=model, device=device, threads=threads, workers=workers, address=address,
        progress=tick,
    )  # fmt: skip
    answers = sorted(
        (pickle.loads(base64.b64decode(text)) for text in results),
        key=lambda answer: answer["run"].index,
    )
    learned_skipped = answers[0]["skipped"] if answers else {}
    for key, reason in learned_skipped.items():
        note(f"laspa bench: skipped {key}: {reason}")
    skipped = {**(skipped or {}), **learned_skipped}
    for name, defaults in (answers[0]["defaults"] if answers else {}).items():
        request.specs[name].defaults = defaults  # the model's own, as the workers ran them
    result = assemble(
        answers[0]["run"].model, request.suite, request.seed, request.steps, request.specs,
        [answer["case"] for answer in answers], [answer["run"] for answer in answers],
        skipped=skipped, samples=request.samples,
    )  # fmt: skip
    if request.sweep:
        result.sweeps = summarize_sweeps(answer["sweep"] for answer in answers)
    result.total_seconds = time.perf_counter() - start
    # CPU time is spent in the workers; the per-edit figures carry it
    result.total_cpu_seconds = sum(r.get("cpu_seconds") or 0.0 for r in result.records)
    return result
