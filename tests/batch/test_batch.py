"""``laspa batch`` in this process: manifests and folders, failures in the summary, reruns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from laspa.batch import jobs
from laspa.testing import run_cli


def write_images(folder: Path, count: int, size=(40, 24)) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for index in range(count):
        pixels = np.random.default_rng(index).integers(0, 255, (size[1], size[0], 3), np.uint8)
        path = folder / f"im{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def write_manifest(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def summary(outdir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (outdir / jobs.SUMMARY_NAME).read_text().splitlines()]
    return {row["line"]: row for row in rows}


def files(outdir: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(outdir.iterdir())
        if p.name not in (jobs.SUMMARY_NAME, jobs.RECORDS_FOLDER)
    }


@pytest.fixture()
def manifest(tmp_path) -> Path:
    write_images(tmp_path / "images", 3)
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return write_manifest(tmp_path / "job.jsonl", [
        {"image": "images/im0.png", "prompt": "a red cat", "seed": 1, "steps": 3, "output": "a.png"},
        {"image": "images/im0.png", "prompt": "a blue dog", "seed": 2, "steps": 3, "K": 300},
        {"image": "images/im1.png", "prompt": "a red cat", "method": "sdedit", "steps": 3, "strength": 0.5},
        "this line is not JSON",
        {"image": "images/missing.png", "prompt": "a red cat"},
        {"image": "images/im2.png", "prompt": "a red cat", "steps": 3, "beta": 7},
        {"image": "images/im2.png", "prompt": "a red cat", "steps": 3, "output": "a.png"},
        {"image": "images/broken.png", "prompt": "a red cat", "steps": 3},
        "",
        {"image": "images/im2.png", "prompt": "a red cat", "steps": 3, "options_of": "nobody"},
        {"image": "images/im2.png", "prompt": "a cat", "steps": 3, "seed": 5},
    ])  # fmt: skip


def test_a_manifest_runs_and_each_failure_is_one_line_in_the_summary(
    capsys, manifest, tiny_model_dir, tmp_path
):
    outdir = tmp_path / "out"
    code, out, err = run_cli(
        capsys, "batch", manifest, "-o", outdir, "--model", tiny_model_dir, "--threads", 1, "-q"
    )
    assert code == 1, err  # some items failed
    assert "Traceback" not in err
    assert "4 done, 0 already there, 6 failed" in err.splitlines()[-1]
    rows = summary(outdir)
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]  # blank line 9 is no item
    done = {n for n, row in rows.items() if row["status"] == "done"}
    assert done == {1, 2, 3, 11}
    reasons = {n: row.get("reason", "") for n, row in rows.items()}
    assert "not a JSON object" in reasons[4]
    assert "input image not found" in reasons[5]
    assert "beta must be in [0.0, 1.0]" in reasons[6]
    assert "also line 1's" in reasons[7]
    assert "not an image file" in reasons[8] or "cannot read image" in reasons[8]
    assert "does not take options_of" in reasons[10]
    assert all("\n" not in reason for reason in reasons.values())
    assert set(files(outdir)) == {"a.png", "im0-2.png", "im1-3.png", "im2-11.png"}
    assert Image.open(outdir / "a.png").size == (40, 24)
    assert rows[1]["unet_evals"] == rows[2]["unet_evals"]  # one shared batch


def test_a_rerun_skips_finished_items_and_redoes_a_missing_one_identically(
    capsys, manifest, tiny_model_dir, tmp_path
):
    outdir = tmp_path / "out"
    args = ["batch", manifest, "-o", outdir, "--model", tiny_model_dir, "--threads", 1, "-q"]
    run_cli(capsys, *args)
    first = files(outdir)
    stamps = {name: (outdir / name).stat().st_mtime_ns for name in first}
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "0 done, 4 already there, 6 failed" in err
    assert {n: r["status"] for n, r in summary(outdir).items() if r["status"] != "failed"} == {
        1: "exists",
        2: "exists",
        3: "exists",
        11: "exists",
    }
    assert {name: (outdir / name).stat().st_mtime_ns for name in first} == stamps
    (outdir / "im0-2.png").unlink()  # one edit of a two-edit batch
    code, _, err = run_cli(capsys, *args)
    assert "1 done, 3 already there" in err
    assert files(outdir) == first  # the batch ran whole again, so the bytes are the same
    assert (outdir / "a.png").stat().st_mtime_ns == stamps["a.png"]


def test_a_folder_with_one_prompt(capsys, tiny_model_dir, tmp_path):
    write_images(tmp_path / "photos", 2)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    outdir = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "batch", tmp_path / "photos", "--prompt", "a red cat", "-o", outdir,
        "--model", tiny_model_dir, "--steps", 2, "--set", "K=400", "-m", "laspa-x0",
        "--threads", 1, "-q",
    )  # fmt: skip
    assert code == 0, err
    assert "2 done" in err
    assert set(files(outdir)) == {"im0.png", "im1.png"}
    assert {row["status"] for row in summary(outdir).values()} == {"done"}


def test_an_edit_only_the_model_refuses_fails_alone(capsys, tiny_model_dir, tmp_path):
    """Both edits share one batch; the word is looked up once the tokenizer is loaded."""
    write_images(tmp_path / "images", 1)
    manifest = write_manifest(tmp_path / "job.jsonl", [
        {"image": "images/im0.png", "prompt": "a red cat", "steps": 2, "method": "laspa-mix",
         "subject": "cat", "output": "good.png"},
        {"image": "images/im0.png", "prompt": "a red cat", "steps": 2, "method": "laspa-mix",
         "change": "sofa", "output": "bad.png"},
    ])  # fmt: skip
    outdir = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "batch", manifest, "-o", outdir, "--model", tiny_model_dir, "--threads", 1, "-q"
    )
    assert code == 1
    rows = summary(outdir)
    assert rows[1]["status"] == "done" and rows[2]["status"] == "failed"
    assert "'sofa' does not occur" in rows[2]["reason"]
    assert set(files(outdir)) == {"good.png"}


def test_groups_follow_the_manifest_alone(tmp_path):
    """The same manifest always makes the same UNet batches, whoever runs it."""
    write_images(tmp_path / "images", 2)
    lines = [{"image": f"images/im{i % 2}.png", "prompt": "a red cat", "seed": i, "steps": 2 + (i % 4 == 0)}
             for i in range(10)]  # fmt: skip
    manifest = write_manifest(tmp_path / "job.jsonl", lines)
    defaults = jobs.Defaults()
    plan = jobs.plan(jobs.manifest_entries(manifest, defaults), tmp_path / "out", 2)
    again = jobs.plan(jobs.manifest_entries(manifest, defaults), tmp_path / "out", 2)
    assert [g.to_json() for g in plan.groups] == [g.to_json() for g in again.groups]
    assert all(len(g.items) <= 2 for g in plan.groups)
    for group in plan.groups:
        assert len({(i.image, i.options["steps"]) for i in group.items}) == 1
    assert sorted(i.line for g in plan.groups for i in g.items) == list(range(1, 11))


def test_no_output_overwrites_an_input(tmp_path):
    images = tmp_path / "images"
    write_images(images, 2)
    manifest = write_manifest(tmp_path / "job.jsonl", [
        {"image": "images/im0.png", "prompt": "a red cat", "output": "im1.png"},
        {"image": "images/im1.png", "prompt": "a red cat", "output": "im1.png"},
        {"image": "images/im1.png", "prompt": "a red cat", "output": "new.png"},
    ])  # fmt: skip
    plan = jobs.plan(jobs.manifest_entries(manifest, jobs.Defaults()), images, 8)
    reasons = {failure.line: failure.reason for failure in plan.refused}
    assert reasons == {
        1: "output im1.png would overwrite the input of line 2",
        2: "output im1.png would overwrite its own input",
    }
    assert [item.line for group in plan.groups for item in group.items] == [3]


def test_a_rerun_with_other_settings_is_refused_unless_overwrite(capsys, tiny_model_dir, tmp_path):
    """A rerun keeps only outputs its own settings made; others stop it, in one line,
    before any work, until --overwrite redoes them (issue #30)."""
    write_images(tmp_path / "images", 2)
    manifest = write_manifest(tmp_path / "job.jsonl", [
        {"image": "images/im0.png", "prompt": "a red cat", "steps": 2, "output": "a.png"},
        {"image": "images/im1.png", "prompt": "a red cat", "steps": 2, "output": "b.png"},
    ])  # fmt: skip
    outdir = tmp_path / "out"
    args = ["batch", manifest, "-o", outdir, "--model", tiny_model_dir, "--threads", 1, "-q"]
    assert run_cli(capsys, *args)[0] == 0
    first, first_rows = files(outdir), summary(outdir)
    # the same settings, spelled otherwise (steps named by --steps, not the lines): resumed
    code, _, err = run_cli(capsys, *args, "--seed", 0)
    assert code == 0 and "0 done, 2 already there" in err
    assert {n: r["settings"] for n, r in summary(outdir).items()} == {
        n: r["settings"] for n, r in first_rows.items()
    }
    # another seed: refused, nothing changed
    code, out, err = run_cli(capsys, *args, "--seed", 7)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "a.png and 1 more in -o were made with other settings" in err and "--overwrite" in err
    assert files(outdir) == first
    # an input image changed since: refused too
    Image.new("RGB", (40, 24), "white").save(tmp_path / "images" / "im1.png")
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "b.png in -o was made with other settings" in err
    # --overwrite redoes what changed and keeps what did not
    stamp = (outdir / "a.png").stat().st_mtime_ns
    code, _, err = run_cli(capsys, *args, "--overwrite")
    assert code == 0 and "1 done, 1 already there" in err
    assert files(outdir)["b.png"] != first["b.png"]
    assert (outdir / "a.png").stat().st_mtime_ns == stamp
    # an output changed by hand is not trusted either
    Image.new("RGB", (40, 24), "black").save(outdir / "a.png")
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "a.png in -o was made with other settings" in err


def test_no_output_overwrites_the_manifest(tmp_path):
    """A manifest may carry any name, an image's too: no line's output replaces it."""
    write_images(tmp_path / "out", 1)
    manifest = write_manifest(tmp_path / "out" / "job.png", [
        {"image": "im0.png", "prompt": "a red cat", "output": "job.png"},
        {"image": "im0.png", "prompt": "a red cat", "output": "new.png"},
    ])  # fmt: skip
    entries = jobs.manifest_entries(manifest, jobs.Defaults())
    plan = jobs.plan(entries, tmp_path / "out", 8, manifest=manifest)
    assert [(f.line, f.reason) for f in plan.refused] == [
        (1, "output job.png would overwrite the manifest")
    ]


def test_a_manifest_is_read_with_a_bounded_read(tmp_path, monkeypatch):
    """A device or pipe has no size to ask: reading stops one byte past the limit."""
    monkeypatch.setattr(jobs, "MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(jobs.ManifestError, match="larger than"):
        jobs.read_manifest(Path("/dev/zero"))
    fifo = tmp_path / "job.fifo"
    import os
    import threading

    os.mkfifo(fifo)
    line = json.dumps({"image": "a.png", "prompt": "a cat"}) + "\n"
    writer = threading.Thread(target=lambda: fifo.write_text(line))
    writer.start()
    assert jobs.read_manifest(fifo) == [(1, line.strip())]
    writer.join()


def test_a_folder_job_over_file_names_that_are_not_utf8(capsys, tiny_model_dir, tmp_path):
    """os.fsdecode spells the byte 0xff as a lone surrogate: the summary writes it as its
    JSON escape, which reads back as the same name."""
    import os

    photos = tmp_path / "photos"
    write_images(photos, 1)
    (photos / "im0.png").rename(photos / os.fsdecode(b"\xff.png"))
    outdir = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "batch", photos, "--prompt", "a red cat", "-o", outdir, "--steps", 2,
        "--model", tiny_model_dir, "--threads", 1, "-q",
    )  # fmt: skip
    assert code == 0, err
    row = summary(outdir)[1]
    assert row["status"] == "done" and row["output"] == os.fsdecode(b"\xff.png")
    assert (outdir / os.fsdecode(b"\xff.png")).is_file()


def test_a_manifest_means_what_the_cli_means(tmp_path):
    """Aliases, types and options that cannot act are the method's Params' (issue #29/#30):
    a manifest's ``change`` picks laspa-local's change region as --change does, and a
    wrong type or an idle option is refused on its own line."""
    write_images(tmp_path / "images", 1)
    manifest = write_manifest(tmp_path / "job.jsonl", [
        {"image": "images/im0.png", "prompt": "a red sofa", "method": "laspa-local", "change": "sofa"},
        {"image": "images/im0.png", "prompt": "a red sofa", "method": "laspa-mix", "change": "sofa", "output": "b.png"},
        {"image": "images/im0.png", "prompt": "a red cat", "K": "200", "output": "c.png"},
        {"image": "images/im0.png", "prompt": "a red cat", "K": None, "output": "d.png"},
        {"image": "images/im0.png", "prompt": "a red cat", "sampler": "lcm", "gamma": 0.5, "output": "e.png"},
    ])  # fmt: skip
    plan = jobs.plan(jobs.manifest_entries(manifest, jobs.Defaults()), tmp_path / "out", 8)
    reasons = {failure.line: failure.reason for failure in plan.refused}
    assert reasons == {
        3: "K must be a whole number, got '200'",
        4: "K must be a whole number, got None",
        5: "gamma acts only with the tcd sampler; this edit's is lcm",
    }
    from laspa.methods.base import make_params

    items = {item.line: item for group in plan.groups for item in group.items}
    assert make_params("laspa-local", items[1].options).region == "change"
    assert make_params("laspa-mix", items[2].options).keep == "rest"
