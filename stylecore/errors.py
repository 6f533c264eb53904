"""Error types of the core: each message is one line a user can act on."""


class StyleError(Exception):
    """Base of every error the core raises on purpose; its message is user-facing."""

    def reworded(self, message: str) -> "StyleError":
        """The same kind of error (and flags, in subclasses that have them) with a new message."""
        return type(self)(message)


class WeightsError(StyleError):
    """A weights file is missing, unreadable, not a network, or lacks a requested layer."""


class ImageError(StyleError):
    """An image cannot be used: missing, not an image, corrupt, too large or too small."""


class OptionsError(StyleError, ValueError):
    """An option has a wrong type or an out-of-range value."""


class NumericalError(StyleError):
    """The optimization diverged: a loss became NaN or infinite."""


def cause(exc: BaseException) -> str:
    """A library's exception as a clause for a one-line message: its type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
