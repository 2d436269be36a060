"""Photo-like detail that captions do not describe: uneven lighting and a soft texture.

A caption names every part of a plain scene, so plain text-to-image generation already
reproduces most of it, and a benchmark cannot tell editing from regenerating. A real
photo is full of detail its caption leaves out; editing methods exist to keep it. This
module adds such detail to a rendered scene: a smooth illumination gradient (a gain
field) and a faint low-frequency luminance texture, both drawn from a seed. The same
field applied to a source and its edited target keeps the target exact.

The amplitudes are small enough for the scene reader: the worst-case change of a pixel
(gain 1 +- ``gain_amplitude`` times 255, plus the texture) stays under half the 90 RGB
units that separate any two palette colours.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: maximum relative change of brightness by the lighting gradient
GAIN_AMPLITUDE = 0.07
#: maximum absolute change of each channel by the texture, in 0..255 units
TEXTURE_AMPLITUDE = 14.0


def detail_field(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(gain, offset): float32 (size, size) fields, ``pixel * gain + offset``.

    The gain is one slow plane wave (about one cycle per image); the offset a sum of
    three waves of 2 to 5 cycles per image, with random directions and phases.
    """
    rng = np.random.default_rng([seed, 0x0DE7A11])
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    y, x = np.meshgrid(coords, coords, indexing="ij")

    def wave(cycles: float) -> np.ndarray:
        angle, phase = rng.uniform(0, 2 * np.pi, size=2)
        return np.cos(2 * np.pi * cycles * (x * np.cos(angle) + y * np.sin(angle)) + phase)

    gain = 1.0 + GAIN_AMPLITUDE * wave(rng.uniform(0.5, 1.2))
    weights = rng.dirichlet(np.ones(3))  # the three waves share the amplitude budget
    offset = sum(w * wave(rng.uniform(2.0, 5.0)) for w in weights) * TEXTURE_AMPLITUDE
    return gain.astype(np.float32), offset.astype(np.float32)


def add_detail(
    image: Image.Image, seed: int, strength: float = 1.0, tint: tuple[float, ...] = (0, 0, 0)
) -> Image.Image:
    """``image`` (RGB) with the lighting and texture of ``seed``, their amplitudes scaled
    by ``strength``, plus a uniform per-channel ``tint`` (0..255 units)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    if pixels.shape[0] != pixels.shape[1]:
        raise ValueError(f"scene images are square, got {image.size}")
    gain, offset = detail_field(seed, pixels.shape[0])
    gain = 1.0 + strength * (gain - 1.0)
    detailed = pixels * gain[..., None] + strength * offset[..., None] + np.float32(tint)
    return Image.fromarray(np.clip(np.rint(detailed), 0, 255).astype(np.uint8), mode="RGB")
