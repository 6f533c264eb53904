"""`stylebatch run --task-runner dask`: the pair tasks on a local Dask cluster of two processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import noise_image

from flows.cli.main import main
from stylecore import images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
    pytest.mark.usefixtures("prefect_server"),
]


def test_dask_local_cluster_runs_every_pair_in_its_worker_processes(tmp_path, tiny_weights, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        (inputs / f"c{i}.png").write_bytes(images.encode_png(noise_image(40, 48, seed=i)))
    (inputs / "s.png").write_bytes(images.encode_png(noise_image(48, 48, seed=9)))
    rows = "".join(f"c{i}.png,s.png\n" for i in range(4))
    (inputs / "manifest.csv").write_text("content,style\n" + rows)
    output = tmp_path / "out"
    args = ["run", str(inputs / "manifest.csv"), "-o", str(output), "--weights", str(tiny_weights)]
    args += ["--size", "32", "--iterations", "2", "--quiet"]
    code = main([*args, "--task-runner", "dask", "--dask-workers", "2"])
    assert code == 0, capsys.readouterr()
    assert "4 done, 0 skipped, 0 failed" in capsys.readouterr().out
    report = json.loads((output / "report.json").read_text())
    assert [p["status"] for p in report["pairs"]] == ["done"] * 4
    workers = {p["worker"] for p in report["pairs"]}
    assert all(int(w.rsplit(":", 1)[1]) != os.getpid() for w in workers)  # not this process
    assert all(Path(p["output"]).exists() for p in report["pairs"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--dask-address", "tcp://127.0.0.1:1"],
            "--dask-address tcp://127.0.0.1:1: cannot connect",
        ),
        (["--task-runner", "dask", "--dask-cluster-class", "nowhere.Cluster"], "cannot load it"),
        (["--dask-address", "tcp://127.0.0.1:1", "--dask-workers", "2"], "temporary cluster"),
    ],
)
def test_dask_flags_fail_in_one_line(tmp_path, tiny_weights, capsys, flags, message):
    (tmp_path / "c.png").write_bytes(images.encode_png(noise_image(40, 48, seed=1)))
    (tmp_path / "manifest.csv").write_text("content,style\nc.png,c.png\n")
    args = ["run", str(tmp_path / "manifest.csv"), "-o", str(tmp_path / "out")]
    code = main([*args, "--weights", str(tiny_weights), "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
