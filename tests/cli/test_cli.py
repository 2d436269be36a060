"""`laspa edit` end to end, and every bad input ending in one line and exit status 2."""

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from laspa.cli import main
from laspa.testing import run_cli


def run(capsys, *args):
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


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
    code, stdout, stderr = run_cli(
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
     ("sdedit", ["--strength", "0.6"]), ("ddim-inversion", ["--source-prompt", "a cat"]),
     ("laspa-mix", ["--change", "dog"])],
)  # fmt: skip
def test_every_method_runs_from_the_cli(
    capsys, image_path, tiny_model_dir, tmp_path, method, extra
):
    out = tmp_path / "out.jpg"
    code, stdout, stderr = run_cli(
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
        "subject and change": (["edit", image_path, "a cat", *base, "--method", "laspa-mix", "--subject", "cat", "--change", "cat"], "not both"),
        "change not in prompt": (["edit", image_path, "a cat", *base, "--method", "laspa-mix", "--change", "sofa"], "change: the word 'sofa' does not occur"),
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


def test_sweep_writes_a_grid_from_one_batched_run(capsys, image_path, tiny_model_dir, tmp_path):
    out = tmp_path / "grid.png"
    code, stdout, stderr = run_cli(
        capsys, "sweep", image_path, "a red cat", "--K", "100,300", "--beta", "0.2,0.5,0.9",
        "-o", out, "--model", tiny_model_dir, "--steps", 3, "--json", "-q",
    )  # fmt: skip
    assert code == 0, stderr
    cells = [json.loads(line) for line in stdout.splitlines()]
    assert [(c["params"]["K"], c["params"]["beta"]) for c in cells] == [
        (k, b) for k in (100, 300) for b in (0.2, 0.5, 0.9)
    ]
    assert Image.open(out).width > Image.open(out).height  # 3 columns, 2 rows
    code, _, stderr = run(
        capsys, "sweep", image_path, "a cat", "-o", out, "--model", tiny_model_dir
    )
    assert code == 2 and "sweep one or two" in stderr
    code, _, stderr = run(capsys, "sweep", image_path, "a cat", "-o", out, "--K", "100,2000",
                          "--model", tiny_model_dir)  # fmt: skip
    assert code == 2 and "K must be in [0, 1000]" in stderr


def test_attention_writes_a_word_map_and_a_grid(capsys, image_path, tiny_model_dir, tmp_path):
    one, grid = tmp_path / "cat.png", tmp_path / "all.png"
    base = ["--model", tiny_model_dir, "--steps", 3, "-q"]
    code, _, stderr = run_cli(
        capsys, "attention", image_path, "a red cat", "--word", "cat", "-o", one, *base
    )
    assert code == 0, stderr
    assert Image.open(one).size == Image.open(image_path).size
    code, _, stderr = run_cli(
        capsys, "attention", image_path, "a red cat", "--all-words", "-o", grid, *base
    )
    assert code == 0, stderr
    assert Image.open(grid).width > Image.open(one).width
    code, _, stderr = run(
        capsys, "attention", image_path, "a red cat", "--word", "dog", "-o", one, *base
    )
    assert code == 2 and "does not occur" in stderr and len(stderr.strip().splitlines()) == 1


def test_mask_out_for_methods_with_a_mask(capsys, image_path, tiny_model_dir, tmp_path):
    out, mask = tmp_path / "out.png", tmp_path / "mask.png"
    code, stdout, stderr = run_cli(
        capsys, "edit", image_path, "a red cat", "-o", out, "--method", "instdiffedit",
        "--mask-out", mask, "--set", "noise_seeds=2", "--model", tiny_model_dir, "--steps", 4,
        "--json", "-q",
    )  # fmt: skip
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["params"]["noise_seeds"] == 2
    assert record["notes"]["index_word"] in {"red", "cat"}  # "a" is a function word
    picture = Image.open(mask)
    assert picture.mode == "L" and picture.size == Image.open(image_path).size
    assert set(np.unique(np.asarray(picture)).tolist()) <= {0, 255}
    code, _, stderr = run(capsys, "edit", image_path, "a cat", "-o", out, "--mask-out", mask,
                          "--model", tiny_model_dir)  # fmt: skip
    assert code == 2 and "makes no mask" in stderr
    code, _, stderr = run(capsys, "edit", image_path, "a cat", "-o", out, "--set", "phi=x",
                          "--method", "instdiffedit", "--model", tiny_model_dir)  # fmt: skip
    assert code == 2 and "not a number" in stderr


def test_demo_writes_the_grid_and_prints_the_table(capsys, tmp_path):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(
        capsys, "demo", "-o", out, "--steps", 3, "--methods", "laspa-x0,sdedit", "--json",
        "--kind", "recolor",
    )  # fmt: skip
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [r["method"] for r in rows] == ["laspa-x0", "sdedit"]
    assert all(isinstance(r["edit_read_back"], bool) and r["bg_psnr"] > 0 for r in rows)
    assert "(recolor)" in stdout
    for name in ("demo", "input", "target", "laspa-x0", "sdedit"):
        assert (out / f"{name}.png").stat().st_size > 0
    code, _, stderr = run(capsys, "demo", "-o", out, "--kind", "explode")
    assert code == 2 and "--kind must be one of" in stderr


def test_demo_on_a_few_step_model_runs_the_inverting_methods_on_ddim(capsys, tmp_path):
    from laspa.methods import METHODS
    from laspa.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "lcm", scheduler_class="LCMScheduler")
    code, stdout, stderr = run_cli(
        capsys, "demo", "-o", tmp_path / "demo", "--steps", 2, "--json", "--model", model
    )  # fmt: skip
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert sorted(r["method"] for r in rows) == sorted(METHODS)  # fpe, diffedit... too


def test_outputs_are_written_whole_with_a_new_files_permissions(tmp_path, monkeypatch):
    import os

    from laspa.errors import OutputError
    from laspa.files import NEW_FILE_MODE
    from laspa.images import save_image

    target = tmp_path / "out.png"
    save_image(Image.new("RGB", (4, 4), "red"), target)
    assert (target.stat().st_mode & 0o777) == NEW_FILE_MODE  # not mkstemp's private 0600
    assert 0o666 & ~_umask() == NEW_FILE_MODE

    # a failure while writing leaves the old file whole and no temporary file behind
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OutputError, match="cannot write .*out.png: disk full"):
        save_image(Image.new("RGB", (4, 4), "blue"), target)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["out.png"]
    assert Image.open(target).getpixel((0, 0)) == (255, 0, 0)


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask
