"""The batch flow on a real Prefect server: failures per pair, style features once, skip, rerun."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import noise_image

from flows.batch import stylize_batch
from flows.cli.main import main
from flows.report import PAIRS_FAILED
from stylecore import images

pytestmark = [
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
    pytest.mark.usefixtures("prefect_server"),
]
SIZE, ITERATIONS = 32, 3


def write_png(path: Path, seed: int, shape=(40, 56)) -> None:
    path.write_bytes(images.encode_png(noise_image(*shape, seed=seed)))


@pytest.fixture
def batch(tmp_path, tiny_weights) -> dict:
    """Six pairs over two styles; the content of row 5 (missing.png) does not exist."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, name in enumerate(["a", "b", "c", "d", "e"]):
        write_png(inputs / f"{name}.png", seed=i, shape=(40 + 4 * i, 56))
    write_png(inputs / "starry.png", seed=10, shape=(48, 48))
    write_png(inputs / "wave.png", seed=11, shape=(36, 60))
    rows = [
        ("a", "starry"),
        ("b", "wave"),
        ("c", "starry"),
        ("missing", "wave"),
        ("d", "starry"),
        ("e", "wave"),
    ]
    manifest = inputs / "manifest.csv"
    manifest.write_text("content,style\n" + "".join(f"{c}.png,{s}.png\n" for c, s in rows))
    return {
        "manifest": str(manifest),
        "output": str(tmp_path / "out"),
        "inputs": inputs,
        "feature_cache": str(tmp_path / "features"),
        "weights": str(tiny_weights),
    }


def run_flow(b: dict, **more):
    return stylize_batch(
        manifest=b["manifest"],
        output=b["output"],
        feature_cache=b["feature_cache"],
        weights=b["weights"],
        size=SIZE,
        iterations=ITERATIONS,
        return_state=True,
        **more,
    )


def read_report(b: dict) -> dict:
    return json.loads((Path(b["output"]) / "report.json").read_text())


def test_batch_skip_and_rerun(batch):
    state = run_flow(batch)
    assert state.is_failed() and state.name == PAIRS_FAILED  # the UI offers Retry
    report = read_report(batch)
    assert report["summary"] == {"done": 5, "skipped": 0, "failed": 1}
    (failed,) = [p for p in report["pairs"] if p["status"] == "failed"]
    assert (
        failed["row"] == 5 and "missing.png" in failed["error"] and "not found" in failed["error"]
    )
    assert "\n" not in failed["error"]
    assert sorted(f["cache"] for f in report["style_features"]) == ["computed", "computed"]
    assert all(f["seconds"] > 0 for f in report["style_features"])  # core time, for overhead
    outputs = [p["output"] for p in report["pairs"] if p["status"] == "done"]
    assert len(set(outputs)) == 5
    for output in outputs:
        assert max(iio.imread(output).shape[:2]) == SIZE
        sidecar = json.loads(Path(output).with_suffix(".json").read_text())
        assert sidecar["content"]["sha256"].startswith("sha256:")
        assert (
            sidecar["options"]["size"] == SIZE and len(sidecar["losses"]["history"]) == ITERATIONS
        )
    assert {p["worker"] for p in report["pairs"]} and all(p["worker"] for p in report["pairs"])
    assert (Path(batch["output"]) / "reports" / f"{report['run_id']}.json").exists()
    assert iio.imread(Path(batch["output"]) / "contact-sheet.png").shape[0] > 6 * 128

    failed_rows = list(
        csv.DictReader(io.StringIO((Path(batch["output"]) / "failed.csv").read_text()))
    )
    assert len(failed_rows) == 1 and failed_rows[0]["content"].endswith("missing.png")

    # The same run again: nothing to do but the missing file, nothing computed.
    run_flow(batch)
    again = read_report(batch)
    assert again["summary"] == {"done": 0, "skipped": 5, "failed": 1}
    assert not any(f["cache"] == "computed" for f in again["style_features"])
    assert again["run_id"] != report["run_id"]

    # The user supplies the file; rerun runs exactly that pair.
    write_png(batch["inputs"] / "missing.png", seed=99)
    code = main(["rerun", str(Path(batch["output"]) / "report.json"), "--quiet"])
    assert code == 0
    rerun = read_report(batch)
    assert rerun["summary"] == {"done": 1, "skipped": 0, "failed": 0}
    assert rerun["pairs"][0]["row"] == 5
    assert rerun["style_features"][0]["cache"] == "reused"
    assert "seconds" not in rerun["style_features"][0]


def test_invalid_rows_fail_alone_and_strict_stops_everything(batch):
    Path(batch["manifest"]).write_text(
        "content,style,iterations\na.png,starry.png,\nb.png,wave.png,-3\nc.png,,\n"
    )
    run_flow(batch)
    report = read_report(batch)
    assert report["summary"] == {"done": 1, "skipped": 0, "failed": 2}
    errors = {p["row"]: p["error"] for p in report["pairs"] if p["status"] == "failed"}
    assert errors[3].startswith("row 3: iterations") and errors[4].startswith("row 4: style")

    strict = run_flow(batch, strict=True, force=True)
    assert strict.is_failed() and strict.name != PAIRS_FAILED
    assert "--strict" in str(strict.result(raise_on_failure=False))


def test_force_redoes_and_a_new_option_is_a_new_output(batch):
    Path(batch["manifest"]).write_text("content,style\na.png,starry.png\n")
    run_flow(batch)
    first = read_report(batch)["pairs"][0]
    run_flow(batch, force=True)
    forced = read_report(batch)["pairs"][0]
    assert forced["status"] == "done" and forced["output"] == first["output"]
    stylize_batch(
        manifest=batch["manifest"],
        output=batch["output"],
        weights=batch["weights"],
        feature_cache=batch["feature_cache"],
        size=SIZE,
        iterations=ITERATIONS + 1,
    )
    changed = read_report(batch)["pairs"][0]
    assert changed["status"] == "done" and changed["output"] != first["output"]


def test_cli_run_exit_codes(batch, capsys):
    common = [
        "-o",
        batch["output"],
        "--weights",
        batch["weights"],
        "--size",
        str(SIZE),
        "--iterations",
        "2",
        "--feature-cache",
        batch["feature_cache"],
        "--quiet",
    ]
    assert main(["run", batch["manifest"], *common]) == 1
    out = capsys.readouterr().out
    assert "5 done, 0 skipped, 1 failed" in out and "missing.png" in out
    assert main(["run", batch["manifest"] + ".nope", *common]) == 2
    assert "manifest" in capsys.readouterr().err
    assert main(["run", batch["manifest"], *common[:-1], "--weights", "/nowhere/vgg.mat"]) == 2
    assert "/nowhere/vgg.mat" in capsys.readouterr().err


def test_outputs_are_written_whole(batch):
    """No temporary or partial files are left beside the outputs."""
    run_flow(batch)
    names = [p.name for p in Path(batch["output"]).rglob("*")]
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]
    for png in Path(batch["output"]).glob("*__*.png"):
        assert np.asarray(iio.imread(png)).size > 0


def task_run_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(r.name for r in runs)


def test_same_shape_pairs_sharing_a_style_run_together(batch, tmp_path):
    inputs = batch["inputs"]
    for name in ("p", "q", "r"):
        write_png(inputs / f"{name}.png", seed=ord(name), shape=(40, 56))
    write_png(inputs / "tall.png", seed=5, shape=(56, 40))
    Path(batch["manifest"]).write_text(
        "content,style\np.png,starry.png\nq.png,starry.png\nr.png,starry.png\ntall.png,starry.png\n"
    )
    state = run_flow(batch, batch_size=3)
    assert state.is_completed()
    names = task_run_names(state.state_details.flow_run_id)
    assert "rows 2, 3, 4: 3 × starry" in names and "row 5: tall × starry" in names
    together = {p["row"]: p["output"] for p in read_report(batch)["pairs"]}

    alone = dict(batch, output=str(tmp_path / "alone"))
    run_flow(alone, batch_size=1)
    for pair in read_report(alone)["pairs"]:
        a = iio.imread(pair["output"]).astype(float)
        b = iio.imread(together[pair["row"]]).astype(float)
        assert np.abs(a - b).mean() < 1.0  # the same optimization, batched


def test_the_run_publishes_progress_results_and_summary_artifacts(batch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    state = run_flow(batch)
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    by_type = {a.type: a for a in artifacts}
    assert {"progress", "table", "markdown"} <= set(by_type)
    assert float(by_type["progress"].data) == 100.0
    table = by_type["table"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert len(rows) == 6 and {r["status"] for r in rows} == {"done", "failed"}
    summary = by_type["markdown"].data
    assert "5 done" in summary and "missing.png" in summary
    # local outputs show as embedded thumbnails (a file:// link never loads in the UI's page)
    thumbs = re.findall(r"!\[row (\d+)\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", summary)
    assert sorted(int(row) for row, _ in thumbs) == [1 + i for i in (1, 2, 3, 5, 6)]
    for _, data in thumbs:
        thumb = iio.imread(base64.b64decode(data), extension=".jpg")
        assert max(thumb.shape[:2]) == SIZE and thumb.std() > 5  # the output itself, not blank
    assert "file://" not in summary
    # keys derive from the output root; the run is named after its manifest and output
    keys = {a.key for a in artifacts}
    digest = hashlib.sha256(batch["output"].encode()).hexdigest()[:8]
    assert keys == {f"stylize-batch-{k}-out-{digest}" for k in ("progress", "results", "summary")}
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    assert run.name == "manifest.csv → out"
    stylize_tags = [set(t.tags) for t in tasks if t.name.startswith("row ")]
    assert len(stylize_tags) == 5
    network = f"network:{Path(batch['weights']).name}"
    assert all(
        network in tags and any(t.startswith("style:") for t in tags) for tags in stylize_tags
    )
    assert {"style:starry.png", "style:wave.png"} <= set().union(*stylize_tags)


_AUDITED: list[tuple[str, str]] = []  # (event, path) while a test listens; Python's hooks stay
_LISTEN: list[bool] = []


def _audit(event: str, args: tuple) -> None:
    # one glob.glob call raises both "glob.glob" and "glob.glob/2": count the first only
    if _LISTEN and event in ("open", "glob.glob") and isinstance(args[0], str | os.PathLike):
        _AUDITED.append((event, os.fspath(args[0])))


def test_one_run_reads_and_parses_its_manifest_once(batch, capsys):
    """Counted from Python's own audit events, through the real `stylebatch run`: each open() of
    the manifest is a read, each expansion of its cross block's glob is a parse."""
    inputs = batch["inputs"]
    manifest = inputs / "cross.yaml"
    manifest.write_text("contents: ['[ab].png']\nstyles: [starry.png]\n")
    if not _LISTEN and _audit not in _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED.append(_audit)
    _AUDITED.clear()
    _LISTEN.append(True)
    try:
        code = main(
            ["run", str(manifest), "-o", batch["output"], "--weights", batch["weights"]]
            + ["--size", str(SIZE), "--iterations", "2", "--quiet"]
            + ["--feature-cache", batch["feature_cache"]]
        )
    finally:
        _LISTEN.clear()
    assert code == 0, capsys.readouterr()
    reads = [p for e, p in _AUDITED if e == "open" and p == str(manifest)]
    parses = [p for e, p in _AUDITED if e == "glob.glob" and p.endswith("[ab].png")]
    assert (len(reads), len(parses)) == (1, 1), _AUDITED[:20]
    assert read_report(batch)["summary"] == {"done": 2, "skipped": 0, "failed": 0}


_HOOKED: list = []


def test_every_output_is_scored_and_a_planted_weak_one_is_flagged_then_rerun(batch, capsys):
    """A pair whose style weight is 0 barely moves towards the style: flagged weak; a pair run
    to convergence is not. `rerun --weak` redoes only the weak one, with twice the iterations."""
    manifest = batch["inputs"] / "weak.csv"
    manifest.write_text(
        "content,style,style_weight,iterations\na.png,starry.png,,30\nb.png,starry.png,0,\n"
    )
    common = ["-o", batch["output"], "--weights", batch["weights"], "--size", str(SIZE)]
    common += ["--feature-cache", batch["feature_cache"], "--quiet"]
    common += ["--tolerance", "0"]  # every iteration runs: the rerun's history counts them
    assert main(["run", str(manifest), *common, "--iterations", "30"]) == 0
    out = capsys.readouterr().out
    assert "row 3: weak: the style barely took" in out and "rerun --weak" in out
    report = read_report(batch)
    good, weak = report["pairs"]
    assert "weak" not in good and weak["weak"] is True
    assert good["quality"]["style_ratio"] < 0.1 < weak["quality"]["style_ratio"]
    assert weak["quality"]["content_error"] < good["quality"]["content_error"]
    sidecar = json.loads(Path(good["output"]).with_suffix(".json").read_text())
    assert sidecar["quality"] == good["quality"]
    # deterministic for a fixed seed: the same pair again (forced) scores the same
    assert main(["run", str(manifest), *common, "--iterations", "30", "--force"]) == 0
    assert read_report(batch)["pairs"][0]["quality"] == good["quality"]

    capsys.readouterr()
    assert main(["rerun", "--weak", str(Path(batch["output"]) / "report.json"), "--quiet"]) == 0
    assert "rerunning 1 weak pair(s): rows 3" in capsys.readouterr().out
    (again,) = read_report(batch)["pairs"]
    assert again["row"] == 3 and again["status"] == "done"
    redone = json.loads(Path(again["output"]).with_suffix(".json").read_text())
    assert redone["options"]["iterations"] == 60 and len(redone["losses"]["history"]) == 60


def test_dry_run_says_what_would_run_skip_and_fail_and_writes_nothing(batch, capsys):
    common = ["-o", batch["output"], "--weights", batch["weights"], "--size", str(SIZE)]
    common += ["--iterations", "2", "--feature-cache", batch["feature_cache"], "--quiet"]
    assert main(["run", batch["manifest"], *common, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["row"] for r in plan["run"]] == [2, 3, 4, 6, 7] and plan["skip"] == []
    assert [f["row"] for f in plan["fail"]] == [5] and "missing.png" in plan["fail"][0]["error"]
    assert plan["pixel_iterations"] == sum(2 * r["shape"][0] * r["shape"][1] for r in plan["run"])
    assert not Path(batch["output"]).exists() and not Path(batch["feature_cache"]).exists()

    assert main(["run", batch["manifest"], *common, "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["summary"] == {"done": 5, "skipped": 0, "failed": 1}
    assert summary["failed"][0]["row"] == 5 and summary["exit_code"] == 1
    outputs = {r["row"]: r["output"] for r in plan["run"]}
    assert {p["row"]: p["output"] for p in read_report(batch)["pairs"] if p["row"] != 5} == outputs

    assert main(["run", batch["manifest"], *common, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("would run 0, skip 5, fail 1 (nothing written)")
    assert "row 5: fail: content" in text and text.count("skip (done)") == 5


def test_a_batch_emits_started_finished_and_failed_pairs_events(batch):
    """Read back through Prefect's API: the events carry the counts and the report's place."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    run_flow(batch)
    resource = f"stylebatch.output.{batch['output']}"
    wanted = EventFilter(
        event=EventNameFilter(prefix=["stylebatch.batch."]),
        resource=EventResourceFilter(id=[resource]),
    )

    def seen() -> dict:
        with get_client(sync_client=True) as client:
            return {e.event: e for e in client.read_events(filter=wanted, limit=50).events}

    deadline = time.monotonic() + 60
    while len(found := seen()) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert set(found) == {  # 3 iterations: some done pairs are weak too
        "stylebatch.batch.started",
        "stylebatch.batch.finished",
        "stylebatch.batch.failed-pairs",
        "stylebatch.batch.weak-pairs",
    }
    weak = [p["row"] for p in read_report(batch)["pairs"] if p.get("weak")]
    assert found["stylebatch.batch.weak-pairs"].payload["rows"] == weak and weak
    assert found["stylebatch.batch.started"].payload["pairs"] == 6
    finished = found["stylebatch.batch.finished"].payload
    assert (finished["done"], finished["failed"], finished["skipped"]) == (5, 1, 0)
    assert finished["weak"] == len(weak)
    assert finished["report"] == str(Path(batch["output"]) / "report.json")
    assert found["stylebatch.batch.failed-pairs"].payload["rows"] == [5]


def test_gpu_slots_are_prefect_concurrency_limits_held_across_processes(prefect_server):
    """A shared device is a global concurrency limit (made on first use with the pool's slots);
    while another holder has its one slot, acquiring it waits; once released, it goes on."""
    import threading

    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from flows import devices

    pool = devices.DevicePool(["/device:CPU:0"], 1, shared=True)  # as a GPU's pool is
    name = devices.limit_name("/device:CPU:0")
    with pool.acquire():
        pass
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert (limit.limit, limit.active_slots) == (1, 0)

    got = threading.Event()

    def work():
        with pool.acquire():
            got.set()

    with concurrency(name, occupy=1, strict=True):  # as another process's pair would
        worker = threading.Thread(target=work)
        worker.start()
        assert not got.wait(5)
    assert got.wait(60)
    worker.join(timeout=10)


def test_gpu_limits_name_physical_gpus_and_cpu_hosts_share_none():
    from flows import devices

    assert devices.limit_name("/device:GPU:1", "Node-7", "3,5") == "stylebatch-node-7-gpu-5"
    assert devices.limit_name("/device:GPU:0", "h", "") == "stylebatch-h-gpu-0"
    assert devices.limit_name("/device:GPU:0", "h", "2") != devices.limit_name(
        "/device:GPU:0", "h", "3"
    )
    assert devices.DevicePool(["/device:GPU:0"]).shared
    assert not devices.DevicePool(["/device:CPU:0"]).shared
