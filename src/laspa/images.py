"""Images in and out: safe reading, the model-resolution rule, atomic writing."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, OutputError
from .files import check_writable, output_checks, replaced_atomically, shortened

#: Images with more pixels than this are refused before decoding (decompression bombs).
MAX_PIXELS = 8192 * 8192

#: The model works on at most this multiple of its own area (resolution squared). Sides
#: rounded up to the downsampling multiple add a little; an image so thin that its short
#: side stops at one multiple (beyond 4 (resolution / multiple)^2 : 1, 256:1 for SD and
#: 64:1 for the miniature) would add without bound, so its long side is shortened
#: instead (see fit_size).
MAX_WORK_AREA_FACTOR = 2

_OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def load_image(source: str | os.PathLike | Image.Image) -> Image.Image:
    """Read any image file PIL knows as RGB, or raise ImageError with a one-line reason.

    EXIF orientation is applied; transparency is composited over white.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    path = Path(source)
    try:
        if not path.exists():
            raise ImageError(f"input image not found: {path}")
        if not path.is_file():
            raise ImageError(f"input image is not a file: {path}")
        if path.stat().st_size == 0:
            raise ImageError(f"input image is empty (0 bytes): {path}")
    except OSError as error:  # e.g. a name longer than the file system allows
        raise ImageError(f"cannot read image {shortened(path)}: {error.strerror}") from None
    try:
        with warnings.catch_warnings():
            # PIL warns about damage it reads past (corrupt EXIF, odd chunks): the image
            # loads or is refused in one line, and the warning would only add lines
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"input image is too large ({width}x{height} pixels; "
                        f"the limit is {MAX_PIXELS} pixels): {path}"
                    )
                image.load()
                return _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"not an image file (unrecognised format): {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"input image is too large (decompression bomb guard): {path}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot read image {path}: {error}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def fit_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The model-side size of a ``width`` x ``height`` input.

    Keep the aspect ratio, take the area of ``resolution`` squared (the size the model was
    trained at), and round each side to a multiple of ``multiple`` (what the VAE and UNet
    downsampling need). A square input maps to exactly ``resolution`` x ``resolution``.
    No side is below ``multiple``, and the area never exceeds ``MAX_WORK_AREA_FACTOR``
    times the model's: a thinner image than that allows is squeezed along its long side,
    so an edit never costs more than that multiple of one generation at the model's size.
    """
    scale = (resolution * resolution / (width * height)) ** 0.5
    sides = [max(multiple, round(side * scale / multiple) * multiple) for side in (width, height)]
    longest = max(range(2), key=lambda i: sides[i])
    most = MAX_WORK_AREA_FACTOR * resolution * resolution // sides[1 - longest]
    sides[longest] = max(multiple, min(sides[longest], most // multiple * multiple))
    return sides[0], sides[1]


def to_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) float tensor in [-1, 1] at ``size`` (width, height)."""
    if image.size != size:
        image = image.resize(size, Image.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def to_pil(tensor: torch.Tensor, size: tuple[int, int] | None = None) -> list[Image.Image]:
    """(N, 3, H, W) tensor in [-1, 1] -> PIL images, resized to ``size`` if given."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    images = [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in array]
    if size is not None:
        images = [im if im.size == size else im.resize(size, Image.LANCZOS) for im in images]
    return images


def check_output_path(
    output: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = ()
) -> Path:
    """Refuse an output that would overwrite an input, sits in a missing folder, or has an
    extension we cannot write. Called before any work so that nothing is computed in vain."""
    path = Path(output)
    if path.suffix.lower() not in _OUTPUT_FORMATS:
        known = ", ".join(_OUTPUT_FORMATS)
        raise OutputError(f"output {shortened(path)} must end in one of {known}")
    with output_checks(path):
        if not path.parent.exists() or not path.parent.is_dir():
            raise OutputError(f"output directory does not exist: {path.parent}")
        check_writable(path)  # the name's length and the folder's permissions
        for source in inputs:
            source = Path(source)
            if source.exists() and path.exists() and os.path.samefile(source, path):
                raise OutputError(f"output {path} would overwrite the input image")
            if os.path.realpath(path) == os.path.realpath(source):  # never raises on loops
                raise OutputError(f"output {path} would overwrite the input image")
        if path.is_dir():
            raise OutputError(f"output {path} is a directory")
    return path


def save_image(image: Image.Image, output: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the target folder, then rename over the target,
    so a crash or a full disk never leaves a half-written image."""
    path = Path(output)
    file_format = _OUTPUT_FORMATS.get(path.suffix.lower(), "PNG")
    with replaced_atomically(path) as temporary:
        image.save(temporary, format=file_format)
    return path
