"""Prefect cancelling a deployment's flow run, on a real server and a real process worker.

The worker's runner sends SIGTERM to the flow run's process group, waits 30 s (fixed in Prefect
3.9: CancellationManager's grace_seconds), then SIGKILLs it. The flow's body holds SIGTERM
(flows/stops.py) and stops gracefully well within that: the pair in progress at its next
iteration, checkpointed; the report says `interrupted`; the run ends Cancelled. A retry of the
flow run resumes the pair from its checkpoint. Stopping the worker instead SIGKILLs its flow
runs at once (its task group is cancelled and anyio kills the process it awaited): the last
timed checkpoint is all that is kept, and the run stays Running until its heartbeats lapse.
A cancelled parent of shards cancels its children in turn and merges what they reported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.states import Cancelling
from prefectserver import ROOT, Server, until, wait_final
from test_hardening_runtime import write_batch

from flows.storage import checkpoints

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
    pytest.mark.usefixtures("prefect_server"),
]


@pytest.fixture(scope="module")
def pool(prefect_server, tmp_path_factory):
    """The session's server, with the process pool `stylebatch`, a deployment of the flow from
    this checkout, and one worker of two slots (a parent and its other shard); the deployment."""
    from prefect.settings import PREFECT_API_URL

    server = Server(PREFECT_API_URL.value(), tmp_path_factory.mktemp("home"), process=None)
    server.create_pool()
    worker = server.start_worker("w-cancel", tmp_path_factory.mktemp("worker"), limit=2)
    with server.client() as client:
        flow_id = client.create_flow_from_name("stylize-batch")
        deployment = client.create_deployment(
            flow_id=flow_id,
            name="cancellable",
            entrypoint="flows/batch.py:stylize_batch",
            work_pool_name="stylebatch",
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
            ],
        )
    try:
        server.wait_online({worker.name})
        yield server, deployment
    finally:
        worker.stop()


def parameters(manifest: Path, out: Path, weights: Path, iterations: int, **more) -> dict:
    return {
        "manifest": str(manifest),
        "output": str(out),
        "weights": str(weights),
        "size": 48,
        "iterations": iterations,
        "optimizer": "adam",
        "tolerance": 0,  # every iteration runs: the pair is still going when the cancel comes
        "checkpoint_every": 0.3,
        "feature_cache": str(out.parent / "features"),
        **more,
    }


def test_a_cancelled_flow_run_checkpoints_its_pair_and_a_retry_resumes_it(
    pool, tmp_path, tiny_weights
):
    server, deployment = pool
    manifest, out = write_batch(tmp_path / "in", 2), tmp_path / "out"
    params = parameters(manifest, out, tiny_weights, 600)
    with server.client() as client:
        run = client.create_flow_run_from_deployment(deployment, parameters=params)
        until(lambda: list(out.glob(".*.checkpoint.npz")), 240, "a pair's first checkpoint", 0.1)
        client.set_flow_run_state(run.id, Cancelling(), force=True)  # `prefect flow-run cancel`
    # The flow ends "Interrupted" (type Cancelled); once the process has exited, the worker's
    # runner forces its own "Cancelled" over it. A retry before that is refused as a duplicate
    # submission, and then overwritten by that "Cancelled": wait for it.
    with server.client() as client:
        cancelled = until(
            lambda: (r := client.read_flow_run(run.id)).state.name == "Cancelled" and r,
            90,
            "the worker's Cancelled state",
        )
    assert cancelled.state.is_cancelled()
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["interrupted"] >= 1 and report["summary"]["failed"] == 0
    (stopped,) = [
        p for p in report["pairs"] if p["status"] == "interrupted" and "level" in p["error"]
    ]
    assert stopped["error"].startswith("interrupted by SIGTERM at level 0, iteration ")
    assert stopped["error"].endswith("; checkpoint saved")
    iteration = int(stopped["error"].split("iteration ")[1].split(";")[0])
    assert Path(checkpoints.location(stopped["output"])).is_file()

    server.cli("flow-run", "retry", str(run.id))  # as from the UI
    retried = wait_final(server, run.id, timeout=240, after_run_count=cancelled.run_count)
    assert retried.state.is_completed(), retried.state.message
    again = json.loads((out / "report.json").read_text())
    assert {p["status"] for p in again["pairs"]} <= {"done", "skipped"}
    sidecar = json.loads(Path(stopped["output"]).with_suffix(".json").read_text())
    assert sidecar["resumed"] == {"level": 0, "iteration": iteration}  # from the checkpoint
    assert not list(out.glob(".*.checkpoint.npz"))


def test_a_cancelled_parent_of_shards_stops_its_children_and_merges_their_reports(
    pool, tmp_path, tiny_weights
):
    server, deployment = pool
    manifest, out = write_batch(tmp_path / "in", 2), tmp_path / "out"
    # one pair a shard: the parent runs shard 1 itself, the worker's other slot shard 2
    params = parameters(manifest, out, tiny_weights, 100_000, shards=2)  # stopped long before
    with server.client() as client:
        parent = client.create_flow_run_from_deployment(deployment, parameters=params)
        # both shards are mid-pair: one checkpoint each
        until(lambda: len(list(out.glob(".*.checkpoint.npz"))) == 2, 240, "two checkpoints", 0.1)
        client.set_flow_run_state(parent.id, Cancelling(), force=True)
        ended = until(
            lambda: (r := client.read_flow_run(parent.id)).state.is_final() and r,
            60,
            "the parent to end",
        )
        tag = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"shard-of:{parent.id}"]))
        shards = client.read_flow_runs(flow_run_filter=tag)
    assert ended.state.is_cancelled()
    assert len(shards) == 2 and all(s.state.is_cancelled() for s in shards)  # none left running
    report = json.loads((out / "report.json").read_text())
    assert report["run_id"] == str(parent.id)
    assert report["summary"] == {"done": 0, "skipped": 0, "failed": 0, "interrupted": 2}
    assert [s["rows"] for s in report["shards"]] == [[2], [3]]
    for pair in report["pairs"]:  # each stopped by its own process's SIGTERM, checkpointed
        assert re.fullmatch(
            r"interrupted by SIGTERM at level 0, iteration \d+; checkpoint saved", pair["error"]
        )
        assert Path(checkpoints.location(pair["output"])).is_file()
    assert len((out / "failed.csv").read_text().splitlines()) == 3  # both rows, for `rerun`
