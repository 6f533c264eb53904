"""Faults in the middle of long work: S3 failing inside a multipart upload, the disk filling while
a checkpoint is written, the Prefect server stopped and started again. After each, no partial object or file is visible as an output, and a
rerun finishes exactly what is missing."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from prefectserver import BIN, SERVER_SETTINGS, Server, _healthy, api_env, prefect_server, until
from s3server import FaultyProxy, make_bucket, point_env, s3_client
from test_hardening_runtime import (
    child_env,
    cli_args,
    file_size_limit,
    finish,
    stylebatch,
    temp_files,
    visible_files_are_whole,
    write_batch,
)

from flows import storage
from flows.cli.main import main
from flows.storage import s3

pytestmark = pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")


class FailingPart(FaultyProxy):
    """Answers 500 InternalError to every try at one part number of any multipart upload."""

    def __init__(self, upstream: str, part: int) -> None:
        super().__init__(upstream)
        self.part = part

    def refusal(self, path: str):
        if f"partNumber={self.part}&" in path or path.endswith(f"partNumber={self.part}"):
            return 500, "InternalError"
        return super().refusal(path)


def test_s3_failing_in_the_middle_of_a_multipart_upload_leaves_no_object(s3_env, monkeypatch):
    make_bucket(s3_env, "art")
    body = bytes(range(256)) * (s3.PART_SIZE // 256) + b"tail"  # two parts: the first goes up
    where = "s3://art/out/big.png"
    with FailingPart(s3_env, part=2) as proxy:
        point_env(monkeypatch, proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's retries meet the same refusal
        with pytest.raises(storage.StorageError) as caught:
            storage.write_bytes(where, body)
        assert proxy.counts["refused"] >= 1  # part 2 was refused, every time it was tried
    message = str(caught.value)
    assert message.startswith(where) and "\n" not in message, message
    client = s3_client(s3_env)
    assert "Contents" not in client.list_objects_v2(Bucket="art")  # nothing visible
    assert client.list_multipart_uploads(Bucket="art").get("Uploads", []) == []  # none left
    point_env(monkeypatch, s3_env)  # tried again without the fault: whole
    assert storage.write_bytes(where, body)
    assert storage.read_bytes(where) == body


def test_the_disk_filling_while_a_checkpoint_is_written_loses_only_that_checkpoint(
    tmp_path, tiny_weights, capsys, caplog, prefect_server
):
    """Adam's checkpoint of a 64 px pair (~110 KB) cannot be written under a 64 KiB file size
    limit; its image and sidecar can. The pair goes on and is published; nothing partial stays."""
    manifest, out = write_batch(tmp_path / "in", 2), tmp_path / "out"
    args = cli_args(manifest, out, tiny_weights, size=64, iterations=40)
    args += ["--optimizer", "adam", "--checkpoint-every", "0.01"]
    main(["run", "--dry-run", *args[1:]])  # the weights' conversion cache: written before
    with caplog.at_level(logging.WARNING), file_size_limit(64 * 1024):
        code = main(args)
    assert code == 0, capsys.readouterr()
    failures = [
        r.getMessage() for r in caplog.records if "checkpoint not written" in r.getMessage()
    ]
    assert failures and all(m.endswith(": file too large") for m in failures), failures
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == {"done": 2, "skipped": 0, "failed": 0}
    assert len(visible_files_are_whole(out)) == 2
    assert list(out.glob(".*.checkpoint.npz")) == [] and temp_files(out) == []
    assert main(args) == 0  # the rerun: nothing is missing, nothing is redone
    again = json.loads((out / "report.json").read_text())
    assert again["summary"] == {"done": 0, "skipped": 2, "failed": 0}


# --- the Prefect server restarting mid-run ---------------------------------------------------------


@contextlib.contextmanager
def restarted(server: Server) -> Iterator[None]:
    """Stop `server` (Ctrl-C, as an operator would) and start it again on its port and database;
    yields once it answers, stops it after."""
    server.process.send_signal(signal.SIGINT)
    server.process.wait(timeout=60)
    time.sleep(2)  # the run meets a server that is not there
    port = urllib.parse.urlsplit(server.url).port
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = server.home / "server-again.log"
    again = subprocess.Popen(
        command,
        env=api_env(server.url, server.home) | SERVER_SETTINGS,
        cwd=server.home,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        until(lambda: _healthy(server.url, again, log), 180, "the restarted prefect server")
        yield
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(timeout=60)


@pytest.mark.slow
def test_the_prefect_server_restarting_mid_run(tmp_path, tiny_weights):
    """A real `prefect server start`, stopped while a batch runs and started again: whatever the
    run makes of it, nothing partial is visible, and a rerun finishes exactly the missing pairs."""
    manifest, out = write_batch(tmp_path / "in", 3), tmp_path / "out"
    args = cli_args(manifest, out, tiny_weights, size=64, iterations=100)
    with prefect_server(tmp_path / "prefect") as server:
        env = child_env() | {"PREFECT_API_URL": server.url, "PREFECT_HOME": str(server.home)}
        run = stylebatch(args, env=env)
        until(lambda: list(out.glob("c*.json")) or run.poll() is not None, 240, "a first pair")
        with restarted(server):
            code, _, err = finish(run)
            finished = visible_files_are_whole(out)
            assert temp_files(out) == []
            # Prefect's client retried across the restart (seen here: every pair done, exit 0);
            # a longer outage may end the run instead, never with a partial output
            assert code in (0, 1) or not (out / "report.json").exists(), err
            again = stylebatch(args, env=env)
            assert finish(again)[0] == 0
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == {"done": 3 - len(finished), "skipped": len(finished), "failed": 0}
    assert len(visible_files_are_whole(out)) == 3
