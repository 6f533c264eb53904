"""S3's failures as StorageErrors, built from error codes and exception types only.

botocore's own texts may hold signed URLs, and no credential may reach a log: no message here
quotes one. Access denied on one input object concerns that pair; on anything else (the output
root, a listing, a bucket) it concerns the run, as do a missing bucket, rejected credentials and
an unreachable endpoint. Any other answer, after botocore's retries, is one object's trouble.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

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

from flows.storage import s3client
from flows.storage.errors import NotFoundError, StorageError
from flows.uri import S3Location, show

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


@contextmanager
def s3_errors(where: S3Location, *, one_object: bool = False) -> Iterator[None]:
    """botocore errors as one-line StorageErrors built from codes, never from botocore's text;
    `one_object` when the request reads one input, whose denied access is only its own."""
    try:
        yield
    except ClientError as exc:
        raise _client_error(where, exc, one_object) from None
    except BotoCoreError as exc:
        raise _transport_error(where, exc) from None


def no_bucket(where: S3Location) -> StorageError:
    """The error for a bucket found missing by a request whose answer has no code (a HEAD)."""
    cause = _CAUSES["NoSuchBucket"].format(bucket=show(where.bucket))
    return StorageError(f"{where}: {cause}", run_level=True)


def code(exc: ClientError) -> str:
    """The S3 error code of an answer ('' when it has none, as a HEAD's)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def status(exc: ClientError) -> int | None:
    """The HTTP status of an answer."""
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _client_error(where: S3Location, exc: ClientError, one_object: bool) -> StorageError:
    answered, http = code(exc), status(exc)
    if answered in ("NoSuchKey", "NotFound"):
        return NotFoundError(f"{where}: not found")
    cause = _CAUSES.get(answered) or (_DENIED if http == 403 else None)
    if cause is None:  # after botocore's retries: this object's trouble, a rerun may pass
        return StorageError(
            f"{where}: S3 answered {show(answered, 60) or 'an error'} (HTTP {http})"
        )
    message = f"{where}: " + cause.format(bucket=show(where.bucket), code=answered)
    return StorageError(message, run_level=not (cause is _DENIED and one_object))


def _transport_error(where: S3Location, exc: BotoCoreError) -> StorageError:
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        hint = "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        return StorageError(f"{where}: no AWS credentials found ({hint})", run_level=True)
    if isinstance(exc, ProfileNotFound):
        profile = show(str(exc.kwargs.get("profile", "")), 60)
        hint = "check AWS_PROFILE and ~/.aws/config"
        return StorageError(f"{where}: AWS profile '{profile}' not found ({hint})", run_level=True)
    if isinstance(exc, ParamValidationError):
        return StorageError(f"{where}: not a valid S3 bucket name or key")
    reason = _unreachable(exc)
    if reason:
        message = f"{where}: cannot reach the S3 endpoint {_endpoint()} ({reason})"
        return StorageError(message, run_level=True)
    kind = type(exc).__name__
    if "Credential" in kind or "Token" in kind:  # SSO, web identity, container and IMDS failures
        return StorageError(f"{where}: could not load AWS credentials ({kind})", run_level=True)
    return StorageError(f"{where}: S3 request failed ({kind})")


def _unreachable(exc: BotoCoreError) -> str | None:
    """Why the endpoint could not be reached, or None when `exc` is of another kind."""
    if isinstance(exc, ConnectTimeoutError):
        return f"no connection within {s3client.CONNECT_TIMEOUT:g} s"
    if isinstance(exc, SSLError):
        return "TLS failed; check AWS_CA_BUNDLE"
    if isinstance(exc, EndpointConnectionError):
        return _connect_reason(exc.kwargs.get("error"))
    if isinstance(exc, ReadTimeoutError):
        return f"no answer within {s3client.READ_TIMEOUT:g} s"
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
    parts = urllib.parse.urlsplit(s3client.client().meta.endpoint_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"
