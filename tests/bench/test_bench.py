"""laspa bench: metrics on hand-made pairs with known answers, case sources, parameters,
and a smoke run of the whole command on the tiny random model."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from laspa.bench import cases as bench_cases
from laspa.bench import metrics, runner
from laspa.bench.cases import BenchCase, BenchDataError
from laspa.errors import ParameterError
from laspa.testing import run_cli
from laspa.world import EDIT_KINDS, Edit, Scene, SceneObject, apply_edit, read_scene, render

SCENE = Scene(
    "gray",
    (
        SceneObject("circle", "red", "large", "top left"),
        SceneObject("star", "blue", "small", "bottom right"),
    ),
)
RECOLOR = Edit("recolor", 0, "green")


def constant(value: float, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.float32)


# ------------------------------------------------------------------ metrics
def test_identical_images_score_perfectly():
    image = metrics.to_array(render(SCENE, 32))
    assert metrics.psnr(image, image) == metrics.PSNR_CAP
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    assert metrics.mse(image, image) == 0.0
    mask = np.zeros((32, 32), dtype=bool)
    mask[:8, :8] = True
    bg = metrics.background_metrics(image, image, mask)
    assert bg["bg_psnr"] == metrics.PSNR_CAP and bg["bg_ssim"] == pytest.approx(1.0)


def test_constant_offset_has_the_textbook_psnr():
    # MSE 0.01 with data range 1 -> 10 * log10(1 / 0.01) = 20 dB
    assert metrics.psnr(constant(0.5), constant(0.6)) == pytest.approx(20.0, abs=1e-4)
    assert metrics.mse(constant(0.5), constant(0.6)) == pytest.approx(0.01)


def test_one_changed_object_is_invisible_outside_the_exact_mask():
    case = apply_edit(SCENE, RECOLOR, 32)
    source = metrics.to_array(case.source_image())
    target = metrics.to_array(case.target_image())
    whole = metrics.psnr(source, target)
    expected = 10 * math.log10(1 / np.mean((source.astype(np.float64) - target) ** 2))
    assert whole == pytest.approx(expected, abs=1e-3) and whole < 40
    bg = metrics.background_metrics(source, target, case.mask)
    assert bg["bg_psnr"] == metrics.PSNR_CAP and bg["bg_mse"] == 0.0
    assert bg["bg_ssim"] == pytest.approx(1.0)


def test_empty_mask_is_the_whole_image_and_full_mask_is_nan():
    a, b = constant(0.2), constant(0.3)
    empty = metrics.background_metrics(a, b, np.zeros((16, 16), dtype=bool))
    assert empty["bg_psnr"] == pytest.approx(metrics.psnr(a, b))
    assert empty["bg_ssim"] == pytest.approx(metrics.ssim(a, b))
    full = metrics.background_metrics(a, b, np.ones((16, 16), dtype=bool))
    assert all(math.isnan(v) for v in full.values())


def test_masked_metric_zeroes_the_edit_region_like_pie_bench():
    a, b = constant(0.5), constant(0.5)
    b[:8] = 1.0  # differs only inside the mask
    mask = np.zeros((16, 16), dtype=bool)
    mask[:8] = True
    assert metrics.background_metrics(a, b, mask)["bg_psnr"] == metrics.PSNR_CAP
    # half the pixels kept, each off by 0.1: MSE counts the zeroed half too -> 0.005
    b[8:] = 0.6
    assert metrics.background_metrics(a, b, mask)["bg_mse"] == pytest.approx(0.005)


def test_mask_iou_upsamples_and_thresholds():
    exact = np.zeros((8, 8), dtype=bool)
    exact[:4, :4] = True
    latent = np.zeros((1, 4, 4), dtype=np.float32)
    latent[0, :2, :2] = 1.0
    assert metrics.mask_iou(latent, exact) == pytest.approx(1.0)
    assert metrics.mask_iou(1 - latent, exact) == 0.0
    assert metrics.mask_iou(np.zeros((4, 4)), np.zeros((8, 8), dtype=bool)) == 1.0
    half = np.zeros((4, 4), dtype=np.float32)
    half[:2, :1] = 1.0  # the left half of the exact square
    assert metrics.mask_iou(half, exact) == pytest.approx(0.5)


def test_edit_success_reads_back_the_target_scene():
    case = apply_edit(SCENE, RECOLOR, 64)
    assert metrics.edit_success(case.target_image(), case.target)
    assert not metrics.edit_success(case.source_image(), case.target)  # edit not done
    blank = Image.new("RGB", (64, 64), (128, 128, 128))
    assert not metrics.edit_success(blank, case.target)  # unreadable: no object


def test_rle_decoding_forces_the_border():
    mask = metrics.decode_rle([6, 2, 13, 100], (5, 5))
    inner = mask[1:-1, 1:-1]
    assert mask[0].all() and mask[-1].all() and mask[:, 0].all() and mask[:, -1].all()
    # flat 6, 7 -> (1, 1), (1, 2); 13 onwards (clipped at 25) -> (2, 3) to the end
    assert inner[0].tolist() == [True, True, False]
    assert inner[1].tolist() == [False, False, True]
    assert inner[2].all()
    with pytest.raises(ValueError, match="pairs"):
        metrics.decode_rle([1, 2, 3], (4, 4))


def test_mean_skips_none_and_nan():
    assert metrics.mean([1.0, None, math.nan, 3.0]) == 2.0
    assert metrics.mean([True, False, False, True]) == 0.5
    assert metrics.mean([None, math.nan]) is None


def test_score_of_a_perfect_edit():
    built = apply_edit(SCENE, RECOLOR, 64)
    case = bench_cases.scene_case("c", SCENE, RECOLOR, 64)
    exact_latent = built.mask.reshape(16, 4, 16, 4).mean(axis=(1, 3))  # a latent-size mask
    row = runner.score(case, case.target, exact_latent)
    assert row["psnr"] == metrics.PSNR_CAP and row["bg_psnr"] == metrics.PSNR_CAP
    assert row["edit_success"] is True and row["mask_iou"] > 0.9
    failed = runner.score(case, case.source)
    assert failed["edit_success"] is False and failed["mask_iou"] is None
    assert failed["bg_psnr"] == metrics.PSNR_CAP and failed["psnr"] < 40


def test_learned_metrics_are_plumbed_with_pie_bench_conventions():
    calls = []

    def lpips(a, b):
        calls.append(("lpips", a.copy(), b.copy()))
        return 0.25

    def clip(pixels, text):
        calls.append(("clip", pixels.copy(), text))
        return 30.0

    mask = np.zeros((16, 16), dtype=bool)
    mask[4:8, 4:8] = True
    source = Image.new("RGB", (16, 16), (200, 100, 50))
    case = BenchCase("p", "change_color", source, "a cat", "a dog", mask=mask)
    row = runner.score(
        case, Image.new("RGB", (16, 16), (0, 0, 255)), None, {"lpips": lpips, "clip": clip}
    )
    assert row["lpips"] == 0.25 and row["clip_whole"] == 30.0 and row["clip_edited"] == 30.0
    _, out, src = calls[0]
    assert (out[mask] == 0).all() and (src[mask] == 0).all() and out[~mask].max() == 1.0
    assert calls[2][1][~mask].max() == 0 and calls[2][2] == "a dog"  # edited part only
    assert row["psnr"] is None and row["input_psnr"] is not None


# ------------------------------------------------------------------ case sources
def test_shapes_suite_is_balanced_deterministic_and_prefix_stable():
    specs = bench_cases.sample_specs(14, seed=3)
    kinds = [edit.kind for _, _, edit in specs]
    assert sorted(kinds) == sorted(EDIT_KINDS * 2)
    assert bench_cases.sample_specs(14, seed=3) == specs
    assert bench_cases.sample_specs(5, seed=3) == specs[:5]
    assert bench_cases.sample_specs(5, seed=4) != specs[:5]
    case = bench_cases.shapes_cases(1, seed=3, size=32)[0]
    assert case.source.size == (32, 32) and case.mask.shape == (32, 32)
    src, tgt = np.asarray(case.source), np.asarray(case.target)
    assert (src[~case.mask] == tgt[~case.mask]).all()
    assert case.hints["source_prompt"] == case.source_prompt


def test_shapes_detail_suite_adds_the_same_uncaptioned_detail_to_source_and_target():
    plain = bench_cases.load_cases("shapes", size=64, n=7, seed=2)
    detailed = bench_cases.load_cases("shapes-detail", size=64, n=7, seed=2)
    for a, b in zip(plain, detailed, strict=True):
        assert (a.id, a.source_prompt, a.target_prompt) == (b.id, b.source_prompt, b.target_prompt)
        assert (a.mask == b.mask).all()
        src, tgt = np.asarray(b.source), np.asarray(b.target)
        assert (src[~b.mask] == tgt[~b.mask]).all()  # the target stays exact
        assert np.abs(src.astype(int) - np.asarray(a.source)).max() > 5  # detail is visible
        assert read_scene(b.target) == b.target_scene  # and edit_success can read through it
    again = bench_cases.load_cases("shapes-detail", size=64, n=7, seed=2)
    assert all(
        np.array_equal(np.asarray(x.source), np.asarray(y.source))
        for x, y in zip(again, detailed, strict=True)
    )


def test_shapes_brief_suite_changes_only_the_prompts():
    full = bench_cases.load_cases("shapes", size=32, n=7, seed=2)
    brief = bench_cases.load_cases("shapes-brief", size=32, n=7, seed=2)
    for a, b in zip(full, brief, strict=True):
        assert np.array_equal(np.asarray(a.source), np.asarray(b.source))
        assert np.array_equal(np.asarray(a.target), np.asarray(b.target))
        assert b.target_scene == a.target_scene and (a.mask == b.mask).all()
        assert b.hints["source_prompt"] == b.source_prompt
        assert b.hints["subject"] in b.target_prompt.split()  # latent mixing can find it
        assert b.hints["change"] in b.target_prompt.split()  # and its keep=rest word
        assert b.target_prompt.count(" and ") == 0  # one object named
    assert sum(a.target_prompt != b.target_prompt for a, b in zip(full, brief, strict=True)) >= 4


def test_shapes_cases_of_chosen_kinds():
    cases = bench_cases.load_cases("shapes", size=32, n=5, seed=1, kinds=("background", "add"))
    assert [case.kind for case in cases] == ["background", "add", "background", "add", "background"]
    with pytest.raises(BenchDataError, match="unknown edit kind"):
        bench_cases.sample_specs(3, 0, ("recolour",))


def write(tmp_path, data, name="cases.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_case_file_round_trips(tmp_path):
    specs = bench_cases.sample_specs(7, seed=1)
    path = write(tmp_path, bench_cases.write_case_file(specs))
    assert bench_cases.read_case_file(path) == specs


GOOD = {"id": "a", "source": SCENE.to_dict(), "edit": RECOLOR.to_dict()}


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", "not valid JSON"),
        ({"id": "a"}, "non-empty JSON list"),
        ([], "non-empty JSON list"),
        (["x"], "case #0: expected an object"),
        ([{**GOOD, "colour": 1}], "case #0: unknown field 'colour'"),
        ([{**GOOD, "id": ""}], "case #0, field 'id'"),
        ([GOOD, GOOD], "case 'a', field 'id': duplicate"),
        ([{"id": "b", "edit": GOOD["edit"]}], "case 'b', field 'source': missing"),
        (
            [{**GOOD, "source": {"background": "plaid", "objects": []}}],
            "case 'a', field 'source': unknown background color 'plaid'",
        ),
        (
            [{**GOOD, "edit": {"kind": "recolor", "index": 5, "value": "green"}}],
            "case 'a', field 'edit': object index 5",
        ),
        ([{**GOOD, "edit": {"kind": "explode"}}], "case 'a', field 'edit': unknown edit kind"),
    ],
)
def test_malformed_case_files_name_the_case_and_field(tmp_path, data, message):
    with pytest.raises(BenchDataError, match=message.replace("(", r"\(")) as error:
        bench_cases.read_case_file(write(tmp_path, data))
    assert "\n" not in str(error.value)


def pie_fixture(tmp_path):
    folder = tmp_path / "pie"
    (folder / "annotation_images" / "1_change_object").mkdir(parents=True)
    Image.new("RGB", (16, 16), (10, 200, 30)).save(
        folder / "annotation_images" / "1_change_object" / "000.png"
    )
    mapping = {
        "000": {
            "image_path": "1_change_object/000.png",
            "original_prompt": "a [cat] on grass",
            "editing_prompt": "a [dog] on grass",
            "editing_instruction": "make it a dog",
            "editing_type_id": "1",
            "blended_word": "cat dog",
            "mask": [68, 4, 84, 4],
        }
    }
    (folder / "mapping_file.json").write_text(json.dumps(mapping))
    return folder


def test_piebench_loader(tmp_path):
    (case,) = bench_cases.load_piebench(pie_fixture(tmp_path))
    assert case.kind == "change_object" and case.source.size == (16, 16)
    assert case.source_prompt == "a cat on grass" and case.target_prompt == "a dog on grass"
    assert case.hints["words"] == "dog" and case.target is None
    assert case.mask[0].all() and case.mask[4, 4:8].all() and not case.mask[8, 8]


def test_piebench_loader_errors(tmp_path):
    with pytest.raises(BenchDataError, match="needs --data"):
        bench_cases.load_piebench(None)
    with pytest.raises(BenchDataError, match="data folder not found"):
        bench_cases.load_piebench(tmp_path / "nowhere")
    folder = pie_fixture(tmp_path)
    mapping = json.loads((folder / "mapping_file.json").read_text())
    del mapping["000"]["editing_prompt"]
    (folder / "mapping_file.json").write_text(json.dumps(mapping))
    with pytest.raises(BenchDataError, match="case '000', field 'editing_prompt'"):
        bench_cases.load_piebench(folder)


def test_tedbench_loader(tmp_path):
    folder = tmp_path / "ted"
    (folder / "originals").mkdir(parents=True)
    Image.new("RGB", (20, 12), (1, 2, 3)).save(folder / "originals" / "bird.png")
    entries = [{"img_name": "bird.png", "target_text": "a photo of a bird spreading wings"}]
    (folder / "input_list.json").write_text(json.dumps(entries))
    (case,) = bench_cases.load_tedbench(folder)
    assert case.target_prompt.endswith("wings") and case.mask is None and case.kind == "tedbench"
    (folder / "input_list.json").write_text(
        json.dumps([{"img_name": "gone.png", "target_text": "x"}])
    )
    with pytest.raises(BenchDataError, match="'gone.png', field 'img_name'"):
        bench_cases.load_tedbench(folder)


# ------------------------------------------------------------------ methods and params
def test_params_are_typed_and_validated():
    params = runner.parse_params(
        ["laspa-x0.K=300", "laspa-x0.beta=0.5", "peer-sdedit.strength=0.6"],
        ["laspa-x0", "peer-sdedit"],
    )
    assert params == {"laspa-x0": {"K": 300, "beta": 0.5}, "peer-sdedit": {"strength": 0.6}}
    specs = runner.make_specs(["laspa-x0", "peer-sdedit"], params, steps=7)
    assert specs["laspa-x0"].build(specs["laspa-x0"].params()).K == 300
    assert specs["peer-sdedit"].build(specs["peer-sdedit"].params()).steps == 7
    for items, message in [
        (["laspa-x0.K"], "METHOD.NAME=VALUE"),
        (["sdedit.strength=0.5"], "does not use"),
        (["laspa-x0.zeta=1"], "does not take zeta"),
        (["laspa-x0.K=1.5"], "must be an integer"),
    ]:
        with pytest.raises(ParameterError, match=message):
            runner.parse_params(items, ["laspa-x0"])
    with pytest.raises(ParameterError, match="beta must be in"):
        runner.make_specs(["laspa-x0"], {"laspa-x0": {"beta": 2.0}}, steps=5)
    with pytest.raises(ParameterError, match="unknown method 'nope'"):
        runner.parse_methods("laspa-x0,nope")
    with pytest.raises(ParameterError, match="METHOD@LABEL"):
        runner.parse_methods("laspa-x0@")


def test_labelled_rows_run_one_method_with_different_params():
    names = runner.parse_methods("laspa-x0,laspa-x0@linear")
    params = runner.parse_params(["laspa-x0@linear.beta_schedule=linear"], names)
    specs = runner.make_specs(names, params, steps=4)
    assert specs["laspa-x0@linear"].method == "laspa-x0"
    built = specs["laspa-x0@linear"].build(specs["laspa-x0@linear"].params())
    assert built.beta_schedule == "linear"
    with pytest.raises(ParameterError, match="does not take strength"):
        runner.parse_params(["laspa-x0@linear.strength=0.5"], names)


def test_case_hints_fill_only_parameters_a_method_takes():
    case_hints = {"source_prompt": "a red circle", "subject": "circle"}
    assert "source_prompt" not in runner.MethodSpec("laspa-x0").params(case_hints)
    assert runner.MethodSpec("ddim-inversion").params(case_hints)["source_prompt"] == "a red circle"
    assert runner.MethodSpec("laspa-mix").params(case_hints)["subject"] == "circle"
    # FPE's source_prompt means generated-image mode (no inversion): a case must not set it
    fpe = runner.MethodSpec("fpe")
    assert fpe.params(case_hints) == {} and fpe.effective(case_hints)["source_prompt"] == ""
    user = runner.MethodSpec("peer-diffedit", {"source_prompt": "mine"})
    assert user.params(case_hints)["source_prompt"] == "mine"


def test_results_are_deterministic(editor):
    case = bench_cases.shapes_cases(1, seed=0, size=editor.resolution)[0]
    specs = runner.make_specs(["laspa-x0", "sdedit"], {}, steps=3)

    def scores():
        result = runner.run_bench(editor, [case], specs, suite="shapes", seed=0, steps=3)
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in result.records]

    assert scores() == scores()


# ------------------------------------------------------------------ the command


def test_bench_smoke_run(capsys, tiny_model_dir, tmp_path):
    out, plots = tmp_path / "out.json", tmp_path / "plots"
    code, stdout, stderr = run_cli(
        capsys, "bench", "--model", tiny_model_dir, "--cases", 2, "--steps", 3, "--seed", 5,
        "--methods", "laspa-x0,sdedit,peer-sdedit,peer-diffedit", "--param", "laspa-x0.K=300",
        "--json", out, "--plots", plots, "--sweep", "--sweep-methods", "laspa-x0,sdedit",
        "--sweep-K", "0,500", "--sweep-beta", "0.5", "--sweep-strength", "0.5,0.9",
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(out.read_text())
    # shapes-brief, the suite of record, is the default
    assert (data["suite"], data["cases"], data["seed"], data["steps"]) == ("shapes-brief", 2, 5, 3)
    names = ["laspa-x0", "sdedit", "peer-sdedit", "peer-diffedit", "generate"]
    assert list(data["methods"]) == names
    for name, entry in data["methods"].items():
        for key in ("params", "psnr", "ssim", "bg_psnr", "bg_ssim", "edit_success", "mask_iou",
                    "seconds_per_edit", "unet_evals", "ratio_to_generate", "by_type"):  # fmt: skip
            assert key in entry, (name, key)
        assert set(entry["by_type"]) == {"recolor", "reshape"}
    assert data["methods"]["laspa-x0"]["params"]["K"] == 300
    assert data["methods"]["laspa-x0"]["mask_iou"] is None
    assert 0 <= data["methods"]["peer-diffedit"]["mask_iou"] <= 1
    assert data["methods"]["generate"]["ratio_to_generate"] == pytest.approx(1.0)
    assert data["methods"]["laspa-x0"]["unet_evals"] == 6  # 3 steps x CFG
    assert data["vae_ceiling_psnr"] > 0
    # handed the same latent and seed, diffusers' img2img is our sdedit to the byte
    assert data["checks"]["sdedit_vs_peer_sdedit"]["same_latent_min_psnr"] == metrics.PSNR_CAP
    assert [p["value"] for p in data["sweeps"]["laspa-x0"]["K"]] == [0, 500]
    assert [p["value"] for p in data["sweeps"]["sdedit"]["strength"]] == [0.5, 0.9]
    for figure in ("tradeoff.png", "samples.png"):
        assert (plots / figure).stat().st_size > 0
    assert "laspa-x0" in stdout and "peer-diffedit" in stdout and "VAE ceiling" in stdout
    assert "sdedit vs peer-sdedit" in stdout


def test_diffedit_is_compared_with_diffusers_diffedit(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "diffedit.json"
    code, stdout, stderr = run_cli(
        capsys, "bench", "--model", tiny_model_dir, "--cases", 2, "--steps", 4,
        "--methods", "diffedit,diffedit@paper,peer-diffedit", "--param",
        "diffedit@paper.blend=paper", "--json", out, "-q",
    )  # fmt: skip
    assert code == 0, stderr
    check = json.loads(out.read_text())["checks"]["diffedit_vs_peer_diffedit"]
    assert set(check["rows"]) == {"diffedit", "diffedit@paper"}
    ours, peer = check["rows"]["diffedit"], check["peer"]
    # at its defaults our diffedit draws what diffusers' pipeline draws: the same masks
    assert ours["mask_iou_vs_peer"] == ours["min_mask_iou_vs_peer"] == 1.0
    assert ours["mask_iou"] == peer["mask_iou"] and ours["same_params"]
    assert ours["bg_psnr"] == pytest.approx(peer["bg_psnr"], abs=0.05)
    assert ours["unet_evals"] < peer["unet_evals"]  # the mask's conditional rows only
    assert check["rows"]["diffedit@paper"]["blend"] == "paper"
    assert "diffedit vs peer-diffedit (same options; blend diffusers" in stdout


def test_a_peer_the_installed_diffusers_lacks_is_skipped_with_a_note(
    capsys, tiny_model_dir, tmp_path, monkeypatch
):
    from laspa.bench.peers import DiffEditPeer

    monkeypatch.setattr(DiffEditPeer, "unavailable", classmethod(lambda cls: "not shipped"))
    out = tmp_path / "skip.json"
    code, stdout, stderr = run_cli(
        capsys, "bench", "--model", tiny_model_dir, "--cases", 1, "--steps", 4,
        "--methods", "diffedit,peer-diffedit", "--json", out, "-q",
    )  # fmt: skip
    assert code == 0, stderr
    assert "laspa bench: skipped peer-diffedit: not shipped" in stderr
    data = json.loads(out.read_text())
    assert data["skipped"] == {"peer-diffedit": "not shipped"}
    assert list(data["methods"]) == ["diffedit", "generate"] and not data["checks"]


def test_bench_on_a_piebench_fixture_says_what_it_skipped(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "pie.json"
    code, stdout, stderr = run_cli(
        capsys, "bench", "--suite", "piebench", "--data", pie_fixture(tmp_path),
        "--model", tiny_model_dir, "--methods", "laspa-x0", "--steps", 2, "--json", out, "-q",
    )  # fmt: skip
    assert code == 0, stderr
    assert "skipped lpips:" in stderr and "skipped clip:" in stderr
    data = json.loads(out.read_text())
    entry = data["methods"]["laspa-x0"]
    assert entry["bg_psnr"] is not None and entry["bg_mse"] is not None
    assert entry["psnr"] is None and entry["edit_success"] is None
    assert set(data["skipped"]) == {"lpips", "clip"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "laspa-x0,warp"], "unknown method 'warp'"),
        (["--param", "laspa-x0.K=abc"], "must be an integer"),
        (["--suite", "imagenet"], "unknown suite"),
        (["--suite", "piebench"], "needs --data"),
        (["--json", "/nonexistent/dir/out.json"], "output directory does not exist"),
        (["--sweep", "--sweep-methods", "peer-sdedit"], "engine methods only"),
        (["--sweep", "--sweep-K", "1,x"], "--sweep-K must be numbers"),
        (["--steps", 0], "--steps must be >= 1"),
        (["--kinds", "recolor,melt"], "unknown edit kind 'melt'"),
        (["--kinds", "recolor", "--suite", "tedbench", "--data", "."], "--kinds is for the"),
    ],
)
def test_bench_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, _, stderr = run_cli(capsys, "bench", "--model", tmp_path / "no-model", *args)
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1, stderr


def test_bench_malformed_cases_file_fails_before_loading_a_model(capsys, tmp_path):
    path = write(tmp_path, [{**GOOD, "edit": {"kind": "recolor", "index": 0, "value": "red"}}])
    code, _, stderr = run_cli(capsys, "bench", "--cases-file", path, "--model", tmp_path / "none")
    assert code == 2 and "case 'a', field 'edit': recolor is a no-op" in stderr
    code, _, stderr = run_cli(capsys, "bench", "--cases-file", path, "--json", path)
    assert code == 2 and "overwrite the cases file" in stderr


def _bench_targets():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "bench_targets.py"
    spec = importlib.util.spec_from_file_location("bench_targets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_targets_verdicts():
    targets = _bench_targets()
    assert targets.dominated((0.5, 30.0), [(0.5, 30.0)])  # a tie counts as dominated
    assert not targets.dominated((0.5, 30.1), [(0.6, 30.0)])
    confirmed = {"laspa-input": 5.0, "laspa-eps": 5.5, "laspa-x0": 6.0}
    assert targets.best_trade_off(confirmed).startswith("[CONFIRMED]")
    tied = {"laspa-input": 5.0, "laspa-eps": 6.1100001, "laspa-x0": 6.11}
    assert targets.best_trade_off(tied).startswith("[TIED]")
    assert targets.best_trade_off({"laspa-input": 7.0, "laspa-x0": 6.0}).startswith("[REFUTED]")


def test_per_type_tables_list_only_the_methods_that_measured_the_metric():
    from laspa.bench.report import type_table

    methods = {
        "laspa-x0": {"by_type": {"recolor": {"edit_success": 1.0, "mask_iou": None}}},
        "instdiffedit": {"by_type": {"recolor": {"edit_success": 0.5, "mask_iou": 0.25}}},
    }
    table = type_table(methods, "mask_iou", "{:.3f}")
    assert "instdiffedit" in table and "0.250" in table and "laspa-x0" not in table
    assert "laspa-x0" in type_table(methods, "edit_success", "{:.2f}")
    methods["instdiffedit"]["by_type"]["recolor"]["mask_iou"] = None
    assert type_table(methods, "mask_iou", "{:.3f}") is None


def test_json_replaces_only_an_empty_file_or_an_earlier_report(tmp_path):
    """--json may replace what it wrote before, never someone's file (issue #30)."""
    from laspa.bench.cli import check_outputs
    from laspa.errors import OutputError

    report = tmp_path / "report.json"
    report.write_text(json.dumps({"suite": "shapes", "methods": {}, "per_case": []}))
    clips = tmp_path / "clips.json"
    clips.write_text(json.dumps({"rows": [], "summary": {}}))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    for path in (report, clips, empty, tmp_path / "new.json"):
        check_outputs(path, None, None, None)
    for name, data in [("in.png", b"\x89PNG\r\n\x1a\n..."), ("job.jsonl", b'{"image": "a.png"}\n'),
                       ("other.json", b'{"a": 1}')]:  # fmt: skip
        (tmp_path / name).write_bytes(data)
        with pytest.raises(OutputError, match="is not a JSON report of laspa bench"):
            check_outputs(tmp_path / name, None, None, None)
        assert (tmp_path / name).read_bytes() == data
