"""fetch(): a real HTTP server on 127.0.0.1 that honours Range and can drop the first download."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from stylecore import fetch as fetch_module
from stylecore.errors import WeightsError
from stylecore.fetch import fetch

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB, several chunks


@dataclass
class Server:
    """What the handler serves and what it saw."""

    url: str
    payload: bytes = PAYLOAD
    drop_after: int | None = None  # bytes sent before the first answer hangs up
    honour_range: bool = True
    fail_with: int | None = None  # an HTTP error status to answer with
    ranges: list[str | None] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        state = self.server.state  # type: ignore[attr-defined]
        header = self.headers.get("Range")
        state.ranges.append(header)
        if state.fail_with:
            self.send_error(state.fail_with)
            return
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        start = int(match.group(1)) if match and state.honour_range else 0
        if start >= len(state.payload) and start:
            self.send_response(416)
            self.end_headers()
            return
        body = state.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(state.payload) - 1}/{len(state.payload)}"
            )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.drop_after is not None:
            body, state.drop_after = body[: state.drop_after], None  # hang up mid-body, once
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Server(url=f"http://127.0.0.1:{httpd.server_address[1]}/vgg.mat")
    httpd.state = state  # type: ignore[attr-defined]  # read by Handler.do_GET
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_download_completes_with_md5_and_progress(server, tmp_path):
    calls: list[tuple[int, int | None]] = []
    dest = fetch(
        server.url, tmp_path / "vgg.mat", MD5, lambda done, total: calls.append((done, total))
    )
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "vgg.mat.part").exists()
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == len(PAYLOAD) and len(calls) > 3
    assert {t for _, t in calls} == {len(PAYLOAD)}


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    server.drop_after = 100_000
    dest = tmp_path / "vgg.mat"
    with pytest.raises(WeightsError, match="run the command again to resume") as exc:
        fetch(server.url, dest, MD5)
    assert server.url in str(exc.value) and "\n" not in str(exc.value)
    assert (tmp_path / "vgg.mat.part").stat().st_size == 100_000 and not dest.exists()
    calls: list[tuple[int, int | None]] = []
    fetch(server.url, dest, MD5, lambda done, total: calls.append((done, total)))
    assert server.ranges == [None, "bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD
    assert calls[0] == (100_000, len(PAYLOAD))  # progress starts where the first try stopped


def test_a_server_that_ignores_range_restarts_from_zero(server, tmp_path):
    (tmp_path / "vgg.mat.part").write_bytes(b"x" * 5000)  # stale bytes that must not survive
    server.honour_range = False
    fetch(server.url, tmp_path / "vgg.mat", MD5)
    assert server.ranges == ["bytes=5000-"]
    assert (tmp_path / "vgg.mat").read_bytes() == PAYLOAD


def test_a_complete_part_file_is_finished_without_downloading_again(server, tmp_path):
    (tmp_path / "vgg.mat.part").write_bytes(PAYLOAD)
    fetch(server.url, tmp_path / "vgg.mat", MD5)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]  # answered 416
    assert (tmp_path / "vgg.mat").read_bytes() == PAYLOAD


def test_a_wrong_md5_leaves_nothing_behind(server, tmp_path):
    dest = tmp_path / "vgg.mat"
    with pytest.raises(WeightsError, match="MD5") as exc:
        fetch(server.url, dest, "0" * 32)
    assert server.url in str(exc.value)
    assert not dest.exists() and not (tmp_path / "vgg.mat.part").exists()


def test_a_refused_connection_names_the_url(tmp_path):
    with pytest.raises(WeightsError, match="127.0.0.1:9") as exc:
        fetch("http://127.0.0.1:9/vgg.mat", tmp_path / "vgg.mat", None)
    assert "\n" not in str(exc.value)


def test_an_http_error_names_the_url_and_status(server, tmp_path):
    server.fail_with = 404
    with pytest.raises(WeightsError, match="HTTP 404") as exc:
        fetch(server.url, tmp_path / "vgg.mat", None)
    assert server.url in str(exc.value)
    assert not (tmp_path / "vgg.mat").exists()


def test_default_vgg19_path_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBATCH_CACHE", str(tmp_path / "c"))
    assert fetch_module.default_vgg19_path() == tmp_path / "c" / "imagenet-vgg-verydeep-19.mat"
    assert fetch_module.VGG19_MD5 == "106118b7cf60435e6d8e04f6a6dc3657"
