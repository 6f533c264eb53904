"""Storage: one interface for local paths and s3:// URIs — read, atomic write, list, presign.

S3 goes through boto3 with the standard credential chain and environment: ``AWS_PROFILE``,
``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (us-east-1 when neither is set), ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3`` for MinIO, Ceph or R2 (boto3 reads those itself). botocore addresses a
custom endpoint path-style (``http://host/bucket/key``), so such stores need no bucket DNS names.
Retries are botocore's adaptive mode unless ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` say otherwise.

Writes are whole or absent: local files are written under a temporary name and renamed, S3 objects
appear only once their PutObject or multipart upload completes. A temporary name carries its
writer's pid and host (``.out.png.<random>.<pid>@<host>.tmp``); the first write into a folder in
a process removes the temporary files that dead writers on this host left there (a run killed with
SIGKILL), and any older than a day. ``inside`` confines a local write to a folder: a path that a
symbolic link leads out of it is refused, not followed. ``exclusive`` writes never replace
an existing file or object: a hard link locally, ``If-None-Match: *`` on S3. A store that answers
``NotImplemented`` to that header gets a HEAD then a PUT, which two writers can race; a store that
silently ignores the header overwrites. A conditional PUT that botocore retries after its answer was
lost may meet its own first attempt and report False: the object then holds this very content.

Every failure is a ``StorageError`` with one line naming the URI and the cause, built from error
codes only: botocore's own texts may hold signed URLs, and no credential may reach a log.

Each call here locates its URI once (``flows.uri.locate``) and hands the location to the backend
of its kind: ``local.LocalBackend`` for a path, ``s3.S3Backend`` for an ``S3Location``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from flows.storage.errors import NotFoundError, StorageError, locate
from flows.storage.local import LocalBackend
from flows.storage.s3 import S3Backend
from flows.uri import Location, S3Location, Uri, show

__all__ = [
    "MAX_PRESIGN_SECONDS",
    "NotFoundError",
    "StorageError",
    "check_writable",
    "delete",
    "exists",
    "glob",
    "modified",
    "presign",
    "read_bytes",
    "read_text",
    "write_bytes",
]

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
Data = bytes | bytearray | memoryview | Iterable[bytes]  # an iterable is written chunk by chunk
_At = TypeVar("_At", contravariant=True)


class Backend(Protocol[_At]):
    """What every backend does at a location of its kind (a local path, an S3Location)."""

    def read(self, where: _At) -> bytes: ...
    def exists(self, where: _At) -> bool: ...
    def modified(self, where: _At) -> float | None: ...
    def presign(self, where: _At, expires: int) -> str: ...
    def delete(self, where: _At) -> None: ...
    def glob(self, pattern: _At) -> list[str]: ...
    def check_writable(self, places: Sequence[_At], inside: Uri | None) -> None: ...
    def write(
        self,
        where: _At,
        chunks: Iterable[bytes],
        *,
        content_type: str | None,
        exclusive: bool,
        inside: Uri | None,
    ) -> bool: ...


_LOCAL: Backend[str] = LocalBackend()
_S3: Backend[S3Location] = S3Backend()


def _backend(uri: Uri) -> tuple[Backend[Any], Location]:
    """The backend for `uri`'s scheme and the location it names there: the one dispatch."""
    where = locate(uri)
    return (_S3 if isinstance(where, S3Location) else _LOCAL), where


# --- reading ---------------------------------------------------------------------------------


def read_bytes(uri: Uri) -> bytes:
    """The whole content of a file or object."""
    backend, where = _backend(uri)
    return backend.read(where)


def read_text(uri: Uri) -> str:
    """The UTF-8 text of a file or object."""
    data = read_bytes(uri)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"{show(uri)}: not UTF-8 text (byte {exc.start})") from None


def exists(uri: Uri) -> bool:
    """Whether a file or object is there (a directory or a mere prefix is not)."""
    backend, where = _backend(uri)
    return backend.exists(where)


def modified(uri: Uri) -> float | None:
    """When a file or object was last written (seconds since the epoch); None when there is none."""
    backend, where = _backend(uri)
    return backend.modified(where)


def presign(uri: Uri, expires: int = MAX_PRESIGN_SECONDS) -> str:
    """A URL that downloads `uri` for `expires` seconds (a file:// URL for a local path)."""
    if not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise StorageError(f"presign expiry {expires} s: use 1 to {MAX_PRESIGN_SECONDS} (7 days)")
    backend, where = _backend(uri)
    return backend.presign(where, expires)


def glob(pattern_uri: Uri) -> list[str]:
    """Files or objects matching a pattern, sorted; `*` and `?` stay within one '/' component."""
    backend, pattern = _backend(pattern_uri)
    return backend.glob(pattern)


# --- writing ---------------------------------------------------------------------------------


def write_bytes(
    uri: Uri,
    data: Data,
    *,
    content_type: str | None = None,
    exclusive: bool = False,
    inside: Uri | None = None,
) -> bool:
    """Write `data` whole or not at all; False when `exclusive` and something was already there.
    With `inside`, a write that would land outside that folder (through a link) is refused."""
    backend, where = _backend(uri)
    return backend.write(
        where, _chunks(data), content_type=content_type, exclusive=exclusive, inside=inside
    )


def check_writable(*uris: Uri, inside: Uri | None = None) -> None:
    """Raise now the StorageError that writing these files would meet later (outside `inside`, a
    name too long, a read-only, full or denied folder), before the work of making their content.
    S3 is not probed."""
    places: dict[Backend[Any], list[Location]] = {}
    for uri in uris:
        backend, where = _backend(uri)
        places.setdefault(backend, []).append(where)
    for backend, wheres in places.items():
        backend.check_writable(wheres, inside)


def delete(uri: Uri) -> None:
    """Remove a file or object; nothing to remove is fine."""
    backend, where = _backend(uri)
    backend.delete(where)


def _chunks(data: Data) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    else:
        yield from data
