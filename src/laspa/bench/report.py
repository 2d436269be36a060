"""Plain-text tables of a benchmark run, and the atomic JSON writer."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import replaced_atomically

#: (JSON key, column header, format) of the main table, in order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("psnr", "psnr", "{:.2f}"),
    ("ssim", "ssim", "{:.3f}"),
    ("bg_psnr", "bg_psnr", "{:.2f}"),
    ("bg_ssim", "bg_ssim", "{:.3f}"),
    ("bg_mse", "bg_mse", "{:.5f}"),
    ("input_psnr", "in_psnr", "{:.2f}"),
    ("input_ssim", "in_ssim", "{:.3f}"),
    ("lpips", "lpips", "{:.3f}"),
    ("clip_whole", "clip_w", "{:.2f}"),
    ("clip_edited", "clip_e", "{:.2f}"),
    ("edit_success", "success", "{:.2f}"),
    ("mask_iou", "mask_iou", "{:.3f}"),
    ("seconds_per_edit", "s/edit", "{:.3f}"),
    ("unet_evals", "unet", "{:.0f}"),
    ("ratio_to_generate", "x_gen", "{:.2f}"),
)


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned others, widths from the content."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def method_table(methods: dict[str, dict[str, Any]]) -> str:
    """One row per method; columns no method measured are left out."""
    columns = [c for c in COLUMNS if any(m.get(c[0]) is not None for m in methods.values())]
    header = ["method", *[c[1] for c in columns]]
    rows = [[name, *[_cell(m.get(k), f) for k, _, f in columns]] for name, m in methods.items()]
    return grid(header, rows)


def type_table(methods: dict[str, dict[str, Any]], key: str, fmt: str) -> str | None:
    """Method x edit type table of one metric, with the methods that measured it (None if
    none did: e.g. mask IoU has rows for the methods that make a mask)."""
    kinds = list(dict.fromkeys(k for m in methods.values() for k in m.get("by_type", {})))
    if not kinds:
        return None
    values = {n: {k: m["by_type"].get(k, {}).get(key) for k in kinds} for n, m in methods.items()}
    values = {n: row for n, row in values.items() if any(v is not None for v in row.values())}
    if not values:
        return None
    rows = [[name, *[_cell(row[k], fmt) for k in kinds]] for name, row in values.items()]
    return grid([key, *kinds], rows)


def render(data: dict[str, Any]) -> str:
    """The terminal report of a run's JSON: tables, the VAE ceiling, the checks."""
    methods = data["methods"]
    parts = [
        f"laspa bench: {data['suite']}, {data['cases']} cases, seed {data['seed']}, "
        f"{data['steps']} steps, model {data['model']}",
        method_table(methods),
    ]
    for key, fmt in (("edit_success", "{:.2f}"), ("bg_psnr", "{:.2f}"), ("mask_iou", "{:.3f}")):
        table = type_table(methods, key, fmt)
        if table:
            parts.append(table)
    ceiling = f"VAE ceiling: PSNR {_cell(data.get('vae_ceiling_psnr'), '{:.2f}')} dB"
    if data.get("vae_ceiling_edit_success") is not None:
        ceiling += f", reader success {data['vae_ceiling_edit_success']:.2f}"
    parts.append(ceiling)
    check = data.get("checks", {}).get("sdedit_vs_peer_sdedit")
    if check:
        same = "same" if check["same_params"] else "DIFFERENT"
        parts.append(
            f"sdedit vs peer-sdedit (img2img as documented, {same} steps/guidance/strength): "
            f"PSNR {check['psnr']:.2f} dB mean, {check['min_psnr']:.2f} dB min\n"
            f"sdedit vs img2img from the same latent and noise: PSNR "
            f"{check['same_latent_psnr']:.2f} dB mean, {check['same_latent_min_psnr']:.2f} dB min "
            "(100 = identical bytes)"
        )
    diffedit = data.get("checks", {}).get("diffedit_vs_peer_diffedit")
    if diffedit:
        parts.append(diffedit_lines(diffedit))
    return "\n\n".join(parts)


def diffedit_lines(check: dict[str, Any]) -> str:
    """The diffedit-vs-peer-diffedit check under the table: mask agreement, quality, speed."""
    peer = check["peer"]
    lines = []
    for name, row in check["rows"].items():
        same = "same" if row["same_params"] else "DIFFERENT"
        lines.append(
            f"{name} vs peer-diffedit ({same} options; blend {row['blend']}, posterior "
            f"{row['posterior']}): mask IoU {_cell(row['mask_iou_vs_peer'], '{:.3f}')} mean, "
            f"{_cell(row['min_mask_iou_vs_peer'], '{:.3f}')} min; vs exact mask "
            f"{_cell(row['mask_iou'], '{:.3f}')} / {_cell(peer['mask_iou'], '{:.3f}')}, "
            f"bg_psnr {_cell(row['bg_psnr'], '{:.2f}')} / {_cell(peer['bg_psnr'], '{:.2f}')}, "
            f"edit_success {_cell(row['edit_success'], '{:.2f}')} / "
            f"{_cell(peer['edit_success'], '{:.2f}')}, s/edit "
            f"{_cell(row['seconds_per_edit'], '{:.3f}')} / "
            f"{_cell(peer['seconds_per_edit'], '{:.3f}')} "
            f"({_cell(row['speedup'], '{:.2f}')}x faster)"
        )
    return "\n".join(lines)


def write_json(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    with replaced_atomically(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path
