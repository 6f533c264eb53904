"""deployments/prefect.yaml on a real server with real workers: shards on both, a worker lost."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import pytest
from conftest import noise_image
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.exceptions import ObjectNotFound
from prefectserver import (
    ROOT,
    pool_server_fixture,  # noqa: F401  (the fixture `pool_server`)
    run_deployment,
    until,
    wait_final,
)

from stylecore import images

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
WORKER_LABEL = "prefect.worker.name"


def write_batch(folder: Path, count: int, shape=(40, 48)) -> Path:
    """`count` content images over two styles, and their manifest."""
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"c{i}.png").write_bytes(images.encode_png(noise_image(*shape, seed=i)))
    for i in range(2):
        (folder / f"s{i}.png").write_bytes(images.encode_png(noise_image(48, 48, seed=10 + i)))
    rows = "".join(f"c{i}.png,s{i % 2}.png\n" for i in range(count))
    (folder / "manifest.csv").write_text("content,style\n" + rows)
    return folder / "manifest.csv"


@pytest.fixture
def workers(pool_server):
    """The pool's two workers."""
    return pool_server.workers


def read_report(output: Path) -> dict:
    return json.loads((output / "report.json").read_text())


def children(server, parent_id) -> list:
    """The shards' flow runs of a parent, from the tag it gives them."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    tags = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"shard-of:{parent_id}"]))
    with server.client() as client:
        return client.read_flow_runs(flow_run_filter=tags)


def test_prefect_yaml_deploys_as_it_is_with_a_nightly_cron(pool_server):
    with pool_server.client() as client:
        nightly = client.read_deployment_by_name("stylize-batch/nightly")
        adhoc = client.read_deployment_by_name("stylize-batch/adhoc")
    (schedule,) = nightly.schedules
    assert schedule.active and schedule.schedule.cron == "0 2 * * *"
    assert not adhoc.schedules
    assert nightly.work_pool_name == adhoc.work_pool_name == "stylebatch"
    assert nightly.entrypoint == "flows/batch.py:stylize_batch"
    # The pull step points the workers at this checkout; the defaults name files in it.
    (step,) = nightly.pull_steps
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)
    assert Path(nightly.parameters["manifest"]).is_file()
    assert nightly.parameters["shards"] == 2 and nightly.parameters["network"] == "vgg16-hed"
    # The zombie-detection automation the README offers is valid as it is.
    pool_server.cli("automation", "create", "--from-file", "deployments/zombies.yaml")


def test_nightly_with_two_shards_runs_on_both_workers(pool_server, workers, tmp_path, tiny_weights):
    """The issue's check: `prefect deployment run stylize-batch/nightly` with shards=2."""
    manifest = write_batch(tmp_path / "in", 4)
    output = tmp_path / "out"
    params = {
        "manifest": manifest,
        "output": output,
        "weights": tiny_weights,
        "size": 32,
        "iterations": 3,
        "shards": 2,
    }
    parent = wait_final(pool_server, run_deployment(pool_server, "stylize-batch/nightly", params))
    assert parent.state.is_completed(), parent.state.message
    report = read_report(output)
    assert report["run_id"] == str(parent.id)
    assert [p["status"] for p in report["pairs"]] == ["done"] * 4
    assert len({p["worker"] for p in report["pairs"]}) == 2  # two processes, host:pid each
    assert [s["rows"] for s in report["shards"]] == [[2, 3], [4, 5]]
    # One shard ran in the parent's flow run, on its worker; the other on the other worker.
    shards = children(pool_server, parent.id)
    assert sorted(str(c.id) for c in shards) == sorted(s["flow_run"] for s in report["shards"])
    ran_on = {parent.labels[WORKER_LABEL]} | {c.labels.get(WORKER_LABEL) for c in shards}
    assert ran_on - {None} == {"w1", "w2"}
    assert (output / "contact-sheet.png").exists()


def test_a_worker_killed_mid_run_then_a_retry_finishes_the_batch(
    pool_server, workers, tmp_path, tiny_weights
):
    """SIGKILL the worker running a shard; the parent fails those pairs; a retry loses nothing."""
    manifest = write_batch(tmp_path / "in", 8, shape=(64, 64))
    output = tmp_path / "out"
    params = {
        "manifest": manifest,
        "output": output,
        "weights": tiny_weights,
        "size": 64,
        "iterations": 30,
        "shards": 2,
    }
    parent_id = run_deployment(pool_server, "stylize-batch/adhoc", params)

    def shard_on_a_worker_started():  # the parent runs one shard itself; a worker the other
        for child in children(pool_server, parent_id):
            done = [p for r in child.parameters["rows"] for p in output.glob(f"c{r - 2}__*.json")]
            if child.labels.get(WORKER_LABEL) and done:
                return child
        return None

    child = until(shard_on_a_worker_started, 240, "a first pair done by a worker", every=0.1)
    (lost,) = [w for w in workers if w.name == child.labels[WORKER_LABEL]]
    lost.kill()

    parent = wait_final(pool_server, parent_id)
    assert parent.state.is_failed() and parent.state.name == "PairsFailed"
    report = read_report(output)
    (number,) = [s["shard"] for s in report["shards"] if s["flow_run"] == str(child.id)]
    failed = [p for p in report["pairs"] if p["status"] == "failed"]
    cause = rf"shard {number}'s flow run crashed \(its worker '{lost.name}' went offline while running it\)"
    assert failed and all(re.fullmatch(rf"row {p['row']}: {cause}", p["error"]) for p in failed)
    assert {p["row"] for p in failed} < set(child.parameters["rows"])  # its first pair is done
    assert {s["flow_run"]: s["state"] for s in report["shards"]}[str(child.id)] == "Crashed"

    # Retry, as from the UI: the surviving worker takes the parent, which runs both shards
    # itself (no other worker is free); finished pairs are skipped, nothing is lost.
    pool_server.cli("flow-run", "retry", str(parent_id))
    retried = wait_final(pool_server, parent_id, after_run_count=parent.run_count)
    assert retried.state.is_completed(), retried.state.message
    again = read_report(output)
    assert again["summary"] == {"done": len(failed), "skipped": 8 - len(failed), "failed": 0}
    for pair in again["pairs"]:
        assert iio.imread(pair["output"]).shape[:2] == (64, 64)
        sidecar = json.loads(Path(pair["output"]).with_suffix(".json").read_text())
        assert sidecar["output"] == pair["output"]


def test_serve_registers_a_scheduled_deployment_and_runs_it(pool_server, tmp_path, tiny_weights):
    """`stylebatch serve … --cron`: for users without a pool; runs execute under the serve process."""
    manifest = write_batch(tmp_path / "in", 2)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "flows.cli", "serve", str(manifest), "-o", str(output)]
    command += [
        "--weights",
        str(tiny_weights),
        "--size",
        "32",
        "--iterations",
        "2",
        "--shards",
        "2",
    ]
    log = tmp_path / "serve.log"
    env = pool_server.env | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    serve = subprocess.Popen(
        [*command, "--cron", "30 3 * * *", "--name", "served"],
        env=env,
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        with pool_server.client() as client:

            def served():
                assert serve.poll() is None, log.read_text()[-3000:]
                with contextlib.suppress(ObjectNotFound):
                    return client.read_deployment_by_name("stylize-batch/served")

            deployment = until(served, 120, "stylize-batch/served")
        assert deployment.schedules[0].schedule.cron == "30 3 * * *"
        flow_run = run_deployment(pool_server, "stylize-batch/served", {})
        done = wait_final(pool_server, flow_run, timeout=180)
        assert done.state.is_completed(), log.read_text()[-3000:]
        report = read_report(output)
        assert report["summary"] == {"done": 2, "skipped": 0, "failed": 0}
    finally:
        serve.send_signal(signal.SIGINT)  # Ctrl-C: serve pauses its deployment and exits
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise AssertionError(
                f"serve ignored SIGINT for 60 s:\n{log.read_text()[-3000:]}"
            ) from None


def test_a_manifest_dropped_into_a_watched_folder_runs_on_the_adhoc_deployment(
    pool_server, tmp_path, tiny_weights
):
    """`stylebatch watch` emits stylebatch.manifest.ready; prefect.yaml's trigger on `adhoc`
    starts a run of that manifest, which a worker of the pool takes and finishes."""
    folder = write_batch(tmp_path / "in", 2).parent
    inbox, output = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    rows = "".join(
        f"  - {{content: {folder}/c{i}.png, style: {folder}/s0.png}}\n" for i in range(2)
    )
    dropped = inbox / "drop.yaml"
    dropped.write_text(
        f"defaults: {{weights: {tiny_weights}, size: 32, iterations: 2}}\npairs:\n{rows}"
    )
    os.utime(dropped, (time.time() - 60, time.time() - 60))  # settled, not still being written
    watch = [sys.executable, "-m", "flows.cli", "watch", str(inbox), "-o", str(output)]
    done = subprocess.run(
        [*watch, "--once", "--existing"],
        env=pool_server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ready: {dropped} → {output / 'drop'}" in done.stdout

    with pool_server.client() as client:
        adhoc = client.read_deployment_by_name("stylize-batch/adhoc")

        def started():
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[adhoc.id]))
            )
            return next((r for r in runs if r.parameters.get("manifest") == str(dropped)), None)

        flow_run = until(started, 120, "the trigger's flow run of stylize-batch/adhoc")
    assert flow_run.parameters["output"] == str(output / "drop")
    final = wait_final(pool_server, flow_run.id, timeout=240)
    assert final.state.is_completed(), final.state.message
    assert read_report(output / "drop")["summary"] == {"done": 2, "skipped": 0, "failed": 0}
    again = subprocess.run([*watch, "--once"], env=pool_server.env, capture_output=True, text=True)
    assert again.returncode == 0 and "ready:" not in again.stdout  # already there: not announced
