"""Behaviour of the editing methods on the bundled miniature model (trained, real weights)."""

import numpy as np
import pytest

from laspa import Editor
from laspa.images import to_pil, to_tensor
from laspa.world import render, sample_scene

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mini():
    return Editor.mini(device="cpu")


def psnr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((a - b) ** 2)))


@pytest.mark.parametrize("method", ["laspa-x0", "laspa-eps"])
def test_beta_one_everywhere_reproduces_the_input_as_well_as_the_vae(mini, method):
    """beta = 1 from K = 0: the output is the input's latent up to the last DDIM step's
    sqrt(1 - a_final) noise term, so its PSNR is the VAE's own within 0.3 dB."""
    rng = np.random.default_rng(5)
    gaps = []
    for _ in range(4):
        image = render(sample_scene(rng), mini.resolution)
        reconstruction = to_pil(mini.decode(mini.encode(to_tensor(image, image.size))))[0]
        result = mini.edit(image, "a large red circle in the center on a gray background",
                           method=method, K=0, beta=1.0, steps=20)  # fmt: skip
        gaps.append(psnr(reconstruction, image) - psnr(result.image, image))
    assert np.mean(gaps) <= 0.3, gaps


def test_a_shape_words_attention_map_covers_its_object(mini):
    """The paper's claim that one aligned pass yields maps that segment the input, on the
    miniature (attention-supervised): measured IoU 0.45 over 40 objects, chance 0.0
    (benchmarks/attention_iou.py); the bar here is 0.3 on 8 objects, chance < 0.05."""
    from PIL import Image

    from laspa.world import footprint
    from laspa.world.scene import caption

    rng = np.random.default_rng(7)
    hits, misses = [], []
    while len(hits) < 8:
        scene = sample_scene(rng, 2)
        if scene.objects[0].shape == scene.objects[1].shape:
            continue
        image = render(scene, size=mini.resolution)
        maps = mini.attention_maps(
            image, caption(scene), [o.shape for o in scene.objects], steps=10
        )
        for obj in scene.objects:
            heat = Image.fromarray((maps[obj.shape] * 255).astype(np.uint8))
            mask = np.asarray(heat.resize(image.size, Image.BILINEAR)) > 127
            elsewhere = obj.replace(cell=str(rng.choice(scene.free_cells)))
            for footprint_of, scores in ((obj, hits), (elsewhere, misses)):
                exact = footprint(footprint_of, image.size[0])
                scores.append((mask & exact).sum() / max((mask | exact).sum(), 1))
    assert np.mean(hits) >= 0.3, hits
    assert np.mean(misses) < 0.05, misses


def test_instdiffedits_mask_of_a_recolour_covers_the_object(mini):
    """On 8 brief recolours (target text only, as InstDiffEdit reads it) the mask covers
    on average 0.75 of the recoloured object while it covers 0.19 of the image (measured,
    default options, 25 steps); the bars are 0.6 coverage, at least 3x the mask's own
    share of the image (what a mask placed at random would cover), and 5 of 8 objects
    covered to 0.8."""
    from laspa.bench.cases import load_cases
    from laspa.bench.metrics import upsample_mask

    cases = load_cases("shapes-brief", size=mini.resolution, n=8, seed=0, kinds=["recolor"])
    coverage, share = [], []
    for index, case in enumerate(cases):
        result = mini.edit(case.source, case.target_prompt, method="instdiffedit",
                           seed=index, steps=25)  # fmt: skip
        mask = upsample_mask(result.mask[0].numpy(), case.mask.shape) > 0.5
        coverage.append((mask & case.mask).sum() / case.mask.sum())
        share.append(mask.mean())
    assert np.mean(coverage) >= 0.6, coverage
    assert np.mean(coverage) >= 3 * np.mean(share), (coverage, share)
    assert sum(c >= 0.8 for c in coverage) >= 5, coverage


def test_snapping_instdiffedits_mask_to_self_attention_sharpens_it(mini):
    """On the same 8 brief recolours, ``smoothing="snap"`` gives a mask IoU of 0.485
    against 0.312 for the released blur (measured, 25 steps, with the released blur
    kernel and word split), better in 7 cases of 8; the bars are 0.45, 1.4x the blur's,
    and 5 of 8 better."""
    from laspa.bench.cases import load_cases
    from laspa.bench.metrics import mask_iou

    cases = load_cases("shapes-brief", size=mini.resolution, n=8, seed=0, kinds=["recolor"])
    ious = {"blur": [], "snap": []}
    for index, case in enumerate(cases):
        for smoothing in ious:
            result = mini.edit(case.source, case.target_prompt, method="instdiffedit",
                               seed=index, steps=25, smoothing=smoothing)  # fmt: skip
            ious[smoothing].append(mask_iou(result.mask[0].numpy(), case.mask))
    blur, snap = np.array(ious["blur"]), np.array(ious["snap"])
    assert snap.mean() >= 0.45 and snap.mean() >= 1.4 * blur.mean(), (snap, blur)
    assert (snap > blur).sum() >= 5, (snap, blur)
