"""The benchmark loop: cases x methods, per-case scores, aggregation, sweeps, JSON.

Methods are every engine method registered in :data:`laspa.METHODS` plus the diffusers
peers of :mod:`laspa.bench.peers`; a method registered later joins without a change
here. Parameters come from (lowest precedence first) the method's defaults, the bench's
``steps``, the case's hints (e.g. ``source_prompt``, for methods that take one) and the
user's ``--param METHOD.NAME=VALUE``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .. import images
from ..errors import ParameterError
from ..methods.base import METHODS, check_option_names, make_params
from ..methods.options import parse_option, split_list
from . import metrics
from .cases import BenchCase
from .peers import PEERS

#: The reference row every run includes: plain text-to-image, for ratio_to_generate.
REFERENCE = "generate"
#: Metric keys every method entry carries (null where the suite cannot measure them).
CORE_METRICS = ("psnr", "ssim", "bg_psnr", "bg_ssim", "edit_success", "mask_iou")
#: Metric keys that appear only when some case measured them.
EXTRA_METRICS = ("bg_mse", "input_psnr", "input_ssim", "lpips", "clip_whole", "clip_edited")
#: Parameters the trade-off sweeps vary, when a method takes them.
SWEEP_AXES = ("K", "beta", "strength")

Progress = Callable[[int], None]


# ------------------------------------------------------------------ methods and params
@dataclass
class MethodSpec:
    """A method to run and the user's parameter overrides for it.

    ``name`` is the row's name: a registered method or peer, optionally with ``@label``
    (``laspa-x0@linear``) so that one method can run in several rows with different
    ``--param`` values.
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    #: the model's own defaults for the method (Editor.family_defaults), below the overrides
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The registered method or peer behind the row."""
        return self.name.partition("@")[0]

    @property
    def is_peer(self) -> bool:
        return self.method in PEERS

    @property
    def params_cls(self) -> type:
        return PEERS[self.method].Params if self.is_peer else METHODS[self.method].Params

    @property
    def case_inputs(self) -> tuple[str, ...]:
        """The parameters this method lets a case fill (Method.case_inputs)."""
        return (PEERS[self.method] if self.is_peer else METHODS[self.method]).case_inputs

    @property
    def fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.params_cls)}

    def params(self, hints: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """Overrides for one edit: the case hints the method takes and, as the user's
        values configure it, can use (laspa-mix's change only with keep=rest; a hint
        that cannot act would be refused), then the user's values."""
        given = {**self.overrides, **more}
        idle = self.idle(given) if hints else set()
        taken = {k: v for k, v in (hints or {}).items() if k in self.case_inputs and k not in idle}
        return {**taken, **given}

    def idle(self, given: dict[str, Any]) -> set[str]:
        """The options the method, configured by ``given``, cannot act on."""
        try:
            params = self.build(given)
        except ParameterError:
            return set()  # refused with its reason once the edit is built
        idle_options = getattr(params, "idle_options", None)
        return (
            set(idle_options(getattr(params, "sampler", "auto")))
            if callable(idle_options)
            else set()
        )

    def build(self, params: dict[str, Any]) -> Any:
        """The validated Params dataclass (raises ParameterError)."""
        return make_params(self.method, {**self.defaults, **params}, self.params_cls)

    def effective(self, hints: dict[str, Any] | None = None) -> dict[str, Any]:
        """The full parameter set as run, without per-case hint values (for the JSON)."""
        values = dataclasses.asdict(self.build(self.params()))
        if hints:
            for key in hints:
                if key in self.case_inputs and key not in self.overrides:
                    values[key] = "<from case>"
        return values


def known_methods() -> list[str]:
    return sorted(set(METHODS) | set(PEERS))


def parse_methods(text: str) -> list[str]:
    """``a,b,c`` -> names, each a registered method or a peer (optionally ``@label``), no
    duplicates."""
    names = split_list(text)
    if not names:
        raise ParameterError("--methods needs at least one method")
    for name in names:
        method, at, label = name.partition("@")
        if method not in METHODS and method not in PEERS:
            raise ParameterError(
                f"unknown method {method!r}; choose from: {', '.join(known_methods())}"
            )
        if at and (not label or "." in label or "=" in label):
            raise ParameterError(f"method label {name!r} must look like METHOD@LABEL")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ParameterError(f"method {duplicates[0]!r} is listed twice in --methods")
    return names


def parse_params(items: Iterable[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``METHOD.NAME=VALUE`` items -> {method: {name: typed value}}, checked against the
    method's parameters (types from the defaults, ranges by the Params validation)."""
    result: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not method or not name:
            raise ParameterError(f"--param {item!r} must look like METHOD.NAME=VALUE")
        if method not in result:
            raise ParameterError(
                f"--param {item!r} names method {method!r}, which this run does not use "
                f"(methods: {', '.join(methods)})"
            )
        spec = MethodSpec(method)
        check_option_names(method, [name], spec.params_cls)
        fields = spec.fields
        result[method][name] = parse_option(fields[name], raw.strip(), f"--param {method}.{name}")
    return result


def make_specs(
    methods: Sequence[str],
    params: dict[str, dict[str, Any]],
    steps: int,
    sampler: str | None = None,
) -> dict[str, MethodSpec]:
    """Specs for ``methods`` with the bench's steps (and sampler, when one is named) and
    the user's overrides, validated."""
    common = {"steps": steps} if sampler is None else {"steps": steps, "sampler": sampler}
    specs = {}
    for name in methods:
        spec = MethodSpec(name, {**common, **params.get(name, {})})
        spec.build(spec.params())  # raise on a bad value before any work
        specs[name] = spec
    return specs


# ------------------------------------------------------------------ one edit
@dataclass
class Outcome:
    """One edited image and its cost, from an engine method or a peer alike."""

    image: Image.Image
    seconds: float
    unet_evals: float
    mask: np.ndarray | None = None
    cpu_seconds: float | None = None  # process CPU time, robust to other jobs on the machine


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def case_seed(seed: int, index: int) -> int:
    """The noise seed of case ``index``: every method of a case shares it."""
    return int(np.random.default_rng([seed, index, 1]).integers(2**31))


class Runner:
    """Runs methods on cases with one Editor; peers are loaded once, on first use."""

    def __init__(self, editor, progress: Progress | None = None):
        self.editor = editor
        self.progress = progress
        self._peers: dict[str, Any] = {}

    def tick(self, n: int = 1) -> None:
        if self.progress is not None:
            self.progress(n)

    def peer(self, name: str):
        if name not in self._peers:
            self._peers[name] = PEERS[name](
                self.editor.source,
                self.editor.device,
                self.editor.dtype,
                final_alpha_one=self.editor.denoiser.final_alpha == 1.0,
            )
        return self._peers[name]

    def prepare(self, specs: dict[str, MethodSpec]) -> None:
        """Give every row the model's own defaults (a peer runs the family's steps and
        guidance as the engine's methods do) and load the peers up front."""
        for spec in specs.values():
            spec.defaults = self.editor.family_defaults(spec.params_cls, spec.overrides)
        self.load_peers(specs)

    def load_peers(self, names: Iterable[str]) -> None:
        """Load the peers' pipelines up front, so loading is never timed as editing."""
        for name in names:
            method = name.partition("@")[0]
            if method in PEERS:
                self.peer(method)

    def run_one(self, spec: MethodSpec, case: BenchCase, seed: int) -> Outcome:
        cpu_start = time.process_time()
        outcome = self._run_one(spec, case, seed)
        outcome.cpu_seconds = time.process_time() - cpu_start
        return outcome

    def _run_one(self, spec: MethodSpec, case: BenchCase, seed: int) -> Outcome:
        params = spec.params(case.hints)
        if spec.is_peer:
            size = self.editor.model_size(case.source)
            picture = _resized(case.source, size)
            peer, built = self.peer(spec.method), spec.build(params)
            latent = None
            if peer.wants_latent(built):
                latent = self.editor.encode(images.to_tensor(picture, size)).to(self.editor.dtype)
            out = peer.run(picture, case.target_prompt, seed, built, latent)
            edited = _resized(out.image, case.source.size)
            return Outcome(edited, out.seconds, out.unet_evals, out.mask)
        result = self.editor.edit(
            case.source, case.target_prompt, method=spec.method, seed=seed, **params
        )
        return Outcome(result.image, result.seconds, result.unet_evals, _mask(result.mask))

    def run_variants(
        self, spec: MethodSpec, case: BenchCase, seed: int, variants: list[dict[str, Any]]
    ) -> list[Outcome]:
        """Several parameter variants of one engine method on one case, in shared UNet
        batches (``edit_many``)."""
        rows = [{"prompt": case.target_prompt, "seed": seed, **spec.params(case.hints, **v)}
                for v in variants]  # fmt: skip
        cpu_start = time.process_time()
        results = self.editor.edit_many(case.source, rows, method=spec.method)
        cpu = (time.process_time() - cpu_start) / len(results)
        return [Outcome(r.image, r.seconds, r.unet_evals, _mask(r.mask), cpu) for r in results]

    def reconstruct(self, image: Image.Image) -> Image.Image:
        """The VAE's round trip of ``image`` at the model's size, back at the image's size."""
        size = self.editor.model_size(image)
        latent = self.editor.encode(images.to_tensor(image, size))
        return images.to_pil(self.editor.decode(latent), image.size)[0]


def _mask(mask) -> np.ndarray | None:
    return None if mask is None else np.asarray(mask.float().cpu().numpy()).squeeze()


# ------------------------------------------------------------------ scoring
def score(
    case: BenchCase,
    image: Image.Image,
    mask: np.ndarray | None = None,
    learned: dict[str, Callable] | None = None,
) -> dict[str, Any]:
    """Every metric the case supports for one edited image (None where it has no ground
    truth): psnr/ssim against the exact target, background metrics outside the edit mask,
    edit_success through the scene reader, mask_iou for methods that make a mask."""
    out = metrics.to_array(image)
    source = metrics.to_array(case.source)
    row: dict[str, Any] = dict.fromkeys(CORE_METRICS)
    reference = source
    if case.target is not None:
        reference = metrics.to_array(case.target)  # equals the source outside the mask
        row["psnr"], row["ssim"] = metrics.psnr(out, reference), metrics.ssim(out, reference)
    else:
        row["input_psnr"], row["input_ssim"] = metrics.psnr(out, source), metrics.ssim(out, source)
    if case.mask is not None:
        background = metrics.background_metrics(out, reference, case.mask)
        row.update(background)
        if mask is not None:
            row["mask_iou"] = metrics.mask_iou(mask, case.mask)
    if case.target_scene is not None:
        row["edit_success"] = metrics.edit_success(image, case.target_scene)
    learned = learned or {}
    if "lpips" in learned:
        keep = None if case.mask is None else 1.0 - case.mask.astype(np.float32)
        pair = (
            (out, source)
            if keep is None
            else (metrics.masked(out, keep), metrics.masked(source, keep))
        )
        row["lpips"] = learned["lpips"](*pair)
    if "clip" in learned:
        pixels = np.asarray(image.convert("RGB"))
        row["clip_whole"] = learned["clip"](pixels, case.target_prompt)
        if case.mask is not None:
            edited_part = (pixels * case.mask[..., None]).astype(np.uint8)
            row["clip_edited"] = learned["clip"](edited_part, case.target_prompt)
    return row


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over cases of each metric (None/NaN skipped), seconds and UNet evaluations."""
    summary = {key: metrics.mean(r.get(key) for r in records) for key in CORE_METRICS}
    for key in EXTRA_METRICS:
        if any(r.get(key) is not None for r in records):
            summary[key] = metrics.mean(r.get(key) for r in records)
    summary["seconds_per_edit"] = metrics.mean(r["seconds"] for r in records)
    summary["cpu_seconds_per_edit"] = metrics.mean(r.get("cpu_seconds") for r in records)
    summary["unet_evals"] = metrics.mean(r["unet_evals"] for r in records)
    summary["n"] = len(records)
    return summary


def _ratio(seconds: float | None, reference: float | None) -> float | None:
    if seconds is None or not reference:
        return None
    return seconds / reference


# ------------------------------------------------------------------ the run
@dataclass
class BenchResult:
    """Everything a run measured; :meth:`to_json` gives the documented schema."""

    model: str
    suite: str
    seed: int
    steps: int
    specs: dict[str, MethodSpec]
    records: list[dict[str, Any]]
    cases: list[BenchCase]
    ceiling: list[dict[str, Any]]
    checks: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    sweeps: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    samples: dict[str, dict[str, Image.Image]] = field(default_factory=dict)
    total_seconds: float = 0.0
    #: CPU time of this process: with one thread and a busy machine it estimates what the
    #: wall time would be on an idle core
    total_cpu_seconds: float = 0.0

    def method_rows(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["method"] == name]

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(c.kind for c in self.cases))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per method: the means, ratio_to_generate and the same per edit type."""
        reference = self.method_rows(REFERENCE)
        ref_all = summarize(reference)["seconds_per_edit"] if reference else None
        out = {}
        for name, spec in self.specs.items():
            rows = self.method_rows(name)
            entry = {"params": spec.effective(self.cases[0].hints if self.cases else None)}
            entry.update(summarize(rows))
            entry["ratio_to_generate"] = _ratio(entry["seconds_per_edit"], ref_all)
            by_type = {}
            for kind in self.kinds():
                of_kind = [r for r in rows if r["kind"] == kind]
                if not of_kind:
                    continue
                typed = summarize(of_kind)
                ref_kind = [r for r in reference if r["kind"] == kind]
                ref_seconds = summarize(ref_kind)["seconds_per_edit"] if ref_kind else None
                typed["ratio_to_generate"] = _ratio(typed["seconds_per_edit"], ref_seconds)
                by_type[kind] = typed
            entry["by_type"] = by_type
            out[name] = entry
        return out

    def to_json(self) -> dict[str, Any]:
        data = {
            "model": self.model,
            "suite": self.suite,
            "cases": len(self.cases),
            "seed": self.seed,
            "steps": self.steps,
            "methods": self.summary(),
            "vae_ceiling_psnr": metrics.mean(c["psnr"] for c in self.ceiling),
            "vae_ceiling_edit_success": metrics.mean(c.get("edit_success") for c in self.ceiling),
            "checks": self.checks,
            "skipped": self.skipped,
            "total_seconds": round(self.total_seconds, 2),
            "total_cpu_seconds": round(self.total_cpu_seconds, 2),
            "per_case": self.records,
        }
        if self.sweeps:
            data["sweeps"] = self.sweeps
        return clean(data)


def clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, floats rounded to 6 digits."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    return value


@dataclass
class CaseRun:
    """What one case gave: its records (one per method), the VAE ceiling, the SDEdit
    agreement values and, for the first cases, the pictures. Cases run apart (on other
    workers too) and are put together by :func:`assemble`."""

    index: int
    records: list[dict[str, Any]]
    ceiling: dict[str, Any]
    agreement: dict[str, float] | None = None
    #: each diffedit row's mask IoU with peer-diffedit's mask (when both run)
    mask_ious: dict[str, float] = field(default_factory=dict)
    produced: dict[str, Image.Image] | None = None
    model: str = ""


def run_bench(
    editor,
    cases: Sequence[BenchCase],
    specs: dict[str, MethodSpec],
    *,
    suite: str,
    seed: int,
    steps: int,
    progress: Progress | None = None,
    learned: dict[str, Callable] | None = None,
    skipped: dict[str, str] | None = None,
    samples: int = 4,
) -> BenchResult:
    """Run every method on every case (all methods of a case share its seed)."""
    runner = Runner(editor, progress)
    runner.prepare(specs)
    start, cpu_start = time.perf_counter(), time.process_time()
    runs = [
        run_case(runner, index, case, specs, seed, learned, keep_images=index < samples)
        for index, case in enumerate(cases)
    ]
    result = assemble(
        editor.name, suite, seed, steps, specs, cases, runs, skipped=skipped, samples=samples
    )
    result.total_seconds = time.perf_counter() - start
    result.total_cpu_seconds = time.process_time() - cpu_start
    return result


def run_case(
    runner: Runner,
    index: int,
    case: BenchCase,
    specs: dict[str, MethodSpec],
    seed: int,
    learned: dict[str, Callable] | None = None,
    keep_images: bool = False,
) -> CaseRun:
    """Every method on case number ``index`` (its seed follows from ``seed`` and the
    index alone, so a case gives the same wherever it runs)."""
    seed_i = case_seed(seed, index)
    records: list[dict[str, Any]] = []
    produced: dict[str, Image.Image] = {}
    masks: dict[str, np.ndarray | None] = {}
    for name, spec in specs.items():
        outcome = runner.run_one(spec, case, seed_i)
        row = {"id": case.id, "kind": case.kind, "method": name, "seed": seed_i}
        row.update(score(case, outcome.image, outcome.mask, learned))
        row["seconds"], row["unet_evals"] = outcome.seconds, outcome.unet_evals
        row["cpu_seconds"] = outcome.cpu_seconds
        records.append(row)
        produced[name] = outcome.image
        masks[name] = outcome.mask
        runner.tick()
    run = CaseRun(index, records, _ceiling(runner, case), model=runner.editor.name)
    for name in _diffedit_rows(specs):
        run.mask_ious[name] = metrics.mask_iou(masks[name], masks[DIFFEDIT_PEER] > 0.5)
    exact = _exact_peer_spec(specs)
    if exact is not None:
        ours = metrics.to_array(produced["sdedit"])
        same = runner.run_one(exact, case, seed_i).image
        run.agreement = {
            "as_documented": metrics.psnr(ours, metrics.to_array(produced["peer-sdedit"])),
            "same_latent": metrics.psnr(ours, metrics.to_array(same)),
        }
    if keep_images:
        run.produced = {"input": case.source, **_target(case), **produced}
    return run


def assemble(
    model: str,
    suite: str,
    seed: int,
    steps: int,
    specs: dict[str, MethodSpec],
    cases: Sequence[BenchCase],
    runs: Iterable[CaseRun],
    *,
    skipped: dict[str, str] | None = None,
    samples: int = 4,
) -> BenchResult:
    """One BenchResult from the cases' runs, in case order whatever order they came in."""
    ordered = sorted(runs, key=lambda run: run.index)
    result = BenchResult(
        model=model,
        suite=suite,
        seed=seed,
        steps=steps,
        specs=specs,
        records=[record for run in ordered for record in run.records],
        cases=list(cases),
        ceiling=[run.ceiling for run in ordered],
        skipped=dict(skipped or {}),
        samples={
            cases[run.index].id: run.produced
            for run in ordered
            if run.produced is not None and run.index < samples
        },
    )
    if _exact_peer_spec(specs) is not None:
        agreement = {
            key: [run.agreement[key] for run in ordered if run.agreement]
            for key in ("as_documented", "same_latent")
        }
        result.checks["sdedit_vs_peer_sdedit"] = _agreement(specs, agreement)
    diffedit_ious = {
        name: [run.mask_ious[name] for run in ordered if name in run.mask_ious]
        for name in _diffedit_rows(specs)
    }
    if diffedit_ious:
        result.checks["diffedit_vs_peer_diffedit"] = _diffedit_check(result, diffedit_ious)
    return result


def _target(case: BenchCase) -> dict[str, Image.Image]:
    return {} if case.target is None else {"target": case.target}


def _ceiling(runner: Runner, case: BenchCase) -> dict[str, Any]:
    """How well the VAE alone reproduces the target (the source when there is none):
    no edit can score above this PSNR, or read back better than this."""
    reference = case.target if case.target is not None else case.source
    rebuilt = runner.reconstruct(reference)
    row: dict[str, Any] = {
        "psnr": metrics.psnr(metrics.to_array(rebuilt), metrics.to_array(reference))
    }
    if case.target_scene is not None:
        row["edit_success"] = metrics.edit_success(rebuilt, case.target_scene)
    return row


def _exact_peer_spec(specs: dict[str, MethodSpec]) -> MethodSpec | None:
    """When both SDEdits run: img2img with our sdedit's steps, guidance and strength, fed
    enc(I) itself, for the bit-level check (None when the check does not apply)."""
    if "sdedit" not in specs or "peer-sdedit" not in specs:
        return None
    ours = specs["sdedit"].build(specs["sdedit"].params())
    same = {k: getattr(ours, k) for k in ("steps", "guidance", "strength")}
    return MethodSpec("peer-sdedit", {**same, "init": "latent"}, specs["sdedit"].defaults)


def _agreement(specs: dict[str, MethodSpec], values: dict[str, list[float]]) -> dict[str, Any]:
    """Our SDEdit against diffusers' img2img on the same cases, seeds and steps.

    ``psnr``: img2img as users call it. Not bit-equal by design: it samples the VAE
    posterior and draws its noise after that sample, ours uses the posterior mean and draws
    the noise first. ``same_latent_psnr``: img2img handed enc(I) (so its noise is the
    seed's first draw, like ours); 100 means identical bytes, i.e. the same algorithm.
    """
    ours = specs["sdedit"].build(specs["sdedit"].params())
    theirs = specs["peer-sdedit"].build(specs["peer-sdedit"].params())
    same = all(getattr(ours, k) == getattr(theirs, k) for k in ("steps", "guidance", "strength"))
    documented, latent = values["as_documented"], values["same_latent"]
    return {
        "psnr": metrics.mean(documented),
        "min_psnr": min(documented),
        "same_params": same,
        "same_latent_psnr": metrics.mean(latent),
        "same_latent_min_psnr": min(latent),
    }


#: the diffusers pipeline our ``diffedit`` rows are compared with, and what must agree
DIFFEDIT_PEER = "peer-diffedit"
DIFFEDIT_SHARED = (
    "steps", "guidance", "mask_encode_strength", "num_maps_per_mask", "mask_thresholding_ratio",
    "inpaint_strength",
)  # fmt: skip


def _diffedit_rows(specs: dict[str, MethodSpec]) -> list[str]:
    """The ``diffedit`` rows (any ``@label``) to compare with peer-diffedit, when it runs."""
    if DIFFEDIT_PEER not in specs:
        return []
    return [name for name, spec in specs.items() if spec.method == "diffedit"]


def _diffedit_check(result: BenchResult, mask_iou: dict[str, list[float]]) -> dict[str, Any]:
    """Each ``diffedit`` row against diffusers' DiffEdit on the same cases and seeds: the
    IoU of the two masks (mean, min), and each one's mask IoU with the exact mask,
    bg_psnr, edit_success and seconds per edit; ``speedup``: their seconds over ours."""
    keys = ("mask_iou", "bg_psnr", "edit_success", "seconds_per_edit", "unet_evals")
    theirs = summarize(result.method_rows(DIFFEDIT_PEER))
    peer_params = result.specs[DIFFEDIT_PEER].build(result.specs[DIFFEDIT_PEER].params())
    rows = {}
    for name, ious in mask_iou.items():
        ours = summarize(result.method_rows(name))
        params = result.specs[name].build(result.specs[name].params())
        rows[name] = {
            "mask_iou_vs_peer": metrics.mean(ious),
            "min_mask_iou_vs_peer": min(ious) if ious else None,
            **{key: ours[key] for key in keys},
            "speedup": _ratio(theirs["seconds_per_edit"], ours["seconds_per_edit"]),
            "same_params": all(
                getattr(params, k) == getattr(peer_params, k) for k in DIFFEDIT_SHARED
            ),
            "blend": params.blend,
            "posterior": params.posterior,
        }
    return {"peer": {key: theirs[key] for key in keys}, "rows": rows}


# ------------------------------------------------------------------ sweeps
def sweep_variants(spec: MethodSpec, grids: dict[str, Sequence[str]]) -> list[tuple[str, Any]]:
    """(axis, value) pairs of a method's sweep: each axis it takes, the others at default."""
    axes = [axis for axis in SWEEP_AXES if axis in spec.fields and grids.get(axis)]
    if not axes:
        raise ParameterError(
            f"method {spec.name} takes none of {', '.join(SWEEP_AXES)}: nothing to sweep"
        )
    variants = []
    for axis in axes:
        for value in grids[axis]:
            typed = parse_option(spec.fields[axis], str(value), f"sweep value {axis}")
            spec.build(spec.params(**{axis: typed}))  # validate before any work
            variants.append((axis, typed))
    return variants


def plan_sweeps(
    specs: dict[str, MethodSpec], grids: dict[str, Sequence[str]]
) -> dict[str, list[tuple[str, Any]]]:
    """Each swept method's (axis, value) variants, validated before any work."""
    plan = {}
    for name, spec in specs.items():
        if spec.is_peer:
            raise ParameterError(f"--sweep runs engine methods only, not the peer {name}")
        plan[name] = sweep_variants(spec, grids)
    return plan


def run_sweeps(
    editor,
    cases: Sequence[BenchCase],
    specs: dict[str, MethodSpec],
    plan: dict[str, list[tuple[str, Any]]],
    *,
    seed: int,
    progress: Progress | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """For each method, each axis and each value: the means over cases of the trade-off
    metrics. One case's variants of one method share UNet batches (``edit_many``)."""
    runner = Runner(editor, progress)
    runner.prepare(specs)
    return summarize_sweeps(
        [sweep_case(runner, index, case, specs, plan, seed) for index, case in enumerate(cases)]
    )


SweepRows = list[tuple[str, str, Any, dict[str, Any]]]


def sweep_case(
    runner: Runner,
    index: int,
    case: BenchCase,
    specs: dict[str, MethodSpec],
    plan: dict[str, list[tuple[str, Any]]],
    seed: int,
) -> SweepRows:
    """Case number ``index`` through every swept method's variants: (method, axis,
    value, scores) rows."""
    seed_i = case_seed(seed, index)
    rows: SweepRows = []
    for name, variants in plan.items():
        outcomes = runner.run_variants(
            specs[name], case, seed_i, [{axis: value} for axis, value in variants]
        )
        for (axis, value), outcome in zip(variants, outcomes, strict=True):
            row = score(case, outcome.image, outcome.mask)
            row["seconds"], row["unet_evals"] = outcome.seconds, outcome.unet_evals
            row["cpu_seconds"], row["kind"] = outcome.cpu_seconds, case.kind
            rows.append((name, axis, value, row))
        runner.tick(len(variants))
    return rows


def summarize_sweeps(per_case: Iterable[SweepRows]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The sweep's points from every case's rows (given in case order)."""
    rows: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for case_rows in per_case:
        for name, axis, value, row in case_rows:
            rows.setdefault((name, axis, value), []).append(row)
    sweeps: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (name, axis, value), of_point in rows.items():
        point = {"value": value, **summarize(of_point)}
        sweeps.setdefault(name, {}).setdefault(axis, []).append(point)
    return sweeps
