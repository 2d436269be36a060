"""The gradio app of ``laspa serve``: a thin layer over the models a WebSession offers.

Imported only when the UI is built, so that ``laspa --help`` never pays for gradio.

Two kinds of events: the page's own (private: their inputs are every option widget of
every method, which changes whenever a method is added), and the public API endpoints
``/edit``, ``/sweep``, ``/attention``, ``/edit_video`` and ``/demo_scene`` whose
signatures stay put: a method's options travel as one ``options`` dict; options left out
take its defaults. Its one key that is not a method option, ``model``, names one of the
served models (default: the one loaded now), so clients written before a server offered
several keep working.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# gradio reads this at import: no usage reports leave the machine
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio.utils import get_upload_folder, is_in_or_equal  # noqa: E402
from pydantic import BaseModel, create_model, model_validator  # noqa: E402

from .. import images  # noqa: E402
from ..editor import DEFAULT_METHOD  # noqa: E402
from ..errors import ImageError, LaspaError, ParameterError  # noqa: E402
from ..methods import METHODS  # noqa: E402
from . import options as opts  # noqa: E402
from .clips import VIDEO_TYPES, VideoLimits  # noqa: E402
from .session import (  # noqa: E402
    MAX_UPLOAD_BYTES,
    PRIMARY_OPTIONS,
    EditOutcome,
    ModelShelf,
    ModelTraits,
    VideoOutcome,
    WebSession,
    check_api_types,
    offered_samplers,
    shown_options,
    suggested_options,
    suggested_steps,
)

#: every event that touches the Editor shares this queue slot: one edit at a time
EDITOR_QUEUE = "editor"

#: requests that may wait for the editor (``laspa serve --max-queue``): each waits its
#: turn; one more is refused by gradio in one line naming this limit ("Queue is full.
#: Max size is 64 ..."), so that a burst cannot pile up uploads without bound
QUEUE_SIZE = 64

INTRO = (
    "### laspa: text-guided editing of one image\n"
    "Upload an image or load a generated demo scene, describe the wanted result, "
    "choose a method and press **Edit**."
)

#: the default that tells gradio to pass a progress tracker; it swaps in each event's own
PROGRESS = gr.Progress()

#: models work at 32-512 px: show their pictures filling the box, pixels kept sharp
CSS = """
#input-image img, #result-image img, #result-map img {
    width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;
}
#sweep-grid img, #maps-gallery img, #video-result video { image-rendering: pixelated; }
"""

UI_ONLY = {"concurrency_limit": None, "api_visibility": "private"}

#: the option whose choice decides which others apply (gamma with tcd, ...)
SAMPLER = "sampler"
ON_EDITOR = {"concurrency_id": EDITOR_QUEUE, "concurrency_limit": 1}


# ------------------------------------------------------------------ small pieces
def _hand_over_unopened(box: gr.components.Component) -> gr.components.Component:
    """Make ``box`` (an image, or the video's file box) pass its uploaded file on as a
    path without opening it.

    gr.Image opens uploads with PIL itself and fails on a non-image with a bare "Error";
    laspa.images.load_image refuses it instead, with a reason the user can read (for a
    clip: laspa.web.clips.check_clip, by content; gr.File would also leave an empty
    temporary file in its cache on every call). Only files uploaded with a request are
    read: an API client can name any path (as a bare string, or as a file whose path is
    on the server), and either is refused in one line instead of a silent error.
    (Instance attributes, not a subclass: gradio writes a .pyi file next to the source
    of every Component subclass it sees.)
    """
    original = box.preprocess

    def preprocess(payload: Any) -> str | None:
        path = getattr(payload, "path", None)
        if not path:
            return original(payload)
        if not is_in_or_equal(path, get_upload_folder()):
            raise gr.Error(NOT_UPLOADED, title="Cannot edit", print_exception=False)
        return str(path)

    box.preprocess = preprocess  # type: ignore[method-assign]
    box.data_model = _uploads_only(box.data_model)
    return box


#: the one line for an input that is not a file uploaded with the request
NOT_UPLOADED = (
    "the file must be uploaded with the request (gradio_client: handle_file(path)); "
    "a path on the server is not read"
)


#: what marks a value as a file in gradio's API (gradio_client.handle_file writes it)
FILE_META = {"_type": "gradio.FileData"}


def _bare_path_as_file(value: Any) -> Any:
    # a bare string fails gradio's own validation with an error it hides ({"error":
    # null}, and pydantic turns any error raised here into that one): taken as a file,
    # it reaches preprocess, which refuses what was not uploaded with its reason
    return {"path": value, "meta": FILE_META} if isinstance(value, str) else value


def _uploads_only(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` (a file component's data model) taking a bare path as a file, for
    preprocess to refuse in one line; the same name and fields, so the API's description
    does not change."""
    return create_model(
        model.__name__, __base__=model, __doc__=model.__doc__,
        __validators__={"bare_path": model_validator(mode="before")(_bare_path_as_file)},
    )  # fmt: skip


def _user_error(error: LaspaError) -> gr.Error:
    """A LaspaError as a toast with its one-line reason (and no traceback in the log). The
    reason must survive JSON: a character that is not valid Unicode would turn the whole
    error into null on its way to the client, so such characters are shown escaped."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    reason = lines[0].encode("utf-8", "backslashreplace").decode("utf-8")
    return gr.Error(reason, title="Cannot edit", print_exception=False)


def _progress(progress: gr.Progress) -> Callable[[str, int, int], None]:
    def report(phase: str, done: int, total: int) -> None:
        progress((done, total), desc=phase)

    return report


def _clip_progress(progress: gr.Progress) -> Callable[[str, float], None]:
    def report(phase: str, fraction: float) -> None:
        progress(fraction, desc=phase)

    return report


def _option_widget(
    spec: opts.OptionSpec, visible: bool, value: Any = None, choices: list[str] | None = None
) -> gr.components.Component:
    value = spec.default if value is None else value
    common = {
        "label": spec.name, "info": spec.info, "visible": visible, "elem_id": f"option-{spec.name}"
    }  # fmt: skip
    if choices is not None:  # the sampler: only those the model can run
        return gr.Radio(choices=choices, value=value if value in choices else choices[0], **common)
    if spec.kind == "slider":
        return gr.Slider(
            minimum=spec.minimum, maximum=spec.high, step=spec.step, value=value, **common
        )
    if spec.kind == "number":
        precision = 0 if spec.python_type is int else None
        return gr.Number(
            value=value, minimum=spec.minimum, maximum=spec.high, precision=precision,
            step=spec.step, **common,
        )  # fmt: skip
    if spec.kind == "radio":
        return gr.Radio(choices=list(spec.choices), value=value, **common)
    if spec.kind == "checkbox":
        return gr.Checkbox(value=value, **common)
    return gr.Textbox(value=value, **common)


def _widget_update(spec: opts.OptionSpec, visible: bool = True) -> dict:
    """A widget with ``spec``'s default, range and help (methods differ in them)."""
    update = {"visible": visible, "value": spec.default, "info": spec.info}
    if spec.kind in ("slider", "number"):
        update.update(minimum=spec.minimum, maximum=spec.high)
    if spec.kind == "slider":
        update["step"] = spec.step
    if spec.kind == "radio":
        update["choices"] = list(spec.choices)
    return gr.update(**update)


def _method_markdown(method: str) -> str:
    return f"*{METHODS[method].summary}*" if method in METHODS else ""


def _sweep_axes(method: str) -> tuple[str | None, str | None]:
    """Default sweep axes: the paper's K x beta where the method has them."""
    names = [spec.name for spec in opts.sweepable(method)]
    preferred = [n for n in ("K", "beta", "strength", "guidance", "steps") if n in names]
    ordered = [*preferred, *(n for n in names if n not in preferred), None, None]
    return ordered[0], ordered[1]


def _sweep_values(method: str, name: str | None) -> str:
    specs = {spec.name: spec for spec in opts.sweepable(method)}
    return opts.default_sweep_values(specs[name]) if name in specs else ""


def _options_dict(method: str, options: Any) -> tuple[dict[str, Any], str | None]:
    """The API's ``options`` argument (a dict of ``method``'s option values and optionally
    ``model``, or nothing) as (option values, model). A name the method does not take is
    refused, as the CLI refuses it."""
    if options in (None, ""):
        return {}, None
    if not isinstance(options, dict):
        raise ParameterError(f"options must be a JSON object of option values, got {options!r}")
    values = dict(options)
    model = values.pop("model", None)
    if model is not None and not isinstance(model, str):
        raise ParameterError(f"model must be the name of a served model, got {model!r}")
    opts.check_api_options(method, values)
    check_api_types(method, values)
    return values, model


class _Downloads:
    """Result files offered for download, in a folder of the app's own."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="laspa-web-"))
        self.counter = itertools.count(1)

    def save(self, image, method: str) -> str:
        path = self.folder / f"laspa-{method}-{next(self.counter)}.png"
        return str(images.save_image(image, path))


# ----------------------------------------------------------------------- layout
@dataclass
class _Page:
    """The page's components, so that layout and event wiring can live apart."""

    source: gr.Image
    result: gr.Image
    result_map: gr.Image
    prompt: gr.Textbox
    scene_number: gr.Number
    scene_button: gr.Button
    model: gr.Dropdown
    model_line: gr.Markdown
    method: gr.Dropdown
    method_note: gr.Markdown
    seed: gr.Number
    edit_button: gr.Button
    info: gr.Markdown
    download: gr.DownloadButton
    names: list[str]
    widgets: list[gr.components.Component]
    x_name: gr.Dropdown
    x_values: gr.Textbox
    y_name: gr.Dropdown
    y_values: gr.Textbox
    sweep_button: gr.Button
    sweep_info: gr.Markdown
    sweep_grid: gr.Image
    words: gr.Textbox
    maps_button: gr.Button
    maps_info: gr.Markdown
    maps_gallery: gr.Gallery
    current_method: gr.State
    map_label: gr.State
    api_options: gr.JSON
    api_edit: gr.Button
    api_sweep: gr.Button
    api_attention: gr.Button
    video_input: gr.File
    video_clip_info: gr.Markdown
    video_method: gr.Markdown
    video_noise: gr.Radio
    video_button: gr.Button
    video_info: gr.Markdown
    video_result: gr.Video
    video_download: gr.DownloadButton
    api_video: gr.Button

    @property
    def option_widgets(self) -> dict[str, gr.components.Component]:
        return dict(zip(self.names, self.widgets, strict=True))


def _images_row() -> tuple[gr.Image, gr.Image, gr.Image]:
    with gr.Row(equal_height=True):
        source = gr.Image(
            label="Input image", type="filepath", format="png", height=340,
            sources=["upload", "clipboard"], elem_id="input-image",
        )  # fmt: skip
        shown = {"type": "pil", "format": "png", "interactive": False, "height": 340}
        result = gr.Image(
            label="Result", buttons=["download", "fullscreen"], elem_id="result-image", **shown
        )
        result_map = gr.Image(
            label="Edit mask", visible=False, buttons=["download", "fullscreen"],
            elem_id="result-map", **shown,
        )  # fmt: skip
    return _hand_over_unopened(source), result, result_map


def _edit_tab(
    union: dict[str, opts.OptionSpec], values: dict[str, Any], traits: ModelTraits
) -> dict[str, Any]:
    """The method, seed and options: the common options first, the rest under a closed
    Advanced section; options that do not apply to the model or sampler are hidden."""
    initial = shown_options(DEFAULT_METHOD, traits)
    samplers = offered_samplers(DEFAULT_METHOD, traits)

    def widget(name: str) -> gr.components.Component:
        choices = samplers if name == SAMPLER else None
        return _option_widget(union[name], name in initial, values.get(name), choices)

    with gr.Tab("Edit", id="edit"), gr.Row():
        with gr.Column(scale=1):
            method = gr.Dropdown(
                choices=list(METHODS), value=DEFAULT_METHOD, label="Method", elem_id="method"
            )
            method_note = gr.Markdown(_method_markdown(DEFAULT_METHOD))
            seed = gr.Number(label="seed", value=0, precision=0, minimum=0, elem_id="seed")
            edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
            info = gr.Markdown(label="Timing", elem_id="edit-info")
            download = gr.DownloadButton("Download result", visible=False, elem_id="download")
        with gr.Column(scale=2):
            made = {name: widget(name) for name in union if name in PRIMARY_OPTIONS}
            with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                made |= {name: widget(name) for name in union if name not in PRIMARY_OPTIONS}
            widgets = [made[name] for name in union]
    return {
        "method": method, "method_note": method_note, "seed": seed, "edit_button": edit_button,
        "info": info, "download": download, "names": list(union), "widgets": widgets,
    }  # fmt: skip


def _sweep_tab() -> dict[str, Any]:
    x_default, y_default = _sweep_axes(DEFAULT_METHOD)
    axes = [spec.name for spec in opts.sweepable(DEFAULT_METHOD)]
    # custom values allowed: gradio checks a dropdown against the choices it started with,
    # and the choices follow the method (session.sweep checks the names)
    axis = {"allow_custom_value": True}
    with gr.Tab("Sweep", id="sweep"):
        gr.Markdown(
            "A grid of edits of the image above over two options of the chosen method, "
            "computed in one batched run; the other options are those of the Edit tab."
        )
        with gr.Row():
            x_name = gr.Dropdown(axes, value=x_default, label="Columns", elem_id="sweep-x", **axis)
            x_values = gr.Textbox(_sweep_values(DEFAULT_METHOD, x_default), label="Column values")
            y_name = gr.Dropdown(axes, value=y_default, label="Rows", elem_id="sweep-y", **axis)
            y_values = gr.Textbox(_sweep_values(DEFAULT_METHOD, y_default), label="Row values")
        sweep_button = gr.Button("Sweep", variant="primary", elem_id="sweep")
        sweep_info = gr.Markdown(label="Timing", elem_id="sweep-info")
        sweep_grid = gr.Image(
            label="Sweep", type="pil", format="png", interactive=False,
            buttons=["download", "fullscreen"], elem_id="sweep-grid",
        )  # fmt: skip
    return {
        "x_name": x_name, "x_values": x_values, "y_name": y_name, "y_values": y_values,
        "sweep_button": sweep_button, "sweep_info": sweep_info, "sweep_grid": sweep_grid,
    }  # fmt: skip


def _attention_tab() -> dict[str, Any]:
    with gr.Tab("Attention", id="attention"):
        gr.Markdown(
            "Where each word of the prompt looks in the image above: cross-attention maps "
            "from one aligned pass of the Edit tab's method and options (the LASPA methods "
            "record them; no inversion)."
        )
        with gr.Row():
            words = gr.Textbox(
                "", label="Words", placeholder="empty: every word; or e.g. circle, red square",
                info="comma-separated; a phrase maps to the mean of its words", scale=4,
            )  # fmt: skip
            maps_button = gr.Button("Show maps", variant="primary", scale=1, elem_id="maps")
        maps_info = gr.Markdown(label="Timing", elem_id="maps-info")
        maps_gallery = gr.Gallery(
            label="Attention maps", columns=6, fit_columns=False, height="auto", format="png",
            elem_id="maps-gallery",
        )  # fmt: skip
    return {
        "words": words, "maps_button": maps_button, "maps_info": maps_info,
        "maps_gallery": maps_gallery,
    }  # fmt: skip


def _video_method_markdown(method: str) -> str:
    return f"Method: **{method}**, with the Edit tab's seed and options."


def _video_tab(limits: VideoLimits) -> dict[str, Any]:
    with gr.Tab("Video", id="video"):
        gr.Markdown(
            "Every frame of a short clip edited with the prompt above and the Edit tab's "
            "method, seed and options, as `laspa video` edits it; the result keeps the "
            f"clip's size and frame rate (a WebM). Clips of {limits.describe()}."
        )
        with gr.Row():
            with gr.Column(scale=1):
                video_input = gr.File(
                    label="Input clip (mp4, webm, gif)", file_types=VIDEO_TYPES,
                    elem_id="video-input",
                )  # fmt: skip
                video_clip_info = gr.Markdown(elem_id="video-clip-info")
                video_method = gr.Markdown(
                    _video_method_markdown(DEFAULT_METHOD), elem_id="video-method"
                )
                video_noise = gr.Radio(
                    ["fixed", "fresh"], value="fixed", label="noise", elem_id="video-noise",
                    info="fixed: one x_T (and z) for every frame; fresh: frame i with seed + i",
                )  # fmt: skip
                video_button = gr.Button("Edit video", variant="primary", elem_id="edit-video")
                video_info = gr.Markdown(label="Timing", elem_id="video-info")
            with gr.Column(scale=2):
                video_result = gr.Video(
                    label="Edited clip", interactive=False, loop=True, height=340,
                    buttons=["download"], elem_id="video-result",
                )  # fmt: skip
                video_download = gr.DownloadButton(
                    "Download clip", visible=False, elem_id="video-download"
                )
    return {
        "video_input": _hand_over_unopened(video_input), "video_clip_info": video_clip_info,
        "video_method": video_method, "video_noise": video_noise, "video_button": video_button,
        "video_info": video_info, "video_result": video_result, "video_download": video_download,
    }  # fmt: skip


def _layout(session: WebSession) -> _Page:
    gr.Markdown(INTRO)
    models = session.models
    with gr.Row(equal_height=True):
        model = gr.Dropdown(
            choices=models.names, value=models.current, label="Model", scale=1,
            interactive=len(models.names) > 1, elem_id="model",
        )  # fmt: skip
        model_line = gr.Markdown(session.describe_model(), elem_id="model-line")
    source, result, result_map = _images_row()
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", placeholder="a photo of ...", scale=4, elem_id="prompt")
        scene_number = gr.Number(
            label="Demo scene", value=0, precision=0, minimum=0, scale=1, elem_id="scene"
        )
        scene_button = gr.Button("Load demo scene", scale=1, elem_id="load-scene")
    with gr.Tabs():
        steps = suggested_steps(session.editor)
        proposed = {"steps": steps, **suggested_options(session.editor, steps)}
        edit = _edit_tab(opts.all_options(DEFAULT_METHOD), proposed, session.traits())
        sweep = _sweep_tab()
        attention = _attention_tab()
        clip = _video_tab(session.video_limits)
    # the API's endpoints: hidden, never clicked by the page
    api_options = gr.JSON(value=None, label="options", visible=False)
    api_edit = gr.Button(visible=False)
    api_sweep = gr.Button(visible=False)
    api_attention = gr.Button(visible=False)
    api_video = gr.Button(visible=False)
    return _Page(
        model=model, model_line=model_line,
        source=source, result=result, result_map=result_map, prompt=prompt,
        scene_number=scene_number, scene_button=scene_button, **edit, **sweep, **attention,
        **clip,
        current_method=gr.State(DEFAULT_METHOD), map_label=gr.State(""),
        api_options=api_options, api_edit=api_edit, api_sweep=api_sweep,
        api_attention=api_attention, api_video=api_video,
    )  # fmt: skip


# ---------------------------------------------------------------------- events
def _wire_page(page: _Page, session: WebSession, downloads: _Downloads) -> None:
    """The page's own events: upload check, demo scenes, method switch, edit, sweep."""
    names = page.names
    source_prompt = [w for n, w in page.option_widgets.items() if n == "source_prompt"]

    def check_upload(path: str | None):
        if path is None:
            return gr.skip()
        try:
            session.load_upload(path)
        except ImageError as error:
            gr.Warning(f"Upload refused: {error}", title="Not accepted")
            return None  # clear the input: nothing unreadable stays on the page
        return gr.skip()

    def check_clip(path: str | None):
        """The uploaded clip's frames, size and rate, or its refusal (and the box cleared)."""
        if path is None:
            return gr.skip(), ""
        try:
            return gr.skip(), session.load_clip(path)
        except LaspaError as error:
            gr.Warning(f"Clip refused: {error}", title="Not accepted")
            return None, ""

    def load_scene(scene: float | None = 0):
        """A generated demo scene and its caption (as prompt and, where taken, source prompt)."""
        try:
            picture, text = session.demo_scene(scene)
        except LaspaError as error:
            raise _user_error(error) from None
        return (picture, text, text) if source_prompt else (picture, text)

    sampler_widget = page.option_widgets[SAMPLER]

    def sampler_choice(method: str, chosen: str | None, model: str) -> tuple[list[str], str]:
        """The samplers offered for ``method`` on the page's model, and the choice kept
        (the user's if still offered)."""
        offered = offered_samplers(method, session.traits(model)) if method in METHODS else []
        offered = offered or ["auto"]  # the method cannot run here: its edit says why
        return offered, chosen if chosen in offered else offered[0]

    def visibility(method: str, sampler: str, model: str, reset_from: str | None = None) -> list:
        """An update per option widget: shown where it applies to ``method``, ``model``
        and ``sampler``; with ``reset_from`` (the previous method) an option whose spec
        differs from that method's takes ``method``'s default, range and help."""
        specs = {s.name: s for s in opts.method_options(method)} if method in METHODS else {}
        old = {s.name: s for s in opts.method_options(reset_from)} if reset_from in METHODS else {}
        shown = shown_options(method, session.traits(model), sampler) if specs else {}
        updates = []
        for name in names:
            spec = specs.get(name)
            if spec is not None and reset_from is not None and old.get(name) != spec:
                updates.append(_widget_update(spec, visible=name in shown))
            else:  # the same option (or only a visibility change): the user's value stays
                updates.append(gr.update(visible=name in shown))
        return updates

    def with_sampler(updates: list, offered: list[str], sampler: str) -> list:
        index = names.index(SAMPLER)
        updates[index] = {**updates[index], "choices": offered, "value": sampler}
        return updates

    def switch_method(new: str, old: str, chosen: str, model: str):
        offered, sampler = sampler_choice(new, chosen, model)
        updates = with_sampler(visibility(new, sampler, model, reset_from=old), offered, sampler)
        x, y = _sweep_axes(new)
        axes = [s.name for s in opts.sweepable(new)]
        return (
            new, _method_markdown(new),
            gr.update(choices=axes, value=x), _sweep_values(new, x),
            gr.update(choices=axes, value=y), _sweep_values(new, y),
            *updates,
        )  # fmt: skip

    def switch_sampler(method: str, sampler: str, model: str):
        return visibility(method, sampler, model)

    # the page's events take their inputs as a set: gradio hands over {component: value},
    # which keeps the many option widgets by name and leaves room for gr.Progress
    def page_values(data: dict) -> tuple[list, dict[str, Any]]:
        fixed = [data[c] for c in (page.source, page.prompt, page.method, page.seed)]
        return fixed, page_options(data)

    def page_options(data: dict) -> dict[str, Any]:
        """The values of the options shown: a hidden one does not apply (gamma without
        tcd) and is left to its default."""
        method = data[page.method]
        if method not in METHODS:  # refused by the session in one line
            return {}
        traits = session.traits(data[page.model])  # the page's model, maybe not loaded now
        shown = shown_options(method, traits, data[sampler_widget])
        return {name: data[w] for name, w in page.option_widgets.items() if name in shown}

    def edit_from_page(data: dict, progress=PROGRESS):
        (path, text, method, seed), options = page_values(data)
        outcome = _edit(session, path, text, method, seed, options, progress, data[page.model])
        return _edit_outputs(outcome, downloads, method)

    def sweep_from_page(data: dict, progress=PROGRESS):
        (path, text, method, seed), options = page_values(data)
        axes = [data[c] for c in (page.x_name, page.x_values, page.y_name, page.y_values)]
        return _sweep(session, path, text, method, seed, options, axes, progress, data[page.model])

    def video_from_page(data: dict, progress=PROGRESS):
        text, method, seed = (data[c] for c in (page.prompt, page.method, page.seed))
        options = page_options(data)
        outcome = _edit_video(
            session, data[page.video_input], text, method, seed, data[page.video_noise],
            options, progress, data[page.model],
        )  # fmt: skip
        return (*_video_outputs(outcome), gr.update(value=str(outcome.path), visible=True))

    def maps_from_page(data: dict, progress=PROGRESS):
        (path, text, method, seed), options = page_values(data)
        return _attention(
            session, path, text, data[page.words], method, seed, options, progress,
            data[page.model],
        )  # fmt: skip

    def switch_model(name: str, method: str, chosen: str, progress=PROGRESS):
        """Load the chosen model now (not on the first edit), propose its steps, offer
        its samplers and show the options that apply to it."""
        try:
            editor = session.select_model(name, _progress(progress))
        except LaspaError as error:
            raise _user_error(error) from None
        offered, sampler = sampler_choice(method, chosen, name)
        updates = with_sampler(visibility(method, sampler, name), offered, sampler)
        steps = suggested_steps(editor) or opts.all_options(DEFAULT_METHOD)["steps"].default
        proposed = {"steps": steps, **suggested_options(editor, steps)}
        for name, value in proposed.items():
            index = names.index(name)
            updates[index] = {**updates[index], "value": value}
        return session.describe_model(), *updates

    def show_outputs(heat, label: str):
        return gr.update(visible=heat is not None, label=label or None), gr.update(visible=True)

    page.source.upload(check_upload, page.source, page.source, **UI_ONLY)
    page.video_input.upload(
        check_clip, page.video_input, [page.video_input, page.video_clip_info], **UI_ONLY
    )
    page.video_input.clear(lambda: "", None, page.video_clip_info, **UI_ONLY)
    page.method.change(_video_method_markdown, page.method, page.video_method, **UI_ONLY)
    page.model.change(
        switch_model, [page.model, page.method, sampler_widget], [page.model_line, *page.widgets],
        api_visibility="private", **ON_EDITOR,
    )  # fmt: skip
    sampler_widget.change(
        switch_sampler, [page.method, sampler_widget, page.model], page.widgets, **UI_ONLY
    )
    page.scene_button.click(
        load_scene, page.scene_number, [page.source, page.prompt, *source_prompt],
        api_name="demo_scene", concurrency_limit=None,
    )  # fmt: skip
    page.method.change(
        switch_method, [page.method, page.current_method, sampler_widget, page.model],
        [page.current_method, page.method_note, page.x_name, page.x_values, page.y_name,
         page.y_values, *page.widgets],
        **UI_ONLY,
    )  # fmt: skip
    for axis, values in ((page.x_name, page.x_values), (page.y_name, page.y_values)):
        axis.change(_sweep_values, [page.method, axis], values, **UI_ONLY)

    edit_inputs = {page.model, page.source, page.prompt, page.method, page.seed, *page.widgets}
    edit_outputs = [page.result, page.result_map, page.info, page.download, page.map_label]
    for trigger in (page.edit_button.click, page.prompt.submit):
        trigger(
            edit_from_page, edit_inputs, edit_outputs, api_visibility="private", **ON_EDITOR
        ).then(show_outputs, [page.result_map, page.map_label],
               [page.result_map, page.download], **UI_ONLY)  # fmt: skip
    page.sweep_button.click(
        sweep_from_page,
        {*edit_inputs, page.x_name, page.x_values, page.y_name, page.y_values},
        [page.sweep_grid, page.sweep_info], api_visibility="private", **ON_EDITOR,
    )  # fmt: skip
    page.video_button.click(
        video_from_page,
        {page.model, page.video_input, page.prompt, page.method, page.seed, page.video_noise,
         *page.widgets},
        [page.video_result, page.video_info, page.video_download],
        api_visibility="private", **ON_EDITOR,
    )  # fmt: skip
    for trigger in (page.maps_button.click, page.words.submit):
        trigger(
            maps_from_page, {*edit_inputs, page.words}, [page.maps_gallery, page.maps_info],
            api_visibility="private", **ON_EDITOR,
        )  # fmt: skip


def _wire_api(page: _Page, session: WebSession, downloads: _Downloads) -> None:
    """``/edit`` and ``/sweep`` for gradio_client: options as one dict of the method's."""

    def edit(
        image: str,
        prompt: str,
        method: str = DEFAULT_METHOD,
        seed: int = 0,
        options: dict | None = None,
        progress=PROGRESS,
    ):
        """Edit IMAGE towards PROMPT; returns the result, its mask (or None), timing, file."""
        try:
            values, model = _options_dict(method, options)
        except LaspaError as error:
            raise _user_error(error) from None
        outcome = _edit(session, image, prompt, method, seed, values, progress, model)
        return _edit_outputs(outcome, downloads, method)[:4]

    def sweep(
        image: str,
        prompt: str,
        method: str = DEFAULT_METHOD,
        seed: int = 0,
        columns: str = "K",
        column_values: str = "100, 200, 400",
        rows: str = "beta",
        row_values: str = "0.15, 0.3, 0.6",
        options: dict | None = None,
        progress=PROGRESS,
    ):
        """A labelled grid of edits over two options, from one batched run."""
        try:
            values, model = _options_dict(method, options)
        except LaspaError as error:
            raise _user_error(error) from None
        axes = (columns, column_values, rows, row_values)
        return _sweep(session, image, prompt, method, seed, values, axes, progress, model)

    def attention(
        image: str,
        prompt: str,
        words: str = "",
        method: str = DEFAULT_METHOD,
        seed: int = 0,
        options: dict | None = None,
        progress=PROGRESS,
    ):
        """Each word's attention map (comma-separated WORDS, or every word) over IMAGE."""
        try:
            values, model = _options_dict(method, options)
        except LaspaError as error:
            raise _user_error(error) from None
        return _attention(session, image, prompt, words, method, seed, values, progress, model)

    def edit_video(
        video: str,
        prompt: str,
        method: str = DEFAULT_METHOD,
        seed: int = 0,
        noise: str = "fixed",
        options: dict | None = None,
        progress=PROGRESS,
    ):
        """Edit every frame of the clip VIDEO towards PROMPT (noise fixed or fresh);
        returns the edited clip (a WebM of its size and frame rate) and one line of timing."""
        try:
            values, model = _options_dict(method, options)
        except LaspaError as error:
            raise _user_error(error) from None
        outcome = _edit_video(session, video, prompt, method, seed, noise, values, progress, model)
        return _video_outputs(outcome)

    page.api_video.click(
        edit_video,
        [page.video_input, page.prompt, page.method, page.seed, page.video_noise,
         page.api_options],
        [page.video_result, page.video_info], api_name="edit_video", **ON_EDITOR,
    )  # fmt: skip
    page.api_attention.click(
        attention,
        [page.source, page.prompt, page.words, page.method, page.seed, page.api_options],
        [page.maps_gallery, page.maps_info], api_name="attention", **ON_EDITOR,
    )  # fmt: skip
    page.api_edit.click(
        edit,
        [page.source, page.prompt, page.method, page.seed, page.api_options],
        [page.result, page.result_map, page.info, page.download],
        api_name="edit", **ON_EDITOR,
    )  # fmt: skip
    page.api_sweep.click(
        sweep,
        [page.source, page.prompt, page.method, page.seed, page.x_name, page.x_values,
         page.y_name, page.y_values, page.api_options],
        [page.sweep_grid, page.sweep_info], api_name="sweep", **ON_EDITOR,
    )  # fmt: skip


def _edit(session, path, prompt, method, seed, values, progress, model=None) -> EditOutcome:
    try:
        return session.edit(path, prompt, method, seed, values, _progress(progress), model)
    except LaspaError as error:
        raise _user_error(error) from None


def _edit_outputs(outcome: EditOutcome, downloads: _Downloads, method: str) -> tuple:
    """Plain values (API clients get images and paths, not UI updates); the map's label
    goes last, to a State the API leaves out."""
    saved = downloads.save(outcome.image, method)
    return outcome.image, outcome.map, outcome.info, saved, outcome.map_label


def _edit_video(
    session, path, prompt, method, seed, noise, values, progress, model=None
) -> VideoOutcome:
    try:
        return session.edit_video(
            path, prompt, method, seed, noise, values, _clip_progress(progress), model
        )
    except LaspaError as error:
        raise _user_error(error) from None


def _video_outputs(outcome: VideoOutcome) -> tuple[str, str]:
    return str(outcome.path), outcome.info


def _sweep(session, path, prompt, method, seed, values, axes, progress, model=None):
    x_name, x_values, y_name, y_values = axes
    try:
        return session.sweep(
            path, prompt, method, seed, values, ((x_name, x_values), (y_name, y_values)),
            _progress(progress), model,
        )  # fmt: skip
    except LaspaError as error:
        raise _user_error(error) from None


def _attention(session, path, prompt, words, method, seed, values, progress, model=None):
    try:
        return session.attention(
            path, prompt, words, method, seed, values, _progress(progress), model
        )
    except LaspaError as error:
        raise _user_error(error) from None


# -------------------------------------------------------------------- the app
def build_app(
    editor: Any,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    video_limits: VideoLimits | None = None,
    title: str = "laspa",
    queue_size: int = QUEUE_SIZE,
) -> gr.Blocks:
    """The laspa web UI over ``editor`` (an Editor, or a ModelShelf of several models),
    queued so that one request uses it at a time and at most ``queue_size`` wait.
    ``video_limits``: the largest clip the Video tab edits (laspa.web.clips.VideoLimits'
    defaults)."""
    models = editor if isinstance(editor, ModelShelf) else ModelShelf.single(editor)
    session = WebSession(models, max_upload_bytes=max_upload_bytes, video_limits=video_limits)
    downloads = _Downloads()
    # uploaded files are cleared from gradio's cache after an hour
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        page = _layout(session)
        _wire_page(page, session, downloads)
        _wire_api(page, session, downloads)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    block: bool = True,
    quiet: bool = False,
) -> str:
    """Serve ``demo``; returns its local URL (at once when ``block`` is False)."""
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,  # no Node server: the page is gradio's prebuilt static front-end
        max_file_size=max_upload_bytes,
        prevent_thread_lock=not block,
        show_error=False,  # user errors arrive as gr.Error with their reason; bugs stay in logs
        quiet=quiet,
        footer_links=["api"],
        pwa=False,
        css=CSS,
    )
    return url
