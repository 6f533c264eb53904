"""flows.storage against local temporary folders and a moto S3 server over real HTTP."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading
import time
import traceback
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from s3server import SECRET_KEY, FaultyProxy, make_bucket, point_env, s3_client

from flows import storage
from flows.storage import NotFoundError, StorageError, s3, s3client


def clean(exc: BaseException) -> str:
    """The message of `exc`, after checking it is one line and holds no credential."""
    message = str(exc)
    shown = "".join(traceback.format_exception(exc)) + repr(exc)
    assert SECRET_KEY not in shown
    assert "\n" not in message
    return message


def failing_chunks() -> Iterator[bytes]:
    yield b"new" * 1000
    raise RuntimeError("the encoder broke")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- local ------------------------------------------------------------------------------------


def test_local_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.png"
    assert storage.write_bytes(target, b"\x89PNG data")
    assert storage.read_bytes(str(target)) == b"\x89PNG data"
    assert storage.write_bytes(f"file://{tmp_path}/report.json", '{"é": 1}'.encode())
    assert storage.read_text(tmp_path / "report.json") == '{"é": 1}'
    assert storage.exists(target)
    assert not storage.exists(tmp_path / "a")  # a directory is not a file
    storage.delete(target)
    storage.delete(target)  # nothing to delete is fine
    assert not storage.exists(target)


def test_local_overwrite_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    storage.write_bytes(target, b"old")
    assert storage.write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize("existing", [True, False])
def test_local_write_failing_midway_leaves_target_untouched(tmp_path: Path, existing: bool) -> None:
    target = tmp_path / "out.png"
    if existing:
        target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="encoder broke"):
        storage.write_bytes(target, failing_chunks())
    assert (target.read_bytes() == b"old") if existing else not target.exists()
    assert leftovers(tmp_path) == []


def test_local_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # file systems report ENOSPC late, at fsync
    with pytest.raises(StorageError) as caught:
        storage.write_bytes(target, b"new")
    assert clean(caught.value) == f"{target}: no space left on device"
    assert caught.value.run_level
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_local_exclusive_write(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.png"
    assert storage.write_bytes(target, b"first", exclusive=True)
    assert not storage.write_bytes(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first" and leftovers(target.parent) == []


def test_local_exclusive_race_has_one_winner(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda d: storage.write_bytes(target, d, exclusive=True), payloads))
    assert won.count(True) == 1
    assert target.read_bytes() == payloads[won.index(True)]
    assert leftovers(tmp_path) == []


def test_local_errors(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    cases = [
        (lambda: storage.read_bytes(tmp_path / "nope.png"), "nope.png: not found"),
        (lambda: storage.read_bytes(tmp_path / "folder"), "folder: is a directory"),
        (lambda: storage.write_bytes(tmp_path / "folder", b"x"), "folder: is a directory"),
        (lambda: storage.write_bytes(tmp_path / "folder", b"x", exclusive=True), "directory"),
        (lambda: storage.read_bytes(tmp_path / "file" / "x"), "x: a parent of it is a file"),
    ]
    for call, expected in cases:
        with pytest.raises(StorageError) as caught:
            call()
        assert expected in clean(caught.value) and str(tmp_path) in str(caught.value)
        assert not caught.value.run_level
    with pytest.raises(NotFoundError):
        storage.read_text(tmp_path / "nope.txt")
    assert leftovers(tmp_path / "folder") == []


def test_local_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root ignores modes: fail the way the kernel would
        real_open = os.open

        def denied(path: str, *args: object, **kwargs: object) -> int:
            if str(path).startswith(str(locked)):
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", denied)
    else:
        locked.chmod(0o500)
    try:
        with pytest.raises(StorageError) as caught:
            storage.write_bytes(locked / "out.png", b"x")
    finally:
        locked.chmod(0o700)
    assert clean(caught.value) == f"{locked / 'out.png'}: permission denied"
    assert caught.value.run_level  # writing: the output root's problem


@pytest.mark.parametrize("where", ["gs://bucket/a.png", "http://host/a.png", "ftp://h/x"])
def test_unsupported_scheme(where: str) -> None:
    scheme = where.split(":")[0]
    for call in (storage.read_bytes, storage.exists, storage.glob):
        with pytest.raises(StorageError, match=f"unsupported URI scheme '{scheme}'"):
            call(where)


def test_local_glob(tmp_path: Path) -> None:
    for rel in ("a/x.png", "a/b/y.png", "a/z.jpg", "ab/w.png", "a/.x.png.0123456789ab.tmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    root = str(tmp_path)
    assert storage.glob(f"{root}/a/*.png") == [f"{root}/a/x.png"]
    assert storage.glob(f"{root}/a/**/*.png") == [f"{root}/a/b/y.png", f"{root}/a/x.png"]
    assert storage.glob(f"{root}/*/?.png") == [f"{root}/a/x.png", f"{root}/ab/w.png"]
    everything = [f"{root}/a/b/y.png", f"{root}/a/x.png", f"{root}/a/z.jpg"]
    assert storage.glob(f"{root}/a/**") == everything
    assert storage.glob(f"{root}/a/x*") == [f"{root}/a/x.png"]
    assert storage.glob(f"{root}/nowhere/**") == []


def test_local_presign(tmp_path: Path) -> None:
    target = tmp_path / "a b.png"
    storage.write_bytes(target, b"pixels")
    url = storage.presign(target)
    assert url.startswith("file://")
    with urllib.request.urlopen(url) as answer:
        assert answer.read() == b"pixels"
    with pytest.raises(StorageError, match="presign expiry"):
        storage.presign(target, expires=8 * 24 * 3600)


# --- S3 ---------------------------------------------------------------------------------------


def test_s3_round_trip_and_content_types(s3_env: str) -> None:
    make_bucket(s3_env, "art")
    expected = {
        "out/a.png": "image/png",
        "out/b.JPG": "image/jpeg",
        "out/report.json": "application/json",
        "out/failed.csv": "text/csv",
        "cache/f.npz": "application/octet-stream",
        "out/notes": "application/octet-stream",
    }
    for key in expected:
        assert storage.write_bytes(f"s3://art/{key}", key.encode())
    assert storage.write_bytes("s3://art/out/t.txt", "héllo".encode(), content_type="text/plain")
    client = s3_client(s3_env)
    for key, kind in {**expected, "out/t.txt": "text/plain"}.items():
        assert client.head_object(Bucket="art", Key=key)["ContentType"] == kind
    assert storage.read_bytes("s3://art/out/a.png") == b"out/a.png"
    assert storage.read_text("s3://art/out/t.txt") == "héllo"
    assert storage.exists("s3://art/out/a.png")
    storage.delete("s3://art/out/a.png")
    storage.delete("s3://art/out/a.png")
    assert not storage.exists("s3://art/out/a.png")


def test_s3_write_failing_midway_writes_nothing(s3_env: str) -> None:
    make_bucket(s3_env, "art", {"out/a.png": b"old"})
    for key in ("out/a.png", "out/b.png"):
        with pytest.raises(RuntimeError, match="encoder broke"):
            storage.write_bytes(f"s3://art/{key}", failing_chunks())
    assert storage.read_bytes("s3://art/out/a.png") == b"old"
    assert not storage.exists("s3://art/out/b.png")


def test_s3_exclusive_write(s3_env: str) -> None:
    make_bucket(s3_env, "art")
    assert storage.write_bytes("s3://art/out/a.png", b"first", exclusive=True)
    assert not storage.write_bytes("s3://art/out/a.png", b"second", exclusive=True)
    assert storage.read_bytes("s3://art/out/a.png") == b"first"
    assert storage.write_bytes("s3://art/out/a.png", b"third")  # not exclusive: replaces
    assert storage.read_bytes("s3://art/out/a.png") == b"third"


def test_s3_multipart_upload(s3_env: str) -> None:
    make_bucket(s3_env, "art")
    data = os.urandom(17 * 1024 * 1024)  # over the 8 MiB at which uploads go in 8 MiB parts
    assert storage.write_bytes("s3://art/big/features.npz", data, exclusive=True)
    head = s3_client(s3_env).head_object(Bucket="art", Key="big/features.npz")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 8 + 8 + 1 MiB
    assert head["ContentType"] == "application/octet-stream"
    got = storage.read_bytes("s3://art/big/features.npz")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert not storage.write_bytes("s3://art/big/features.npz", data[::-1], exclusive=True)
    assert storage.read_bytes("s3://art/big/features.npz")[:64] == data[:64]
    uploads = s3_client(s3_env).list_multipart_uploads(Bucket="art")
    assert uploads.get("Uploads", []) == []  # the refused upload was aborted


def test_s3_glob(s3_env: str) -> None:
    keys = ["in/a.png", "in/b.jpg", "in/sub/c.png", "in/sub/deep/d.png", "inx/e.png", "in/[x].png"]
    make_bucket(s3_env, "art", dict.fromkeys(keys, b"1"))
    at = "s3://art/{}".format
    assert storage.glob("s3://art/in/*.png") == [at("in/[x].png"), at("in/a.png")]
    assert storage.glob("s3://art/in/**/*.png") == [
        at(k) for k in sorted(["in/[x].png", "in/a.png", "in/sub/c.png", "in/sub/deep/d.png"])
    ]
    assert storage.glob("s3://art/in/sub/**") == [at("in/sub/c.png"), at("in/sub/deep/d.png")]
    assert storage.glob("s3://art/in*/?.png") == [at("in/a.png"), at("inx/e.png")]
    assert storage.glob("s3://art/in/[ab].*") == [at("in/a.png"), at("in/b.jpg")]
    assert storage.glob("s3://art/in/[!a].*") == [at("in/b.jpg")]
    assert storage.glob("s3://art/in/a.png") == [at("in/a.png")]
    assert storage.glob("s3://art/in**") == [at(k) for k in sorted(keys)]
    assert storage.glob("s3://art/none/**") == []


def test_s3_listing_pages(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "LIST_PAGE", 2)
    keys = [f"p/{i:02d}.png" for i in range(7)]
    make_bucket(s3_env, "art", dict.fromkeys(keys, b""))
    assert storage.glob("s3://art/p/*.png") == [f"s3://art/{k}" for k in keys]
    assert storage.glob("s3://art/p/**") == [f"s3://art/{k}" for k in keys]


def test_s3_presign_downloads_with_urllib(s3_env: str) -> None:
    make_bucket(s3_env, "art", {"out/a.png": b"pixels"})
    url = storage.presign("s3://art/out/a.png", expires=600)
    assert "X-Amz-Expires=600" in url and url.startswith(s3_env)
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"pixels"


def test_s3_missing_object(s3_env: str) -> None:
    make_bucket(s3_env, "art")
    for call in (storage.read_bytes, storage.read_text):
        with pytest.raises(NotFoundError) as caught:
            call("s3://art/in/nope.png")
        assert clean(caught.value) == "s3://art/in/nope.png: not found"
        assert not caught.value.run_level
    assert not storage.exists("s3://art/in/nope.png")


def test_s3_missing_bucket(s3_env: str) -> None:
    calls = [
        storage.read_bytes,
        storage.exists,
        lambda u: storage.write_bytes(u, b"x"),
        storage.glob,
    ]
    for call in calls:
        with pytest.raises(StorageError) as caught:
            call("s3://nobucket/k.png")
        assert clean(caught.value) == "s3://nobucket/k.png: bucket 'nobucket' does not exist"
        assert caught.value.run_level and not isinstance(caught.value, NotFoundError)


def test_s3_names_an_object(s3_env: str) -> None:
    for where in ("s3://art", "s3://art/prefix/"):
        with pytest.raises(StorageError, match="names a bucket or prefix, not an object"):
            storage.read_bytes(where)
    with pytest.raises(StorageError, match="names no bucket"):
        storage.read_bytes("s3:///key")


def test_s3_no_credentials(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_bucket(s3_env, "art", {"a.png": b"1"})
    (tmp_path / "credentials").write_text("")
    (tmp_path / "config").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError) as caught:
        storage.read_bytes("s3://art/a.png")
    assert clean(caught.value) == (
        "s3://art/a.png: no AWS credentials found "
        "(set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
    )
    assert caught.value.run_level


def test_s3_unknown_profile(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nosuchprofile")
    with pytest.raises(StorageError) as caught:
        storage.exists("s3://art/a.png")
    assert "AWS profile 'nosuchprofile' not found" in clean(caught.value)
    assert caught.value.run_level


def test_s3_endpoint_unreachable(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    point_env(monkeypatch, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # the standard variable; keeps the test fast
    monkeypatch.setattr(s3client, "CONNECT_TIMEOUT", 1.0)
    started = time.monotonic()
    for call in (storage.read_bytes, storage.exists, lambda u: storage.write_bytes(u, b"x")):
        with pytest.raises(StorageError) as caught:
            call("s3://art/a.png")
        assert clean(caught.value) == (
            f"s3://art/a.png: cannot reach the S3 endpoint http://127.0.0.1:{port} "
            "(connection refused)"
        )
        assert caught.value.run_level
    assert time.monotonic() - started < 10


def test_s3_access_denied(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_bucket(s3_env, "art", {"private/a.png": b"1", "public/a.png": b"2"})
    with FaultyProxy(s3_env) as proxy:
        proxy.deny("art", "private/")
        point_env(monkeypatch, proxy.url)
        assert storage.read_bytes("s3://art/public/a.png") == b"2"
        expected = "access denied (check the credentials' permissions for bucket 'art')"
        with pytest.raises(StorageError) as caught:
            storage.read_bytes("s3://art/private/a.png")
        assert clean(caught.value) == f"s3://art/private/a.png: {expected}"
        assert not caught.value.run_level  # one input object
        for call in (lambda u: storage.write_bytes(u, b"x"), storage.exists, storage.glob):
            with pytest.raises(StorageError) as caught:
                call("s3://art/private/b.png")
            assert clean(caught.value) == f"s3://art/private/b.png: {expected}"
            assert caught.value.run_level  # the output root or a shared prefix
        assert proxy.counts["refused"] >= 4


def test_s3_rejected_credentials_and_lasting_errors(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_bucket(s3_env, "art", {"a.png": b"1"})
    with FaultyProxy(s3_env) as proxy:
        proxy.refuse("art", "bad-key/", 403, "InvalidAccessKeyId")
        proxy.refuse("art", "sick/", 500, "InternalError")
        point_env(monkeypatch, proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        with pytest.raises(StorageError) as caught:
            storage.read_bytes("s3://art/bad-key/a.png")
        assert clean(caught.value) == (
            "s3://art/bad-key/a.png: the AWS credentials were rejected (InvalidAccessKeyId; "
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
        )
        assert caught.value.run_level
        with pytest.raises(StorageError) as caught:
            storage.write_bytes("s3://art/sick/a.png", b"x")
        assert clean(caught.value) == "s3://art/sick/a.png: S3 answered InternalError (HTTP 500)"
        assert not caught.value.run_level  # one object's, after the retries
        assert proxy.counts["refused"] == 1 + 2


def test_s3_transient_faults_are_retried(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_bucket(s3_env, "art")
    with FaultyProxy(s3_env, fault_rate=0.2, seed=7) as proxy:
        point_env(monkeypatch, proxy.url)
        data = {f"s3://art/out/{i:02d}.png": os.urandom(3000 + i) for i in range(30)}
        with ThreadPoolExecutor(4) as pool:  # per-thread clients: each throttles on its own
            assert all(pool.map(lambda item: storage.write_bytes(*item), data.items()))
            got = list(pool.map(storage.read_bytes, data))
    assert got == list(data.values())
    assert proxy.counts["forwarded"] == 60  # every request in the end went through once
    assert proxy.counts["500"] and proxy.counts["503"] and proxy.counts["drop"]


def test_s3_lost_answers(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_bucket(s3_env, "art")
    with FaultyProxy(s3_env, fault_rate=0.3, seed=2, faults=("lost",)) as proxy:
        point_env(monkeypatch, proxy.url)
        data = {f"s3://art/out/{i:02d}.png": os.urandom(1000 + i) for i in range(12)}
        for where, content in data.items():
            assert storage.write_bytes(where, content)  # a repeated PUT is harmless
            # a retried conditional PUT may meet its own first attempt and answer False
            storage.write_bytes(where + ".x", content, exclusive=True)
        assert [storage.read_bytes(u) for u in data] == list(data.values())
        assert [storage.read_bytes(u + ".x") for u in data] == list(data.values())
    assert proxy.counts["lost"] >= 3


def test_s3_endpoint_from_service_variable(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_bucket(s3_env, "art", {"a.png": b"1"})
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env)  # boto3 prefers the service's own
    assert storage.read_bytes("s3://art/a.png") == b"1"


def test_s3_region(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")  # clients follow the environment: no reset needed
    assert s3client.client().meta.region_name == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert s3client.client().meta.region_name == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")  # wins, as in the other SDKs
    assert s3client.client().meta.region_name == "eu-central-1"


def test_s3_clients_per_thread(s3_env: str) -> None:
    mine = s3client.client()
    assert s3client.client() is mine
    theirs: list[object] = []
    thread = threading.Thread(target=lambda: theirs.append(s3client.client()))
    thread.start()
    thread.join()
    assert theirs[0] is not mine
    assert theirs[0].meta.endpoint_url == mine.meta.endpoint_url == s3_env
