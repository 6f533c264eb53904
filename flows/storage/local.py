"""The local backend: files written whole or not at all, confined, swept after dead writers.

A file is written under a temporary name (``.out.png.<random>.<pid>@<host>.tmp``) and renamed, or
hard-linked when the write is exclusive, since a link, unlike a rename, never replaces. The first
write into a folder in a process removes the temporary files that dead writers on this host left
there, and any older than a day.
"""

from __future__ import annotations

import errno
import glob as globbing
import logging
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path

from flows import stops
from flows.storage.errors import StorageError, locate, os_errors
from flows.uri import Uri, show

STALE_TEMP_SECONDS = 24 * 3600  # a temporary file this old has no live writer, whoever wrote it
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}(?:\.(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9-]+))?\.tmp")
log = logging.getLogger(__name__)


class LocalBackend:
    """Local paths (a str each), through the operating system's calls."""

    def read(self, path: str) -> bytes:
        with os_errors(path, run_level=False):
            return Path(path).read_bytes()

    def exists(self, path: str) -> bool:
        with os_errors(path, run_level=False):
            try:
                info = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
        return stat.S_ISREG(info.st_mode)  # a directory is not a file

    def modified(self, path: str) -> float | None:
        with os_errors(path, run_level=False):
            try:
                return os.stat(path).st_mtime
            except (FileNotFoundError, NotADirectoryError):
                return None

    def presign(self, path: str, expires: int) -> str:
        return Path(os.path.abspath(path)).as_uri()  # a local file needs no signature

    def write(
        self,
        path: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None,
        exclusive: bool,
        inside: Uri | None,
    ) -> bool:
        with os_errors(path, run_level=True):
            _confine(path, inside)
            return _write(path, chunks, exclusive)

    def check_writable(self, paths: Sequence[str], inside: Uri | None) -> None:
        for path in paths:
            with os_errors(path, run_level=True):
                _confine(path, inside)
                _check_name(path)
        for folder in dict.fromkeys(os.path.dirname(os.path.abspath(p)) for p in paths):
            with os_errors(folder, run_level=True):
                os.makedirs(folder, exist_ok=True)
                _sweep(folder)
                probe = _temp_name(folder, ".probe")
                try:
                    _write_synced(probe, [b"probe"])
                finally:
                    with suppress(FileNotFoundError):
                        os.unlink(probe)

    def delete(self, path: str) -> None:
        with os_errors(path, run_level=True), suppress(FileNotFoundError):
            os.unlink(path)

    def glob(self, pattern: str) -> list[str]:
        found = globbing.glob(pattern, recursive=True)
        return sorted(p for p in found if os.path.isfile(p) and not _is_temp(p))


# --- writing ---------------------------------------------------------------------------------


def _write(path: str, chunks: Iterable[bytes], exclusive: bool) -> bool:
    folder, base = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _sweep(folder)
    temp = _temp_name(folder, base)
    _writing.add(temp)
    try:
        _write_synced(temp, chunks)
        if exclusive and not _link_new(temp, path):
            return False
        if not exclusive:
            os.replace(temp, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        _writing.discard(temp)
    _sync_folder(folder)
    return True


_writing: set[str] = set()  # this process's temporary files, while they are written


def abandon_writes() -> None:
    """Remove the temporary files this process is writing: it is about to end at once (a second
    signal), and would leave them to the next writer's sweep."""
    for temp in list(_writing):
        with suppress(OSError):
            os.unlink(temp)


stops.before_ending_at_once(abandon_writes)


def _write_synced(temp: str, chunks: Iterable[bytes]) -> None:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    with open(fd, "wb") as file:
        for chunk in chunks:
            file.write(chunk)
        file.flush()
        os.fsync(file.fileno())  # the content is on disk before the name points at it


def _link_new(temp: str, path: str) -> bool:
    """Give `temp` the name `path` unless that exists; a link, unlike a rename, never replaces."""
    try:
        os.link(temp, path)
    except FileExistsError:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path) from None
        return False
    return True


def _sync_folder(folder: str) -> None:
    """Make the rename durable; some file systems cannot sync a directory, which is harmless."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- refusing a write before it starts -------------------------------------------------------


def _confine(path: str, inside: Uri | None) -> None:
    """Refuse `path` when its folder, links resolved, is not within `inside` (links resolved)."""
    root = None if inside is None else locate(inside)
    if not isinstance(root, str):  # S3 has no links: a joined key stays under its prefix
        return
    root = os.path.realpath(root)
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if os.path.commonpath([root, folder]) != root:
        raise StorageError(
            f"{show(path)}: a symbolic link leads it out of the output root "
            f"{show(os.fspath(inside))} (to {show(folder)}); refused",
            lasting=True,
        )


def _check_name(path: str) -> None:
    """Refuse a file name longer than its file system allows (NAME_MAX of the nearest folder)."""
    folder, base = os.path.split(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    with suppress(OSError, ValueError):
        limit = os.pathconf(folder, "PC_NAME_MAX")
        if len(base.encode()) > limit:
            message = f"{show(path)}: file name too long ({len(base.encode())} bytes; {limit} here)"
            raise StorageError(message, lasting=True)


# --- temporary names and the sweep after dead writers ----------------------------------------


def _host() -> str:
    """This host's name as it can appear in a temporary file's name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _temp_name(folder: str, base: str) -> str:
    short = base.encode()[:100].decode(errors="ignore")  # the temporary name stays under NAME_MAX
    return os.path.join(folder, f".{short}.{secrets.token_hex(6)}.{os.getpid()}@{_host()}.tmp")


def _is_temp(path: str) -> bool:
    return bool(_TEMP_NAME.fullmatch(os.path.basename(path)))


_swept: set[str] = set()
_swept_lock = threading.Lock()


def _sweep(folder: str) -> None:
    """Once per process and folder: remove temporary files whose writer is gone."""
    with _swept_lock:
        if folder in _swept:
            return
        _swept.add(folder)
    removed = 0
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMP_NAME.fullmatch(entry.name)
            if match and entry.is_file(follow_symlinks=False) and _abandoned(entry, match):
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        log.info("removed %d temporary file(s) of dead writers in %s", removed, folder)


def _abandoned(entry: os.DirEntry, match: re.Match[str]) -> bool:
    """A dead writer's on this host, or old enough that no writer can still be at it."""
    with suppress(OSError):
        if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
            return True
    if match["pid"] is None or match["host"] != _host():
        return False  # another host's pid says nothing here; only age can tell
    return not _alive(int(match["pid"]))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or a pid no process can have: leave it
    return True
