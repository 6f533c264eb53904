"""Storage's errors: StorageError and NotFoundError, and OS or URI errors turned into them.

A message is one line naming the location and the cause. `run_level` marks a cause that concerns
the whole run (bucket, credentials, endpoint, permissions on the output root); `lasting` one that
trying again at once cannot help (a full disk, a read-only file system).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from flows.uri import Location, Uri, UriError, show
from flows.uri import locate as locate_uri
from stylecore.errors import StyleError


class StorageError(StyleError):
    """A read, write or listing failed; `run_level` when the cause concerns the whole run,
    `lasting` when trying again at once cannot help (a full disk, a read-only file system)."""

    def __init__(self, message: str, *, run_level: bool = False, lasting: bool = False) -> None:
        super().__init__(message)
        self.run_level = run_level  # bucket, credentials, endpoint, permissions on the output root
        self.lasting = lasting

    def reworded(self, message: str) -> StorageError:
        return type(self)(message, run_level=self.run_level, lasting=self.lasting)


class NotFoundError(StorageError):
    """The file or object does not exist."""


def locate(uri: Uri) -> Location:
    """`flows.uri.locate`, its UriError (an unknown scheme, no bucket) as a StorageError."""
    try:
        return locate_uri(uri)
    except UriError as exc:
        raise StorageError(str(exc)) from None


@contextmanager
def os_errors(path: str, *, run_level: bool) -> Iterator[None]:
    """OS errors as one-line StorageErrors; `run_level` says whose a permission problem is."""
    shown = show(path)
    try:
        yield
    except FileNotFoundError:
        raise NotFoundError(f"{shown}: not found") from None
    except IsADirectoryError:
        raise StorageError(f"{shown}: is a directory", lasting=True) from None
    except NotADirectoryError:
        message = f"{shown}: a parent of it is a file, not a directory"
        raise StorageError(message, lasting=True) from None
    except PermissionError:
        message = f"{shown}: permission denied"
        raise StorageError(message, run_level=run_level, lasting=True) from None
    except OSError as exc:
        raise _os_error(shown, exc) from None


def _os_error(shown: str, exc: OSError) -> StorageError:
    whole_run = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
    }
    if exc.errno in whole_run:
        return StorageError(f"{shown}: {whole_run[exc.errno]}", run_level=True, lasting=True)
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError(f"{shown}: file name too long", lasting=True)
    if exc.errno == errno.EFBIG:  # past the file system's or the process's limit (ulimit -f)
        return StorageError(f"{shown}: file too large", lasting=True)
    cause = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
    return StorageError(f"{shown}: {cause}")
