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
"""

from __future__ import annotations

import errno
import glob as globbing
import io
import logging
import mimetypes
import os
import re
import secrets
import socket
import stat
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)

from stylecore.errors import StyleError

MULTIPART_THRESHOLD = 8 * 1024 * 1024  # larger objects go up in parts
PART_SIZE = 8 * 1024 * 1024  # S3 wants at least 5 MiB for every part but the last
CONNECT_TIMEOUT = 10.0  # seconds
READ_TIMEOUT = 60.0
MAX_ATTEMPTS = 10
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
LIST_PAGE = 1000  # keys per listing request, S3's most
_BODY_ATTEMPTS = 3  # botocore retries requests, not a body cut off while it is read
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{12}(?:\.(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9-]+))?\.tmp")
STALE_TEMP_SECONDS = 24 * 3600  # a temporary file this old has no live writer, whoever wrote it
log = logging.getLogger(__name__)
_BODY_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError)
_DENIED = "access denied (check the credentials' permissions for bucket '{bucket}')"
_REJECTED = (
    "the AWS credentials were rejected ({code}; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
    "or AWS_PROFILE)"
)
_CAUSES = {  # S3 error codes whose cause concerns the run (access denied: unless one input's)
    "NoSuchBucket": "bucket '{bucket}' does not exist",
    "InvalidBucketName": "'{bucket}' is not a valid bucket name",
    **dict.fromkeys(["AccessDenied", "AllAccessDisabled", "AccountProblem"], _DENIED),
    **dict.fromkeys(["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"], _REJECTED),
    **dict.fromkeys(["InvalidToken", "TokenRefreshRequired"], _REJECTED),
}
_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".md": "text/markdown",
    ".npz": "application/octet-stream",
    ".npy": "application/octet-stream",
}
Uri = str | os.PathLike[str]
Data = bytes | bytearray | memoryview | Iterable[bytes]  # an iterable is written chunk by chunk


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


@dataclass(frozen=True)
class _S3:
    bucket: str
    key: str

    def __str__(self) -> str:
        return _show(f"s3://{self.bucket}/{self.key}")


# --- URIs ------------------------------------------------------------------------------------


def is_s3(uri: Uri) -> bool:
    """Whether `uri` is an s3:// URI."""
    match = _SCHEME.match(os.fspath(uri))
    return bool(match) and match[1].lower() == "s3"


def join(base: Uri, *parts: str) -> str:
    """`base` with `parts` appended; parts are relative even when they start with '/'."""
    target = _target(base)
    relative = [p.lstrip("/") for p in parts if p.lstrip("/")]
    if isinstance(target, str):
        return os.path.join(target, *relative)
    return "/".join([f"s3://{target.bucket}", *filter(None, [target.key.strip("/")]), *relative])


def parent(uri: Uri) -> str:
    """The folder or prefix holding `uri` (no trailing '/'; a bucket's root is s3://bucket)."""
    target = _target(uri)
    if isinstance(target, str):
        return os.path.dirname(target.rstrip("/") or "/")
    head = target.key.rstrip("/").rpartition("/")[0]
    return f"s3://{target.bucket}/{head}" if head else f"s3://{target.bucket}"


def name(uri: Uri) -> str:
    """The last component of `uri` (a bucket's root: the bucket); any scheme, as it is only text."""
    try:
        target = _target(uri)
    except StorageError:  # e.g. ftp:// in a manifest row that failed: still a name to show
        return os.fspath(uri).rstrip("/").rpartition("/")[2]
    if isinstance(target, str):
        return os.path.basename(target.rstrip("/"))
    return target.key.rstrip("/").rpartition("/")[2] or target.bucket


def guess_content_type(uri: Uri) -> str:
    """The Content-Type for a name's extension; application/octet-stream when unknown."""
    suffix = PurePosixPath(os.fspath(uri)).suffix.lower()
    known = _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(f"x{suffix}")[0]
    return known or "application/octet-stream"


def _target(uri: Uri) -> _S3 | str:
    """The S3 location or the local path that `uri` names."""
    text = os.fspath(uri)
    match = _SCHEME.match(text)
    if not match:
        return text
    scheme = match[1].lower()
    if scheme == "s3":
        bucket, _, key = text[match.end() :].partition("/")
        if not bucket:
            raise StorageError(f"{_show(text)}: names no bucket")
        return _S3(bucket, key)
    if scheme == "file":
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{_show(text)}: file:// URIs must name a local path")
        return urllib.parse.unquote(parts.path)
    raise StorageError(f"{_show(text)}: unsupported URI scheme '{match[1]}' (use a path or s3://)")


def shown(uri: Uri) -> str:
    """`uri` as messages show it (one line, bounded): the prefix of a StorageError's message."""
    return _show(os.fspath(uri))


def _show(text: str, limit: int = 300) -> str:
    """`text` on one line and of bounded length, for messages: a long one keeps its end (the file's
    name) and loses its middle."""
    if len(text) > limit:
        text = text[: limit // 2] + "…" + text[-(limit // 2) :]
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _object(target: _S3) -> _S3:
    if not target.key or target.key.endswith("/"):
        raise StorageError(f"{target}: names a bucket or prefix, not an object")
    return target


# --- reading ---------------------------------------------------------------------------------


def read_bytes(uri: Uri) -> bytes:
    """The whole content of a file or object."""
    target = _target(uri)
    if isinstance(target, str):
        with _local_errors(target, run_level=False):
            return Path(target).read_bytes()
    with _s3_errors(target, one_object=True):
        return _get(_object(target))


def read_text(uri: Uri) -> str:
    """The UTF-8 text of a file or object."""
    data = read_bytes(uri)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorageError(f"{_show(os.fspath(uri))}: not UTF-8 text (byte {exc.start})") from None


def size(uri: Uri) -> int | None:
    """The size in bytes of a file or object; None when there is none (or it is a directory)."""
    target = _target(uri)
    if isinstance(target, str):
        with _local_errors(target, run_level=False):
            try:
                info = os.stat(target)
            except (FileNotFoundError, NotADirectoryError):
                return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None
    with _s3_errors(target):
        return _head(_object(target))


def modified(uri: Uri) -> float | None:
    """When a file or object was last written (seconds since the epoch); None when there is none."""
    target = _target(uri)
    if isinstance(target, str):
        with _local_errors(target, run_level=False):
            try:
                return os.stat(target).st_mtime
            except (FileNotFoundError, NotADirectoryError):
                return None
    with _s3_errors(target):
        try:
            answer = s3_client().head_object(Bucket=target.bucket, Key=_object(target).key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
    return answer["LastModified"].timestamp()


def exists(uri: Uri) -> bool:
    """Whether a file or object is there (a directory or a mere prefix is not)."""
    return size(uri) is not None


@contextmanager
def local_copy(uri: Uri) -> Iterator[Path]:
    """A local path holding the content, for libraries that want a file; S3 copies are removed."""
    target = _target(uri)
    if isinstance(target, str):
        if not os.path.isfile(target):
            read_bytes(target)  # raises the fitting error: missing, a directory, denied
        yield Path(target)
        return
    fd, temp = tempfile.mkstemp(prefix="stylebatch-", suffix=PurePosixPath(target.key).suffix[:16])
    try:
        with os.fdopen(fd, "wb") as file, _s3_errors(target, one_object=True):
            _download(_object(target), file)
        yield Path(temp)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temp)


def presign(uri: Uri, expires: int = MAX_PRESIGN_SECONDS) -> str:
    """A URL that downloads `uri` for `expires` seconds (a file:// URL for a local path)."""
    if not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise StorageError(f"presign expiry {expires} s: use 1 to {MAX_PRESIGN_SECONDS} (7 days)")
    target = _target(uri)
    if isinstance(target, str):
        return Path(os.path.abspath(target)).as_uri()
    # URLs signed with temporary (STS) credentials stop working when those expire
    params = {"Bucket": target.bucket, "Key": _object(target).key}
    with _s3_errors(target):
        return s3_client().generate_presigned_url("get_object", Params=params, ExpiresIn=expires)


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
    target = _target(uri)
    if isinstance(target, str):
        with _local_errors(target, run_level=True):
            _confine(target, inside)
            return _write_local(target, data, exclusive)
    body = data if isinstance(data, bytes) else b"".join(_chunks(data))  # before any request
    kind = content_type or guess_content_type(target.key)
    with _s3_errors(target):
        if len(body) > MULTIPART_THRESHOLD:
            return _put_parts(_object(target), body, kind, exclusive)
        return _put(_object(target), body, kind, exclusive)


def check_writable(*uris: Uri, inside: Uri | None = None) -> None:
    """Raise now the StorageError that writing these files would meet later (outside `inside`, a
    name too long, a read-only, full or denied folder), before the work of making their content.
    S3 is not probed."""
    folders = []
    for uri in uris:
        target = _target(uri)
        if isinstance(target, str):
            with _local_errors(target, run_level=True):
                _confine(target, inside)
                _check_name(target)
            folders.append(os.path.dirname(os.path.abspath(target)))
    for folder in dict.fromkeys(folders):
        with _local_errors(folder, run_level=True):
            os.makedirs(folder, exist_ok=True)
            _sweep(folder)
            probe = _temp_name(folder, ".probe")
            try:
                _write_synced(probe, b"probe")
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(probe)


def _check_name(path: str) -> None:
    """Refuse a file name longer than its file system allows (NAME_MAX of the nearest folder)."""
    folder, base = os.path.split(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    with suppress(OSError, ValueError):
        limit = os.pathconf(folder, "PC_NAME_MAX")
        if len(base.encode()) > limit:
            message = (
                f"{_show(path)}: file name too long ({len(base.encode())} bytes; {limit} here)"
            )
            raise StorageError(message, lasting=True)


def write_text(uri: Uri, text: str, **kwargs: Any) -> bool:
    """Write `text` as UTF-8; the keywords of `write_bytes`."""
    return write_bytes(uri, text.encode("utf-8"), **kwargs)


def delete(uri: Uri) -> None:
    """Remove a file or object; nothing to remove is fine."""
    target = _target(uri)
    if isinstance(target, str):
        with _local_errors(target, run_level=True), suppress(FileNotFoundError):
            os.unlink(target)
        return
    with _s3_errors(target):
        s3_client().delete_object(Bucket=target.bucket, Key=_object(target).key)


def _chunks(data: Data) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    else:
        yield from data


def _write_local(path: str, data: Data, exclusive: bool) -> bool:
    folder, base = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _sweep(folder)
    temp = _temp_name(folder, base)
    try:
        _write_synced(temp, data)
        if exclusive and not _link_new(temp, path):
            return False
        if not exclusive:
            os.replace(temp, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temp)
    _sync_folder(folder)
    return True


def _confine(path: str, inside: Uri | None) -> None:
    """Refuse `path` when its folder, links resolved, is not within `inside` (links resolved)."""
    root = None if inside is None else _target(inside)
    if not isinstance(root, str):  # S3 has no links: a joined key stays under its prefix
        return
    root = os.path.realpath(root)
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if os.path.commonpath([root, folder]) != root:
        raise StorageError(
            f"{_show(path)}: a symbolic link leads it out of the output root "
            f"{_show(os.fspath(inside))} (to {_show(folder)}); refused",
            lasting=True,
        )


def _host() -> str:
    """This host's name as it can appear in a temporary file's name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _temp_name(folder: str, base: str) -> str:
    short = base.encode()[:100].decode(errors="ignore")  # the temporary name stays under NAME_MAX
    return os.path.join(folder, f".{short}.{secrets.token_hex(6)}.{os.getpid()}@{_host()}.tmp")


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


def _write_synced(temp: str, data: Data) -> None:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    with open(fd, "wb") as file:
        for chunk in _chunks(data):
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


# --- listing ---------------------------------------------------------------------------------


def glob(pattern_uri: Uri) -> list[str]:
    """Files or objects matching a pattern, sorted; `*` and `?` stay within one '/' component."""
    target = _target(pattern_uri)
    if isinstance(target, str):
        found = globbing.glob(target, recursive=True)
        return sorted(p for p in found if os.path.isfile(p) and not _is_temp(p))
    pattern = _glob_regex(target.key)
    prefix = re.split(r"[*?\[]", target.key, maxsplit=1)[0]
    with _s3_errors(target):
        keys = [k for k in _keys(target.bucket, prefix) if pattern.fullmatch(k)]
    return [f"s3://{target.bucket}/{k}" for k in keys]


def list_prefix(prefix_uri: Uri) -> list[str]:
    """Every file or object whose path starts with the prefix, sorted (end a folder with '/')."""
    target = _target(prefix_uri)
    if isinstance(target, str):
        root = target if os.path.isdir(target) else os.path.dirname(target) or "."
        found = (os.path.join(d, f) for d, _, files in os.walk(root) for f in files)
        return sorted(p for p in found if p.startswith(target) and not _is_temp(p))
    with _s3_errors(target):
        return [f"s3://{target.bucket}/{k}" for k in _keys(target.bucket, target.key)]


def _is_temp(path: str) -> bool:
    return bool(_TEMP_NAME.fullmatch(os.path.basename(path)))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a key pattern: `**/` is any number of folders, `**` anything, `*` one name."""
    tokens = re.split(r"(\*\*/|\*\*|\*|\?|\[[^\]/]+\])", pattern)
    fixed = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    out = []
    for token in tokens:
        if token in fixed:
            out.append(fixed[token])
        elif token.startswith("[") and token.endswith("]") and len(token) > 2:
            inner = token[1:-1]
            inner = "^" + inner[1:] if inner.startswith("!") else inner
            out.append("[" + inner.replace("\\", "\\\\") + "]")
        else:
            out.append(re.escape(token))
    return re.compile("".join(out), re.DOTALL)


def _keys(bucket: str, prefix: str) -> list[str]:
    lister = s3_client().get_paginator("list_objects_v2")
    pages = lister.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE})
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


# --- S3 requests -----------------------------------------------------------------------------


def _get(target: _S3) -> bytes:
    buffer = io.BytesIO()
    _download(target, buffer)
    return buffer.getvalue()


def _download(target: _S3, file: IO[bytes]) -> None:
    for attempt in range(_BODY_ATTEMPTS):
        file.seek(0)
        file.truncate()
        response = s3_client().get_object(Bucket=target.bucket, Key=target.key)
        try:
            for chunk in response["Body"].iter_chunks(1024 * 1024):
                file.write(chunk)
            return
        except _BODY_ERRORS:  # cut off mid-body: ask again, from the start
            if attempt == _BODY_ATTEMPTS - 1:
                raise


def _head(target: _S3) -> int | None:
    try:
        return s3_client().head_object(Bucket=target.bucket, Key=target.key)["ContentLength"]
    except ClientError as exc:
        if _status(exc) != 404:
            raise
    _check_bucket(target)  # a HEAD answer has no body to tell a missing key from a missing bucket
    return None


def _check_bucket(target: _S3) -> None:
    if target.bucket in _known_buckets:
        return
    try:
        s3_client().head_bucket(Bucket=target.bucket)
    except ClientError as exc:
        if _status(exc) == 404:
            raise _no_bucket(target) from None
        raise
    _known_buckets.add(target.bucket)


def _put(target: _S3, body: bytes, kind: str, exclusive: bool) -> bool:
    condition = {"IfNoneMatch": "*"} if exclusive else {}
    try:
        s3_client().put_object(
            Bucket=target.bucket, Key=target.key, Body=body, ContentType=kind, **condition
        )
    except ClientError as exc:
        if exclusive and _code(exc) == "PreconditionFailed":
            return False
        if not (exclusive and _code(exc) == "NotImplemented"):
            raise
        if _head(target) is not None:  # a store without conditional writes: racy, say so above
            return False
        return _put(target, body, kind, exclusive=False)
    return True


def _put_parts(target: _S3, body: bytes, kind: str, exclusive: bool) -> bool:
    """A multipart upload: the object appears only when complete; parts go up one by one."""
    client, where = s3_client(), {"Bucket": target.bucket, "Key": target.key}
    upload = client.create_multipart_upload(**where, ContentType=kind)["UploadId"]
    condition = {"IfNoneMatch": "*"} if exclusive else {}
    try:
        parts = []
        for number, start in enumerate(range(0, len(body), PART_SIZE), start=1):
            chunk = body[start : start + PART_SIZE]
            answer = client.upload_part(**where, UploadId=upload, PartNumber=number, Body=chunk)
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        client.complete_multipart_upload(
            **where, UploadId=upload, MultipartUpload={"Parts": parts}, **condition
        )
    except BaseException as exc:
        with suppress(ClientError, BotoCoreError):  # parts left behind cost money
            client.abort_multipart_upload(**where, UploadId=upload)
        if isinstance(exc, ClientError) and exclusive and _code(exc) == "PreconditionFailed":
            return False
        raise
    return True


# --- clients ---------------------------------------------------------------------------------

_lock = threading.Lock()
_sessions: dict[str | None, boto3.session.Session] = {}
_threads = threading.local()
_generation = 0
_known_buckets: set[str] = set()


def s3_client() -> Any:
    """This thread's S3 client for the current environment (profile, endpoint, region)."""
    env = os.environ
    key = (
        _generation,
        env.get("AWS_PROFILE"),
        env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        env.get("AWS_REGION"),
    )
    if getattr(_threads, "key", None) != key:
        _threads.client, _threads.key = _new_client(), key
    return _threads.client


def reset_clients() -> None:
    """Forget sessions, clients and known buckets, so the next call reads the environment anew."""
    global _generation
    with _lock:
        _sessions.clear()
        _known_buckets.clear()
        _generation += 1


def _new_client() -> Any:
    with _lock:  # boto3 sessions are not thread-safe; the clients made from them are
        profile = os.environ.get("AWS_PROFILE") or None
        if profile not in _sessions:
            _sessions[profile] = boto3.session.Session(profile_name=profile)
        session = _sessions[profile]
        # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what the other SDKs read first
        region = os.environ.get("AWS_REGION") or session.region_name or "us-east-1"
        return session.client("s3", region_name=region, config=_config())


def _config() -> Config:
    retries: dict[str, Any] = {}
    if "AWS_RETRY_MODE" not in os.environ:  # an explicit Config would override the environment
        retries["mode"] = "adaptive"
    if "AWS_MAX_ATTEMPTS" not in os.environ:
        retries["max_attempts"] = MAX_ATTEMPTS
    return Config(
        signature_version="s3v4",  # botocore would presign with SigV2 in us-east-1
        retries=retries,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )


# --- errors ----------------------------------------------------------------------------------


@contextmanager
def _local_errors(path: str, *, run_level: bool) -> Iterator[None]:
    """OS errors as one-line StorageErrors; `run_level` says whose a permission problem is."""
    shown = _show(path)
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
    cause = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
    return StorageError(f"{shown}: {cause}")


@contextmanager
def _s3_errors(target: _S3, *, one_object: bool = False) -> Iterator[None]:
    """botocore errors as one-line StorageErrors built from codes, never from botocore's text."""
    try:
        yield
    except ClientError as exc:
        raise _client_error(target, exc, one_object) from None
    except BotoCoreError as exc:
        raise _transport_error(target, exc) from None


def _client_error(target: _S3, exc: ClientError, one_object: bool) -> StorageError:
    code, status = _code(exc), _status(exc)
    if code in ("NoSuchKey", "NotFound"):
        return NotFoundError(f"{target}: not found")
    cause = _CAUSES.get(code) or (_DENIED if status == 403 else None)
    if cause is None:  # after botocore's retries: this object's trouble, a rerun may pass
        return StorageError(
            f"{target}: S3 answered {_show(code, 60) or 'an error'} (HTTP {status})"
        )
    message = f"{target}: " + cause.format(bucket=_show(target.bucket), code=code)
    return StorageError(message, run_level=not (cause is _DENIED and one_object))


def _transport_error(target: _S3, exc: BotoCoreError) -> StorageError:
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        hint = "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        return StorageError(f"{target}: no AWS credentials found ({hint})", run_level=True)
    if isinstance(exc, ProfileNotFound):
        profile = _show(str(exc.kwargs.get("profile", "")), 60)
        hint = "check AWS_PROFILE and ~/.aws/config"
        return StorageError(f"{target}: AWS profile '{profile}' not found ({hint})", run_level=True)
    if isinstance(exc, ParamValidationError):
        return StorageError(f"{target}: not a valid S3 bucket name or key")
    reason = _unreachable(exc)
    if reason:
        message = f"{target}: cannot reach the S3 endpoint {_endpoint()} ({reason})"
        return StorageError(message, run_level=True)
    kind = type(exc).__name__
    if "Credential" in kind or "Token" in kind:  # SSO, web identity, container and IMDS failures
        return StorageError(f"{target}: could not load AWS credentials ({kind})", run_level=True)
    return StorageError(f"{target}: S3 request failed ({kind})")


def _unreachable(exc: BotoCoreError) -> str | None:
    """Why the endpoint could not be reached, or None when `exc` is of another kind."""
    if isinstance(exc, ConnectTimeoutError):
        return f"no connection within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, SSLError):
        return "TLS failed; check AWS_CA_BUNDLE"
    if isinstance(exc, EndpointConnectionError):
        return _connect_reason(exc.kwargs.get("error"))
    if isinstance(exc, ReadTimeoutError):
        return f"no answer within {READ_TIMEOUT:g} s"
    if isinstance(exc, ConnectionClosedError | ResponseStreamingError | IncompleteReadError):
        return "the connection kept closing"
    return None


def _connect_reason(cause: BaseException | None) -> str:
    for _ in range(8):  # urllib3 wraps the socket's error once or twice
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        cause = cause.__cause__ or cause.__context__
    return "connection failed"


def _endpoint() -> str:
    """The endpoint's scheme, host and port, without any user:password part."""
    parts = urllib.parse.urlsplit(s3_client().meta.endpoint_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _no_bucket(target: _S3) -> StorageError:
    cause = _CAUSES["NoSuchBucket"].format(bucket=_show(target.bucket))
    return StorageError(f"{target}: {cause}", run_level=True)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
