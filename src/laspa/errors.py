"""Errors a user can cause. The CLI turns each into one line on stderr and exit status 2."""


class LaspaError(Exception):
    """Base class of errors caused by user input rather than by a bug."""


class ParameterError(LaspaError, ValueError):
    """A parameter outside its documented range, or an unknown method or option."""


class ImageError(LaspaError):
    """An input image that cannot be read safely."""


class ModelError(LaspaError):
    """A model that cannot be loaded (missing, not diffusers format, pickle weights)."""


class OutputError(LaspaError):
    """An output path that would clash with the input or cannot be written."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none:
    what a one-line refusal quotes of a library's (often multi-line) error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
