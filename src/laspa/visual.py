"""Pictures for people: a map laid over an image, a labelled grid of edits (CLI and web UI)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: cells of a grid are shown at least this many pixels wide: the miniature model works at
#: 64 px, where a label would be wider than its picture
MIN_CELL = 160


def enlarge(image: Image.Image, minimum: int = MIN_CELL) -> Image.Image:
    """Scale a small image up by a whole factor with nearest neighbours (pixels stay
    honest: no smoothing that would hide what the model produced)."""
    factor = max(1, -(-minimum // max(1, min(image.size))))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def map_overlay(image: Image.Image, heat: np.ndarray) -> Image.Image:
    """``heat`` (h, w) in [0, 1] at any size, drawn in red over a dimmed ``image``."""
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    mask = Image.fromarray((heat * 255).round().astype(np.uint8)).resize(image.size, Image.BILINEAR)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    base = np.asarray(image.convert("RGB"), dtype=np.float32) * 0.6
    red = np.array([255.0, 40.0, 40.0], dtype=np.float32)
    mixed = base * (1 - alpha) + red * alpha
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8))


def labelled_grid(
    cells: list[list[Image.Image]], row_labels: list[str], column_labels: list[str]
) -> Image.Image:
    """Rows x columns of equally sized images with a label above each column and left of
    each row, as a sweep over two parameters reads."""
    cells = [[enlarge(cell) for cell in row] for row in cells]
    width, height = cells[0][0].size
    font = ImageFont.load_default(size=max(12, width // 10))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 8 + max(measure.textlength(label, font=font) for label in row_labels)
    top = 8 + font.size * 1.4
    gap = 4
    size = (
        int(left) + len(column_labels) * (width + gap),
        int(top) + len(row_labels) * (height + gap),
    )
    grid = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(column_labels):
        x = int(left) + j * (width + gap) + width / 2
        draw.text((x, top / 2), label, fill="black", font=font, anchor="mm")
    for i, row in enumerate(cells):
        y = int(top) + i * (height + gap)
        draw.text((4, y + height / 2), row_labels[i], fill="black", font=font, anchor="lm")
        for j, cell in enumerate(row):
            grid.paste(cell.resize((width, height)), (int(left) + j * (width + gap), y))
    return grid
