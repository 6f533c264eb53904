"""S3 over real HTTP for tests: a moto server on loopback and a proxy that injects faults.

boto3 talks HTTP to a ``ThreadedMotoServer``; nothing is patched in-process. Register the fixtures
for every test module with, in tests/conftest.py::

    from s3server import moto_endpoint, s3_env  # noqa: F401  (pytest fixtures)

``FaultyProxy`` sits between boto3 and moto: it forwards each request as it came (the Host header
too, so SigV4 signatures still match) and answers a seeded fraction with 500 InternalError,
503 SlowDown or a dropped connection ("drop"), all before forwarding, so these faults never
half-apply a request. The fault "lost" (not a default) forwards the request and then hangs up:
the request took effect but the client never hears so, as when S3's answer is lost on the way.
``deny()`` makes it answer 403 AccessDenied for a bucket or prefix, ``refuse()`` any other status
and S3 error code: simulated S3 answers, but ones that real boto3 receives over real HTTP.
"""

from __future__ import annotations

import collections
import http.client
import logging
import os
import random
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from flows.storage import s3client

ACCESS_KEY_ID = "testing-key-id"
SECRET_KEY = "sekrit-7Qx9-NEVER-IN-A-MESSAGE-b4d1"  # tests grep every message for it
REGION = "us-east-1"
Headers = list[tuple[str, str]]
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "upgrade", "expect"}
_FAULT_ERRORS = {
    "500": ("InternalError", "We encountered an internal error. Please try again."),
    "503": ("SlowDown", "Please reduce your request rate."),
}


# --- the moto server -------------------------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 and a free port; yields its endpoint URL."""
    requests_log = logging.getLogger("werkzeug")  # one line per request otherwise
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        requests_log.setLevel(level)


def reset_moto(endpoint: str) -> None:
    """Forget every bucket and object on the server (its state lives in this process)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def s3_client(endpoint: str) -> Any:
    """A client with the test credentials, independent of the environment and of storage."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


def make_bucket(endpoint: str, bucket: str, files: dict[str, bytes | str] | None = None) -> None:
    """Create `bucket` and upload `files` (key to content; text is written as UTF-8)."""
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    for key, content in (files or {}).items():
        body = content.encode("utf-8") if isinstance(content, str) else content
        client.put_object(Bucket=bucket, Key=key, Body=body)


def point_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Aim boto3's standard environment at `endpoint` with the test credentials, hermetically."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)  # no developer's ~/.aws leaks in
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no slow probe of 169.254.169.254
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_DEFAULT_REGION", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The endpoint URL of one moto server for the whole session."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> Iterator[str]:
    """An empty moto server and the environment pointing at it; yields the endpoint URL."""
    reset_moto(moto_endpoint)
    # storage's clients follow the environment by themselves, but the reset deleted the buckets
    # it has seen exist, and no variable tells it so
    s3client._forget_buckets()
    point_env(monkeypatch, moto_endpoint)
    yield moto_endpoint


# --- the faulty proxy ------------------------------------------------------------------------


class FaultyProxy:
    """An HTTP proxy in front of `upstream` that fails a seeded fraction of requests."""

    def __init__(
        self,
        upstream: str,
        fault_rate: float = 0.0,
        seed: int = 0,
        faults: tuple[str, ...] = ("500", "503", "drop"),
    ) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.fault_rate, self.faults = fault_rate, faults
        self.counts: collections.Counter[str] = collections.Counter()
        self.refusals: list[tuple[str, str, int, str]] = []  # (bucket, key prefix, status, code)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The endpoint URL to give boto3."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def deny(self, bucket: str, prefix: str = "") -> None:
        """Answer 403 AccessDenied to every request for keys under `prefix` in `bucket`."""
        self.refuse(bucket, prefix, 403, "AccessDenied")

    def refuse(self, bucket: str, prefix: str, status: int, code: str) -> None:
        """Answer `status` with S3 error `code` to every request for keys under `prefix`."""
        self.refusals.append((bucket, prefix, status, code))

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def fault(self) -> str | None:
        """The fault to inject into the next request, if any."""
        with self._lock:
            self.counts["requests"] += 1
            if self._random.random() >= self.fault_rate:
                return None
            return self._random.choice(self.faults)

    def refusal(self, path: str) -> tuple[int, str] | None:
        """The status and code `refuse()` set for `path` (path-style, with its query), if any."""
        parts = urllib.parse.urlsplit(path)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        key = urllib.parse.unquote(key)
        if not key:  # a bucket-level request: a listing asks with ?prefix=
            key = urllib.parse.parse_qs(parts.query).get("prefix", [""])[0]
        for b, p, status, code in self.refusals:
            if bucket == b and key.startswith(p):
                return status, code
        return None


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 does; every answer has a Content-Length

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._relay()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def _relay(self) -> None:
        proxy: FaultyProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()  # the whole request first: the client is done sending
        fault = proxy.fault()
        if fault in ("drop", "lost"):
            proxy.count(fault)
            if fault == "lost":  # done upstream, but the answer never arrives
                self._forward(proxy, body, answer=False)
            self.close_connection = True  # hang up without a word
            return
        if fault:
            proxy.count(fault)
            self._answer_error(int(fault), *_FAULT_ERRORS[fault])
            return
        refusal = proxy.refusal(self.path)
        if refusal:
            proxy.count("refused")
            self._answer_error(*refusal, "Refused by FaultyProxy")
            return
        proxy.count("forwarded")
        self._forward(proxy, body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunks()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunks(self) -> bytes:
        out = bytearray()
        while size := int(self.rfile.readline().split(b";")[0], 16):
            out += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return bytes(out)

    def _forward(self, proxy: FaultyProxy, body: bytes, answer: bool = True) -> None:
        upstream = http.client.HTTPConnection(
            proxy.upstream.hostname, proxy.upstream.port, timeout=60
        )
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():  # Host as it came: the signature covers it
                if key.lower() not in _HOP_BY_HOP | {"transfer-encoding", "content-length"}:
                    upstream.putheader(key, value)
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            reply = upstream.getresponse()
            content = reply.read()
            if answer:
                self._answer(reply.status, reply.reason, reply.getheaders(), content)
        finally:
            upstream.close()

    def _answer(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        head = self.command == "HEAD"  # its Content-Length is the object's: pass it on as is
        self.send_response_only(status, reason)
        for key, value in headers:
            if key.lower() in _HOP_BY_HOP | {"transfer-encoding"}:
                continue
            if key.lower() != "content-length" or head:
                self.send_header(key, value)
        if not head:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _answer_error(self, status: int, code: str, message: str) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            "<RequestId>faultyproxy</RequestId></Error>"
        ).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
