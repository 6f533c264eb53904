"""The S3 backend: objects read, written whole (conditionally when exclusive), listed, presigned.

An object appears only once its PutObject or multipart upload completes. An exclusive write sends
``If-None-Match: *``; a store that answers ``NotImplemented`` to it gets a HEAD then a PUT, which
two writers can race. botocore retries requests; a body cut off while it is read is asked for
again here, from the start.
"""

from __future__ import annotations

import io
import mimetypes
import re
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import PurePosixPath

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from flows.storage.errors import StorageError
from flows.storage.s3client import client, known_buckets
from flows.storage.s3errors import code, no_bucket, s3_errors, status
from flows.uri import S3Location, Uri

MULTIPART_THRESHOLD = 8 * 1024 * 1024  # larger objects go up in parts
PART_SIZE = 8 * 1024 * 1024  # S3 wants at least 5 MiB for every part but the last
LIST_PAGE = 1000  # keys per listing request, S3's most
_BODY_ATTEMPTS = 3  # botocore retries requests, not a body cut off while it is read
_BODY_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError)
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


class S3Backend:
    """s3:// locations, through this thread's boto3 client."""

    def read(self, where: S3Location) -> bytes:
        with s3_errors(where, one_object=True):
            return _get(_object(where))

    def exists(self, where: S3Location) -> bool:
        with s3_errors(where):
            return _head(_object(where)) is not None

    def modified(self, where: S3Location) -> float | None:
        with s3_errors(where):
            try:
                answer = client().head_object(Bucket=where.bucket, Key=_object(where).key)
            except ClientError as exc:
                if status(exc) == 404:
                    return None
                raise
        return answer["LastModified"].timestamp()

    def presign(self, where: S3Location, expires: int) -> str:
        # URLs signed with temporary (STS) credentials stop working when those expire
        params = {"Bucket": where.bucket, "Key": _object(where).key}
        with s3_errors(where):
            return client().generate_presigned_url("get_object", Params=params, ExpiresIn=expires)

    def write(
        self,
        where: S3Location,
        chunks: Iterable[bytes],
        *,
        content_type: str | None,
        exclusive: bool,
        inside: Uri | None,
    ) -> bool:
        body = b"".join(chunks)  # before any request: a failing producer writes nothing
        kind = content_type or _content_type(where.key)
        with s3_errors(where):
            if len(body) > MULTIPART_THRESHOLD:
                return _put_parts(_object(where), body, kind, exclusive)
            return _put(_object(where), body, kind, exclusive)

    def check_writable(self, places: Sequence[S3Location], inside: Uri | None) -> None:
        pass  # S3 is not probed: a write costs a request, and its errors come soon enough

    def delete(self, where: S3Location) -> None:
        with s3_errors(where):
            client().delete_object(Bucket=where.bucket, Key=_object(where).key)

    def glob(self, pattern: S3Location) -> list[str]:
        regex = _glob_regex(pattern.key)
        prefix = re.split(r"[*?\[]", pattern.key, maxsplit=1)[0]
        with s3_errors(pattern):
            keys = [k for k in _keys(pattern.bucket, prefix) if regex.fullmatch(k)]
        return [f"s3://{pattern.bucket}/{k}" for k in keys]


def _object(where: S3Location) -> S3Location:
    if not where.key or where.key.endswith("/"):
        raise StorageError(f"{where}: names a bucket or prefix, not an object")
    return where


def _content_type(key: str) -> str:
    """The Content-Type for a name's extension; application/octet-stream when unknown."""
    suffix = PurePosixPath(key).suffix.lower()
    known = _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(f"x{suffix}")[0]
    return known or "application/octet-stream"


# --- requests --------------------------------------------------------------------------------


def _get(where: S3Location) -> bytes:
    file = io.BytesIO()
    for attempt in range(_BODY_ATTEMPTS):
        file.seek(0)
        file.truncate()
        response = client().get_object(Bucket=where.bucket, Key=where.key)
        try:
            for chunk in response["Body"].iter_chunks(1024 * 1024):
                file.write(chunk)
            break
        except _BODY_ERRORS:  # cut off mid-body: ask again, from the start
            if attempt == _BODY_ATTEMPTS - 1:
                raise
    return file.getvalue()


def _head(where: S3Location) -> int | None:
    """The object's size; None when there is none."""
    try:
        return client().head_object(Bucket=where.bucket, Key=where.key)["ContentLength"]
    except ClientError as exc:
        if status(exc) != 404:
            raise
    _check_bucket(where)  # a HEAD answer has no body to tell a missing key from a missing bucket
    return None


def _check_bucket(where: S3Location) -> None:
    known = known_buckets()
    if where.bucket in known:
        return
    try:
        client().head_bucket(Bucket=where.bucket)
    except ClientError as exc:
        if status(exc) == 404:
            raise no_bucket(where) from None
        raise
    known.add(where.bucket)


def _put(where: S3Location, body: bytes, kind: str, exclusive: bool) -> bool:
    condition = {"IfNoneMatch": "*"} if exclusive else {}
    try:
        client().put_object(
            Bucket=where.bucket, Key=where.key, Body=body, ContentType=kind, **condition
        )
    except ClientError as exc:
        if exclusive and code(exc) == "PreconditionFailed":
            return False
        if not (exclusive and code(exc) == "NotImplemented"):
            raise
        if _head(where) is not None:  # a store without conditional writes: racy, as said above
            return False
        return _put(where, body, kind, exclusive=False)
    return True


def _put_parts(where: S3Location, body: bytes, kind: str, exclusive: bool) -> bool:
    """A multipart upload: the object appears only when complete; parts go up one by one."""
    s3, place = client(), {"Bucket": where.bucket, "Key": where.key}
    upload = s3.create_multipart_upload(**place, ContentType=kind)["UploadId"]
    condition = {"IfNoneMatch": "*"} if exclusive else {}
    try:
        parts = []
        for number, start in enumerate(range(0, len(body), PART_SIZE), start=1):
            chunk = body[start : start + PART_SIZE]
            answer = s3.upload_part(**place, UploadId=upload, PartNumber=number, Body=chunk)
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        s3.complete_multipart_upload(
            **place, UploadId=upload, MultipartUpload={"Parts": parts}, **condition
        )
    except BaseException as exc:
        with suppress(ClientError, BotoCoreError):  # parts left behind cost money
            s3.abort_multipart_upload(**place, UploadId=upload)
        if isinstance(exc, ClientError) and exclusive and code(exc) == "PreconditionFailed":
            return False
        raise
    return True


# --- listing ---------------------------------------------------------------------------------


def _keys(bucket: str, prefix: str) -> list[str]:
    lister = client().get_paginator("list_objects_v2")
    pages = lister.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE})
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


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
