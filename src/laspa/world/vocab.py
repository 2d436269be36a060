"""The closed vocabulary of the scene world: shapes, colours, sizes, grid cells.

Everything a scene can contain is named here once, so that captions, the
renderer, the edit logic and the reader agree by construction and a tiny
text encoder can be built from `VOCABULARY` alone.

Colour choice: object and background palettes are disjoint and every pair of
the 16 colours is at least 90 apart in RGB (Euclidean), so nearest-colour
snapping stays correct under the blur and colour shift of generated images,
and an object can never have the background's colour.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
SIZES: tuple[str, ...] = ("small", "large")

OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 35),
    "orange": (255, 140, 0),
    "yellow": (255, 235, 20),
    "green": (20, 170, 40),
    "blue": (30, 70, 245),
    "purple": (150, 40, 210),
    "pink": (255, 135, 215),
    "white": (255, 255, 255),
}

BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "brown": (140, 85, 25),
    "navy": (0, 20, 120),
    "teal": (0, 125, 130),
    "maroon": (120, 0, 50),
    "cyan": (0, 230, 235),
    "lime": (170, 255, 90),
}

# Row-major 3x3 grid; the name of a cell is also its caption phrase.
CELLS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip

MAX_OBJECTS = 3

# Object diameters as a fraction of the image side (19.2 px and 12 px at 64x64).
# A grid cell is 1/3 of the side, so even a large object leaves >= 1 px of
# clearance to its cell border: objects in distinct cells never touch.
SIZE_FRACTION: dict[str, float] = {"small": 0.1875, "large": 0.30}

_FUNCTION_WORDS: tuple[str, ...] = ("a", "and", "at", "in", "on", "the", "background")
_POSITION_WORDS: tuple[str, ...] = ("top", "bottom", "left", "right", "center")

VOCABULARY: tuple[str, ...] = (
    _FUNCTION_WORDS
    + SIZES
    + tuple(OBJECT_COLORS)
    + tuple(BACKGROUND_COLORS)
    + SHAPES
    + _POSITION_WORDS
)


def cell_row_col(cell: str) -> tuple[int, int]:
    """(row, column) of a named cell, 0-based from the top left."""
    index = CELLS.index(cell)
    return divmod(index, 3)


def cell_center(cell: str, size: int) -> tuple[float, float]:
    """Exact (x, y) centre of a cell in continuous pixel coordinates.

    Pixel k spans [k, k+1), so the image centre of a 64 px image is 32.0.
    """
    row, col = cell_row_col(cell)
    return ((col + 0.5) * size / 3.0, (row + 0.5) * size / 3.0)
