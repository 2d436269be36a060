"""Figures of a benchmark run (matplotlib, Agg backend; imported only when plotting).

- ``tradeoff.png``: preservation (bg_psnr) against edit strength (edit_success), the
  LASPA paper's Fig. 8: one curve per LASPA alignment over K (left) and over beta
  (right), SDEdit's curve over strength on both, and each method of the main run as
  a marker.
- ``samples.png``: a grid of sample cases: input, exact target, each method's output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from ..files import replaced_atomically

X_KEY, Y_KEY = "edit_success", "bg_psnr"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    """Atomic PNG write: render to a temporary file beside the target, then rename."""
    with replaced_atomically(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    return path


def _points(series: list[dict[str, Any]]) -> list[tuple[float, float, Any]]:
    return [
        (p[X_KEY], p[Y_KEY], p["value"])
        for p in series
        if p.get(X_KEY) is not None and p.get(Y_KEY) is not None
    ]


def _curve(axes, series, label: str, style: str) -> None:
    points = _points(series)
    if not points:
        return
    xs, ys, values = zip(*points, strict=True)
    line = axes.plot(xs, ys, style, marker="o", markersize=4, label=label)[0]
    for x, y, value in points:
        axes.annotate(f"{value:g}", (x, y), textcoords="offset points", xytext=(3, 3),
                      fontsize=6, color=line.get_color())  # fmt: skip


def tradeoff(data: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """The trade-off figure; None when the suite has no edit_success (no ground truth)."""
    methods = data.get("methods", {})
    sweeps = data.get("sweeps", {})
    measured = [m for m in methods.values() if m.get(X_KEY) is not None]
    if not measured and not sweeps:
        return None
    plt = _pyplot()
    panels = [("K", "varying K (beta at its value)"), ("beta", "varying beta (K at its value)")]
    if not sweeps:
        panels = [(None, "methods at their parameters")]
    figure, axes_list = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False
    )
    for axes, (axis, title) in zip(axes_list[0], panels, strict=True):
        for name, by_axis in sweeps.items():
            if axis in by_axis:
                _curve(axes, by_axis[axis], f"{name} ({axis})", "-")
            if "strength" in by_axis:
                _curve(axes, by_axis["strength"], f"{name} (strength)", "--")
        for name, entry in methods.items():
            if entry.get(X_KEY) is not None and entry.get(Y_KEY) is not None:
                axes.scatter(
                    [entry[X_KEY]], [entry[Y_KEY]], marker="*", s=80, color="black", zorder=3
                )
                axes.annotate(name, (entry[X_KEY], entry[Y_KEY]), textcoords="offset points",
                              xytext=(4, -8), fontsize=7)  # fmt: skip
        axes.set_xlabel("edit_success (scene reader, higher = edit done)")
        axes.set_ylabel("bg_psnr, dB (higher = background kept)")
        axes.set_title(title, fontsize=9)
        axes.set_xlim(-0.03, 1.03)  # edit_success is a fraction of cases
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=7)
    figure.suptitle(
        f"preservation vs edit: {data['suite']}, {data['cases']} cases, {data['steps']} steps",
        fontsize=10,
    )
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)


def sample_grid(samples: dict[str, dict[str, Image.Image]], path: str | os.PathLike) -> Path | None:
    """Rows: cases; columns: input, target (if any), each method. None if no samples."""
    if not samples:
        return None
    plt = _pyplot()
    columns = list(dict.fromkeys(k for row in samples.values() for k in row))
    figure, axes = plt.subplots(
        len(samples), len(columns), figsize=(1.6 * len(columns), 1.7 * len(samples)),
        squeeze=False,
    )  # fmt: skip
    for r, (case_id, row) in enumerate(samples.items()):
        for c, column in enumerate(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if column in row:
                ax.imshow(row[column], interpolation="nearest")
            if r == 0:
                ax.set_title(column, fontsize=7)
            if c == 0:
                ax.set_ylabel(case_id, fontsize=6)
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)
