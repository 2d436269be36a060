"""`laspa edit` end to end, and every bad input ending in one line and exit status 2."""

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from laspa.cli import main


def run(capsys, *args):
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def run_ok(capsys, *args):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def image_path(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(path)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size (a decompression bomb's opening)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_edit_writes_the_image_and_prints_json(capsys, image_path, tiny_model_dir, tmp_path):
    out = tmp_path / "out.png"
    code, stdout, stderr = run_ok(
        capsys, "edit", image_path, "a red cat", "-o", out, "--model", tiny_model_dir,
        "--steps", 4, "--json", "--K", 300, "--beta", 0.5,
    )  # fmt: skip
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["method"] == "laspa-x0" and record["output"] == str(out)
    assert record["params"]["K"] == 300 and record["params"]["beta"] == 0.5
    assert record["unet_evals"] == 8 and record["seconds"] > 0
    assert Image.open(out).size == (40, 24)
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "method,extra",
    [("laspa-input", ["--noise", "fresh"]), ("laspa-eps", ["--eps-form", "literal"]),
     ("sdedit", ["--strength", "0.6"]), ("ddim-inversion", ["--source-prompt", "a cat"])],
)  # fmt: skip
def test_every_method_runs_from_the_cli(
    capsys, image_path, tiny_model_dir, tmp_path, method, extra
):
    out = tmp_path / "out.jpg"
    code, stdout, stderr = run_ok(
        capsys, "edit", image_path, "a dog", "-o", out, "--model", tiny_model_dir,
        "--steps", 3, "--method", method, "--json", *extra,
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(stdout)["method"] == method
    assert Image.open(out).format == "JPEG"


def bad_inputs(tmp_path, image_path, model):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(image_path.read_bytes()[:200])
    jpeg = tmp_path / "full.jpg"
    Image.open(image_path).save(jpeg)
    truncated_jpeg = tmp_path / "truncated.jpg"
    truncated_jpeg.write_bytes(jpeg.read_bytes()[:300])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(50000, 50000))
    pickled = tmp_path / "pickled"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (pickled / sub).mkdir(parents=True)
    for sub in ("unet", "vae", "text_encoder"):
        (pickled / sub / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really")
    out = tmp_path / "out.png"
    base = ["--model", model, "-o", out]
    return {
        "missing file": (["edit", tmp_path / "nope.png", "a cat", *base], "not found"),
        "empty file": (["edit", empty, "a cat", *base], "empty"),
        "truncated png": (["edit", truncated_png, "a cat", *base], "cannot read image"),
        "truncated jpeg": (["edit", truncated_jpeg, "a cat", *base], "cannot read image"),
        "text as png": (["edit", text, "a cat", *base], "not an image"),
        "decompression bomb": (["edit", bomb, "a cat", *base], "too large"),
        "unknown method": (["edit", image_path, "a cat", *base, "--method", "imagic"], "unknown method"),
        "K too large": (["edit", image_path, "a cat", *base, "--K", 1001], "K must be in [0, 1000]"),
        "K negative": (["edit", image_path, "a cat", *base, "--K", -1], "K must be in [0, 1000]"),
        "beta above 1": (["edit", image_path, "a cat", *base, "--beta", 1.5], "beta must be in [0.0, 1.0]"),
        "beta below 0": (["edit", image_path, "a cat", *base, "--beta", -0.1], "beta must be in"),
        "zero steps": (["edit", image_path, "a cat", *base, "--steps", 0], "steps must be in"),
        "negative guidance": (["edit", image_path, "a cat", *base, "--guidance", -1], "guidance must be"),
        "strength 0": (["edit", image_path, "a cat", *base, "--method", "sdedit", "--strength", 0], "strength must be in (0.0, 1.0]"),
        "strength above 1": (["edit", image_path, "a cat", *base, "--method", "sdedit", "--strength", 1.2], "strength must be in"),
        "empty prompt": (["edit", image_path, "  ", *base], "prompt must be a non-empty"),
        "output is input": (["edit", image_path, "a cat", "--model", model, "-o", image_path], "overwrite the input"),
        "output dir missing": (["edit", image_path, "a cat", "--model", model, "-o", tmp_path / "no" / "o.png"], "directory does not exist"),
        "pickle model": (["edit", image_path, "a cat", "-o", out, "--model", pickled], "pickle"),
        "missing model": (["edit", image_path, "a cat", "-o", out, "--model", tmp_path / "nomodel"], "not found"),
        "not a number": (["edit", image_path, "a cat", *base, "--K", "abc"], "--K"),
    }  # fmt: skip


def test_every_bad_input_is_one_line_and_exit_2(capsys, tmp_path, image_path, tiny_model_dir):
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    failures = []
    for name, (args, expected) in bad_inputs(tmp_path, image_path, tiny_model_dir).items():
        files_before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
        code, stdout, stderr = run(capsys, *args)
        lines = [line for line in stderr.splitlines() if line.strip()]
        files_after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
        if code != 2 or len(lines) != 1 or expected not in lines[0] or "Traceback" in stderr:
            failures.append(f"{name}: code {code}, stderr {stderr!r}")
        if files_after != files_before:
            failures.append(f"{name}: files changed")
        assert not (tmp_path / "out.png").exists()
    assert not failures, "\n".join(failures)
    assert image_path.read_bytes() == before[image_path]
