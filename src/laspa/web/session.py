"""What the web UI does, without gradio: one Editor behind a lock, inputs checked first.

Every request of the page lands here, so the rules (size limit, one edit at a time,
one batched run per sweep, one model in memory) hold for the browser and for API clients
alike, and the behaviour is testable without a server.
"""

from __future__ import annotations

import gc
import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import images, video
from ..errors import ImageError, LaspaError, ParameterError
from ..methods import METHODS
from ..methods.base import check_prompt, make_params
from ..methods.options import split_list, sweep_grid
from ..visual import enlarge, labelled_grid, map_overlay
from . import options as opts
from .clips import (
    OUTPUT_SUFFIX,
    VIDEO_BATCH,
    ClipProgress,
    ResultFolder,
    VideoLimits,
    check_clip,
    describe_clip,
)

#: uploads above this many bytes are refused (gradio refuses them at the upload route too)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024

#: a sweep is one UNet batch: bound it so one request cannot hold the server for long
MAX_SWEEP_CELLS = 36

Progress = Callable[[str, int, int], None]


@dataclass
class EditOutcome:
    image: Image.Image
    map: Image.Image | None  # the method's mask (or mean attention) over the input
    map_label: str
    info: str  # one line of timing for the page


@dataclass
class VideoOutcome:
    path: Path  # the edited clip (OUTPUT_SUFFIX), at the input's size and frame rate
    info: str  # one line for the page: what was edited, and its time per frame
    summary: video.VideoSummary


# ------------------------------------------------------------- what the page shows
#: options shown first, whatever the method; every other option of a method that applies
#: goes under the page's Advanced section
PRIMARY_OPTIONS = (
    "steps", "guidance", "strength", "K", "beta", "source_prompt", "src_guidance_scale",
    "tar_guidance_scale", "K_out", "beta_out", "K_in", "beta_in", "subject", "change",
    "keep", "region", "noise_seeds", "replace_fraction",
)  # fmt: skip

#: options a method declares but refuses (flowedit has two guidance scales of its own)
UNUSED_OPTIONS = {"flowedit": ("guidance",)}


@dataclass(frozen=True)
class ModelTraits:
    """What the page's choices depend on in the loaded model."""

    kind: str  # "unet" (eps / v) or "flow"
    default_sampler: str  # what the sampler "auto" runs
    guidance_embedding: bool  # an LCM's guidance embedding (guidance_mode applies)

    @classmethod
    def of(cls, editor) -> ModelTraits:
        engine = editor.engine
        embedding = bool(getattr(engine, "guidance_embedding_dim", None))
        return cls(engine.kind, engine.default_sampler, embedding)


def offered_samplers(method: str, traits: ModelTraits) -> list[str]:
    """The sampler choices the model can run for ``method``: those of its kind, only
    deterministic ones for a method that inverts, and ``auto`` where the model's own
    sampler is one of them."""
    from ..methods.base import DETERMINISTIC_SAMPLERS, SAMPLER_CHOICES
    from ..samplers import SAMPLERS

    inverts = METHODS[method].needs_deterministic_sampler if method in METHODS else False

    def runs(name: str) -> bool:  # as check_sampler and Engine.steps refuse
        fits = traits.kind in SAMPLERS[name].kinds
        return fits and (not inverts or name in DETERMINISTIC_SAMPLERS)

    named = [name for name in SAMPLER_CHOICES if name != "auto" and runs(name)]
    return (["auto"] if runs(traits.default_sampler) else []) + named


def resolved_sampler(sampler: str | None, traits: ModelTraits) -> str:
    return traits.default_sampler if sampler in (None, "", "auto") else sampler


def option_applies(name: str, method: str, traits: ModelTraits, sampler: str | None) -> bool:
    """Whether option ``name`` of ``method`` can act on this model with this sampler
    choice: gamma with tcd only, step noise with a sampler that draws noise (not ddim,
    not flow), guidance_mode on a UNet with a guidance embedding, an inpainting
    checkpoint not on a flow model."""
    from ..samplers import SAMPLERS

    if name in UNUSED_OPTIONS.get(method, ()):
        return False
    running = SAMPLERS.get(resolved_sampler(sampler, traits))
    if name == "gamma":
        return running is not None and running.name == "tcd"
    if name == "step_noise":
        return running is not None and not running.deterministic
    if name == "guidance_mode":
        return traits.guidance_embedding
    if name == "inpaint_model":
        return traits.kind != "flow"
    return True


def shown_options(method: str, traits: ModelTraits, sampler: str | None = "auto") -> dict:
    """``{option: "primary" | "advanced"}`` for the options of ``method`` the page shows
    (those that apply), in the method's order; the others are hidden, and their values
    are not sent."""
    return {
        spec.name: "primary" if spec.name in PRIMARY_OPTIONS else "advanced"
        for spec in opts.method_options(method)
        if option_applies(spec.name, method, traits, sampler)
    }


def describe_cost(method: str, seconds: float, unet_evals: float, count: int = 1) -> str:
    each = " each" if count > 1 else ""
    return f"{method}: {seconds:.2f} s, {unet_evals:g} UNet evaluations{each}"


class ModelShelf:
    """The models a server offers, by name, each loaded when a request first names it.

    One is held at a time: choosing another drops the current one's weights before the
    next loads (a real checkpoint takes gigabytes), and if that load fails the previous
    model is loaded again so the server keeps working.
    """

    def __init__(self, names: Sequence[str], load: Callable[[str], Any], first: Any = None):
        self.names = list(dict.fromkeys(names))
        if not self.names:
            raise ValueError("a ModelShelf needs at least one model")
        self._load = load
        self.current = self.names[0]
        self.editor = first if first is not None else load(self.current)

    @classmethod
    def single(cls, editor) -> ModelShelf:
        return cls([getattr(editor, "name", None) or "model"], lambda name: editor, editor)

    def check(self, name: str | None) -> None:
        if name not in (None, "") and name not in self.names:
            raise ParameterError(
                f"this server offers no model {name!r}; choose one of: {', '.join(self.names)}"
            )

    def get(self, name: str | None):
        """The Editor of ``name`` (None or "": the current one), loading it if needed."""
        self.check(name)
        if name in (None, "", self.current):
            return self.editor
        previous, self.editor = self.current, None
        _free_memory()
        try:
            self.editor = self._load(name)
        except LaspaError:
            self.editor = self._load(previous)
            raise
        self.current = name
        return self.editor


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def suggested_steps(editor) -> int | None:
    """The steps the page proposes for ``editor``: a few-step model's own count (4 for
    LCM), the family pipeline's (28 on SD3 and FLUX), or None for the methods' default."""
    x0 = METHODS["laspa-x0"].Params
    return editor.default_steps() or editor.family_defaults(x0, {}).get("steps")


def suggested_options(editor, steps: int | None) -> dict[str, float | int]:
    """The K, K_in and guidance the page proposes for ``editor`` at ``steps``: a few-step
    schedule's alignment ends (the Params' ``few_step_defaults``) and the family's own
    guidance (Editor.family_defaults), else the methods' defaults."""
    union = opts.all_options("laspa-x0")
    proposed = {name: union[name].default for name in ("K", "K_in", "guidance")}
    options = {} if steps is None else {"steps": steps}
    proposed.update(
        {
            k: v
            for k, v in editor.family_defaults(METHODS["laspa-x0"].Params, options).items()
            if k != "steps"
        }  # fmt: skip
    )
    for method in ("laspa-x0", "laspa-local"):
        proposed.update(editor.schedule_defaults(METHODS[method].Params, options))
    return proposed


class WebSession:
    """The offered models serving one request at a time (an Editor is not thread-safe)."""

    def __init__(
        self,
        editor,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        video_limits: VideoLimits | None = None,
    ):
        """``editor``: one Editor, or a ModelShelf of several models by name;
        ``video_limits``: the largest clip the Video tab edits."""
        self.models = editor if isinstance(editor, ModelShelf) else ModelShelf.single(editor)
        self.max_upload_bytes = max_upload_bytes
        self.video_limits = video_limits or VideoLimits()
        self.lock = threading.Lock()
        self._results: ResultFolder | None = None
        self._last = self.models.current
        self._traits = {self._last: ModelTraits.of(self.editor)}

    @property
    def results(self) -> ResultFolder:
        """The folder of edited clips, made on the first video edit."""
        if self._results is None:
            self._results = ResultFolder()
        return self._results

    @property
    def editor(self):
        """The model loaded now."""
        return self.models.editor

    def traits(self, model: str | None = None) -> ModelTraits:
        """The traits of served model ``model`` (None: the loaded one), as last seen
        loaded: a page names its own model, which may not be the one loaded now; one
        never loaded yet (or while another loads) gets the last loaded model's."""
        if self.models.editor is not None:
            self._traits[self.models.current] = ModelTraits.of(self.models.editor)
            self._last = self.models.current
        return self._traits.get(model or self._last, self._traits[self._last])

    def describe_model(self) -> str:
        editor = self.editor
        return f"Model: `{self.models.current}` at {editor.resolution} px"

    def select_model(self, name: str | None, progress: Progress | None = None):
        """Load ``name`` (if it is not loaded) between requests; returns its Editor."""
        self.models.check(name)
        if progress is not None:
            progress(f"loading {name}", 0, 1)
        with self.lock:
            return self.models.get(name)

    # ------------------------------------------------------------------ inputs
    def load_upload(self, path: str | os.PathLike | None) -> Image.Image:
        """The uploaded image, or ImageError saying in one line why it is refused."""
        if path is None or str(path) == "":
            raise ImageError("no image: upload one or load a demo scene first")
        size = Path(path).stat().st_size if Path(path).exists() else 0
        if size > self.max_upload_bytes:
            raise ImageError(
                f"the image file is {size / 2**20:.1f} MB; the limit is "
                f"{self.max_upload_bytes / 2**20:.0f} MB"
            )
        try:
            return images.load_image(path)
        except ImageError as error:
            # load_image names the server-side temporary path, which means nothing to the user
            raise ImageError(str(error).replace(f": {path}", "")) from None

    def load_clip(self, path: str | os.PathLike | None) -> str:
        """One line on the uploaded clip (frames, size, rate), or ImageError saying in one
        line why the Video tab refuses it."""
        return describe_clip(path, check_clip(path, self.video_limits))

    def demo_scene(self, seed: int) -> tuple[Image.Image, str]:
        """A generated scene at the model's resolution and its caption."""
        from ..world import caption, render, sample_scene

        seed = _seed(seed, "the scene number")
        scene = sample_scene(np.random.default_rng(seed))
        return render(scene, size=self.editor.resolution), caption(scene)

    # ----------------------------------------------------------------- editing
    def _run(
        self, progress: Progress | None, work: Callable[[Any], Any], model: str | None = None
    ) -> Any:
        with self.lock:
            editor = self.models.get(model)
            editor.progress = progress
            try:
                return work(editor)
            finally:
                editor.progress = None

    def edit(
        self,
        path: str | None,
        prompt: str,
        method: str,
        seed: int,
        values: dict[str, Any],
        progress: Progress | None = None,
        model: str | None = None,
    ) -> EditOutcome:
        check_prompt(prompt)  # the cheap checks first, the image last
        options = opts.pick_options(method, values)
        seed = _seed(seed)
        self.models.check(model)
        picture = self.load_upload(path)
        result = self._run(
            progress,
            lambda editor: editor.edit(picture, prompt, method=method, seed=seed, **options),
            model,
        )
        heat, label = result_map(result)
        # over the input: the mask says which part of the original the method may change
        overlay = None if heat is None else map_overlay(picture, heat)
        info = describe_cost(method, result.seconds, result.unet_evals)
        notes = "; ".join(
            f"{key.replace('_', ' ')}: {value}" for key, value in result.notes.items()
        )
        return EditOutcome(result.image, overlay, label, f"{info}; {notes}" if notes else info)

    def edit_video(
        self,
        path: str | None,
        prompt: str,
        method: str,
        seed: int,
        noise: str,
        values: dict[str, Any],
        progress: Callable[[str, float], None] | None = None,
        model: str | None = None,
    ) -> VideoOutcome:
        """Every frame of the uploaded clip edited as ``laspa video`` edits it, into a
        WebM of the clip's size and frame rate. The options, then the clip's limits are
        checked before the model is touched; ``progress(description, fraction)`` follows
        the whole clip."""
        check_prompt(prompt)
        options = opts.pick_options(method, values)
        make_params(method, options)
        video.check_noise(noise)
        seed = _seed(seed)
        self.models.check(model)
        info = check_clip(path, self.video_limits)
        tracker = ClipProgress(info.frames, progress)

        def work(editor) -> tuple[Path, video.VideoSummary]:
            with self.results.request() as folder:
                output = folder / f"edited-{method}-{folder.name}{OUTPUT_SUFFIX}"
                summary = video.edit_video(
                    editor, path, prompt, output, method=method, seed=seed, frame_noise=noise,
                    batch_size=VIDEO_BATCH, progress=tracker.frames, info=info, **options,
                )  # fmt: skip
            return output, summary

        output, summary = self._run(tracker.steps, work, model)
        size, fps = summary.size, float(summary.fps)
        each = summary.seconds / max(1, summary.edited)
        line = (
            f"{method}: {summary.frames} frames {size[0]}x{size[1]} at {fps:g} fps, {noise} "
            f"noise, {summary.seconds:.2f} s ({each:.2f} s per frame)"
        )
        return VideoOutcome(output, line, summary)

    def sweep(
        self,
        path: str | None,
        prompt: str,
        method: str,
        seed: int,
        values: dict[str, Any],
        axes: tuple[tuple[str, str], tuple[str, str]],
        progress: Progress | None = None,
        model: str | None = None,
    ) -> tuple[Image.Image, str]:
        """A grid of edits over two options (columns, rows) from one ``edit_many`` call,
        so the edits share UNet batches instead of running one by one."""
        check_prompt(prompt)
        base = opts.pick_options(method, values)
        specs = {spec.name: spec for spec in opts.sweepable(method)}
        (x_name, x_text), (y_name, y_text) = axes
        for name in (x_name, y_name):
            if name not in specs:
                raise ParameterError(f"method {method} has no option {name!r} to sweep")
        if x_name == y_name:
            raise ParameterError("choose two different options to sweep")
        xs, ys = opts.parse_values(specs[x_name], x_text), opts.parse_values(specs[y_name], y_text)
        if len(xs) * len(ys) > MAX_SWEEP_CELLS:
            raise ParameterError(
                f"a sweep of {len(xs)} x {len(ys)} edits is too large "
                f"(at most {MAX_SWEEP_CELLS} edits)"
            )
        seed = _seed(seed)
        self.models.check(model)
        picture = self.load_upload(path)
        variants = sweep_grid({**base, "prompt": prompt, "seed": seed}, (y_name, ys), (x_name, xs))
        results = self._run(
            progress, lambda editor: editor.edit_many(picture, variants, method=method), model
        )
        width = len(xs)
        cells = [[r.image for r in results[i * width : (i + 1) * width]] for i in range(len(ys))]
        grid = labelled_grid(
            cells, [_label(y_name, y) for y in ys], [_label(x_name, x) for x in xs]
        )
        total = sum(r.seconds for r in results)
        info = describe_cost(method, results[0].seconds, results[0].unet_evals, len(results))
        return grid, f"{len(results)} edits in one batched call, {total:.2f} s in all; {info}"

    def attention(
        self,
        path: str | None,
        prompt: str,
        words: str,
        method: str,
        seed: int,
        values: dict[str, Any],
        progress: Progress | None = None,
        model: str | None = None,
    ) -> tuple[list[tuple[Image.Image, str]], str]:
        """Each word's cross-attention map over the input, from one pass of ``method``;
        ``words`` is a comma-separated list (a phrase maps to the mean of its words), or
        empty for every word of the prompt."""
        check_prompt(prompt)
        options = opts.pick_options(method, values)
        chosen = split_list(words) or None
        seed = _seed(seed)
        self.models.check(model)
        picture = self.load_upload(path)
        start = time.perf_counter()
        maps = self._run(
            progress,
            lambda editor: editor.attention_maps(
                picture, prompt, chosen, method=method, seed=seed, **options
            ),
            model,
        )
        seconds = time.perf_counter() - start
        shown = enlarge(picture)
        gallery = [(map_overlay(shown, heat), word) for word, heat in maps.items()]
        return gallery, f"{method}: {len(maps)} word maps from one pass, {seconds:.2f} s"


#: what an API client must send for an option of each type: JSON has one number type
#: (200.0 is a whole number; 2.5 for K is refused by the option's own check)
API_TYPES = {bool: "true or false", int: "a number", float: "a number", str: "text"}


def check_api_types(method: str, values: dict[str, Any]) -> None:
    """An API client's option values must have their option's JSON type, as ``--set``
    values must parse on the command line: ``"200"`` or ``null`` for K is refused in one
    line naming the option and the type expected (``null`` passes only where the option
    is automatic when left empty). Names not of ``method`` are left to check_api_options."""
    specs = {spec.name: spec for spec in opts.method_options(method)}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None or (value is None and spec.optional):
            continue
        if not _has_type(value, spec.python_type):
            expected = API_TYPES.get(spec.python_type, spec.python_type.__name__)
            if spec.optional:
                expected += " or null (automatic)"
            raise ParameterError(f"{name} must be {expected}, got {_as_sent(value)}")


def _has_type(value: Any, python_type: type) -> bool:
    if python_type is bool or isinstance(value, bool):  # JSON true is no number
        return isinstance(value, bool) and python_type is bool
    if python_type in (int, float):
        return isinstance(value, int | float)
    return isinstance(value, python_type)


def _as_sent(value: Any) -> str:
    """``value`` in one short line, JSON's words for null, true and false."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _label(name: str, value: Any) -> str:
    return f"{name}={value:g}" if isinstance(value, int | float) else f"{name}={value}"


def _seed(seed: Any, name: str = "seed") -> int:
    """A seed from a widget or an API client (any JSON), or a one-line refusal."""
    if seed is None:
        return 0
    try:
        number = float(seed) if not isinstance(seed, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number != int(number) or not 0 <= number < 2**63:
        raise ParameterError(f"{name} must be a whole number in [0, 2**63), got {seed!r}")
    return int(number)


def result_map(result) -> tuple[np.ndarray | None, str]:
    """The method's edit mask if it made one, else the mean of its attention maps."""
    if result.mask is not None:
        return result.mask.float().numpy().reshape(result.mask.shape[-2:]), "Edit mask"
    if result.attention:
        maps = [np.asarray(m, dtype=np.float32).squeeze() for m in result.attention.values()]
        heat = np.mean(maps, axis=0)
        peak = float(heat.max())
        return (heat / peak if peak > 0 else heat), "Attention"
    return None, ""
