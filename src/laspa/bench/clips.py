"""``laspa bench --suite clips``: video editing on scene-world clips with exact per-frame
targets (laspa.world.clips), fixed against fresh noise.

Per clip, method and noise: each frame's bg_psnr and edit_success, and **flicker**, the
mean absolute difference (in 0-255 levels) between consecutive output frames' change and
the targets' change: 0 when the edit follows the clip exactly, however each frame scores;
and the same inside the frames' edit masks (``flicker_mask``), where the moving object
is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..methods.base import METHODS
from ..video import frame_seed
from ..world.clips import ClipCase, sample_clip
from .metrics import background_metrics, edit_success, mean, to_array
from .runner import case_seed

DEFAULT_CLIP_METHODS = "laspa-x0,laspa-input,sdedit,instdiffedit"
NOISES = ("fixed", "fresh")


def flicker(
    outputs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
) -> float:
    """Mean |(out[i+1] - out[i]) - (target[i+1] - target[i])| over pixels and frame pairs,
    in the arrays' units; with ``masks``, over the pixels of frame i's or i+1's mask only
    (where the edit is: a small moving object's flicker is not diluted by the rest)."""
    if len(outputs) != len(targets) or len(outputs) < 2:
        raise ValueError("flicker needs two or more frames, as many outputs as targets")
    values = []
    for i in range(len(outputs) - 1):
        change = outputs[i + 1].astype(np.float64) - outputs[i]
        wanted = targets[i + 1].astype(np.float64) - targets[i]
        error = np.abs(change - wanted)
        if masks is not None:
            error = error[masks[i] | masks[i + 1]]
        values.append(float(error.mean()))
    return float(np.mean(values))


def edit_clip(
    editor, case: ClipCase, method: str, noise: str, seed: int, params: dict[str, Any], batch: int
) -> tuple[list[Image.Image], float]:
    """The clip's frames edited towards its target prompt, ``batch`` frames per call, and
    the seconds it took."""
    source_prompt, target_prompt = case.prompts
    options = dict(params)
    if "source_prompt" in METHODS[method].case_inputs:
        options.setdefault("source_prompt", source_prompt)
    frames = case.source_frames()
    outputs: list[Image.Image] = []
    start = time.perf_counter()
    for first in range(0, len(frames), batch):
        chunk = frames[first : first + batch]
        seeds = [frame_seed(seed, noise, first + i) for i in range(len(chunk))]
        results = editor.edit_frames(chunk, target_prompt, method, seeds, **options)
        outputs.extend(result.image for result in results)
    return outputs, time.perf_counter() - start


def score_clip(case: ClipCase, outputs: Sequence[Image.Image]) -> dict[str, Any]:
    sources = [to_array(f) for f in case.source_frames()]
    targets = [np.asarray(f) for f in case.target_frames()]  # 0-255 levels for flicker
    edited = [np.asarray(f) for f in outputs]
    target_scene = case.target
    masks = case.masks()
    psnrs = [
        background_metrics(to_array(out), src, mask)["bg_psnr"]
        for out, src, mask in zip(edited, sources, masks, strict=True)
    ]
    successes = [edit_success(picture, target_scene) for picture in outputs]
    return {
        "bg_psnr": mean(p for p in psnrs if math.isfinite(p)),
        "edit_success": mean(successes),
        "flicker": flicker(edited, targets),
        "flicker_mask": flicker(edited, targets, masks),
        "frame_bg_psnr": [round(p, 3) if math.isfinite(p) else None for p in psnrs],
        "frame_edit_success": successes,
    }


def run_clips(
    editor,
    methods: Sequence[str],
    params: dict[str, dict[str, Any]],
    clips: int,
    frames: int,
    seed: int,
    batch: int,
    single: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Every method on ``clips`` clips with fixed and fresh noise; with ``single``, each
    clip's fixed-noise edit is also timed frame by frame (batch 1), for the cost of
    batching frames. Returns per-run rows and per method/noise means."""
    size = editor.resolution
    cases = [sample_clip(seed, index, frames, size) for index in range(clips)]
    rows = []
    for index, case in enumerate(cases):
        # each clip its own noise seed, as each case of the image suites: with one seed
        # for every clip, the fixed-noise rows would score a single x_T on all the clips
        clip_seed = case_seed(seed, index)
        for method in methods:
            for noise in NOISES:
                outputs, seconds = edit_clip(
                    editor, case, method, noise, clip_seed, params.get(method, {}), batch
                )
                row = {
                    "clip": case.id,
                    "method": method,
                    "noise": noise,
                    "seed": clip_seed,
                    **score_clip(case, outputs),
                }
                row["seconds_per_frame"] = seconds / frames
                if single and noise == "fixed":
                    _, alone = edit_clip(
                        editor, case, method, noise, clip_seed, params.get(method, {}), 1
                    )
                    row["seconds_per_frame_one_by_one"] = alone / frames
                rows.append(row)
                if progress is not None:
                    progress(1)
    summary = {}
    for method in methods:
        for noise in NOISES:
            mine = [r for r in rows if r["method"] == method and r["noise"] == noise]
            keys = (
                "bg_psnr",
                "edit_success",
                "flicker",
                "flicker_mask",
                "seconds_per_frame",
                "seconds_per_frame_one_by_one",
            )
            summary[f"{method}/{noise}"] = {
                key: mean(r[key] for r in mine if key in r)
                for key in keys
                if any(key in r for r in mine)
            }
    return {
        "clips": clips,
        "frames": frames,
        "size": size,
        "seed": seed,
        "rows": rows,
        "summary": summary,
    }


def table(result: dict[str, Any]) -> str:
    """The per method/noise means as a Markdown table."""
    lines = [
        "| method | noise | bg_psnr | edit_success | flicker | flicker in mask | s/frame "
        "| s/frame one by one |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for key, values in result["summary"].items():
        method, noise = key.split("/")
        lines.append(
            f"| {method} | {noise} | {cell(values.get('bg_psnr'), 2)} | "
            f"{cell(values.get('edit_success'), 3)} | {cell(values.get('flicker'), 3)} | "
            f"{cell(values.get('flicker_mask'), 2)} | "
            f"{cell(values.get('seconds_per_frame'), 3)} | "
            f"{cell(values.get('seconds_per_frame_one_by_one'), 3)} |"
        )
    return "\n".join(lines)
