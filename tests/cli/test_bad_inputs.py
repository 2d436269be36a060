"""The bad-input corpus: what a careless or hostile user can hand laspa.

Every CLI case must end in exactly one line on stderr (``laspa: error: ...``), exit
status 2, no traceback, nothing on stdout, and no file written, changed or lost in its
folder. Cases marked ``before_load`` must be refused before any model loads (the test
makes loading a model fail it). Every web API case must end in a visible one-line reason
(gradio's AppError carrying the message, not a generic "upstream app raised" or null).
Signals and a read-only folder run as real subprocesses; everything else in-process.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import png_claiming  # a sibling test module (pytest puts tests/ on the path)

from laspa.cli import main

NAME_MAX = 255


# ------------------------------------------------------------------ helpers
def run_cli(capfd, args) -> tuple[int, str, str]:
    """``laspa ARGS`` in-process, with warnings and log records reaching stderr as they
    do in a real process (pytest would otherwise collect them out of sight)."""

    def print_warning(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    stderr_log = logging.StreamHandler(sys.stderr)
    stderr_log.setLevel(logging.WARNING)  # what Python's last-resort handler shows
    logging.getLogger().addHandler(stderr_log)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = print_warning
            main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code
    finally:
        logging.getLogger().removeHandler(stderr_log)
    out, err = capfd.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: name -> content digest (links as links)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = "other"
    return found


def assert_one_line_refusal(code: int, out: str, err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}, stderr {err!r}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err!r}"
    assert lines[0].startswith("laspa: error: "), lines[0]
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    assert out == "", f"stdout: {out!r}"


def tiff_with_truncated_directory() -> bytes:
    """A TIFF whose directory claims 40 entries and ends after one: PIL warns "Corrupt
    EXIF data" and then cannot identify it."""
    entry = struct.pack("<HHI4s", 256, 3, 1, struct.pack("<HH", 8, 0))
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 40) + entry


def tiff_with_tags_past_the_end() -> bytes:
    """A TIFF whose description and pixel data lie past the end of the file."""
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[270] = "x" * 100
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="TIFF", tiffinfo=info)
    data = bytearray(buffer.getvalue())
    start = struct.unpack("<I", data[4:8])[0]
    for index in range(struct.unpack("<H", data[start : start + 2])[0]):
        entry = start + 2 + 12 * index
        tag = struct.unpack("<H", data[entry : entry + 2])[0]
        if tag == 270:  # ImageDescription: a million bytes, please
            data[entry + 4 : entry + 8] = struct.pack("<I", 10**6)
        if tag == 273:  # StripOffsets: beyond the end
            data[entry + 8 : entry + 12] = struct.pack("<I", len(data) + 1000)
    return bytes(data)


def encoded(image: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


@dataclass
class Place:
    """A case's folder: an input image, an earlier output, and the tiny model."""

    root: Path
    model: Path

    @property
    def image(self) -> Path:
        return self.root / "in.png"

    @property
    def out(self) -> Path:
        return self.root / "out.png"

    def file(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def edit(self, *args, image=None, prompt="a red cat", out=None) -> list:
        return ["edit", image or self.image, prompt, "-o", out or self.out,
                "--model", self.model, *args]  # fmt: skip


@pytest.fixture()
def place(tmp_path, tiny_model_dir) -> Place:
    root = tmp_path / "case"
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(root / "in.png")
    Image.new("RGB", (40, 24), "blue").save(root / "out.png")  # an earlier result
    return Place(root, tiny_model_dir)


def model_copy(place: Place, name: str, change) -> Path:
    """A copy of the tiny model folder with ``change(folder)`` applied."""
    folder = place.root.parent / name
    shutil.copytree(place.model, folder)
    change(folder)
    return folder


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def config_only_model(place: Place, name: str, index: dict, folders: dict) -> Path:
    """A model folder of configs alone (no weights), as another family ships it."""
    folder = place.root.parent / name
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    for sub, config in folders.items():
        (folder / sub).mkdir()
        if config is not None:
            (folder / sub / "config.json").write_text(json.dumps(config))
    return folder


# ------------------------------------------------------------------ CLI cases
# name -> (builder(place) -> argv, expected text of the one line, refused before loading)
def _images():
    def file(name, data):
        return lambda p: p.edit(image=p.file(name, data))

    def truncated(name, file_format, cut):
        return lambda p: p.edit(
            image=p.file(name, encoded(Image.new("RGB", (64, 64), "red"), file_format)[:cut])
        )

    def link(name, target):
        def build(p):
            (p.root / name).symlink_to(target if target != "self" else p.root / name)
            return p.edit(image=p.root / name)

        return build

    def fifo(p):
        os.mkfifo(p.root / "pipe.png")
        return p.edit(image=p.root / "pipe.png")

    def folder(p):
        (p.root / "folder.png").mkdir()
        return p.edit(image=p.root / "folder.png")

    return {
        "image: missing": (lambda p: p.edit(image=p.root / "nope.png"), "not found"),
        "image: empty file": (file("empty.png", b""), "empty (0 bytes)"),
        "image: a folder": (folder, "not a file"),
        "image: a named pipe": (fifo, "not a file"),
        "image: dangling link": (link("dangling.png", "/nonexistent/x.png"), "not found"),
        "image: link loop": (link("loop.png", "self"), "not found"),
        "image: text named .png": (file("notes.png", b"this is not an image\n"), "not an image"),
        "image: svg": (file("vector.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"), "not an image"),
        "image: zip named .jpg": (file("archive.jpg", b"PK\x03\x04" + bytes(60)), "not an image"),
        "image: png signature only": (file("sig.png", b"\x89PNG\r\n\x1a\n"), "image"),
        "image: truncated png": (truncated("cut.png", "PNG", 60), "cannot read image"),
        "image: truncated jpeg": (truncated("cut.jpg", "JPEG", 300), "cannot read image"),
        "image: truncated gif": (truncated("cut.gif", "GIF", 40), "cannot read image"),
        "image: truncated webp": (truncated("cut.webp", "WEBP", 40), "image"),
        "image: png with a bad checksum": (
            lambda p: p.edit(image=p.file("crc.png", _bad_crc_png())), "not an image file"),
        "image: png bomb 50000x50000": (file("bomb.png", png_claiming(50000, 50000)), "too large"),
        "image: png just over the pixel limit": (file("big.png", png_claiming(8193, 8193)), "too large"),
        "image: png claiming 0x0": (file("zero.png", png_claiming(0, 0)), "image"),
        "image: bmp bomb": (file("bomb.bmp", _bmp_claiming(60000, 60000)), "too large"),
        "image: tiff, truncated directory (corrupt EXIF)": (
            file("exif.tif", tiff_with_truncated_directory()), "image"),
        "image: tiff, data past the end": (file("past.tif", tiff_with_tags_past_the_end()), "image"),
        "image: name too long": (lambda p: p.edit(image=p.root / ("i" * 300 + ".png")), "too long"),
    }  # fmt: skip


def _bad_crc_png() -> bytes:
    data = bytearray(encoded(Image.new("RGB", (16, 16), "red"), "PNG"))
    data[29] ^= 0xFF  # inside IHDR's checksum
    return bytes(data)


def _bmp_claiming(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info


def _outputs():
    def out(name):
        return lambda p: p.edit(out=p.root / name)

    def link_to_input(p):
        (p.root / "same.png").symlink_to(p.image)
        return p.edit(out=p.root / "same.png")

    def folder_named_png(p):
        (p.root / "dir.png").mkdir()
        return p.edit(out=p.root / "dir.png")

    def parent_is_file(p):
        (p.root / "file").write_text("x")
        return p.edit(out=p.root / "file" / "o.png")

    return {
        "output: .gif": (out("o.gif"), "must end in one of"),
        "output: no extension": (out("result"), "must end in one of"),
        "output: the input": (lambda p: p.edit(out=p.image), "overwrite the input"),
        "output: a link to the input": (link_to_input, "overwrite the input"),
        "output: missing folder": (lambda p: p.edit(out=p.root / "no" / "o.png"), "does not exist"),
        "output: a folder": (folder_named_png, "is a directory"),
        "output: parent is a file": (parent_is_file, "does not exist"),
        "output: name too long": (out("o" * 300 + ".png"), "longer than the file system allows"),
        "mask-out: the output": (lambda p: p.edit("--method", "instdiffedit", "--mask-out", p.out), "overwrite the input"),
        "mask-out: the input": (lambda p: p.edit("--method", "instdiffedit", "--mask-out", p.image), "overwrite the input"),
        "mask-out: method without a mask": (lambda p: p.edit("--mask-out", p.root / "m.png"), "makes no mask"),
        "bench: --json name too long": (
            lambda p: ["bench", "--json", p.root / ("j" * 300 + ".json"), "--model", p.model], "too long"),
        "bench: --json in a missing folder": (
            lambda p: ["bench", "--json", p.root / "no" / "b.json", "--model", p.model], "does not exist"),
        "demo: -o name too long": (lambda p: ["demo", "-o", p.root / ("d" * 300), "--model", p.model], "too long"),
        "mask-out: .txt": (lambda p: p.edit("--method", "instdiffedit", "--mask-out", p.root / "m.txt"), "must end in one of"),
    }  # fmt: skip


NOT_UTF8 = os.fsdecode(b"a \xff\xfe red star")  # what Python makes of such argv bytes


def _prompts():
    def attention(*args, prompt="a red cat"):
        return lambda p: ["attention", p.image, prompt, "-o", p.out, "--model", p.model, *args]

    def sweep(*args, prompt="a red cat"):
        return lambda p: ["sweep", p.image, prompt, "-o", p.out, "--model", p.model, *args]

    return {
        "prompt: empty": (lambda p: p.edit(prompt=""), "non-empty"),
        "prompt: blanks": (lambda p: p.edit(prompt=" \t "), "non-empty"),
        "prompt: not UTF-8": (lambda p: p.edit(prompt=NOT_UTF8), "not valid UTF-8"),
        "source prompt: not UTF-8": (
            lambda p: p.edit("--method", "ddim-inversion", "--source-prompt", NOT_UTF8),
            "source_prompt is not valid UTF-8"),
        "change word: not UTF-8": (
            lambda p: p.edit("--method", "laspa-mix", "--change", NOT_UTF8), "change is not valid"),
        "laspa-mix: subject and change": (
            lambda p: p.edit("--method", "laspa-mix", "--subject", "cat", "--change", "cat"), "not both"),
        "attention: word not in the prompt": (attention("--word", "dog"), "'dog' does not occur"),
        "attention: phrase not in the prompt": (attention("--word", "cat red"), "does not occur"),
        "attention: no word": (attention(), "name a --word"),
        "attention: method records no maps": (attention("--word", "cat", "-m", "sdedit"), "does not record"),
        "attention: word not UTF-8": (attention("--word", NOT_UTF8), "not valid UTF-8"),
        "attention: prompt not UTF-8": (attention("--all-words", prompt=NOT_UTF8), "not valid UTF-8"),
        "sweep: empty prompt": (sweep("--K", "100,200", prompt=" "), "non-empty"),
    }  # fmt: skip


def _numbers():
    def opt(*args):
        return lambda p: p.edit(*(p.model if a == "MODEL" else a for a in args))

    def sweep(*args):
        return lambda p: ["sweep", p.image, "a red cat", "-o", p.out, "--model", p.model, *args]

    return {
        "guidance inf": (opt("--guidance", "inf"), "guidance must be a finite number"),
        "guidance -inf": (opt("--guidance", "-inf"), "guidance must be a finite number"),
        "guidance nan": (opt("--guidance", "nan"), "guidance must be a finite number"),
        "guidance 1e308": (opt("--guidance", "1e308"), "guidance must be in [0.0, 100.0]"),
        "guidance above the range": (opt("--guidance", "100.5"), "guidance must be in [0.0, 100.0]"),
        "guidance negative": (opt("--guidance", "-1"), "guidance must be in"),
        "K above 1000": (opt("--K", "1001"), "K must be in [0, 1000]"),
        "K negative": (opt("--K", "-1"), "K must be in [0, 1000]"),
        "K not a number": (opt("--K", "abc"), "--K"),
        "K with an exponent": (opt("--K", "1e3"), "--K"),
        "beta above 1": (opt("--beta", "1.5"), "beta must be in [0.0, 1.0]"),
        "beta nan": (opt("--beta", "nan"), "beta must be a finite number"),
        "steps 0": (opt("--steps", "0"), "steps must be in"),
        "steps 10**6": (opt("--steps", str(10**6)), "steps must be in"),
        "strength 0": (opt("-m", "sdedit", "--strength", "0"), "strength must be in (0.0, 1.0]"),
        "strength inf": (opt("-m", "sdedit", "--strength", "inf"), "strength must be a finite"),
        "seed negative": (opt("--seed", "-1"), "seed must be an integer"),
        "seed 2**64": (opt("--seed", str(2**64)), "seed must be an integer"),
        "--set phi=inf": (opt("-m", "instdiffedit", "--set", "phi=inf"), "phi must be a finite"),
        "--set replace_fraction=2": (opt("-m", "fpe", "--set", "replace_fraction=2"), "replace_fraction must be in"),
        "--set unknown name": (opt("--set", "foo=1"), "--set takes NAME=VALUE"),
        "--set without =": (opt("--set", "K"), "--set takes NAME=VALUE"),
        "--set K=abc": (opt("--set", "K=abc"), "not a number"),
        "--inpaint-model not an inpainting checkpoint": (
            opt("-m", "instdiffedit", "--inpaint-model", "MODEL"), "needs an inpainting one"),
        "option of another method": (opt("--strength", "0.5"), "does not take strength"),
        "unknown method": (opt("-m", "imagic"), "unknown method 'imagic'"),
        "unknown sampler": (opt("--sampler", "euler"), "sampler must be one of auto, ddim"),
        "fpe on the LCM sampler": (
            opt("-m", "fpe", "--sampler", "lcm"), "fpe inverts the image, which needs a deterministic sampler"),
        "ddim-inversion on the ancestral sampler": (
            opt("-m", "ddim-inversion", "--sampler", "ancestral"), "use --sampler ddim, not ancestral"),
        "unknown step noise": (opt("--step-noise", "sometimes"), "step_noise must be one of"),
        "tcd gamma above 1": (opt("--sampler", "tcd", "--gamma", "1.5"), "gamma must be in [0.0, 1.0]"),
        "fpe on the TCD sampler": (
            opt("-m", "fpe", "--sampler", "tcd", "--gamma", "0"), "use --sampler ddim, not tcd"),
        "diffedit: mask_encode_strength 0": (
            opt("-m", "diffedit", "--set", "mask_encode_strength=0"), "mask_encode_strength must be in (0.0, 1.0]"),
        "diffedit: num_maps_per_mask 0": (
            opt("-m", "diffedit", "--set", "num_maps_per_mask=0"), "num_maps_per_mask must be in [1, 100]"),
        "diffedit: mask_thresholding_ratio inf": (
            opt("-m", "diffedit", "--set", "mask_thresholding_ratio=inf"), "mask_thresholding_ratio must be a finite"),
        "diffedit: inpaint_strength x steps leaves no step": (
            opt("-m", "diffedit", "--steps", "4", "--set", "inpaint_strength=0.2"),
            "inpaint_strength 0.2 with 4 steps leaves no step"),
        "diffedit: unknown blend": (opt("-m", "diffedit", "--set", "blend=mean"), "blend must be one of diffusers, paper"),
        "diffedit on the ancestral sampler": (
            opt("-m", "diffedit", "--sampler", "ancestral"), "diffedit inverts the image, which needs a deterministic"),
        "sweep: fpe on the ancestral sampler": (
            lambda p: sweep("-m", "fpe", "--sampler", "ancestral", "--seeds", "1,2")(p), "needs a deterministic sampler"),
        "sweep: K list with inf": (sweep("--K", "100,inf"), "comma-separated numbers"),
        "sweep: guidance list with inf": (sweep("--guidance", "5,inf"), "guidance must be a finite"),
        "sweep: negative seed": (sweep("--seeds", "1,-1"), "seed must be an integer"),
        "sweep: three axes": (sweep("--K", "1", "--beta", "0.1", "--seeds", "1"), "sweep one or two"),
    }  # fmt: skip


def _batches():
    def batch(*args, source=None, out=None):
        def build(p):
            manifest = p.root / "job.jsonl"
            if not manifest.exists():
                manifest.write_text(json.dumps({"image": "in.png", "prompt": "a red cat"}) + "\n")
            where = source(p) if source else manifest
            return ["batch", where, "-o", out(p) if out else p.root / "results",
                    "--model", p.model, *args]  # fmt: skip

        return build

    def file(name, data):
        return lambda p: p.file(name, data)

    def folder(name):
        def make(p):
            (p.root / name).mkdir()
            return p.root / name

        return make

    def dangling(p):
        (p.root / "gone.jsonl").symlink_to(p.root / "nowhere.jsonl")
        return p.root / "gone.jsonl"

    def closed_port(p):
        return f"127.0.0.1:{_free_port()}"  # bound a moment ago, then closed: nothing answers

    return {
        "batch: manifest missing": (batch(source=lambda p: p.root / "none.jsonl"), "manifest not found"),
        "batch: manifest a link to nowhere": (batch(source=dangling), "manifest not found"),
        "batch: manifest not UTF-8": (batch(source=file("bad.jsonl", b'{"image": "\xff"}\n')), "not UTF-8 text"),
        "batch: manifest with no edits": (batch(source=file("empty.jsonl", b"\n \n")), "holds no edits"),
        "batch: a folder without --prompt": (batch(source=lambda p: p.root), "give the edit's --prompt"),
        "batch: a folder without images": (batch("--prompt", "a cat", source=folder("none")), "holds no images"),
        "batch: --prompt with a manifest": (batch("--prompt", "a cat"), "--prompt is for a folder"),
        "batch: output folder is a file": (batch(out=lambda p: p.out), "exists and is not a folder"),
        "batch: output folder's parent missing": (batch(out=lambda p: p.root / "no" / "out"), "parent does not exist"),
        "batch: --ray-address nothing answers at": (
            lambda p: batch("--ray-address", closed_port(p))(p), "no Ray cluster answers at 127.0.0.1:"),
        "batch: --ray-address not HOST:PORT": (batch("--ray-address", "somewhere"), "must be HOST:PORT"),
        "batch: --workers without --ray": (batch("--workers", 2), "--workers is for --ray"),
        "batch: --set of another method": (batch("-m", "sdedit", "--set", "K=100"), "--set takes NAME=VALUE"),
        "batch: --steps 0": (batch("--steps", 0), "steps must be in"),
        "batch: --batch-size 0": (batch("--batch-size", 0), "--batch-size must be >= 1"),
    }  # fmt: skip


def _videos():
    def clip(p, name="clip.mp4", frames=3, size=(40, 24)):
        """A small mp4 (or folder of PNG frames when ``name`` has no suffix) in the case."""
        path = p.root / name
        if not path.exists():
            if not path.suffix:
                path.mkdir()
                for index in range(frames):
                    Image.new("RGB", size, (index * 40, 0, 0)).save(path / f"f{index}.png")
            else:
                import av

                with av.open(str(path), "w") as container:
                    stream = container.add_stream("libx264", rate=12)
                    stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
                    for index in range(frames):
                        picture = Image.new("RGB", size, (index * 40, 0, 0))
                        container.mux(stream.encode(av.VideoFrame.from_image(picture)))
                    container.mux(stream.encode(None))
        return path

    def video(*args, source=None, out=None):
        def build(p):
            where = source(p) if source else clip(p)
            target = out(p) if out else p.root / "edited.mp4"
            return ["video", where, "a red cat", "-o", target, "--model", p.model, *args]

        return build

    def file(name, data):
        return lambda p: p.file(name, data)

    def mixed(p):
        folder = clip(p, "frames")
        Image.new("RGB", (48, 24)).save(folder / "f9.png")
        return folder

    def made(name, kind):
        def make(p):
            (p.root / name).mkdir() if kind == "dir" else (p.root / name).write_bytes(b"x")
            return p.root / name

        return make

    return {
        "video: input missing": (video(source=lambda p: p.root / "none.mp4"), "input video not found"),
        "video: input empty": (video(source=file("empty.mp4", b"")), "input video is empty"),
        "video: input not a video": (video(source=file("junk.mp4", b"\x00junk" * 99)), "cannot read video"),
        "video: a folder without frames": (video(source=made("none", "dir")), "holds no frames"),
        "video: a folder with mixed frame sizes": (video(source=mixed), "frames differ in size"),
        "video: output .txt": (video(out=lambda p: p.root / "o.txt"), "must be a folder or end in"),
        "video: output over the input": (video(out=lambda p: clip(p)), "would overwrite the input"),
        "video: output folder is a file": (video(out=made("results", "file")), "exists and is not a folder"),
        "video: output an image": (video(out=lambda p: p.root / "o.png"), "must be a folder or end in"),
        "video: output in a missing folder": (video(out=lambda p: p.root / "no" / "o.mp4"), "does not exist"),
        "video: mp4 of odd-sized frames": (
            video(source=lambda p: clip(p, "odd", size=(41, 25))), "needs even frame sides"),
        "video: --noise other": (video("--noise", "warm"), "noise must be one of"),
        "video: --batch-size 0": (video("--batch-size", 0), "--batch-size must be >= 1"),
        "video: --fps 0": (video("--fps", 0, source=lambda p: clip(p, "frames")), "fps must be in"),
        "video: --steps 0": (video("--steps", 0), "steps must be in"),
        "bench clips: --frames 1": (
            lambda p: ["bench", "--suite", "clips", "--frames", 1, "--model", p.model], "--frames must be in"),
        "bench clips: --plots": (
            lambda p: ["bench", "--suite", "clips", "--plots", p.root / "pl", "--model", p.model],
            "--plots is not for --suite clips"),
    }  # fmt: skip


# ------------------------------------------------------------------ options that cannot act
# (issue #30): refused by the method's Params, before the model loads where the model's
# folder tells what "auto" runs (the tiny model: ddim)
def _cannot_act():
    def opt(*args):
        return lambda p: p.edit(*args)

    return {
        "--gamma with the lcm sampler": (
            opt("--sampler", "lcm", "--gamma", "0.5"), "gamma acts only with the tcd sampler; this edit's is lcm"),
        "--gamma on a model whose sampler is ddim": (
            opt("--gamma", "0.5"), "gamma acts only with the tcd sampler; this edit's is ddim"),
        "--step-noise with ddim": (
            opt("--sampler", "ddim", "--step-noise", "fresh"), "step_noise acts only with a sampler that adds noise"),
        "--step-noise with tcd at gamma 0": (
            opt("--sampler", "tcd", "--gamma", "0", "--step-noise", "fixed"), "this edit's is tcd with gamma 0"),
        "--step-noise on a flow model": (
            lambda p: p.edit("--step-noise", "fixed", "--model", "mini-flow"), "this edit's is flow"),
        "laspa-mix: --subject with keep=rest": (
            opt("-m", "laspa-mix", "--subject", "cat", "--keep", "rest"), "subject acts only with keep=subject"),
        "laspa-mix: --threshold of a soft mask": (
            opt("-m", "laspa-mix", "--subject", "cat", "--threshold", "0.3"), "threshold acts only with mask=hard"),
        "laspa-local: --source-prompt with region=change": (
            opt("-m", "laspa-local", "--change", "cat", "--source-prompt", "a cat"), "source_prompt acts only with region=instant"),
    }  # fmt: skip


CLI_BEFORE_LOAD = {
    **_images(), **_outputs(), **_prompts(), **_numbers(), **_batches(), **_videos(),
    **_cannot_act(),
}  # fmt: skip


@pytest.fixture()
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a case that needs none")

    # laspa.demo first: importing it binds its own name to laspa.cli's load_editor
    monkeypatch.setattr("laspa.demo.load_editor", refuse)
    monkeypatch.setattr("laspa.cli.load_editor", refuse)


@pytest.mark.parametrize("name", list(CLI_BEFORE_LOAD))
def test_refused_in_one_line_before_a_model_loads(name, place, capfd, no_model_loads):
    build, expected = CLI_BEFORE_LOAD[name]
    args = build(place)
    before = snapshot(place.root)
    code, out, err = run_cli(capfd, args)
    assert_one_line_refusal(code, out, err, expected)
    assert snapshot(place.root) == before


# ------------------------------------------------------------------ model folders
def _models():
    def unet(**changes):
        return lambda p: model_copy(
            p, "changed", lambda f: edit_json(f / "unet" / "config.json", **changes)
        )

    def broken_json(p):
        return model_copy(p, "broken", lambda f: (f / "unet" / "config.json").write_text("{"))

    def garbage_weights(p):
        return model_copy(
            p,
            "garbage",
            lambda f: (f / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64),
        )

    def text_encoder_wider(p):
        return model_copy(
            p, "wider", lambda f: edit_json(f / "text_encoder" / "config.json", hidden_size=64)
        )

    def pickles(p):
        folder = p.root.parent / "pickled"
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            (folder / sub).mkdir(parents=True)
        for sub in ("unet", "vae", "text_encoder"):
            (folder / sub / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really")
        return folder

    def empty(p):
        (p.root.parent / "empty-model").mkdir()
        return p.root.parent / "empty-model"

    def a_file(p):
        return p.file("model.safetensors", b"\0" * 16)

    def sdxl(*left_out):
        folders = {
            "unet": {"addition_embed_type": "text_time"},
            "vae": {},
            "text_encoder": {},
            "text_encoder_2": {},
            "tokenizer": None,
            "tokenizer_2": None,
            "scheduler": {},
        }
        index = {
            "_class_name": "StableDiffusionXLPipeline",
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        }
        kept = {name: config for name, config in folders.items() if name not in left_out}
        return lambda p: config_only_model(p, "sdxl", index, kept)

    def sdxl_unet_only(p):
        return unet(addition_embed_type="text_time", projection_class_embeddings_input_dim=2816)(p)

    def sd3(p):
        return config_only_model(
            p,
            "sd3",
            {
                "_class_name": "StableDiffusion3Pipeline",
                "transformer": ["diffusers", "SD3Transformer2DModel"],
            },
            {"transformer": {}, "vae": {}, "text_encoder": {}, "scheduler": {}},
        )

    def flux(p):
        return config_only_model(
            p, "flux", {"_class_name": "FluxPipeline"}, {"transformer": {}, "vae": {}}
        )

    def unknown_transformer(p):
        return config_only_model(
            p, "dit", {"_class_name": "SomeNewPipeline"}, {"transformer": {}, "vae": {}}
        )

    def two_text_encoders(p):
        return config_only_model(
            p,
            "two",
            {},
            {
                "unet": {},
                "vae": {},
                "text_encoder": {},
                "text_encoder_2": {},
                "tokenizer": None,
                "scheduler": {},
            },
        )

    return {
        "model: missing folder": (lambda p: p.root.parent / "nomodel", "model folder not found"),
        "model: a single file": (a_file, "is a single file"),
        "model: empty folder": (empty, "not a diffusers Stable Diffusion folder"),
        "model: pickle weights only": (pickles, "pickle"),
        "model: unet sample_size 'sixteen'": (unet(sample_size="sixteen"), "sample_size must be a positive integer"),
        "model: unet sample_size 0": (unet(sample_size=0), "sample_size must be a positive integer"),
        "model: unet config not JSON": (broken_json, "cannot read"),
        "model: inpainting unet": (unet(in_channels=9), "an inpainting checkpoint"),
        "model: SDXL without weights": (sdxl(), "no safetensors weights in"),
        "model: SDXL without text_encoder_2": (sdxl("text_encoder_2"), "SDXL checkpoint without text_encoder_2/;"),
        "model: SDXL without tokenizer_2": (sdxl("tokenizer_2"), "SDXL checkpoint without tokenizer_2/;"),
        "model: SDXL unet in an SD folder": (sdxl_unet_only, "without text_encoder_2/ and tokenizer_2/"),
        "model: unet with other added conditions": (unet(addition_embed_type="image"), "'image' added conditions"),
        "model: SD3 without its tokenizers": (sd3, "Stable Diffusion 3 checkpoint without"),
        "model: FLUX without its text encoders": (flux, "FLUX checkpoint without"),
        "model: other transformer": (unknown_transformer, "diffusion transformer"),
        "model: two text encoders": (two_text_encoders, "two text encoders"),
        "model: garbage safetensors": (garbage_weights, "cannot load model"),
        "model: text encoder of another width": (text_encoder_wider, "cannot load model"),
        "model: name too long": (lambda p: p.root / ("m" * 300), "too long"),
    }  # fmt: skip


MODELS = _models()


@pytest.mark.parametrize("name", list(MODELS))
def test_model_folders_refused_in_one_line(name, place, capfd):
    build, expected = MODELS[name]
    model = build(place)
    before = snapshot(place.root)
    args = ["edit", place.image, "a red cat", "-o", place.out, "--model", model, "--steps", 2, "-q"]
    code, out, err = run_cli(capfd, args)
    assert_one_line_refusal(code, out, err, expected)
    assert snapshot(place.root) == before


# checks that need the model's schedule or tokenizer: made after loading, before the UNet runs
AFTER_LOAD = {
    "steps 1000 (SD's steps_offset passes the schedule's end)": (
        lambda p: p.edit("--steps", 1000, "-q"), "steps must be below 1000 for this model"),
    "laspa-mix: change word not in the prompt": (
        lambda p: p.edit("-m", "laspa-mix", "--change", "sofa", "-q"), "'sofa' does not occur"),
    "LCM: more steps than the schedule was distilled for": (
        lambda p: p.edit("--sampler", "lcm", "--steps", 60, "-q"), "steps: "),
    "guidance embedding asked of a UNet without one": (
        lambda p: p.edit("--guidance-mode", "embedding", "--steps", 2, "-q"),
        "guidance_mode embedding needs a UNet distilled with a guidance embedding"),
    "diffedit: the source prompt is the prompt": (
        lambda p: p.edit("-m", "diffedit", "--source-prompt", "a red cat", "--steps", 2, "-q"),
        "give a source_prompt other than the prompt"),
    "fpe on a model whose scheduler is LCM's": (
        lambda p: p.edit("-m", "fpe", "--steps", 2, "-q", "--model", lcm_model(p)),
        "fpe inverts the image, which needs a deterministic sampler: use --sampler ddim, not lcm"),
}  # fmt: skip


def lcm_model(place: Place) -> Path:
    """The tiny model with its scheduler config naming LCMScheduler."""

    def to_lcm(folder: Path) -> None:
        edit_json(folder / "scheduler" / "scheduler_config.json", _class_name="LCMScheduler")

    return model_copy(place, "lcm", to_lcm)


@pytest.mark.parametrize("name", list(AFTER_LOAD))
def test_refused_in_one_line_once_the_model_is_read(name, place, capfd):
    build, expected = AFTER_LOAD[name]
    before = snapshot(place.root)
    code, out, err = run_cli(capfd, build(place))
    assert_one_line_refusal(code, out, err, expected)
    assert snapshot(place.root) == before


def test_families_are_named_before_any_weight_loads(place, monkeypatch):
    """Other families are refused from their configs (the folders have no weights)."""
    from laspa.editor import Editor
    from laspa.errors import ModelError

    model = MODELS["model: other transformer"][0](place)
    with pytest.raises(
        ModelError, match=r"is a checkpoint of a diffusion transformer \(SomeNewPipeline\); "
        r"laspa runs Stable Diffusion 1.x/2.x, SDXL, SD3 and FLUX checkpoints only$"
    ):  # fmt: skip
        Editor.from_pretrained(model)
    model = MODELS["model: FLUX without its text encoders"][0](place)
    with pytest.raises(ModelError, match=r"is a FLUX checkpoint without text_encoder/, "):
        Editor.from_pretrained(model)
    model = MODELS["model: SD3 without its tokenizers"][0](place)
    with pytest.raises(
        ModelError, match=r"is a Stable Diffusion 3 checkpoint without text_encoder_2/, "
        r"tokenizer/, tokenizer_2/; laspa needs"
    ):  # fmt: skip
        Editor.from_pretrained(model)
    model = MODELS["model: SDXL without text_encoder_2"][0](place)
    with pytest.raises(ModelError, match=r"SDXL checkpoint without text_encoder_2/; SDXL needs"):
        Editor.from_pretrained(model)


def test_a_hub_id_offline_is_one_line_without_library_warnings(place, capfd, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network here either way
    args = place.edit(out=place.out)
    args[args.index("--model") + 1] = "runwayml/stable-diffusion-v1-5"
    before = snapshot(place.root)
    code, out, err = run_cli(capfd, args)
    assert_one_line_refusal(code, out, err, "cannot load model runwayml/stable-diffusion-v1-5")
    assert snapshot(place.root) == before


# ------------------------------------------------------------------ writing
def test_a_full_disk_is_one_line_and_the_earlier_output_stays(place, capfd, monkeypatch):
    def disk_full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half an ima")  # what a full disk leaves: a partial file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", disk_full)
    before = snapshot(place.root)
    code, out, err = run_cli(capfd, place.edit("--steps", 2, "-q"))
    assert_one_line_refusal(code, out, err, "cannot write")
    assert "No space left on device" in err
    assert snapshot(place.root) == before  # no temporary file, the earlier result intact


def test_a_folder_that_refuses_new_files_is_refused_before_loading(
    place, capfd, monkeypatch, no_model_loads
):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, out, err = run_cli(capfd, place.edit())
    assert_one_line_refusal(code, out, err, "Permission denied")


def test_a_read_only_folder_is_refused_before_the_model_is_even_looked_at(tmp_path):
    """For real, in a subprocess: as root (CI containers) permissions do not bind, so the
    command runs without root's capabilities (setpriv), as any user would."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("running as root without setpriv: cannot drop root's capabilities")
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    Image.new("RGB", (8, 8), "red").save(tmp_path / "in.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    Image.new("RGB", (8, 8), "blue").save(locked / "out.png")
    locked.chmod(0o555)
    try:
        before = snapshot(locked)
        command = [*prefix, sys.executable, "-m", "laspa", "edit", str(tmp_path / "in.png"),
                   "a cat", "-o", str(locked / "out.png"), "--model", "/nonexistent/model"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_env())
        # the model is missing too: only a check made before loading names the folder
        assert_one_line_refusal(done.returncode, done.stdout, done.stderr, "cannot write in")
        assert "Permission denied" in done.stderr
        assert snapshot(locked) == before
    finally:
        locked.chmod(0o755)


def test_long_output_names_the_file_system_takes_are_written(place, capfd):
    """A name at the file system's limit still gets its temporary partner for the
    atomic write (the partner's name repeats only the start of it)."""
    out = place.root / ("o" * (NAME_MAX - 4) + ".png")
    code, _, err = run_cli(capfd, place.edit("--steps", 1, "-q", out=out))
    assert code == 0, err
    assert Image.open(out).size == (40, 24)


# ------------------------------------------------------------------ images that must work
def _unusual_images() -> dict[str, Image.Image]:
    gradient = np.linspace(0, 65535, 32 * 32, dtype=np.uint16).reshape(32, 32)
    palette = Image.new("P", (16, 16), 1)
    palette.info["transparency"] = 1
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "green")]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:])
    return {
        "16-bit grey png": Image.fromarray(gradient),
        "palette with transparency": palette,
        "grey with alpha": Image.new("LA", (16, 16), (128, 10)),
        "cmyk jpeg": Image.open(io.BytesIO(encoded(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG"))),
        "1-bit": Image.new("1", (16, 16), 1),
        "animated gif": Image.open(io.BytesIO(animated.getvalue())),
        "1x1": Image.new("RGB", (1, 1), "red"),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_unusual_images()))
def test_unusual_images_load_as_rgb(name, tmp_path):
    from laspa.images import load_image

    picture = _unusual_images()[name]
    path = tmp_path / "unusual.png"
    if picture.format is None:
        picture.save(path)
    else:  # a decoded file: hand over its own bytes
        path.write_bytes(_original_bytes(picture))
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == picture.size


def _original_bytes(picture: Image.Image) -> bytes:
    picture.fp.seek(0)
    return picture.fp.read()


def test_the_working_size_is_bounded_for_every_shape():
    """An edit never costs more than MAX_WORK_AREA_FACTOR generations at the model's
    resolution, whatever the aspect ratio; sides stay multiples of the downsampling."""
    from laspa.images import MAX_PIXELS, MAX_WORK_AREA_FACTOR, fit_size

    for resolution, multiple in ((512, 64), (64, 16), (32, 8), (768, 64)):
        limit = MAX_WORK_AREA_FACTOR * resolution**2
        assert fit_size(100, 100, resolution, multiple) == (resolution, resolution)
        for width, height in [(100000, 1), (1, 100000), (MAX_PIXELS // 16, 16), (8192, 8192),
                              (640, 480), (1920, 1080), (3, 2), (1000, 7), (7, 1000), (17, 1)]:  # fmt: skip
            w, h = fit_size(width, height, resolution, multiple)
            assert w * h <= limit, (width, height, w, h)
            assert w % multiple == 0 and h % multiple == 0 and w >= multiple and h >= multiple
            if max(width, height) <= 4 * min(width, height):  # ordinary shapes keep theirs
                assert abs(w / h - width / height) / (width / height) < 0.5


def test_a_100000x1_image_is_edited_at_a_bounded_size(place, capfd, monkeypatch):
    from laspa.editor import Editor

    thin = place.file("thin.png", encoded(Image.new("RGB", (100000, 1), "red"), "PNG"))
    seen = []
    encode = Editor.encode
    monkeypatch.setattr(
        Editor, "encode", lambda self, pixels: seen.append(pixels.shape) or encode(self, pixels)
    )
    code, _, err = run_cli(capfd, place.edit("--steps", 2, "-q", image=thin))
    assert code == 0, err
    ((_, _, height, width),) = seen
    assert height * width <= 2 * 32 * 32  # the tiny model works at 32 px
    assert Image.open(place.out).size == (100000, 1)


# ------------------------------------------------------------------ signals
def _env() -> dict[str, str]:
    source = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": source, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _sigint_as_in_a_terminal() -> None:
    # A shell starts background jobs (``cmd &`` without job control, as CI runners may)
    # with SIGINT ignored, children inherit that, and Python leaves an ignored SIGINT
    # ignored: the CLI under test gets the default a user's terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signalled(command: list[str], when, signum: int, timeout: float = 240) -> tuple[int, str]:
    """Run ``command`` under ``python -X importtime`` and send ``signum`` once ``when``
    holds for a line of its stderr (an import finished, a progress bar moved). Returns
    its exit status and its stderr without the import-time lines."""
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "laspa", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
        preexec_fn=_sigint_as_in_a_terminal,
    )  # fmt: skip
    seen = b""
    deadline = time.monotonic() + timeout
    sent = False
    try:
        while time.monotonic() < deadline:
            chunk = process.stderr.read1(65536)
            if not chunk:
                break
            seen += chunk
            if not sent and when(seen.decode(errors="replace")):
                process.send_signal(signum)
                sent = True
        rest, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    assert sent, "the moment to signal never came:\n" + seen.decode(errors="replace")[-2000:]
    text = seen.decode(errors="replace")
    lines = [line for line in text.split("\n") if not line.startswith("import time:")]
    return process.returncode, "\n".join(lines)


def _imported(module: str):
    finished = re.compile(rf"^import time:.*\|\s*{re.escape(module)}\s*$", re.MULTILINE)
    return lambda text: finished.search(text) is not None


def _progress_moved(text: str) -> bool:
    return "edit:" in text and "step" in text


SIGNAL_MOMENTS = {
    "Ctrl-C as the CLI starts (typer imports)": ("typer", signal.SIGINT),
    "Ctrl-C while torch imports": ("torch.nn.modules", signal.SIGINT),
    "SIGTERM while torch imports": ("torch.nn.modules", signal.SIGTERM),
    "Ctrl-C while the edit runs": ("progress", signal.SIGINT),
    "SIGTERM while the edit runs": ("progress", signal.SIGTERM),
}


@pytest.mark.parametrize("name", list(SIGNAL_MOMENTS))
def test_signals_at_any_moment_end_in_one_line_and_keep_the_earlier_output(name, place):
    moment, signum = SIGNAL_MOMENTS[name]
    before = snapshot(place.root)
    command = place.edit("--steps", 500)
    when = _progress_moved if moment == "progress" else _imported(moment)
    code, err = _signalled([str(a) for a in command], when, signum)
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    assert code == 128 + signum, err
    assert "Traceback" not in err, err
    shown = [part for line in err.splitlines() for part in line.split("\r") if part.strip()]
    assert shown[-1] == f"laspa: {word}", err
    assert [line for line in err.splitlines() if line.strip()][-1].endswith(f"laspa: {word}")
    assert sum(1 for part in shown if part.startswith("laspa:")) == 1, err
    assert snapshot(place.root) == before  # the earlier out.png, and no temporary file


# ------------------------------------------------------------------ web API
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def web_client(tmp_path_factory):
    """gradio_client talking over HTTP to the app on the tiny model, served in-process."""
    pytest.importorskip("gradio")
    from gradio_client import Client

    from laspa.testing import tiny_editor
    from laspa.web import build_app
    from laspa.web.app import launch

    demo = build_app(tiny_editor())
    url = launch(demo, port=_free_port(), block=False, quiet=True)
    try:
        yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("client")))
    finally:
        demo.close()


def raw_api_error(url: str, endpoint: str, data: list) -> str:
    """Call an endpoint over plain HTTP, as any client may: JSON with ``\\ud800``-style
    escapes, which gradio_client cannot send. Returns the error message it streams back."""
    body = json.dumps({"data": data}).encode()  # ensure_ascii: surrogates stay escapes
    request = urllib.request.Request(
        f"{url}gradio_api/call/{endpoint}", data=body,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        event = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{event}", timeout=120) as reply:
        stream = reply.read().decode()
    assert stream.startswith("event: error\n"), stream
    message = json.loads(stream.split("data: ", 1)[1])["error"]
    assert isinstance(message, str), f"no reason reached the client: {stream!r}"
    return message


@pytest.fixture(scope="module")
def web_scene(tmp_path_factory):
    from laspa.world import caption, render, sample_scene

    scene = sample_scene(np.random.default_rng(2))
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    render(scene, size=32).save(path)
    text = tmp_path_factory.mktemp("text") / "notes.png"
    text.write_text("not an image")
    return str(path), caption(scene), str(text)


def _web_cases():
    def edit(options=None, prompt=None, seed=0, method="laspa-x0", image="scene"):
        return "/edit", {"image": image, "prompt": prompt, "method": method, "seed": seed,
                         "options": options}  # fmt: skip

    def sweep(columns="K", column_values="100, 200", rows="beta", row_values="0.2", options=None):
        return "/sweep", {"image": "scene", "prompt": None, "method": "laspa-x0", "seed": 0,
                          "columns": columns, "column_values": column_values, "rows": rows,
                          "row_values": row_values, "options": options}  # fmt: skip

    def attention(words, method="laspa-x0", prompt=None, image="scene"):
        return "/attention", {"image": image, "prompt": prompt, "words": words,
                              "method": method, "seed": 0, "options": None}  # fmt: skip

    return {
        "web: steps 'abc'": (edit({"steps": "abc"}), "steps must be a number, got 'abc'"),
        "web: steps a list": (edit({"steps": [4]}), "steps must be a number"),
        "web: steps true": (edit({"steps": True}), "steps must be a number"),
        "web: K 2.5": (edit({"K": 2.5}), "K must be a whole number"),
        "web: guidance 1e308": (edit({"guidance": 1e308}), "guidance must be in [0.0, 100.0]"),
        "web: guidance 'inf'": (edit({"guidance": "inf"}), "guidance must be a number, got 'inf'"),
        "web: beta above 1": (edit({"beta": 2}), "beta must be in"),
        "web: unknown option": (edit({"foo": 1}), "method laspa-x0 does not take foo"),
        "web: option of another method": (edit({"strength": 0.5}), "does not take strength"),
        "web: options not an object": (edit([1, 2]), "options must be a JSON object"),
        "web: text option a number": (edit({"beta_schedule": 3}), "beta_schedule must be text"),
        "web: prompt with a lone surrogate": (edit(prompt="a red \ud800 circle", image=None), "not valid UTF-8"),
        "web: empty prompt": (edit(prompt="  "), "non-empty"),
        "web: no image": (edit(image=None), "no image"),
        "web: text as image": (edit(image="text"), "not an image"),
        "web: unknown method": (edit(method="imagic"), "imagic is not in the list of choices"),
        "web: seed negative": (edit(seed=-1), "less than minimum value 0"),
        "web: sweep axis unknown": (sweep(columns="foo"), "has no option 'foo'"),
        "web: sweep same axis twice": (sweep(rows="K"), "two different"),
        "web: sweep too large": (sweep(column_values=",".join(map(str, range(100, 500, 10)))), "too large"),
        "web: sweep value not a number": (sweep(column_values="100, lots"), "not a number"),
        "web: sweep value inf": (sweep(rows="guidance", row_values="inf"), "guidance must be a finite"),
        "web: sweep unknown option": (sweep(options={"foo": 1}), "does not take foo"),
        "web: attention word not in the prompt": (attention("dog"), "'dog' does not occur"),
        "web: attention method records no maps": (attention("", method="sdedit"), "does not record"),
        "web: attention prompt with a lone surrogate": (attention("", prompt="\udcff red", image=None), "not valid UTF-8"),
    }  # fmt: skip


WEB = _web_cases()


@pytest.mark.parametrize("name", list(WEB))
def test_web_api_refusals_are_visible_one_line_reasons(name, web_client, web_scene):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    (endpoint, arguments), expected = WEB[name]
    scene, caption, text = web_scene
    arguments = dict(arguments)
    if not _encodable(arguments["prompt"]):  # what gradio_client cannot send
        message = raw_api_error(web_client.src, endpoint.strip("/"), list(arguments.values()))
        assert expected in message and "\n" not in message, message
        return
    image = {"scene": scene, "text": text, None: None}[arguments["image"]]
    arguments["image"] = handle_file(image) if image else None
    if arguments["prompt"] is None:
        arguments["prompt"] = caption
    with pytest.raises(AppError) as refused:
        web_client.predict(**arguments, api_name=endpoint)
    message = str(refused.value)
    assert expected in message, message
    assert "\n" not in message.strip() and "upstream" not in message


def _encodable(text) -> bool:
    try:
        str(text).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def test_web_demo_scene_refuses_bad_numbers_visibly(web_client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="less than minimum value 0"):
        web_client.predict(scene=-1, api_name="/demo_scene")
    message = raw_api_error(web_client.src, "demo_scene", [1e300])
    assert "scene number must be a whole number" in message


def test_batch_ray_without_ray_installed_is_one_line(place, capfd, monkeypatch, no_model_loads):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    (place.root / "job.jsonl").write_text(json.dumps({"image": "in.png", "prompt": "a cat"}))
    before = snapshot(place.root)
    args = ["batch", place.root / "job.jsonl", "-o", place.root / "results", "--ray"]
    code, out, err = run_cli(capfd, [*args, "--model", place.model])
    assert_one_line_refusal(code, out, err, "--ray needs Ray: pip install 'laspa[ray]'")
    assert snapshot(place.root) == before


def test_the_corpus_holds_what_the_readme_says():
    """README: "The bad-input corpus ... holds N cases"; keep the count honest."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    cases = (
        len(CLI_BEFORE_LOAD) + len(MODELS) + len(AFTER_LOAD) + len(WEB) + len(SIGNAL_MOMENTS)
        + 6  # hub id offline, full disk, two read-only folders, demo scene, batch without Ray
        + len(FILE_SAFETY) + len(WEB_API_EDGE)
        + 6  # a video refusal's folder, world clip, two unencodable names, 0xff, --max-queue 0
    )  # fmt: skip
    assert f"holds {cases} cases" in readme
    assert cases >= 60


# ------------------------------------------------------------------ files and reruns (issue #30)
# Outputs over a run's inputs, unbounded reads, names Python cannot encode, refusals that
# left folders behind, and reruns over outputs that other settings made.
def _frames_folder(p: Place, name: str, extra: dict[str, bytes] | None = None) -> Path:
    """A folder of three 40x24 frames, and ``extra`` files (name -> bytes) after them."""
    folder = p.root / name
    if not folder.exists():
        folder.mkdir()
        for index in range(3):
            Image.new("RGB", (40, 24), (index * 40, 0, 0)).save(folder / f"f{index}.png")
        for extra_name, data in (extra or {}).items():
            (folder / extra_name).write_bytes(data)
    return folder


def _earlier_batch_output(p: Place, record: dict | None) -> Path:
    """A results folder holding line 1's output (``in-1.png``), with ``record`` as what
    made it (None: no record, as a file put there by hand)."""
    results = p.root / "results"
    results.mkdir(exist_ok=True)
    shutil.copy(p.out, results / "in-1.png")
    if record is not None:
        (results / ".laspa").mkdir(exist_ok=True)
        (results / ".laspa" / "in-1.png.json").write_text(json.dumps(record))
    return results


def _earlier_video_frames(p: Place) -> Path:
    """An output folder of frames that another prompt made (its record says so)."""
    out = p.root / "edited"
    out.mkdir()
    for index in range(3):
        Image.new("RGB", (40, 24), "green").save(out / f"frame_{index:06d}.png")
    (out / ".laspa-video.json").write_text(json.dumps({"settings": "0" * 32}))
    return out


def _file_safety_cases():
    def manifest(p: Place) -> Path:
        path = p.root / "job.jsonl"
        if not path.exists():
            path.write_text(json.dumps({"image": "in.png", "prompt": "a red cat"}) + "\n")
        return path

    def batch(p: Place, source: Path, out: Path, *args) -> list:
        return ["batch", source, "-o", out, "--model", p.model, *args]

    def summary_as_manifest(p: Place) -> list:
        results = p.root / "results"
        results.mkdir()
        (results / "summary.jsonl").write_text(
            json.dumps({"image": "../in.png", "prompt": "a cat"})
        )
        return batch(p, results / "summary.jsonl", results)

    def summary_as_image(p: Place) -> list:
        results = p.root / "results"
        results.mkdir()
        shutil.copy(p.image, results / "summary.jsonl")
        job = p.root / "job.jsonl"
        job.write_text(json.dumps({"image": "results/summary.jsonl", "prompt": "a cat"}))
        return batch(p, job, results)

    def video(p: Place, source: Path, out: Path, *args, model=None) -> list:
        return ["video", source, "a red cat", "-o", out, "--model", model or p.model, *args]

    def cut_png(p: Place) -> bytes:
        data = encoded(Image.new("RGB", (40, 24), "red"), "PNG")
        return data[: len(data) - 30]

    def side_folder_a_file(p: Place) -> list:
        (p.root / "out").mkdir()
        (p.root / "out" / "t.mp4.frames").write_bytes(b"someone's file")
        return video(p, _frames_folder(p, "frames"), p.root / "out" / "t.mp4")

    return {
        "batch: the manifest is the output folder's summary": (
            summary_as_manifest, "which the run's summary would overwrite"),
        "batch: a line's image is the output folder's summary": (
            summary_as_image, "would overwrite the input of line 1"),
        "batch: the manifest is a device (/dev/zero)": (
            lambda p: batch(p, Path("/dev/zero"), p.root / "results"), "larger than 256 MiB"),
        "batch: an output in -o without a record of what made it": (
            lambda p: batch(p, manifest(p), _earlier_batch_output(p, None)), "add --overwrite"),
        "batch: an output in -o that another seed made": (
            lambda p: batch(p, manifest(p), _earlier_batch_output(
                p, {"output": "in-1.png", "settings": "0" * 32, "sha256": "0"}), "--seed", 7),
            "made with other settings"),
        "bench: --json over an existing image": (
            lambda p: ["bench", "--json", p.image, "--model", p.model], "is not a JSON report"),
        "bench: --json over a manifest": (
            lambda p: ["bench", "--json", manifest(p), "--model", p.model], "is not a JSON report"),
        "video: a truncated frame in the folder": (
            lambda p: video(p, _frames_folder(p, "frames", {"f3.png": cut_png(p)}), p.root / "o"),
            "cannot read image"),
        "video: a decompression bomb in the folder": (
            lambda p: video(p, _frames_folder(p, "frames", {"f9.png": png_claiming(50000, 50000)}),
                            p.root / "o"), "too large"),
        "video: OUTPUT.frames is a file": (side_folder_a_file, "exists and is not a folder"),
        "video: -o names the input's side folder": (
            lambda p: video(p, _frames_folder(p, "o.mp4.frames"), p.root / "o.mp4"),
            "would write its frames into the input"),
        "video: fpe on a flow model": (
            lambda p: video(p, _frames_folder(p, "frames"), p.root / "o", "-m", "fpe",
                            model="mini-flow"), "runs on UNet (eps / v) models only"),
        "video: a rerun over frames another prompt made": (
            lambda p: video(p, _frames_folder(p, "frames"), _earlier_video_frames(p)),
            "add --overwrite"),
    }  # fmt: skip


FILE_SAFETY = _file_safety_cases()


@pytest.mark.parametrize("name", list(FILE_SAFETY))
def test_files_and_reruns_refused_in_one_line_before_a_model_loads(
    name, place, capfd, no_model_loads
):
    build, expected = FILE_SAFETY[name]
    args = build(place)
    before = snapshot(place.root)
    code, out, err = run_cli(capfd, args)
    assert_one_line_refusal(code, out, err, expected)
    assert snapshot(place.root) == before


def test_a_video_refusal_once_the_model_runs_leaves_no_folder_behind(place, capfd):
    """The word is looked up once the tokenizer is loaded: the output folder, which the
    run would have made, must not be left there empty."""
    source = _frames_folder(place, "frames")
    before = snapshot(place.root)
    args = ["video", source, "a red cat", "-o", place.root / "o", "--model", place.model,
            "-m", "laspa-mix", "--set", "change=sofa", "--set", "keep=rest", "--steps", 2, "-q"]  # fmt: skip
    code, out, err = run_cli(capfd, args)
    assert_one_line_refusal(code, out, err, "'sofa' does not occur")
    assert snapshot(place.root) == before


def test_world_clip_refuses_a_video_file_name(tmp_path, capfd):
    before = snapshot(tmp_path)
    code, out, err = run_cli(capfd, ["world", "clip", "--seed", 0, "-o", tmp_path / "clip.mp4"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(lines) == 1 and "names a video file" in lines[0], err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "output, reason",
    [("\ud800.png", "output name is not valid text"), (None, "image name is not valid text")],
)
def test_manifest_names_python_cannot_encode_fail_their_line_only(output, reason, place, capfd):
    """A lone surrogate (only a JSON escape can write one) fails its own line, in the
    summary; the other lines are done and the summary is written."""
    bad = {"image": "in.png", "prompt": "a cat", "output": output} if output else {
        "image": "\ud800.png", "prompt": "a cat"}  # fmt: skip
    good = {"image": "in.png", "prompt": "a cat", "steps": 2, "output": "good.png"}
    (place.root / "job.jsonl").write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    results = place.root / "results"
    args = ["batch", place.root / "job.jsonl", "-o", results, "--model", place.model, "-q"]
    code, out, err = run_cli(capfd, args)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    rows = [json.loads(line) for line in (results / "summary.jsonl").read_text().splitlines()]
    assert reason in rows[0]["reason"] and rows[1]["status"] == "done"


def test_an_output_name_that_is_not_utf8_gets_its_summary(place, capfd):
    """ "\\udcff.png" is how Python spells the file name byte 0xff: the output is written
    under that name and the summary names it by its JSON escape."""
    line = {"image": "in.png", "prompt": "a cat", "steps": 2, "output": "\udcff.png"}
    (place.root / "job.jsonl").write_text(json.dumps(line) + "\n")
    results = place.root / "results"
    args = ["batch", place.root / "job.jsonl", "-o", results, "--model", place.model, "-q"]
    code, out, err = run_cli(capfd, args)
    assert code == 0 and "Traceback" not in err, err
    assert (results / os.fsdecode(b"\xff.png")).is_file()
    row = json.loads((results / "summary.jsonl").read_text())
    assert row["output"] == "\udcff.png" and row["status"] == "done"


# ------------------------------------------------------------------ the web API's edge
# Values of the wrong JSON type, and server paths given as the image (issue #30).
WEB_API_EDGE = {
    "web: K as text": ({"K": "200"}, "scene", "K must be a number, got '200'"),
    "web: K null": ({"K": None}, "scene", "K must be a number, got null"),
    "web: phi as text": ({"phi": "0.3"}, "scene", "phi must be a number or null (automatic)"),
    "web: image a path on the server": (None, "/etc/hostname", "must be uploaded with the"),
    "web: image a path to the scene": (None, "scene-path", "must be uploaded with the"),
}


@pytest.mark.parametrize("name", list(WEB_API_EDGE))
def test_web_api_edge_refusals_are_one_line(name, web_client, web_scene):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    options, image, expected = WEB_API_EDGE[name]
    scene, caption, _ = web_scene
    method = "instdiffedit" if options and "phi" in options else "laspa-x0"
    # a bare string is a path on the server: gradio_client sends it as it is
    image = {"scene": handle_file(scene), "scene-path": scene}.get(image, image)
    with pytest.raises(AppError) as refused:
        web_client.predict(
            image=image, prompt=caption, method=method, options=options, api_name="/edit"
        )
    message = str(refused.value)
    assert expected in message, message
    assert "\n" not in message.strip() and "upstream" not in message


def test_serve_refuses_an_empty_queue_in_one_line(capfd):
    code, out, err = run_cli(capfd, ["serve", "--max-queue", "0", "--model", "/nonexistent"])
    assert_one_line_refusal(code, out, err, "--max-queue must be >= 1, got 0")
