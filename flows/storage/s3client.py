"""S3 clients: one per thread and environment, configured from the standard AWS variables.

boto3 sessions are not thread-safe, the clients made from them are: one session per environment is
shared under a lock, and each thread makes its own client from it (so each throttles on its own in
botocore's adaptive retry mode). What is cached here is keyed on every ``AWS_*`` variable, so a
changed environment (another endpoint, profile, region, key or retry setting) gets fresh clients.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

CONNECT_TIMEOUT = 10.0  # seconds
READ_TIMEOUT = 60.0
MAX_ATTEMPTS = 10
Environment = tuple[tuple[str, str], ...]


@dataclass
class _Shared:
    """What the threads share under one environment."""

    session: boto3.session.Session
    buckets: set[str] = field(default_factory=set)  # seen to exist


_lock = threading.Lock()
_shared: dict[Environment, _Shared] = {}  # the current environment's only
_threads = threading.local()


def client() -> Any:
    """This thread's S3 client for the current environment (profile, endpoint, region, keys)."""
    env = _environment()
    if getattr(_threads, "env", None) != env:
        _threads.client, _threads.env = _new_client(env), env
    return _threads.client


def known_buckets() -> set[str]:
    """The buckets seen to exist under the current environment."""
    with _lock:
        return _current(_environment()).buckets


def _forget_buckets() -> None:
    """For tests only: a test server's reset deletes buckets, and no variable tells that."""
    with _lock:
        for shared in _shared.values():
            shared.buckets.clear()


def _environment() -> Environment:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def _current(env: Environment) -> _Shared:
    """The session of environment `env` (call with the lock held); an earlier one's is dropped."""
    if env not in _shared:
        profile = os.environ.get("AWS_PROFILE") or None
        session = boto3.session.Session(profile_name=profile)
        _shared.clear()
        _shared[env] = _Shared(session)
    return _shared[env]


def _new_client(env: Environment) -> Any:
    with _lock:  # boto3 sessions are not thread-safe; the clients made from them are
        session = _current(env).session
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
