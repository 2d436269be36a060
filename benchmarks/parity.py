"""Parity with the authors' released code: InstDiffEdit's masks, FPE's and FlowEdit's
images, theirs beside ours on the same cases, inputs, seeds and steps.

The authors' code is not part of laspa and is never copied into it. This script reads it
from a checkout named on the command line, applies the patches listed in
``INSTDIFFEDIT_PATCHES`` / ``FPE_PATCHES`` / ``FLOWEDIT_PATCHES`` (load the bundled
miniature instead of SD, run on the CPU, the miniature's sizes, today's diffusers API;
each says why), runs it and ours on the scene-world cases, and prints per-case and mean
figures as JSON (docs/results.md, "Parity with the released code").

    python benchmarks/parity.py instdiffedit /path/to/InstDiffEdit --cases 24 --threads 1
    python benchmarks/parity.py fpe /path/to/EasyNLP/diffusion/FreePromptEditing --cases 24
    python benchmarks/parity.py flowedit /path/to/FlowEdit --model /path/to/sd3-or-flux --cases 24

Checkouts measured: xiaotianqing/InstDiffEdit 455968b, alibaba/EasyNLP a4ee956,
fallenshock/FlowEdit 457f402. InstDiffEdit's and FPE's code needs ``pip install
opencv-python-headless scikit-learn einops`` (not laspa dependencies; FlowEdit's needs
only tqdm); torchvision, which they use for ``ToTensor`` only, is replaced by a
stand-in when it is not installed (its PyPI wheel would replace the CPU torch).

Inputs given to both sides: the case image at the model's size, its target prompt, the
VAE posterior mean (their InstDiffEdit samples the posterior), and for InstDiffEdit the
B seed noises that ours draws from the case seed, handed to their ``init_latent``.

Runs per case. InstDiffEdit (masks compared; their final inpainting pass returns the
input, the miniature has no inpainting checkpoint): theirs as released (LMS), with the
model's DDIM scheduler, and ``aligned`` (DDIM and ``INSTDIFFEDIT_ALIGNMENTS``); ours with
the released options (``index_words=all``, ``word_resize=bicubic``) and at our defaults;
``same_maps_pixels``: our mask maths on their aligned run's attention maps, every step.
FPE (images compared): theirs with edit_real.ipynb's scheduler and with the model's;
ours with the released options (``layers=code``, the replace fraction,
``final_step="scheduler"``) and at our defaults. FlowEdit (latents and images compared;
``--model``: an SD3 or FLUX diffusers folder, both sides load it): their ``FlowEditSD3`` /
``FlowEditFLUX`` on a diffusers pipeline of the folder, given our input latent (the VAE
posterior mean; ``latent_src_maxdiff`` is their run_script.py's own encoding against it)
and our noise: their ``torch.randn_like`` draws are replaced, call by call, by the draws of
the edit's generator (seeded with the case seed, in their order: ``n_avg`` per step, then
the ``n_min`` phase's one; packed where FLUX draws packed tokens); ours ``flowedit`` with
the same options (the published ones of the model unless given). ``--json`` keeps every
case's figures; stdout gets the means (FlowEdit: also the largest and smallest).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import re
import sys
import tempfile
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch


class ParityError(Exception):
    """A user error: one line on stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise ParityError(message)


# ------------------------------------------------------------------ their code
@dataclass(frozen=True)
class Patch:
    """Replace ``old`` (a regex when ``regex``) by ``new`` in ``file``, ``count`` times."""

    file: str
    old: str
    new: str
    why: str
    count: int = 1
    regex: bool = False


INSTDIFFEDIT_FILES = ("model/InstDiffEdit.py", "model/util.py", "model/attention_store.py")
INSTDIFFEDIT_PATCHES = (
    Patch("model/InstDiffEdit.py",
          'StableDiffusionPipeline.from_pretrained("CompVis/stable-diffusion-v1-4", '
          "use_auth_token = auth_token)",
          "StableDiffusionPipeline.from_pretrained(PARITY_MODEL_DIR)",
          "load the miniature, not SD 1.4 from the hub"),
    Patch("model/InstDiffEdit.py",
          r"inpaint = StableDiffusionInpaintPipeline\.from_pretrained\(.*?\)\n",
          "inpaint = PARITY_INPAINT\n",
          "no inpainting checkpoint of the miniature: the final pass returns the input "
          "(only the mask is compared)", regex=True),
    Patch("model/InstDiffEdit.py", "vae_magic = 0.18215",
          "vae_magic = vae.config.scaling_factor", "the model's VAE factor, not SD's"),
    Patch("model/InstDiffEdit.py", "num_inference_steps = 50",
          "num_inference_steps = PARITY_STEPS", "the same step count as ours"),
    Patch("model/InstDiffEdit.py", ".resize((512, 512))",
          ".resize((PARITY_SIZE, PARITY_SIZE))", "the model's image size, not SD's 512 (input "
          "image and the mask handed to the inpainting pass)", count=2),
    Patch("model/InstDiffEdit.py", "latent.latent_dist.sample()", "latent.latent_dist.mean",
          "the posterior mean, as ours (a sample draws from the global RNG)"),
    Patch("model/InstDiffEdit.py", "return x_t.cuda()", "return x_t.to(torch_device)",
          "run on the CPU"),
    Patch("model/InstDiffEdit.py", "res = 16)", "res = PARITY_MAP_RES)",
          "the word-map level: SD's 16x16 is the miniature's 8x8 (coarsest non-mid)"),
    Patch("model/InstDiffEdit.py", "attention_maps, lens = 64):",
          "attention_maps, lens = PARITY_LATENT):", "maps at latent size: SD's 64 is 16 here"),
    Patch("model/util.py", "float(sims[0])", "float(sims[0][0])",
          "numpy 2 refuses float() of a one-element 1-d array"),
    Patch("model/util.py", ".to('cuda')", ".to(torch_device)", "run on the CPU", count=2),
    Patch("model/attention_store.py", "'CrossAttention'", "'Attention'",
          "diffusers >= 0.12 names the class Attention"),
    Patch("model/attention_store.py", "def forward(x, context=None, mask=None):",
          "def forward(x, encoder_hidden_states=None, attention_mask=None, **kwargs):\n"
          "            context, mask = encoder_hidden_states, attention_mask",
          "today's diffusers calls attention with these keywords"),
    Patch("model/attention_store.py", "reshape_heads_to_batch_dim", "head_to_batch_dim",
          "renamed in diffusers", count=3),
    Patch("model/attention_store.py", "reshape_batch_dim_to_heads", "batch_to_head_dim",
          "renamed in diffusers"),
)  # fmt: skip

#: Applied on top for the ``theirs_aligned`` variant only: the released loop's three
#: departures from ours that are not in the mask maths, removed one by one, so that what
#: is left between the two is numerical (docs/results.md, "Parity with the released code")
INSTDIFFEDIT_ALIGNMENTS = (
    Patch("model/util.py", 'offset = scheduler.config.get("steps_offset", 0)', "offset = 0",
          "start where the loop starts: with a steps_offset (DDIM's) init_latent noises to the "
          "timestep before the first one it denoises"),
    Patch("model/util.py", "np.float16", "np.float32",
          "text embeddings in float32, not rounded to float16", count=2),
    Patch("model/InstDiffEdit.py",
          "or_latents = get_or_latent(latent, noises, tm, ",
          "or_latents = get_or_latent(latent, noises, PARITY_NEXT(scheduler, tm), ",
          "blend the new latents with the input noised to their own timestep, not the "
          "one they came from"),
)  # fmt: skip


def next_timestep(scheduler, timestep) -> torch.Tensor:
    """The DDIM timestep after ``timestep`` (0 after the last: that blend feeds no mask)."""
    ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return (timestep - ratio).clamp(min=0)


FPE_FILES = ("Freeprompt/diffuser_utils.py", "Freeprompt/freeprompt.py",
             "Freeprompt/freeprompt_utils.py")  # fmt: skip
FPE_PATCHES = (
    Patch("Freeprompt/diffuser_utils.py", "0.18215", "self.vae.config.scaling_factor",
          "the model's VAE factor, not SD's", count=3),
    Patch("Freeprompt/diffuser_utils.py", "max_length=77",
          "max_length=self.tokenizer.model_max_length",
          "the miniature's text encoder holds 40 tokens, SD's 77", count=4),
    Patch("Freeprompt/freeprompt.py", "att_replace.shape[2] <= 32 ** 2",
          "att_replace.shape[2] <= PARITY_REPLACE_KEYS",
          "the released rule (every level but the finest: 32x32 and coarser at SD's "
          "64x64 latent) at the miniature's 16x16 latent: 8x8 and coarser"),
)  # fmt: skip


def patched_source(root: Path, file: str, patches: Sequence[Patch]) -> str:
    try:
        text = (root / file).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ParityError(f"cannot read {root / file}: {error}") from None
    for patch in (p for p in patches if p.file == file):
        pattern = patch.old if patch.regex else re.escape(patch.old)
        found = len(re.findall(pattern, text, flags=re.DOTALL))
        if found != patch.count:
            raise ParityError(
                f"{root / file}: {found} matches of {patch.old!r} where {patch.count} were "
                "expected; this script patches the checkouts named in its docstring"
            )
        new = patch.new.replace("\\", "\\\\")
        text = re.sub(pattern, new, text, flags=re.DOTALL)
    return text


def load_module(name: str, root: Path, file: str, patches, namespace: dict) -> types.ModuleType:
    """Their ``file`` with ``patches`` applied, executed as module ``name`` (registered so
    that their own imports of it find it) with ``namespace`` predefined."""
    module = types.ModuleType(name)
    module.__file__ = str(root / file)
    module.__dict__.update(namespace)
    sys.modules[name] = module
    exec(compile(patched_source(root, file, patches), module.__file__, "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def torchvision_stand_in():
    """While their modules load: their code imports torchvision for
    ``transforms.ToTensor`` (and ``utils.save_image``, unused here); without torchvision
    installed, a stand-in with torchvision's ToTensor semantics (uint8 HWC -> float CHW /
    255). It leaves sys.modules afterwards: other libraries probe for torchvision."""
    try:
        importlib.import_module("torchvision")
        yield
        return
    except ImportError:
        pass

    class ToTensor:
        def __call__(self, picture) -> torch.Tensor:
            array = np.array(picture)
            array = array[:, :, None] if array.ndim == 2 else array
            tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
            return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor.float()

    def save_image(*args, **kwargs):
        raise NotImplementedError("the parity harness's torchvision stand-in saves nothing")

    package = types.ModuleType("torchvision")
    package.transforms = types.ModuleType("torchvision.transforms")
    package.transforms.ToTensor = ToTensor
    package.utils = types.ModuleType("torchvision.utils")
    package.utils.save_image = save_image
    names = {"torchvision": package, "torchvision.transforms": package.transforms,
             "torchvision.utils": package.utils}  # fmt: skip
    sys.modules.update(names)
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


def check_requirements(modules: Sequence[str]) -> None:
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        packages = {"cv2": "opencv-python-headless", "sklearn": "scikit-learn"}
        names = " ".join(packages.get(m, m) for m in missing)
        raise ParityError(f"the authors' code needs {', '.join(missing)}: pip install {names}")


def checkout(method: str, path: str) -> Path:
    """The folder holding the method's files; EasyNLP's root is accepted for FPE."""
    root = Path(path)
    files = FILES[method]
    candidates = [root]
    if method == "fpe":  # EasyNLP's root holds it under diffusion/
        candidates.append(root / "diffusion" / "FreePromptEditing")
    for folder in candidates:
        if all((folder / f).is_file() for f in files):
            return folder
    name = {"instdiffedit": "an InstDiffEdit", "fpe": "a FreePromptEditing (FPE)",
            "flowedit": "a FlowEdit"}[method]  # fmt: skip
    raise ParityError(f"{path} is not {name} checkout of the authors' code (no {files[0]})")


def check_checkout(method: str, root: Path) -> None:
    """Every patch applies (before any model loads) and their code's packages are here."""
    if method == "instdiffedit":
        files, patches = INSTDIFFEDIT_FILES, INSTDIFFEDIT_PATCHES + INSTDIFFEDIT_ALIGNMENTS
    elif method == "fpe":
        files, patches = FPE_FILES, FPE_PATCHES
    else:
        files, patches = FLOWEDIT_FILES, FLOWEDIT_PATCHES
    for file in files:
        patched_source(root, file, patches)
    needed = {"instdiffedit": ("cv2", "sklearn"), "fpe": ("einops",), "flowedit": ("tqdm",)}
    check_requirements(needed[method])


# ------------------------------------------------------------------ metrics
def binary_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def levels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def means(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float, bool)) and k != "seed"]
    return {k: round(float(np.mean([float(r[k]) for r in rows])), 4) for k in keys}


@contextlib.contextmanager
def quiet():
    """Their code prints progress: keep stdout for the JSON."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


# ------------------------------------------------------------------ InstDiffEdit
class NoInpainting:
    """Stands in for their SD inpainting pipeline: returns the input image."""

    def to(self, device):
        return self

    def __call__(self, prompt, image, **kwargs):
        return types.SimpleNamespace(images=[image])


def load_instdiffedit(root: Path, editor, aligned: bool = False) -> types.ModuleType:
    """Their InstDiffEdit.py (with util and attention_store) as a module; ``aligned``:
    with :data:`INSTDIFFEDIT_ALIGNMENTS` too."""
    check_requirements(("cv2", "sklearn"))
    latent = editor.resolution // editor.vae_scale_factor
    namespace = {
        "PARITY_MODEL_DIR": str(editor.source), "PARITY_INPAINT": NoInpainting(),
        "PARITY_STEPS": 0, "PARITY_SIZE": editor.resolution,
        "PARITY_MAP_RES": latent // 2, "PARITY_LATENT": latent, "PARITY_NEXT": next_timestep,
    }  # fmt: skip
    patches = INSTDIFFEDIT_PATCHES + (INSTDIFFEDIT_ALIGNMENTS if aligned else ())
    model = str(root / "model")
    if model not in sys.path:
        sys.path.insert(0, model)  # their files import each other by name
    with quiet(), torchvision_stand_in():
        for name in ("util", "attention_store"):
            load_module(name, root, f"model/{name}.py", patches, namespace)
        name = "instdiffedit_aligned" if aligned else "instdiffedit_released"
        return load_module(name, root, "model/InstDiffEdit.py", patches, namespace)


def their_instdiffedit(module, case, seed: int, noises, steps: int, scheduler) -> dict:
    """Their ``main`` on one case: the last mask (latent size) and the index word."""
    module.num_inference_steps, module.scheduler = steps, scheduler
    captured: dict[str, Any] = {}
    get_mask, cal_sim, init_latent = module.get_mask, module.cal_sim, module.init_latent

    aggregate = module.aggregate_attention
    captured["steps"] = []  # per step: (their token maps, their mask)

    def recording_aggregate(*args, **kwargs):
        maps = aggregate(*args, **kwargs)
        captured["maps"] = maps.clone()
        return maps

    def recording_get_mask(*args, **kwargs):
        out = get_mask(*args, **kwargs)
        captured["mask"] = np.asarray(out[1], dtype=np.float32) / 255
        captured["steps"].append((captured["maps"], captured["mask"] > 0.5))
        return out

    def recording_cal_sim(images, base_index=0):
        index, scores = cal_sim(images, base_index)
        captured.setdefault("index", index)  # the first call picks the index word
        return index, scores

    def our_noise_init_latent(latent, *args, **kwargs):
        draws = iter(noises)  # their B torch.randn_like draws become ours
        with mock.patch.object(torch, "randn_like", lambda like: next(draws).to(like)):
            return init_latent(latent, *args, **kwargs)

    with tempfile.TemporaryDirectory() as folder:
        case_id = "case0000"  # not 5 characters: their reader then opens <id>.jpg
        # PNG content under the .jpg name their reader builds: lossless (PIL reads content)
        case.source.save(Path(folder) / f"{case_id}.jpg", format="PNG")
        listing = Path(folder) / "list.txt"
        listing.write_text(f"{case_id} <> unused <> unused <> {case.target_prompt}\n")
        args = argparse.Namespace(
            input_path=str(listing), dataset_name="Editing-Mask", dataset_path=folder + "/",
            output_path=folder + "/", allresult_path="total", strength=0.5, threshold=0.2,
            batch_size=len(noises), or_save=False, mask_save=False, seed=seed,
        )  # fmt: skip
        patches = {"get_mask": recording_get_mask, "cal_sim": recording_cal_sim,
                   "init_latent": our_noise_init_latent,
                   "aggregate_attention": recording_aggregate}  # fmt: skip
        with mock.patch.multiple(module, **patches), quiet():
            module.main(args)
    words = case.target_prompt.split(" ")
    index = captured.get("index")  # absent for a one-word prompt: that word
    return {"mask": captured["mask"], "index_word": words[0 if index is None else index - 1],
            "steps": captured["steps"]}  # fmt: skip


def same_maps_pixels(editor, prompt: str, steps: list, size) -> int:
    """Our mask maths on their token maps of every step (index word and word split from
    the first, like both loops): mask pixels that differ from theirs, summed over steps."""
    from laspa.masks import instant_mask
    from laspa.methods.instdiffedit import InstDiffEditParams

    words = editor.engine.word_tokens(prompt)
    positions, texts = [w.positions for w in words], [w.word for w in words]
    params = InstDiffEditParams(index_words="all", word_resize="bicubic")
    chosen, differing = None, 0
    for maps, theirs in steps:
        ours, chosen = instant_mask(maps.float(), positions, size, params, chosen, texts)
        differing += int(((ours > 0.5).numpy() != theirs).sum())
    return differing


def our_noises(seed: int, seeds: int, shape) -> list[torch.Tensor]:
    """The B noises ours draws for InstDiffEdit: B draws from the case seed's generator
    (Engine.noise with the edit's generator repeated B times)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return [torch.randn((1, *shape[1:]), generator=generator) for _ in range(seeds)]


def run_instdiffedit(editor, root: Path, cases, seeds: list[int], steps: int) -> dict:
    from diffusers import DDIMScheduler, LMSDiscreteScheduler

    from laspa import images
    from laspa.bench.metrics import mask_iou

    released, aligned = load_instdiffedit(root, editor), load_instdiffedit(root, editor, True)
    assert isinstance(released.scheduler, LMSDiscreteScheduler)
    ddim = DDIMScheduler.from_pretrained(editor.source, subfolder="scheduler")
    variants = {
        "lms": (released, released.scheduler),  # as released: LMSDiscreteScheduler
        "ddim": (released, ddim),  # ours samples with DDIM
        "aligned": (aligned, ddim),  # and the loop's other departures removed
    }
    size = editor.model_size(cases[0].source)
    rows = []
    for case, seed in zip(cases, seeds, strict=True):
        shape = editor.encode(images.to_tensor(case.source, size)).shape
        noises = our_noises(seed, 3, shape)
        row: dict[str, Any] = {"id": case.id, "kind": case.kind, "prompt": case.target_prompt,
                               "seed": seed}  # fmt: skip
        masks = {}
        for name, (module, scheduler) in variants.items():
            theirs = their_instdiffedit(module, case, seed, noises, steps, scheduler)
            masks[f"theirs_{name}"] = theirs["mask"] > 0.5
            row[f"index_theirs_{name}"] = theirs["index_word"]
            if name == "aligned":  # the mask maths alone: ours on their maps, every step
                latent_size = tuple(shape[-2:])
                row["same_maps_steps"] = len(theirs["steps"])
                row["same_maps_pixels"] = same_maps_pixels(
                    editor, case.target_prompt, theirs["steps"], latent_size
                )
        # ours with the released options (index rule, word-map resize), and our defaults
        ours = {"all": {"index_words": "all", "word_resize": "bicubic"}, "content": {}}
        for name, options in ours.items():
            result = editor.edit(case.source, case.target_prompt, method="instdiffedit",
                                 seed=seed, steps=steps, **options)  # fmt: skip
            masks[f"ours_{name}"] = result.mask.squeeze().numpy() > 0.5
            row[f"index_ours_{name}"] = result.notes["index_word"]
        for name, mask in masks.items():
            row[f"iou_exact_{name}"] = mask_iou(mask.astype(np.float32), case.mask)
        for theirs in ("theirs_lms", "theirs_ddim", "theirs_aligned"):
            row[f"iou_{theirs}_ours_all"] = binary_iou(masks[theirs], masks["ours_all"])
            row[f"pixels_{theirs}_ours_all"] = int((masks[theirs] != masks["ours_all"]).sum())
            row[f"same_{theirs}_ours_all"] = bool((masks[theirs] == masks["ours_all"]).all())
            row[f"same_index_{theirs}"] = row[f"index_{theirs}"] == row["index_ours_all"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k.startswith(("id", "iou"))}),
              file=sys.stderr)  # fmt: skip
    return {"cases": rows, "mean": means(rows)}


# ------------------------------------------------------------------ FPE
def load_fpe(root: Path, editor) -> types.ModuleType:
    check_requirements(("einops",))
    latent = editor.resolution // editor.vae_scale_factor
    namespace = {"PARITY_REPLACE_KEYS": (latent // 2) ** 2}
    package = types.ModuleType("Freeprompt")
    package.__path__ = []
    sys.modules["Freeprompt"] = package
    with quiet(), torchvision_stand_in():
        for name in ("diffuser_utils", "freeprompt", "freeprompt_utils"):
            module = load_module(f"Freeprompt.{name}", root, f"Freeprompt/{name}.py",
                                 FPE_PATCHES, namespace)  # fmt: skip
            setattr(package, name, module)
    return package


def their_fpe(package, pipe, case, size, steps: int, fraction: float) -> torch.Tensor:
    """Their edit_real.ipynb on one case (its cells' calls, with our image, prompt and
    steps): returns the target image in [-1, 1]."""
    from laspa import images

    source = images.to_tensor(case.source, size)
    prompts = ["", case.target_prompt]
    with quiet():
        start_code, latents_list = pipe.invert(source, "", guidance_scale=7.5,
                                               num_inference_steps=steps,
                                               return_intermediates=True)  # fmt: skip
        start_code = start_code.expand(len(prompts), -1, -1, -1)
        controller = package.freeprompt.SelfAttentionControlEdit(
            prompts, steps, self_replace_steps=fraction
        )
        package.freeprompt_utils.register_attention_control_new(pipe, controller)
        latent_hw = start_code.shape[-2:]
        try:
            results = pipe(
                prompts, latents=start_code, num_inference_steps=steps, guidance_scale=7.5,
                ref_intermediate_latents=latents_list,
                # their latent-shape check assumes SD's VAE factor 8
                height=8 * latent_hw[0], width=8 * latent_hw[1],
            )  # fmt: skip
        finally:  # back to diffusers' own attention for the next inversion
            for layer in pipe.unet.modules():
                layer.__dict__.pop("forward", None)
    return results[1:2] * 2 - 1


def run_fpe(editor, root: Path, cases, seeds: list[int], steps: int, fraction: float) -> dict:
    from diffusers import DDIMScheduler

    from laspa import Editor, images
    from laspa.bench import metrics
    from laspa.bench.runner import score

    package = load_fpe(root, editor)
    pipe = package.diffuser_utils.FreePromptPipeline.from_pretrained(editor.source)
    schedulers = {
        # edit_real.ipynb's scheduler: SD's betas, but DDIMScheduler's steps_offset 0
        "notebook": DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
        ),  # fmt: skip
        "model": DDIMScheduler.from_pretrained(editor.source, subfolder="scheduler"),
    }
    # the released code's last step and inversion start use alphas_cumprod[0]
    same_last_step = Editor.from_pretrained(editor.source, final_step="scheduler")
    size = editor.model_size(cases[0].source)
    rows = []
    for case, seed in zip(cases, seeds, strict=True):
        row: dict[str, Any] = {"id": case.id, "kind": case.kind, "prompt": case.target_prompt,
                               "seed": seed}  # fmt: skip
        produced = {}
        for name, scheduler in schedulers.items():
            pipe.scheduler = scheduler
            tensor = their_fpe(package, pipe, case, size, steps, fraction)
            produced[f"theirs_{name}"] = images.to_pil(tensor, case.source.size)[0]
        produced["ours_code"] = same_last_step.edit(
            case.source, case.target_prompt, method="fpe", seed=seed, steps=steps,
            layers="code", replace_fraction=fraction,
        ).image  # fmt: skip
        produced["ours_default"] = editor.edit(
            case.source, case.target_prompt, method="fpe", seed=seed, steps=steps
        ).image
        arrays = {name: metrics.to_array(image) for name, image in produced.items()}
        for theirs in ("theirs_notebook", "theirs_model"):
            row[f"psnr_{theirs}_ours_code"] = min(
                metrics.psnr(arrays[theirs], arrays["ours_code"]), 100.0
            )
            # in 8-bit levels: 1 is a rounding flip
            difference = np.abs(levels(produced[theirs]) - levels(produced["ours_code"]))
            row[f"maxdiff_{theirs}_ours_code"] = int(difference.max())
        for name, image in produced.items():
            scored = score(case, image)
            row[f"bg_psnr_{name}"] = scored["bg_psnr"]
            row[f"edit_success_{name}"] = bool(scored["edit_success"])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k.startswith(("id", "psnr"))}),
              file=sys.stderr)  # fmt: skip
    return {"cases": rows, "mean": means(rows)}


# ------------------------------------------------------------------ FlowEdit
FLOWEDIT_FILES = ("FlowEdit_utils.py",)
FILES = {"instdiffedit": INSTDIFFEDIT_FILES, "fpe": FPE_FILES, "flowedit": FLOWEDIT_FILES}
FLOWEDIT_PATCHES = (
    Patch("FlowEdit_utils.py", "prev_sample = prev_sample.to(noise_pred_tar.dtype)",
          "prev_sample = prev_sample.to(Vt_tar.dtype)",
          "FlowEditSD3's n_min branch casts to the dtype of a variable it never sets "
          "(NameError whenever n_min > 0): the target velocity's, which it means"),
    Patch("FlowEdit_utils.py",
          "orig_height, orig_width = x_src.shape[2]*pipe.vae_scale_factor//2, "
          "x_src.shape[3]*pipe.vae_scale_factor//2",
          "orig_height, orig_width = x_src.shape[2]*pipe.vae_scale_factor, "
          "x_src.shape[3]*pipe.vae_scale_factor",
          "FluxPipeline.vae_scale_factor is the VAE's own factor (8 on FLUX) since diffusers "
          "PR 9711 (November 2024), no longer twice it (16): the image size is now the "
          "latent size times it (unpatched, FlowEditFLUX builds position ids and unpacks "
          "at half the size)"),
)  # fmt: skip


def load_flowedit(root: Path) -> types.ModuleType:
    """Their FlowEdit_utils.py (patched) as a module; its progress bar silenced (tqdm is
    replaced by the identity after loading: stderr keeps our per-case lines)."""
    with quiet():
        module = load_module("flowedit_released", root, "FlowEdit_utils.py",
                             FLOWEDIT_PATCHES, {})  # fmt: skip
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    return module


def their_pipeline(model: str):
    """The diffusers pipeline their run_script.py builds, from the same folder as ours,
    in float32 on the CPU (theirs: float16 on CUDA)."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    from laspa.editor import _pipeline_class

    flux = _pipeline_class(model).startswith("Flux")
    cls = FluxPipeline if flux else StableDiffusion3Pipeline
    # components the folder leaves out (e.g. SD3 without T5) are named None, as
    # diffusers asks
    index = json.loads((Path(model) / "model_index.json").read_text())
    absent = {k: None for k, v in index.items() if v in ([None, None], None)}
    with quiet():
        pipe = cls.from_pretrained(model, torch_dtype=torch.float32, **absent)
    pipe.set_progress_bar_config(disable=True)
    return pipe, flux


def their_noise(seed: int, shape, pack: Callable | None):
    """``torch.randn_like`` for their code: each call the next draw of our edit's noise,
    ``torch.randn((1, C, h, w))`` from a CPU generator seeded with the case seed (what
    laspa's Engine.noise draws for a one-row edit, in the same order: n_avg draws per step,
    then the n_min phase's one), packed into FLUX's tokens where they draw packed."""
    generator = torch.Generator("cpu").manual_seed(seed)

    def randn_like(like: torch.Tensor) -> torch.Tensor:
        draw = torch.randn(tuple(shape), generator=generator)
        if like.dim() == 3:  # FLUX: (1, h/2 w/2, 4C) tokens
            draw = pack(draw)
        assert draw.shape == like.shape, (draw.shape, like.shape)
        return draw.to(like)

    return randn_like


def their_flowedit(module, pipe, flux: bool, x_src, case, seed: int, options: dict):
    """FlowEditSD3 / FlowEditFLUX on one case with our latent and noise: their latent,
    decoded as run_script.py decodes it."""

    def pack(latents: torch.Tensor) -> torch.Tensor:
        rows, channels, height, width = latents.shape
        return pipe._pack_latents(latents, rows, channels, height, width)

    function = module.FlowEditFLUX if flux else module.FlowEditSD3
    randn_like = their_noise(seed, x_src.shape, pack if flux else None)
    with mock.patch.object(torch, "randn_like", randn_like), quiet():
        latent = function(
            pipe, pipe.scheduler, x_src.clone(), case.source_prompt, case.target_prompt, "",
            options["steps"], options["n_avg"], options["src_guidance_scale"],
            options["tar_guidance_scale"], options["n_min"], options["n_max"],
        )  # fmt: skip
        scaled = latent / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        with torch.no_grad():
            decoded = pipe.vae.decode(scaled, return_dict=False)[0]
        image = pipe.image_processor.postprocess(decoded)[0]
    return latent.float(), image


def their_encode(pipe, image) -> torch.Tensor:
    """run_script.py's input latent: the posterior mode of the preprocessed image, shifted
    and scaled."""
    pixels = pipe.image_processor.preprocess(image)
    with torch.no_grad():
        latent = pipe.vae.encode(pixels).latent_dist.mode()
    return (latent - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor


def latent_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of ``a`` against ``b`` with the peak-to-peak range of ``b`` as the peak
    (capped at 200: identical)."""
    mse = float(((a - b) ** 2).mean())
    peak = float(b.max() - b.min())
    return 200.0 if mse == 0 else min(200.0, 10 * float(np.log10(peak**2 / mse)))


def flowedit_options(family: str, args: argparse.Namespace) -> dict:
    """Both sides' settings: the command line's, else the published ones of the family."""
    from laspa.methods.flowedit import PUBLISHED

    chosen = {"steps": args.steps, "n_max": args.n_max, "src_guidance_scale": args.src_guidance,
              "tar_guidance_scale": args.tar_guidance}  # fmt: skip
    options = {k: PUBLISHED[family][k] if v is None else v for k, v in chosen.items()}
    options.update(n_min=args.n_min, n_avg=args.n_avg)
    if options["n_min"] > min(options["n_max"], options["steps"]):
        raise ParityError(
            f"--n-min ({options['n_min']}) must be at most n_max ({options['n_max']}) and "
            f"the steps ({options['steps']})"
        )
    return options


def run_flowedit(editor, root: Path, cases, seeds: list[int], options: dict) -> dict:
    from laspa import images
    from laspa.bench import metrics
    from laspa.bench.runner import score

    module = load_flowedit(root)
    pipe, flux = their_pipeline(editor.source)
    size = editor.model_size(cases[0].source)
    rows = []
    for case, seed in zip(cases, seeds, strict=True):
        row: dict[str, Any] = {"id": case.id, "kind": case.kind, "prompt": case.target_prompt,
                               "source_prompt": case.source_prompt, "seed": seed}  # fmt: skip
        x_src = editor.encode(images.to_tensor(case.source, size))
        # the input latent: ours, and run_script.py's recipe on their pipeline's VAE
        row["latent_src_maxdiff"] = float((their_encode(pipe, case.source) - x_src).abs().max())
        ours = editor.edit(case.source, case.target_prompt, method="flowedit", seed=seed,
                           source_prompt=case.source_prompt, **options)  # fmt: skip
        latent, image = their_flowedit(module, pipe, flux, x_src, case, seed, options)
        row["latent_maxdiff"] = float((latent - ours.latent).abs().max())
        row["latent_psnr"] = latent_psnr(latent, ours.latent)
        row["latent_change"] = float((ours.latent - x_src).abs().max())  # what the edit moved
        theirs_image, ours_image = image.resize(case.source.size), ours.image
        arrays = metrics.to_array(theirs_image), metrics.to_array(ours_image)
        row["psnr_image"] = min(metrics.psnr(*arrays), 100.0)
        row["maxdiff_image"] = int(np.abs(levels(theirs_image) - levels(ours_image)).max())
        for name, produced in (("theirs", theirs_image), ("ours", ours_image)):
            scored = score(case, produced)
            row[f"bg_psnr_{name}"] = scored["bg_psnr"]
            row[f"edit_success_{name}"] = bool(scored["edit_success"])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k.startswith(("id", "latent", "psnr"))}),
              file=sys.stderr)  # fmt: skip
    result: dict[str, Any] = {"cases": rows, "mean": means(rows)}
    largest = ("latent_maxdiff", "maxdiff_image", "latent_src_maxdiff")
    result["max"] = {k: max(r[k] for r in rows) for k in largest}
    result["min"] = {k: min(r[k] for r in rows) for k in ("latent_psnr", "psnr_image")}
    if flux and not pipe.transformer.config.guidance_embeds:
        result["note"] = (
            "FLUX without a guidance embedding: their FlowEditFLUX runs no guidance (the "
            "scales are unused), ours guides classifier-free against the empty prompt; "
            "--src-guidance 1 --tar-guidance 1 compares like with like"
        )
    return result


# ------------------------------------------------------------------ command line
def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=("instdiffedit", "fpe", "flowedit"))
    parser.add_argument("checkout", help="the authors' code: InstDiffEdit's repository root, "
                        "EasyNLP's diffusion/FreePromptEditing (or EasyNLP's root), or "
                        "FlowEdit's repository root")  # fmt: skip
    parser.add_argument(
        "--model", default=None,
        help="flowedit: a diffusers SD3 or FLUX folder, or a bundled flow model's name "
        "(required); instdiffedit, fpe: the bundled miniature (only)",
    )  # fmt: skip
    parser.add_argument("--suite", default="shapes-brief", choices=("shapes", "shapes-brief"))
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="as laspa bench's --seed")
    published = "flowedit: default the published one"
    parser.add_argument("--steps", type=int, default=None, help=f"default 25; {published} "
                        "(T: 50, FLUX 28)")  # fmt: skip
    parser.add_argument("--n-max", type=int, default=None, help=f"{published} (33, FLUX 24)")
    parser.add_argument("--n-min", type=int, default=0, help="flowedit: steps of plain sampling")
    parser.add_argument("--n-avg", type=int, default=1, help="flowedit: noise draws per step")
    parser.add_argument("--src-guidance", type=float, default=None,
                        help=f"{published} (3.5, FLUX 1.5)")  # fmt: skip
    parser.add_argument("--tar-guidance", type=float, default=None,
                        help=f"{published} (13.5, FLUX 5.5)")  # fmt: skip
    parser.add_argument(
        "--fraction", type=float, default=0.8,
        help="FPE's replace fraction on both sides (edit_real.ipynb's 0.8)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.method != "flowedit" and args.model is not None:
        raise ParityError(f"--model is for flowedit; {args.method} runs on the bundled mini")
    if args.method != "flowedit" and args.steps is None:
        args.steps = 25
    if args.cases < 1 or (args.steps is not None and args.steps < 2):
        raise ParityError("--cases must be >= 1 and --steps >= 2")
    if args.n_min < 0 or args.n_avg < 1 or (args.n_max is not None and args.n_max < 0):
        raise ParityError("--n-min and --n-max must be >= 0, --n-avg >= 1")
    for name in ("src_guidance", "tar_guidance"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise ParityError(f"--{name.replace('_', '-')} must be >= 0")
    if not 0.0 <= args.fraction <= 1.0:
        raise ParityError(f"--fraction must be in [0, 1], got {args.fraction}")
    if args.threads is not None and args.threads < 1:
        raise ParityError(f"--threads must be >= 1, got {args.threads}")
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        raise ParityError(f"--json: no folder {Path(args.json).resolve().parent}")
    args.root = checkout(args.method, args.checkout)
    check_checkout(args.method, args.root)
    if args.method != "flowedit":
        return args
    args.model_source, family = check_flow_model(args.model)
    args.options = flowedit_options(family, args)
    return args


def check_flow_model(model: str | None) -> tuple[str, str]:
    """The folder of --model, checked to be an SD3 or FLUX diffusers folder (before any
    model loads; a bundled model's name resolves to its folder), and its family."""
    from laspa import mini
    from laspa.editor import _pipeline_class

    if model is None:
        raise ParityError("flowedit needs --model: a diffusers SD3 or FLUX folder")
    if model in mini.MODEL_NAMES:
        try:
            model = str(mini.model_dir(mini.MODEL_NAMES[model]))
        except RuntimeError as error:
            raise ParityError(str(error)) from None
    if not (Path(model) / "model_index.json").is_file():
        raise ParityError(f"--model: {model} is not a diffusers model folder (no model_index.json)")
    pipeline = _pipeline_class(model)
    if not pipeline.startswith(("StableDiffusion3", "Flux")):
        raise ParityError(
            f"--model: {model} holds a {pipeline or 'unknown'} model; FlowEdit's code runs "
            "SD3 and FLUX"
        )
    return model, "flux" if pipeline.startswith("Flux") else "sd3"


def run(args: argparse.Namespace) -> dict:
    from laspa import Editor
    from laspa.bench.cases import load_cases
    from laspa.bench.runner import case_seed

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.method == "flowedit":
        editor = Editor.from_pretrained(args.model_source)
    else:
        editor = Editor.mini()
    cases = load_cases(args.suite, size=editor.resolution, n=args.cases, seed=args.seed)
    seeds = [case_seed(args.seed, index) for index in range(len(cases))]
    settings = {k: v for k, v in vars(args).items() if k not in ("root", "json", "threads")}
    if args.method == "flowedit":
        result = run_flowedit(editor, args.root, cases, seeds, args.options)
        settings["family"] = editor.engine.family
    elif args.method == "instdiffedit":
        result = run_instdiffedit(editor, args.root, cases, seeds, args.steps)
    else:
        result = run_fpe(editor, args.root, cases, seeds, args.steps, args.fraction)
    patches = {"instdiffedit": INSTDIFFEDIT_PATCHES, "fpe": FPE_PATCHES,
               "flowedit": FLOWEDIT_PATCHES}[args.method]  # fmt: skip
    return {**settings, "patches": [f"{p.file}: {p.why}" for p in patches], **result}


def main(argv: Sequence[str] | None = None) -> int:
    from laspa.errors import LaspaError

    try:
        args = parse(argv)
        result = run(args)
    except (ParityError, LaspaError) as error:  # laspa's: a model it cannot load
        print(f"parity: error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    summary = {k: result[k] for k in ("mean", "max", "min", "note") if k in result}
    print(json.dumps({"method": args.method, **summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
