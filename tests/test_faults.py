"""Faults in the middle of long work: S3 failing inside a multipart upload, the disk filling while
a checkpoint is written. After each, no partial object or file is visible as an output, and a
rerun finishes exactly what is missing."""

from __future__ import annotations

import json
import logging

import pytest
from s3server import FaultyProxy, make_bucket, point_env, s3_client
from test_hardening_runtime import (
    cli_args,
    file_size_limit,
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
