"""`laspa serve` for real: the command in a subprocess on 127.0.0.1 with the tiny random
model, driven by Debian's Chromium through Playwright and by gradio_client.

The browser tests need /usr/bin/chromium (.ci/browser-deps installs it); outside CI they
are skipped when it is missing, in CI they fail.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
START_TIMEOUT = 240  # s: importing torch, diffusers and gradio on a loaded 2-core machine
EDIT_TIMEOUT = 120_000  # ms
UPLOAD_LIMIT_MB = 1
VIDEO_FRAME_LIMIT = 6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_served(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"laspa serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"laspa serve did not answer within {START_TIMEOUT} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def tiny_lcm_dir(tmp_path_factory):
    from laspa.testing import save_tiny_model

    folder = tmp_path_factory.mktemp("models") / "tiny-lcm"
    return save_tiny_model(folder, scheduler_class="LCMScheduler")


@pytest.fixture(scope="module")
def served(tiny_model_dir, tiny_lcm_dir, tmp_path_factory):
    """The URL of `laspa serve --model <tiny> --model <tiny LCM>` on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "laspa.cli", "serve", "--model", str(tiny_model_dir),
        "--model", str(tiny_lcm_dir),
        "--port", str(port), "--max-upload-mb", str(UPLOAD_LIMIT_MB),
        "--max-video-mb", str(UPLOAD_LIMIT_MB), "--max-video-frames", str(VIDEO_FRAME_LIMIT),
    ]  # fmt: skip
    with open(log, "w") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# ------------------------------------------------------------------ gradio_client
def test_gradio_client_edit_returns_an_image(served, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False, download_files=str(tmp_path))
    scene, caption, *_ = client.predict(scene=2, api_name="/demo_scene")
    result, mask, timing, download = client.predict(
        image=handle_file(scene), prompt=caption.replace("background", "blue background"),
        method="laspa-x0", seed=1, options={"steps": 6, "K": 300}, api_name="/edit",
    )  # fmt: skip
    with Image.open(result) as edited, Image.open(scene) as original:
        assert edited.size == original.size
    assert mask is None
    assert "UNet evaluations" in timing
    assert Path(download).suffix == ".png"


def test_gradio_client_names_one_of_the_served_models(served, tiny_lcm_dir, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(served, verbose=False, download_files=str(tmp_path))
    scene, caption, *_ = client.predict(scene=1, api_name="/demo_scene")
    _, _, timing, _ = client.predict(
        image=handle_file(scene), prompt=caption, options={"steps": 2, "model": str(tiny_lcm_dir)},
        api_name="/edit",
    )  # fmt: skip
    assert "4 UNet evaluations" in timing  # 2 LCM steps with guidance (no embedding)
    with pytest.raises(AppError, match="this server offers no model 'other'; choose one of"):
        client.predict(
            image=handle_file(scene), prompt=caption, options={"model": "other"}, api_name="/edit"
        )


def test_gradio_client_gets_one_line_reasons_for_bad_requests(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(served, verbose=False, download_files=str(tmp_path))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(AppError, match="not an image file"):
        client.predict(image=handle_file(str(text)), prompt="a red circle", api_name="/edit")
    scene, caption, *_ = client.predict(scene=0, api_name="/demo_scene")
    with pytest.raises(AppError, match="beta must be in"):
        client.predict(
            image=handle_file(scene), prompt=caption, options={"beta": 2}, api_name="/edit"
        )


def test_api_values_of_the_wrong_type_and_server_paths_are_refused_in_one_line(served, tmp_path):
    """Issue #30: ``K: "200"`` and ``K: null`` were taken silently, and a path on the
    server as the image ended in ``{"error": null}``."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(served, verbose=False, download_files=str(tmp_path))
    scene, caption, *_ = client.predict(scene=0, api_name="/demo_scene")
    for value, shown in (("200", "'200'"), (None, "null")):
        with pytest.raises(AppError, match=f"K must be a number, got {shown}"):
            client.predict(
                image=handle_file(scene), prompt=caption, options={"K": value}, api_name="/edit"
            )
    with pytest.raises(AppError, match="the file must be uploaded with the request"):
        client.predict(image=str(scene), prompt=caption, api_name="/edit")
    # a plain HTTP client gets the same line, not a hidden error
    request = urllib.request.Request(
        f"{served}gradio_api/call/edit",
        data=json.dumps({"data": ["/etc/hostname", caption, "laspa-x0", 0, None]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        event = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{served}gradio_api/call/edit/{event}", timeout=60) as response:
        stream = response.read().decode()
    assert "event: error" in stream
    assert "the file must be uploaded with the request" in stream and "null}" not in stream


def test_twenty_simultaneous_requests_all_wait_their_turn(served, tmp_path):
    """Issue #30: 3 of 20 were refused with "Queue is full" (the queue held 16)."""
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False, download_files=str(tmp_path))
    scene, caption, *_ = client.predict(scene=3, api_name="/demo_scene")
    jobs = [
        client.submit(
            image=handle_file(scene),
            prompt=f"{caption} {seed}",
            seed=seed,
            options={"steps": 1},
            api_name="/edit",
        )  # fmt: skip
        for seed in range(20)
    ]
    timings = [job.result(timeout=EDIT_TIMEOUT / 1000)[2] for job in jobs]
    assert all("UNet evaluations" in timing for timing in timings)


def test_simultaneous_requests_queue_for_the_one_editor(served, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False, download_files=str(tmp_path))
    scene, caption, *_ = client.predict(scene=4, api_name="/demo_scene")
    jobs = [
        client.submit(
            image=handle_file(scene),
            prompt=caption,
            seed=seed,
            options={"steps": 5},
            api_name="/edit",
        )  # fmt: skip
        for seed in range(3)
    ]
    results = [job.result(timeout=EDIT_TIMEOUT / 1000) for job in jobs]
    pictures = [np.asarray(Image.open(result[0]).convert("RGB"), float) for result in results]
    assert all(picture.shape == pictures[0].shape for picture in pictures)
    assert np.abs(pictures[0] - pictures[1]).mean() > 0  # each request kept its own seed


# ----------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (.ci/browser-deps installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, served):
    """A fresh page of the app; records requests that leave the machine."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.outside = []
    page.on(
        "request",
        lambda request: (
            page.outside.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else None
        ),
    )
    page.goto(served)
    page.locator("#load-scene").wait_for()
    yield page
    context.close()


def picture_at(page, selector: str) -> Image.Image:
    """The image an <img> shows, fetched from the server as the page got it."""
    source = page.locator(f"{selector} img").first.get_attribute("src")
    response = page.request.get(source)
    assert response.ok, source
    return Image.open(io.BytesIO(response.body())).convert("RGB")


def wait_for_text(page, selector: str, text: str, tmp_path: Path) -> None:
    """Wait (bounded) for ``text`` in ``selector``; on timeout fail with the page's toasts
    and a screenshot, which say why far better than the timeout does."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(selector).get_by_text(text).wait_for(timeout=EDIT_TIMEOUT)
    except PlaywrightTimeout:
        toasts = page.locator("[data-testid=toast-text]").all_inner_texts()
        shot = save_artefact(page, tmp_path, "laspa-serve-failure.png")
        pytest.fail(f"no {text!r} in {selector}; toasts: {toasts}; screenshot: {shot}")


def load_scene_and_edit(page, scene: int, prompt: str) -> None:
    page.locator("#scene input").fill(str(scene))
    page.locator("#load-scene").click()
    page.locator("#input-image img").wait_for()
    page.locator("#prompt textarea").fill(prompt)
    steps = page.get_by_label("number input for steps")
    steps.fill("8")
    steps.press("Enter")
    page.locator("#edit").click()


def save_artefact(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("LASPA_ARTEFACTS"):
        folder = Path(os.environ["LASPA_ARTEFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / name)
    return shot


@pytest.mark.browser
def test_demo_scene_edit_in_the_browser(page, tmp_path):
    load_scene_and_edit(page, 5, "a large red circle in the center on a blue background")
    wait_for_text(page, "#edit-info", "UNet evaluations", tmp_path)
    page.locator("#result-image img").wait_for()
    original = picture_at(page, "#input-image")
    edited = picture_at(page, "#result-image")
    assert edited.size == original.size
    difference = np.abs(np.asarray(edited, float) - np.asarray(original, float)).mean()
    assert difference > 1.0, "the result should not be the input"
    # the download button is revealed by its own update after the image: wait for it
    page.locator("#download").wait_for(state="visible", timeout=30_000)
    assert save_artefact(page, tmp_path, "laspa-serve-edit.png").stat().st_size > 0
    assert page.outside == [], "the page must not load anything from outside the machine"


@pytest.mark.browser
def test_a_non_image_upload_is_refused_visibly_and_the_app_keeps_working(page, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file, not a picture\n")
    page.locator("#input-image input[type=file]").set_input_files(str(fake))
    page.get_by_text("Upload refused: not an image file").wait_for()
    save_artefact(page, tmp_path, "laspa-serve-refused.png")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(UPLOAD_LIMIT_MB * 2**20 + 1))
    page.locator("#input-image input[type=file]").set_input_files(str(big))
    page.get_by_text("exceed the maximum allowed size").wait_for()

    load_scene_and_edit(page, 6, "a small green square at the top on a white background")
    wait_for_text(page, "#edit-info", "UNet evaluations", tmp_path)
    assert picture_at(page, "#result-image").size == picture_at(page, "#input-image").size


def fill_confirmed(box, text: str) -> None:
    """Fill a textbox and wait until it holds ``text``: a tab that is still rendering can
    swap the box right after a fill, and a click would then send the old value."""
    from playwright.sync_api import expect

    box.wait_for()
    for _ in range(3):
        box.fill(text)
        try:
            expect(box).to_have_value(text, timeout=2_000)
            return
        except AssertionError:
            continue
    expect(box).to_have_value(text)


def choose_method(page, name: str) -> None:
    page.locator("#method input").click()
    page.get_by_role("option", name=name, exact=True).click()


@pytest.mark.browser
def test_method_options_sweep_and_attention_tabs(page, tmp_path):
    steps = page.get_by_label("number input for steps")
    assert page.get_by_label("number input for K").is_visible()
    choose_method(page, "sdedit")
    strength = page.get_by_label("number input for strength")
    strength.wait_for()
    assert strength.input_value() == "0.8"
    assert not page.get_by_label("number input for K").is_visible()
    choose_method(page, "instdiffedit")
    page.get_by_label("number input for noise_seeds").wait_for()
    assert strength.input_value() == "0.5"  # this method's own default
    choose_method(page, "laspa-x0")
    page.get_by_label("number input for K").wait_for()
    assert not strength.is_visible()

    page.locator("#scene input").fill("7")
    page.locator("#load-scene").click()
    page.locator("#input-image img").wait_for()
    steps.fill("4")
    steps.press("Enter")
    page.get_by_role("tab", name="Sweep").click()
    fill_confirmed(page.get_by_label("Column values"), "100, 400")
    fill_confirmed(page.get_by_label("Row values"), "0.2, 0.5")
    page.locator("#sweep").click()
    wait_for_text(page, "#sweep-info", "4 edits in one batched call", tmp_path)
    grid = picture_at(page, "#sweep-grid")
    assert grid.width > 2 * 32 and grid.height > 2 * 32
    save_artefact(page, tmp_path, "laspa-serve-sweep.png")

    page.get_by_role("tab", name="Attention").click()
    words = page.get_by_label("Words")
    fill_confirmed(words, "circle, background")
    words.press("Enter")  # submit from the box itself: a click can race its last input event
    wait_for_text(page, "#maps-info", "2 word maps", tmp_path)
    captions = page.locator("#maps-gallery .caption-label")
    assert captions.all_inner_texts() == ["circle", "background"]
    save_artefact(page, tmp_path, "laspa-serve-attention.png")


def sampler_choices(page) -> list[str]:
    return page.locator("#option-sampler label").all_inner_texts()


@pytest.mark.browser
def test_the_page_shows_the_options_that_apply_common_ones_first(page, tmp_path):
    """Issue #29: the advanced options under a closed section; gamma only with tcd, step
    noise only with a sampler that draws it, samplers the model runs only."""
    from playwright.sync_api import expect

    option = {name: page.locator(f"#option-{name}") for name in ("K", "sampler", "gamma")}
    option["step_noise"] = page.locator("#option-step_noise")
    expect(option["K"]).to_be_visible()
    expect(option["sampler"]).to_be_hidden()  # under Advanced, closed
    page.locator("#advanced").get_by_text("Advanced").click()
    expect(option["sampler"]).to_be_visible()
    assert [c.strip() for c in sampler_choices(page)] == ["auto", "ddim", "ancestral", "lcm", "tcd"]
    expect(option["gamma"]).to_be_hidden()
    expect(option["step_noise"]).to_be_hidden()  # auto runs ddim on this model
    option["sampler"].get_by_text("tcd", exact=True).click()
    expect(option["gamma"]).to_be_visible()
    expect(option["step_noise"]).to_be_visible()
    option["sampler"].get_by_text("ancestral", exact=True).click()
    expect(option["gamma"]).to_be_hidden()
    expect(option["step_noise"]).to_be_visible()
    save_artefact(page, tmp_path, "laspa-serve-advanced.png")
    choose_method(page, "fpe")  # it inverts the image: DDIM only
    expect(option["sampler"].locator("label")).to_have_count(2)
    assert [c.strip() for c in sampler_choices(page)] == ["auto", "ddim"]
    expect(option["step_noise"]).to_be_hidden()
    expect(option["K"]).to_be_hidden()


@pytest.mark.browser
def test_the_model_menu_loads_the_chosen_model_and_proposes_its_steps(page, tiny_lcm_dir, tmp_path):
    from playwright.sync_api import expect

    steps = page.get_by_label("number input for steps")
    expect(steps).to_have_value("50")
    page.locator("#model input").click()
    page.get_by_role("option", name=str(tiny_lcm_dir), exact=True).click()
    wait_for_text(page, "#model-line", "tiny-lcm", tmp_path)
    expect(steps).to_have_value("4")  # a few-step model's own count
    page.locator("#advanced").get_by_text("Advanced").click()
    expect(page.locator("#option-step_noise")).to_be_visible()  # auto runs lcm here
    page.locator("#scene input").fill("3")
    page.locator("#load-scene").click()
    page.locator("#input-image img").wait_for()
    page.locator("#prompt textarea").fill("a red circle")
    page.locator("#edit").click()
    wait_for_text(page, "#edit-info", "8 UNet evaluations", tmp_path)  # 4 steps, cfg


def moving_square_clip(path: Path, frames: int, size=(48, 32), fps=12) -> Path:
    """An mp4 of a square moving right on a grey ground."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            pixels = np.full((size[1], size[0], 3), 90, np.uint8)
            pixels[8:20, 2 + 3 * index : 12 + 3 * index] = (255, 128, 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.browser
def test_video_tab_refuses_a_long_clip_then_edits_one_playable_in_the_page(page, tmp_path):
    pytest.importorskip("av")
    steps = page.get_by_label("number input for steps")
    steps.fill("3")
    steps.press("Enter")
    page.locator("#prompt textarea").fill("a red square")
    page.get_by_role("tab", name="Video").click()
    upload = page.locator("#video-input input[type=file]")
    upload.set_input_files(str(moving_square_clip(tmp_path / "long.mp4", VIDEO_FRAME_LIMIT + 1)))
    page.get_by_text(f"Clip refused: the clip has more than {VIDEO_FRAME_LIMIT} frames").wait_for()
    save_artefact(page, tmp_path, "laspa-serve-video-refused.png")

    upload.set_input_files(str(moving_square_clip(tmp_path / "clip.mp4", 5)))
    wait_for_text(page, "#video-clip-info", "clip.mp4: 5 frames, 48x32 at 12 fps", tmp_path)
    page.locator("#edit-video").click()
    wait_for_text(page, "#video-info", "5 frames 48x32 at 12 fps, fixed noise", tmp_path)
    player = page.locator("#video-result video")
    player.wait_for()
    # the browser itself decodes the result: its size and length are the clip's
    page.wait_for_function(
        "v => v.readyState >= 1 && v.videoWidth > 0", arg=player.element_handle()
    )
    width, height, seconds = player.evaluate("v => [v.videoWidth, v.videoHeight, v.duration]")
    assert (width, height) == (48, 32)
    assert abs(seconds - 5 / 12) < 0.1
    page.locator("#video-download").wait_for(state="visible", timeout=30_000)
    save_artefact(page, tmp_path, "laspa-serve-video.png")
    assert page.outside == []


# ------------------------------------------------------------------ a full queue
class HeldEditor:
    """The tiny editor, its edits held until ``gate`` opens: requests pile up in order."""

    def __init__(self, editor):
        self._editor = editor
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self._editor, name)

    def edit(self, *args, **kwargs):
        self.gate.wait(EDIT_TIMEOUT / 1000)
        return self._editor.edit(*args, **kwargs)


def test_requests_past_the_queue_limit_are_refused_in_one_line_naming_it(editor, tmp_path):
    from gradio_client import Client, handle_file

    from laspa.web import build_app
    from laspa.web.app import launch

    held = HeldEditor(editor)
    demo = build_app(held, queue_size=2)
    try:
        url = launch(demo, port=free_port(), block=False, quiet=True)
        client = Client(url, verbose=False, download_files=str(tmp_path))
        scene = tmp_path / "scene.png"
        Image.new("RGB", (32, 32), "red").save(scene)
        jobs = [
            client.submit(
                image=handle_file(str(scene)),
                prompt="a red circle",
                seed=seed,
                options={"steps": 1},
                api_name="/edit",
            )  # fmt: skip
            for seed in range(6)
        ]
        # one edits (held), two wait: the other three are refused at once
        deadline = time.monotonic() + START_TIMEOUT
        while sum(job.done() for job in jobs) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        # gradio_client says "Queue is full! Please try again." whatever the server says;
        # a plain HTTP client reads the server's line, which names the limit
        request = urllib.request.Request(
            f"{url}gradio_api/call/edit",
            data=json.dumps({"data": [None, "a red circle", "laspa-x0", 0, None]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as full:
            urllib.request.urlopen(request, timeout=30)
        assert full.value.code == 503
        assert "Max size is 2" in json.loads(full.value.read())["detail"]
        held.gate.set()
        served, refused = 0, []
        for job in jobs:
            try:
                job.result(timeout=EDIT_TIMEOUT / 1000)
                served += 1
            except Exception as error:  # gradio_client's own error classes vary
                refused.append(str(error))
        assert served >= 2 and len(refused) >= 3 and served + len(refused) == 6
        assert all("Queue is full" in reason and "\n" not in reason for reason in refused)
    finally:
        held.gate.set()
        demo.close()
