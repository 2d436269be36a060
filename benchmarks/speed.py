"""Speed of every method against plain text-to-image generation, measured side by side.

For each round, every method edits the same image once, in an interleaved order, so slow
drifts of the machine hit all methods alike; the figure per method is the median over
rounds. Two generation references are timed in the same rounds:

- ``generate``: diffusers' own StableDiffusionPipeline, text to image, same model, steps,
  guidance and size (what "one text-to-image generation" means to a user);
- ``loop-generate``: laspa's ``generate`` method (the same loop the edits use).

Prints one JSON line per method with ``seconds`` (median per edit), ``unet_evals`` and
``ratio_to_generate`` (``fpe-warm-cache``: a second FPE edit of the same image, whose
inversion is cached; InstDiffEdit rows also carry ``ratio_to_peer_diffedit``, against
diffusers' DiffEdit pipeline timed in the same rounds), then one line per batch size with
the per-edit seconds of ``laspa-x0`` when 1, 4 and 8 edits of one image share a batch.

    python benchmarks/speed.py                       # bundled miniature (tiny random if missing)
    python benchmarks/speed.py --model tiny --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image

METHOD_PARAMS = {
    "laspa-x0": {},
    "laspa-input": {},
    "laspa-eps": {},
    "laspa-mix": {"subject": None},  # the edited object's shape word
    "sdedit": {},
    "ddim-inversion": {},
    "instdiffedit": {},  # final pass "loop", B = 3 seeds
    "instdiffedit-inpaint": {"final_pass": "inpaint"},  # the released code's second pass
    "instdiffedit-b1": {"noise_seeds": 1},  # one seed: the cheapest mask loop
    "instdiffedit-snap": {"smoothing": "snap"},  # masks along self-attention
    "instdiffedit-spread": {"smoothing": "spread"},
    "fpe": {},
    "peer-diffedit": {},  # diffusers' DiffEdit pipeline (needs a model folder)
}
#: rows that run InstDiffEdit with other parameters
VARIANT_OF = {name: "instdiffedit" for name in METHOD_PARAMS if name.startswith("instdiffedit-")}


def load(model: str):
    from laspa import Editor, ModelError
    from laspa.testing import save_tiny_model

    if model == "tiny":
        import tempfile

        folder = save_tiny_model(tempfile.mkdtemp(prefix="laspa-speed-") + "/tiny")
        return Editor.from_pretrained(folder), "tiny random"
    if model == "mini":
        try:
            return Editor.mini(), "bundled miniature"
        except ModelError:
            return load("tiny")
    return Editor.from_pretrained(model), model


def diffusers_generate(editor, prompt: str, steps: int, guidance: float, size):
    """Text-to-image with diffusers' pipeline on the editor's own components."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=editor.vae, text_encoder=editor.text_encoder, tokenizer=editor.tokenizer,
        unet=editor.unet, scheduler=editor.scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)

    def run(seed: int) -> float:
        start = time.perf_counter()
        pipe(
            prompt, height=size[1], width=size[0], num_inference_steps=steps,
            guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini", help="mini, tiny, or a model folder/hub id")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default=",".join(METHOD_PARAMS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from laspa.cli import quiet_libraries

    quiet_libraries()
    editor, name = load(args.model)
    from laspa.world import apply_edit, render, sample_edit, sample_scene

    rng = np.random.default_rng(0)
    scene = sample_scene(rng, 2)
    case = apply_edit(scene, sample_edit(rng, scene, kind="recolor"))
    image: Image.Image = render(scene, size=editor.resolution)
    prompt = case.target_caption
    METHOD_PARAMS["laspa-mix"]["subject"] = case.target.objects[case.edit.index].shape
    common = {"steps": args.steps, "guidance": args.guidance}
    methods = [m for m in args.methods.split(",") if m]
    generate = diffusers_generate(editor, prompt, args.steps, args.guidance, image.size)

    diffedit = None
    if "peer-diffedit" in methods:
        from laspa.bench.peers import make_peer_params
        from laspa.bench.runner import Runner

        if editor.source is None:  # the tiny random model lives in memory only
            methods.remove("peer-diffedit")
        else:
            diffedit = Runner(editor).peer("peer-diffedit")
            diffedit_params = make_peer_params(
                "peer-diffedit", {**common, "source_prompt": case.source_caption}
            )
    timed = ["generate", "loop-generate", *methods]
    if "fpe" in methods:  # the second edit of an image reuses its cached inversion
        timed.insert(timed.index("fpe") + 1, "fpe-warm-cache")
    timings: dict[str, list[float]] = {m: [] for m in timed}
    evals: dict[str, float] = {"generate": 2 * args.steps}
    generate(0)  # warm-up: first calls pay for allocations
    editor.edit(image, prompt, method="laspa-x0", **common)
    if diffedit is not None:
        diffedit.run(image, prompt, 0, diffedit_params)
    for round_index in range(args.rounds):
        order = [m for m in timed if m != "fpe-warm-cache"]
        if round_index % 2:
            order.reverse()
        for method in order:
            if method == "generate":
                timings[method].append(generate(round_index))
                continue
            if method == "peer-diffedit":
                output = diffedit.run(image, prompt, round_index, diffedit_params)
                timings[method].append(output.seconds)
                evals[method] = output.unet_evals
                continue
            params = dict(METHOD_PARAMS.get(method, {}), **common)
            method_name = "generate" if method == "loop-generate" else method
            method_name = VARIANT_OF.get(method_name, method_name)
            editor.clear_inversion_cache()  # every FPE / inversion edit pays its inversion
            result = editor.edit(image, prompt, method=method_name, seed=round_index, **params)
            timings[method].append(result.seconds)
            evals[method] = result.unet_evals
            if method == "fpe":
                warm = editor.edit(image, prompt, method="fpe", seed=round_index, **params)
                timings["fpe-warm-cache"].append(warm.seconds)
                evals["fpe-warm-cache"] = warm.unet_evals

    reference = statistics.median(timings["generate"])
    medians = {method: statistics.median(values) for method, values in timings.items()}
    for method, seconds in medians.items():
        row = {
            "method": method, "model": name, "steps": args.steps, "threads": args.threads,
            "seconds": round(seconds, 4), "unet_evals": evals[method],
            "ratio_to_generate": round(seconds / reference, 3),
        }  # fmt: skip
        if method.startswith("instdiffedit") and "peer-diffedit" in medians:
            row["ratio_to_peer_diffedit"] = round(seconds / medians["peer-diffedit"], 3)
        print(json.dumps(row))

    per_edit = {}
    for batch in (1, 4, 8):
        variants = [{"prompt": prompt, "seed": s, **common} for s in range(batch)]
        samples = []
        for _ in range(max(1, args.rounds // 2)):
            start = time.perf_counter()
            editor.edit_many(image, variants, method="laspa-x0")
            samples.append((time.perf_counter() - start) / batch)
        per_edit[batch] = statistics.median(samples)
    for batch, seconds in per_edit.items():
        print(json.dumps({
            "method": "laspa-x0", "batch": batch, "seconds_per_edit": round(seconds, 4),
            "speedup_vs_batch_1": round(per_edit[1] / seconds, 2),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
