"""Speed of every method against plain text-to-image generation, measured side by side.

For each round, every method edits the same image once, in an interleaved order, so slow
drifts of the machine hit all methods alike; the figure per method is the median over
rounds. Several thread counts (``--threads 1,2``) share the rounds the same way, each
round visiting them in turn. Two generation references are timed in the same rounds:

- ``generate``: diffusers' own StableDiffusionPipeline with its own attention processor
  (AttnProcessor2_0), text to image, same model, steps, guidance and size (what "one
  text-to-image generation" means to a user);
- ``loop-generate``: laspa's ``generate`` method (the same loop the edits use).

``-beta1`` rows run an alignment at beta 1: the steps while t > K discard the UNet's
output, so the loop skips it there (fewer ``unet_evals``).

Prints one JSON line per method with ``seconds`` (median per edit), ``unet_evals`` and
``ratio_to_generate`` (``fpe-warm-cache``: a second FPE edit of the same image, whose
inversion is cached; InstDiffEdit and DiffEdit rows also carry ``ratio_to_peer_diffedit``, against
diffusers' DiffEdit pipeline timed in the same rounds), then one line per batch size with
the per-edit seconds of ``laspa-x0`` when 1, 4 and 8 edits of one image share a batch.

``--few-step mini-lcm`` adds rows ``METHOD@mini-lcm-N``: each of ``--few-step-methods``
(default laspa-x0) on that few-step model at each of ``--few-step-steps`` (default 2,4,8),
timed in the same rounds, each with its ratio to ``laspa-x0`` on the main model
(``--steps``) and to ``peer-diffedit``; ``--few-step-set`` gives those rows' options
(default: none, the methods' own few-step defaults).

    python benchmarks/speed.py                       # bundled miniature (tiny random if missing)
    python benchmarks/speed.py --threads 1,2 --methods laspa-x0,laspa-input,laspa-eps
    python benchmarks/speed.py --model tiny --rounds 3
    python benchmarks/speed.py --steps 25 --methods laspa-x0,peer-diffedit --few-step mini-lcm

Without ``--threads``, the thread count is torch's own, the commands' default
(laspa.threads: one per core, or OMP_NUM_THREADS / MKL_NUM_THREADS when set).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

METHOD_PARAMS = {
    "laspa-x0": {},
    "laspa-input": {},
    "laspa-eps": {},
    "laspa-x0-beta1": {"beta": 1.0},  # UNet output discarded while t > K: skipped
    "laspa-input-beta1": {"beta": 1.0},
    "laspa-eps-beta1": {"beta": 1.0},
    "laspa-mix": {"subject": None},  # the edited object's shape word
    "laspa-local": {},  # mask-aware LASPA: the region from the same pass's attention
    "laspa-local-half": {"region_steps": 0.5},  # the region kept after half the steps
    # with the scene's source caption: the changed words' maps join the region
    "laspa-local-source": {"source_prompt": None},
    "sdedit": {},
    "ddim-inversion": {},
    "instdiffedit": {},  # final pass "loop", B = 3 seeds
    "instdiffedit-inpaint": {"final_pass": "inpaint"},  # the released code's second pass
    "instdiffedit-b1": {"noise_seeds": 1},  # one seed: the cheapest mask loop
    "instdiffedit-snap": {"smoothing": "snap"},  # masks along self-attention
    "instdiffedit-spread": {"smoothing": "spread"},
    "fpe": {},
    "diffedit": {"source_prompt": None},  # our DiffEdit; the scene's source caption
    "peer-diffedit": {},  # diffusers' DiffEdit pipeline (needs a model folder)
    "flowedit": {"source_prompt": None},  # flow models; its published guidance pair
}
#: rows that run a method with other parameters
VARIANT_OF = {name: "instdiffedit" for name in METHOD_PARAMS if name.startswith("instdiffedit-")}
VARIANT_OF.update({name: name.removesuffix("-beta1") for name in METHOD_PARAMS if "-beta1" in name})
VARIANT_OF["laspa-local-half"] = VARIANT_OF["laspa-local-source"] = "laspa-local"


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
    from laspa.mini import MODEL_NAMES

    if model in MODEL_NAMES:
        return Editor.mini(MODEL_NAMES[model]), model
    return Editor.from_pretrained(model), model


def default_processor(unet):
    """diffusers' own attention processor for a UNet, an SD3 or a FLUX transformer."""
    from diffusers.models.attention_processor import AttnProcessor2_0, JointAttnProcessor2_0

    name = type(unet).__name__
    if name.startswith("Flux"):
        from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

        return FluxAttnProcessor()
    return JointAttnProcessor2_0() if name.startswith("SD3") else AttnProcessor2_0()


@contextmanager
def diffusers_attention(unet):
    """The UNet (or transformer) with diffusers' own attention processor, laspa's
    restored after."""
    laspa_processors = unet.attn_processors
    unet.set_attn_processor(default_processor(unet))
    try:
        yield
    finally:
        unet.set_attn_processor(laspa_processors)


def diffusers_generate(editor, prompt: str, steps: int, guidance: float, size):
    """Text-to-image with diffusers' pipeline on the editor's own components and diffusers'
    own attention processor (swapped in outside the timed call): StableDiffusionPipeline,
    or the flow checkpoint's own pipeline (SD3, FLUX) with the editor's modules."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    from laspa.engine import is_flow_denoiser

    if is_flow_denoiser(editor.unet):
        t5 = getattr(editor, "text_encoder_3", None)
        extra = {} if t5 is not None or "Flux" in type(editor.unet).__name__ else {
            "text_encoder_3": None, "tokenizer_3": None}  # fmt: skip
        pipe = DiffusionPipeline.from_pretrained(
            editor.source, transformer=editor.unet, vae=editor.vae,
            text_encoder=editor.text_encoder, text_encoder_2=editor.text_encoder_2, **extra,
        )  # fmt: skip
    else:
        pipe = StableDiffusionPipeline(
            vae=editor.vae, text_encoder=editor.text_encoder, tokenizer=editor.tokenizer,
            unet=editor.unet, scheduler=editor.scheduler, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)

    def run(seed: int) -> float:
        with diffusers_attention(editor.unet):
            start = time.perf_counter()
            pipe(
                prompt, height=size[1], width=size[0], num_inference_steps=steps,
                guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
            )  # fmt: skip
            return time.perf_counter() - start

    return run


def thread_counts(text: str | None, unet) -> list[int]:
    """``--threads 1,2`` as a list; without it, torch's own count (the commands' default)."""
    from laspa.threads import apply_threads

    if text is None:
        return [apply_threads(None)]
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit(f"--threads takes thread counts >= 1, e.g. 1,2; got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini", help="mini, tiny, or a model folder/hub id")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", default=None, help="thread counts, e.g. 1,2 (default: torch's own)"
    )
    parser.add_argument("--methods", default=",".join(METHOD_PARAMS))
    parser.add_argument("--batches", default="1,4,8", help="edit_many sizes timed ('' for none)")
    parser.add_argument("--few-step", default=None, help="a few-step model, e.g. mini-lcm")
    parser.add_argument("--few-step-steps", default="2,4,8", help="its step counts")
    parser.add_argument(
        "--few-step-methods", default="laspa-x0", help="methods timed on it, comma-separated"
    )
    parser.add_argument(
        "--few-step-set", default="",
        help="the few-step method's options, NAME=VALUE,... (default: its own defaults)",
    )  # fmt: skip
    args = parser.parse_args()

    from laspa.cli import method_options
    from laspa.loading import quiet_libraries

    quiet_libraries()
    editor, name = load(args.model)
    counts = thread_counts(args.threads, editor.unet)
    from laspa.world import apply_edit, render, sample_edit, sample_scene

    rng = np.random.default_rng(0)
    scene = sample_scene(rng, 2)
    case = apply_edit(scene, sample_edit(rng, scene, kind="recolor"))
    image: Image.Image = render(scene, size=editor.resolution)
    prompt = case.target_caption
    METHOD_PARAMS["laspa-mix"]["subject"] = case.target.objects[case.edit.index].shape
    METHOD_PARAMS["diffedit"]["source_prompt"] = case.source_caption
    METHOD_PARAMS["flowedit"]["source_prompt"] = case.source_caption
    METHOD_PARAMS["laspa-local-source"]["source_prompt"] = case.source_caption
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
    few_step_rows = {}
    if args.few_step:
        few_editor, few_name = load(args.few_step)
        settings = [kv for kv in args.few_step_set.split(",") if kv.strip()]
        for few_method in (m for m in args.few_step_methods.split(",") if m.strip()):
            few_options = method_options(few_method, {}, settings)
            for count in (int(s) for s in args.few_step_steps.split(",") if s.strip()):
                row = (few_editor, count, few_method, few_options)
                few_step_rows[f"{few_method}@{args.few_step}-{count}"] = row
        methods += list(few_step_rows)
    timed = ["generate", "loop-generate", *methods]
    if "fpe" in methods:  # the second edit of an image reuses its cached inversion
        timed.insert(timed.index("fpe") + 1, "fpe-warm-cache")
    timings: dict[tuple[int, str], list[float]] = {(n, m): [] for n in counts for m in timed}
    evals: dict[str, float] = {"generate": 2 * args.steps}
    for threads in counts:  # warm-up: first calls pay for allocations
        torch.set_num_threads(threads)
        generate(0)
        editor.edit(image, prompt, method="laspa-x0", **common)
        if diffedit is not None:
            diffedit.run(image, prompt, 0, diffedit_params)
        for few_editor, count, few_method, few_options in few_step_rows.values():
            few_editor.edit(image, prompt, method=few_method, steps=count, **few_options)
    for round_index in range(args.rounds):
        order = [m for m in timed if m != "fpe-warm-cache"]
        thread_order = list(counts)
        if round_index % 2:
            order.reverse()
            thread_order.reverse()
        for threads in thread_order:
            torch.set_num_threads(threads)
            for method in order:
                if method in few_step_rows:
                    few_editor, count, few_method, few_options = few_step_rows[method]
                    result = few_editor.edit(
                        image, prompt, method=few_method, seed=round_index, steps=count,
                        **few_options,
                    )  # fmt: skip
                    evals[method] = result.unet_evals
                    timings[threads, method].append(result.seconds)
                    continue
                seconds = time_method(
                    method, editor, image, prompt, round_index, common, evals,
                    generate, diffedit, diffedit and diffedit_params,
                )  # fmt: skip
                for timed_name, value in seconds.items():
                    timings[threads, timed_name].append(value)

    for threads in counts:
        medians = {m: statistics.median(timings[threads, m]) for m in timed}
        reference = medians["generate"]
        for method, seconds in medians.items():
            row = {
                "method": method, "model": name, "steps": args.steps, "threads": threads,
                "seconds": round(seconds, 4), "unet_evals": evals[method],
                "ratio_to_generate": round(seconds / reference, 3),
            }  # fmt: skip
            if method in few_step_rows:
                row.update(model=args.few_step, steps=few_step_rows[method][1])
                if "laspa-x0" in medians:
                    row["ratio_to_laspa_x0"] = round(seconds / medians["laspa-x0"], 3)
            if (method.startswith(("instdiffedit", "diffedit")) or method in few_step_rows) and (
                "peer-diffedit" in medians
            ):
                row["ratio_to_peer_diffedit"] = round(seconds / medians["peer-diffedit"], 3)
            print(json.dumps(row), flush=True)

    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    for threads in counts:
        torch.set_num_threads(threads)
        per_edit = {}
        for batch in batches:
            variants = [{"prompt": prompt, "seed": s, **common} for s in range(batch)]
            samples = []
            for _ in range(max(1, args.rounds // 2)):
                start = time.perf_counter()
                editor.edit_many(image, variants, method="laspa-x0")
                samples.append((time.perf_counter() - start) / batch)
            per_edit[batch] = statistics.median(samples)
        for batch, seconds in per_edit.items():
            print(json.dumps({
                "method": "laspa-x0", "batch": batch, "threads": threads,
                "seconds_per_edit": round(seconds, 4),
                "speedup_vs_batch_1": round(per_edit[batches[0]] / seconds, 2),
            }), flush=True)  # fmt: skip


def time_method(method, editor, image, prompt, seed, common, evals, generate, diffedit, peer):
    """One timed edit (two for FPE: cold, then with its inversion cached): row -> seconds."""
    if method == "generate":
        return {method: generate(seed)}
    if method == "peer-diffedit":
        output = diffedit.run(image, prompt, seed, peer)
        evals[method] = output.unet_evals
        return {method: output.seconds}
    params = dict(METHOD_PARAMS.get(method, {}), **common)
    if method == "flowedit":  # guided by src/tar_guidance_scale, as published
        params.pop("guidance")
    method_name = "generate" if method == "loop-generate" else method
    method_name = VARIANT_OF.get(method_name, method_name)
    editor.clear_inversion_cache()  # every FPE / inversion edit pays its inversion
    result = editor.edit(image, prompt, method=method_name, seed=seed, **params)
    evals[method] = result.unet_evals
    if method != "fpe":
        return {method: result.seconds}
    warm = editor.edit(image, prompt, method="fpe", seed=seed, **params)
    evals["fpe-warm-cache"] = warm.unet_evals
    return {method: result.seconds, "fpe-warm-cache": warm.seconds}


if __name__ == "__main__":
    main()
