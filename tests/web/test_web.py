"""The web UI's logic without a browser: options from Params, the session's checks, the app."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from laspa import METHODS
from laspa.errors import ImageError, ModelError, ParameterError
from laspa.testing import tiny_editor
from laspa.visual import labelled_grid, map_overlay
from laspa.web import options as opts
from laspa.web.session import (
    ModelShelf,
    ModelTraits,
    WebSession,
    offered_samplers,
    shown_options,
    suggested_options,
    suggested_steps,
)


@pytest.fixture()
def session(editor):
    return WebSession(editor, max_upload_bytes=200_000)


@pytest.fixture()
def scene_png(tmp_path, session):
    picture, _ = session.demo_scene(1)
    path = tmp_path / "scene.png"
    picture.save(path)
    return str(path)


# ----------------------------------------------------------------- options
def test_every_method_field_becomes_an_option_with_its_default():
    for name, method in METHODS.items():
        specs = {spec.name: spec for spec in opts.method_options(name)}
        fields = dataclasses.fields(method.Params)
        assert list(specs) == [f.name for f in fields]
        for field in fields:
            assert specs[field.name].default == field.default


def test_widget_kinds_follow_the_metadata():
    specs = {spec.name: spec for spec in opts.method_options("laspa-x0")}
    assert specs["K"].kind == "slider" and specs["K"].python_type is int
    assert (specs["K"].low, specs["K"].high, specs["K"].step) == (0, 1000, 1)
    assert specs["beta"].kind == "slider" and specs["beta"].python_type is float
    assert specs["beta_schedule"].kind == "radio"
    assert specs["beta_schedule"].choices == ("constant", "linear")
    assert specs["guidance"].kind == "number"  # no upper bound: no slider
    assert "[0, 1000]" in specs["K"].info


def test_an_open_lower_bound_starts_the_widget_one_step_inside():
    strength = {s.name: s for s in opts.method_options("sdedit")}["strength"]
    assert strength.low_open and strength.minimum > 0


def test_options_the_union_describes_come_from_the_first_method_asked():
    union = opts.all_options("sdedit")
    assert union["strength"].default == METHODS["sdedit"].Params().strength
    assert {"K", "beta", "steps", "guidance"} <= set(union)


def test_pick_options_keeps_only_the_methods_own_and_converts_slider_floats():
    values = {"K": 300.0, "beta": 0.5, "strength": 0.7, "steps": 12.0, "direction": None}
    picked = opts.pick_options("laspa-x0", values)
    assert picked == {"K": 300, "beta": 0.5, "steps": 12}
    assert isinstance(picked["K"], int)
    with pytest.raises(ParameterError, match="whole number"):
        opts.pick_options("laspa-x0", {"K": 2.5})


def test_sweep_values_default_around_the_default_and_parse_back():
    specs = {spec.name: spec for spec in opts.sweepable("laspa-x0")}
    assert opts.default_sweep_values(specs["K"]) == "100, 200, 400"  # default K 200
    assert opts.default_sweep_values(specs["beta"]) == "0.45, 0.9, 1"  # doubled, kept in range
    input_specs = {spec.name: spec for spec in opts.sweepable("laspa-input")}
    assert opts.default_sweep_values(input_specs["K"]) == "100, 200, 400"
    assert opts.parse_values(specs["K"], "100, 200,400,200") == [100, 200, 400]
    assert opts.parse_values(specs["beta"], "0.2,0.5") == [0.2, 0.5]
    assert opts.parse_values(specs["beta_schedule"], "constant, linear") == ["constant", "linear"]
    with pytest.raises(ParameterError, match="not a number"):
        opts.parse_values(specs["beta"], "0.2, lots")
    with pytest.raises(ParameterError, match="at least one value"):
        opts.parse_values(specs["beta"], " , ")
    assert "source_prompt" not in {s.name for s in opts.sweepable("ddim-inversion")}


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"K": "200"}, "K must be a number, got '200'"),
        ({"K": None}, "K must be a number, got null"),
        ({"K": True}, "K must be a number, got true"),
        ({"beta": "0.5"}, "beta must be a number, got '0.5'"),
        ({"beta_schedule": 1}, "beta_schedule must be text, got 1"),
        ({"sampler": ["ddim"]}, "sampler must be text, got \\['ddim'\\]"),
    ],
)
def test_api_option_values_of_the_wrong_json_type_are_refused_naming_the_type(values, reason):
    from laspa.web.session import check_api_types

    with pytest.raises(ParameterError, match=reason):
        check_api_types("laspa-x0", values)


def test_api_option_values_of_their_own_type_pass_and_null_only_where_automatic():
    from laspa.web.session import check_api_types

    check_api_types("laspa-x0", {"K": 200.0, "beta": 1, "steps": 4, "beta_schedule": "linear"})
    check_api_types("instdiffedit", {"phi": None, "phi_unknown": "left to the name check"})
    check_api_types("instdiffedit", {"phi": 0.3})
    with pytest.raises(ParameterError, match=r"phi must be a number or null \(automatic\)"):
        check_api_types("instdiffedit", {"phi": "0.3"})


# ----------------------------------------------------------------- session
def test_demo_scene_is_rendered_at_the_model_resolution_with_its_caption(session):
    picture, caption = session.demo_scene(4)
    assert picture.size == (session.editor.resolution,) * 2
    assert caption.endswith("background")
    again, _ = session.demo_scene(4)
    assert np.array_equal(np.asarray(picture), np.asarray(again))


def test_uploads_that_are_not_images_or_too_large_are_refused_in_one_line(session, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(ImageError, match="not an image") as refused:
        session.load_upload(str(text))
    assert str(tmp_path) not in str(refused.value)  # no server paths shown to the user
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 300_000)
    with pytest.raises(ImageError, match="limit is"):
        session.load_upload(str(big))
    with pytest.raises(ImageError, match="no image"):
        session.load_upload(None)


def test_edit_returns_the_result_timing_and_reports_progress(session, scene_png):
    seen = []
    outcome = session.edit(
        scene_png, "a red circle", "laspa-x0", 0, {"steps": 4, "K": 100.0, "strength": 0.3},
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )  # fmt: skip
    assert outcome.image.size == Image.open(scene_png).size
    assert "UNet evaluations" in outcome.info
    assert seen and seen[-1][1] == seen[-1][2]
    assert session.editor.progress is None  # not left installed for the next request


def test_edit_errors_leave_the_session_usable(session, scene_png):
    with pytest.raises(ParameterError):
        session.edit(scene_png, "a red circle", "laspa-x0", 0, {"beta": 3.0})
    with pytest.raises(ParameterError):
        session.edit(scene_png, "  ", "laspa-x0", 0, {})
    assert not session.lock.locked()
    assert session.edit(scene_png, "a red circle", "sdedit", 0, {"steps": 3}).image


def test_sweep_is_one_edit_many_call_laid_out_as_a_labelled_grid(session, scene_png):
    calls = []
    edit_many = session.editor.edit_many

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return edit_many(*args, **kwargs)

    session.editor.edit_many = counting
    grid, info = session.sweep(
        scene_png, "a red circle", "laspa-x0", 0, {"steps": 3},
        (("K", "100, 300"), ("beta", "0.2, 0.4, 0.6")),
    )  # fmt: skip
    assert calls == [6]
    assert "6 edits" in info
    assert grid.height > grid.width  # 2 columns of cells, 3 rows, plus labels
    with pytest.raises(ParameterError, match="two different"):
        session.sweep(scene_png, "x", "laspa-x0", 0, {}, (("K", "1"), ("K", "2")))
    with pytest.raises(ParameterError, match="no option"):
        session.sweep(scene_png, "x", "sdedit", 0, {}, (("K", "1"), ("beta", "2")))


def test_attention_gives_one_captioned_map_per_word(session, scene_png):
    gallery, info = session.attention(
        scene_png, "a red circle on a blue background", "red, circle", "laspa-x0", 0, {"steps": 3}
    )
    assert [word for _, word in gallery] == ["red", "circle"]
    assert all(isinstance(picture, Image.Image) for picture, _ in gallery)
    with pytest.raises(ParameterError, match="does not record"):
        session.attention(scene_png, "a red circle", "", "sdedit", 0, {"steps": 3})


def test_pictures_overlay_and_grid():
    picture = Image.new("RGB", (8, 8), "white")
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    overlay = map_overlay(picture, heat)
    assert overlay.size == picture.size
    assert overlay.getpixel((0, 0))[0] > overlay.getpixel((7, 7))[1]
    grid = labelled_grid([[picture, picture]], ["row"], ["a", "b"])
    assert grid.width > 2 * grid.height - 100


# --------------------------------------------------------------------- app
def test_the_cli_module_imports_no_gradio():
    import subprocess
    import sys

    code = "import sys, laspa.cli as c; c._mount_subcommands(); print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_build_app_offers_the_documented_api(editor):
    pytest.importorskip("gradio")
    from laspa.web import build_app

    demo = build_app(editor)
    info = demo.get_api_info()
    endpoints = info["named_endpoints"]
    assert {"/edit", "/sweep", "/attention", "/demo_scene"} <= set(endpoints)
    names = [p["parameter_name"] for p in endpoints["/edit"]["parameters"]]
    assert names == ["image", "prompt", "method", "seed", "options"]


def test_a_methods_mask_is_shown_over_the_input(session, scene_png):
    outcome = session.edit(scene_png, "a red circle", "instdiffedit", 0, {"steps": 4})
    assert outcome.map is not None and outcome.map_label == "Edit mask"
    assert outcome.map.size == outcome.image.size
    assert "; index word: " in outcome.info  # which word's map the mask came from
    plain = session.edit(scene_png, "a red circle", "laspa-x0", 0, {"steps": 4})
    assert plain.map is None and "index word" not in plain.info


def run_cli(argv, capsys) -> tuple[int, str]:
    from laspa.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code, capsys.readouterr().err


def test_serve_refuses_a_taken_port_in_one_line_before_loading_a_model(capsys):
    import socket

    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_cli(["serve", "--port", str(port), "--model", "/nonexistent"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"laspa: error: cannot serve on 127.0.0.1:{port}: the port is in use; "
        "choose another with --port"
    ]


def test_serve_bad_options_and_models_are_one_line_errors(capsys):
    pytest.importorskip("gradio")
    code, err = run_cli(["serve", "--port", "0"], capsys)
    assert code == 2 and "--port must be in 1..65535" in err
    code, err = run_cli(["serve", "--max-upload-mb", "-1"], capsys)
    assert code == 2 and "--max-upload-mb must be > 0" in err
    code, err = run_cli(["serve", "--model", "/nonexistent", "--port", "1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_a_shelf_loads_one_model_at_a_time_and_keeps_serving_after_a_failed_load(editor):
    loads = []

    def load(name):
        loads.append(name)
        if name == "broken":
            raise ModelError("model folder not found: broken")
        return editor if name == "tiny" else tiny_editor(scheduler_class="LCMScheduler")

    shelf = ModelShelf(["tiny", "lcm", "broken"], load)
    session = WebSession(shelf)
    assert loads == ["tiny"] and suggested_steps(session.editor) is None
    lcm = session.select_model("lcm")
    assert shelf.current == "lcm" and session.editor is lcm and suggested_steps(lcm) == 4
    # the page proposes a few-step schedule's alignment ends with its steps
    assert suggested_options(lcm, 4) == {"K": 300, "K_in": 500, "guidance": 10.0}
    assert suggested_options(editor, None) == {"K": 200, "K_in": 200, "guidance": 10.0}
    with pytest.raises(ModelError, match="not found"):
        session.select_model("broken")
    assert loads == ["tiny", "lcm", "broken", "lcm"] and shelf.current == "lcm"
    with pytest.raises(ParameterError, match="offers no model 'other'; choose one of: tiny"):
        session.edit(None, "a red circle", "laspa-x0", 0, {}, model="other")


def test_an_edit_names_its_model_and_a_few_step_model_defaults_to_its_steps(scene_png):
    shelf = ModelShelf(["tiny", "lcm"], lambda name: tiny_editor(
        scheduler_class="LCMScheduler" if name == "lcm" else "DDIMScheduler"))  # fmt: skip
    session = WebSession(shelf)
    outcome = session.edit(scene_png, "a red circle", "laspa-x0", 0, {}, model="lcm")
    assert shelf.current == "lcm" and "8 UNet evaluations" in outcome.info  # 4 steps, cfg
    outcome = session.edit(scene_png, "a red circle", "laspa-x0", 0, {"steps": 3}, model="tiny")
    assert shelf.current == "tiny" and "6 UNet evaluations" in outcome.info


# ------------------------------------------------------- what the page shows (issue #29)
SD = ModelTraits(kind="unet", default_sampler="ddim", guidance_embedding=False)
LCM = ModelTraits(kind="unet", default_sampler="lcm", guidance_embedding=True)
TCD = ModelTraits(kind="unet", default_sampler="tcd", guidance_embedding=False)
FLOW = ModelTraits(kind="flow", default_sampler="flow", guidance_embedding=False)


def test_only_the_samplers_the_model_can_run_are_offered():
    assert offered_samplers("laspa-x0", SD) == ["auto", "ddim", "ancestral", "lcm", "tcd"]
    assert offered_samplers("flowedit", FLOW) == ["auto", "flow"]
    assert offered_samplers("laspa-x0", FLOW) == ["auto", "flow"]
    # a method that inverts the image: deterministic samplers only, auto where it is one
    assert offered_samplers("fpe", SD) == ["auto", "ddim"]
    assert offered_samplers("fpe", LCM) == ["ddim"]


def test_gamma_only_with_tcd_and_step_noise_only_with_a_sampler_that_draws_noise():
    assert "gamma" not in shown_options("laspa-x0", SD, "auto")
    assert "gamma" not in shown_options("laspa-x0", SD, "lcm")
    assert "gamma" in shown_options("laspa-x0", SD, "tcd")
    assert "gamma" in shown_options("laspa-x0", TCD, "auto")  # auto runs tcd here
    assert "step_noise" not in shown_options("laspa-x0", SD, "auto")  # ddim
    assert "step_noise" not in shown_options("laspa-x0", SD, "ddim")
    assert "step_noise" in shown_options("laspa-x0", SD, "ancestral")
    assert "step_noise" in shown_options("laspa-x0", LCM, "auto")
    assert "step_noise" not in shown_options("flowedit", FLOW, "auto")
    assert not {"gamma", "step_noise"} & set(shown_options("laspa-x0", FLOW, "auto"))


def test_guidance_mode_on_a_guidance_embedding_only_and_flowedit_without_guidance():
    assert "guidance_mode" in shown_options("laspa-x0", LCM)
    assert "guidance_mode" not in shown_options("laspa-x0", SD)
    flowedit = shown_options("flowedit", FLOW)
    assert "guidance" not in flowedit
    assert {"src_guidance_scale", "tar_guidance_scale"} <= set(flowedit)
    assert "inpaint_model" in shown_options("instdiffedit", SD)
    assert "inpaint_model" not in shown_options("instdiffedit", FLOW)


def test_the_common_options_first_the_rest_advanced_in_the_methods_order():
    shown = shown_options("laspa-x0", SD)
    primary = [name for name, place in shown.items() if place == "primary"]
    assert primary == ["steps", "guidance", "K", "beta"]
    assert shown["sampler"] == "advanced" and shown["beta_schedule"] == "advanced"
    assert [n for n, p in shown_options("sdedit", SD).items() if p == "primary"] == [
        "steps", "guidance", "strength",
    ]  # fmt: skip
    for method in METHODS:  # every method shows its steps up front
        assert shown_options(method, SD).get("steps", "primary") == "primary"


def test_the_session_reads_the_traits_of_the_loaded_model(editor):
    session = WebSession(editor)
    assert session.traits() == SD


def test_a_pages_model_keeps_its_own_traits_after_another_loads(editor):
    from laspa.testing import tiny_editor

    lcm = tiny_editor(scheduler_class="LCMScheduler")
    shelf = ModelShelf(["sd", "lcm"], {"sd": editor, "lcm": lcm}.__getitem__)
    session = WebSession(shelf)
    assert session.traits("lcm") == SD  # never loaded: the loaded model's, until seen
    session.select_model("lcm")
    assert session.traits("lcm").default_sampler == "lcm"
    assert session.traits("sd") == SD and session.traits() == session.traits("lcm")
