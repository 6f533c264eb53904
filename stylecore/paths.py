"""Where stylebatch keeps downloaded and converted files on this machine."""

from __future__ import annotations

import os
from pathlib import Path

from stylecore.errors import StyleError


def cache_dir() -> Path:
    """The user cache directory, created on demand.

    `$STYLEBATCH_CACHE` if set, else `$XDG_CACHE_HOME/stylebatch`, else `~/.cache/stylebatch`.
    """
    explicit = os.environ.get("STYLEBATCH_CACHE")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "stylebatch"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StyleError(
            f"cache directory {path} cannot be created ({exc.strerror or exc}); "
            "set STYLEBATCH_CACHE to a writable directory"
        ) from exc
    return path
