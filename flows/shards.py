"""Sharded batches: one child flow run per shard of the manifest's rows, one merged report.

From a deployment, each shard is a flow run of that same deployment (`run_deployment`), so any
worker of the pool may take it; the parent claims the first shard itself, and any other that no
worker has taken after a few of the workers' polls, so a parent never idles on a worker slot and a
pool of one single-slot worker cannot deadlock. Run without a deployment (`stylebatch run
--shards N`), the shards run one after another in this process, as subflows.

A graceful stop of the parent (SIGTERM when its flow run is cancelled: the runner SIGKILLs it
30 s later) reaches the children: those running are set Cancelling, so their runners SIGTERM
them in turn and their pairs stop at the next iteration; those not started are Cancelled. The
parent waits for them a while, then merges what they reported.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.schemas.objects import FlowRun, StateType, WorkerStatus
from prefect.client.schemas.responses import SetStateStatus
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.runtime import deployment, flow_run
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Cancelling, Crashed, Pending, State

from flows import events, outputs, prepare, report, stops, storage, uri
from flows.featurecache import default_root
from flows.model import Job, Manifest
from flows.prepare import Run

POLL_SECONDS = 2.0
STEAL_AFTER_POLLS = 3  # a shard no worker took within this many worker polls runs in the parent
WORKER_LABEL = "prefect.worker.name"  # the label a worker puts on each flow run it takes
# After a stop, how long the parent waits for its children to stop: inside the 30 s a runner
# gives a cancelled flow run, with time left to merge and publish the report.
STOP_WAIT_SECONDS = 20.0


@dataclass
class Shard:
    """One shard: its number (from 1), its manifest rows, and the flow run that ran it."""

    number: int
    rows: list[int]
    flow_run_id: str | None = None
    pairs: list[dict] = field(default_factory=list)
    features: list[dict] = field(default_factory=list)
    state: str = ""

    def entry(self) -> dict[str, Any]:
        """This shard's line in the merged report."""
        return {
            "shard": self.number,
            "rows": self.rows,
            "flow_run": self.flow_run_id,
            "state": self.state,
        }


def split_rows(rows: list[int], shards: int) -> list[list[int]]:
    """Rows cut into at most `shards` contiguous runs whose sizes differ by one at most."""
    count = min(max(shards, 1), len(rows)) or 1
    size, extra = divmod(len(rows), count)
    cuts = [i * size + min(i, extra) for i in range(count + 1)]
    return [rows[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


@stops.graceful()  # SIGINT, SIGTERM: the children stop too, and the merged report is written
def run_sharded(run: Run, given: dict[str, Any]) -> dict[str, Any] | State:
    """Split the manifest into shards, run each as a child flow run, merge and publish."""
    logger = get_run_logger()
    started = report.now()
    manifest = _checked_manifest(run, given)
    wanted = manifest.only(run.rows).rows()
    shards = [Shard(i, rows) for i, rows in enumerate(split_rows(wanted, run.shards), 1)]
    parent = str(flow_run.get_id())
    params = {**flow_run.parameters, "shards": 1, "part_of": parent}
    if deployment.get_id():
        mine = _start_children(shards, params, logger)
        _wait(shards, mine, logger)
    else:
        logger.warning("not run from a deployment: the %d shards run here in turn", len(shards))
        _run_here(shards, params)
    for shard in shards:
        _collect(shard, run, given, manifest, started)
    document = merge(run, given, parent, started, shards)
    report.publish(document, manifest, run.output)
    events.batch_finished(document)
    return report.ending(document, run.output, logger)


def _checked_manifest(run: Run, given: dict[str, Any]) -> Manifest:
    """The whole manifest, checked (and the weights loaded) before any child starts."""
    defaults = prepare.run_options(given, run.preset)
    manifest = prepare.read_manifest(run.manifest, defaults, run.strict)
    prepare.check_networks(manifest, defaults)  # no weights: stop here, not once in every shard
    return manifest


def _start_children(shards: list[Shard], params: dict[str, Any], logger) -> UUID | None:
    """One flow run of this deployment per shard; the first is claimed here: its id, if it was."""
    parent, attempt, mine = params["part_of"], flow_run.run_count, None
    with get_client(sync_client=True) as client:
        for shard in shards:
            child = run_deployment(
                UUID(deployment.get_id()),
                parameters={**params, "rows": shard.rows},
                flow_run_name=f"{flow_run.name} shard {shard.number}/{len(shards)}",
                timeout=0,  # return at once; _wait polls them all
                idempotency_key=f"{parent}:{attempt}:{shard.number}",  # a retry starts new ones
                tags=[f"shard-of:{parent}"],
            )
            shard.flow_run_id = str(child.id)
            logger.info("shard %d (rows %s): %s", shard.number, _span(shard.rows), child.name)
            if shard.number == 1 and _claim(client, child.id):
                mine = child.id  # before the next exists: workers take the others
    return mine


def _run_here(shards: list[Shard], params: dict[str, Any]) -> None:
    """Each shard as a subflow of this run, one after another."""
    this_flow = FlowRunContext.get().flow
    for shard in shards:
        state = this_flow(**{**params, "rows": shard.rows}, return_state=True)
        shard.flow_run_id = str(state.state_details.flow_run_id)


def _wait(shards: list[Shard], mine: UUID | None, logger) -> None:
    """Until every child is final: run ours and those no worker took; crash those workers lost.
    After a stop, cancel the children and wait for them STOP_WAIT_SECONDS at most."""
    grace = STEAL_AFTER_POLLS * get_current_settings().worker.query_seconds
    ids = [UUID(s.flow_run_id) for s in shards]
    deadline = None
    with get_client(sync_client=True) as client:
        if mine and not stops.requested():
            _run_claimed(client, mine, logger)
        while True:
            waiting = [r for r in map(client.read_flow_run, ids) if not r.state.is_final()]
            if not waiting:
                return
            if stops.requested():
                if deadline is None:
                    deadline = time.monotonic() + STOP_WAIT_SECONDS
                    _cancel(client, waiting, logger)
                elif time.monotonic() > deadline:
                    names = ", ".join(r.name for r in waiting)
                    logger.warning("stopped waiting for %s: still stopping", names)
                    return
            else:
                idle = [r for r in waiting if r.state.is_scheduled() and _age(r) > grace]
                if idle and _claim(client, idle[0].id):
                    _run_claimed(client, idle[0].id, logger)
                    continue
            _crash_lost(client, waiting, logger)
            time.sleep(POLL_SECONDS)


def _cancel(client, runs: list[FlowRun], logger) -> None:
    """Stop the children with the parent: those a worker took are set Cancelling (its runner
    SIGTERMs them: they stop gracefully and report); those not started are set Cancelled."""
    why = f"its parent flow run was stopped by {stops.signal_name()}"
    for run in runs:
        started = run.labels.get(WORKER_LABEL) and not run.state.is_scheduled()
        state = Cancelling(message=why) if started else Cancelled(message=why)
        logger.info("%s: %s", run.name, state.name)
        client.set_flow_run_state(run.id, state, force=True)


def _claim(client, child_id: UUID) -> bool:
    """Take a scheduled child as a worker does, by moving it to Pending; False if one was first."""
    claim = client.set_flow_run_state(child_id, Pending(message="taken by its parent flow run"))
    return claim.status == SetStateStatus.ACCEPT


def _run_claimed(client, child_id: UUID, logger) -> None:
    """Run a child this run claimed, in this process: the same flow, the child's own flow run."""
    from prefect.flow_engine import run_flow

    child = client.read_flow_run(child_id)
    logger.info("running %s in this process", child.name)
    try:
        run_flow(FlowRunContext.get().flow, flow_run=child, return_type="state")
    except Exception as exc:  # the engine itself broke: say so on the child, not on the parent
        client.set_flow_run_state(child_id, Crashed(message=report.error_text(exc)), force=True)


def _crash_lost(client, runs: list[FlowRun], logger) -> None:
    """Mark Crashed the children whose worker went offline (its machine died with the run)."""
    taken = [r for r in runs if r.state.type in (StateType.PENDING, StateType.RUNNING)]
    names = {r.labels.get(WORKER_LABEL) for r in taken} - {None}
    if not names:
        return
    pools = {r.work_pool_name for r in taken if r.work_pool_name}
    offline = {
        w.name
        for pool in pools
        for w in client.read_workers_for_work_pool(pool)
        if w.status == WorkerStatus.OFFLINE
    }
    for run in taken:
        name = run.labels.get(WORKER_LABEL)
        if name in offline:
            message = f"its worker '{name}' went offline while running it"
            logger.warning("%s: %s; marking it Crashed", run.name, message)
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)


def _collect(
    shard: Shard, run: Run, given: dict[str, Any], manifest: Manifest, started: str
) -> None:
    """The shard's pairs and features: from its report, or settled from the outputs if none."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(shard.flow_run_id)).state
    shard.state = state.name
    try:
        path = uri.join(run.output, "reports", f"{shard.flow_run_id}.json")
        document = json.loads(storage.read_text(path))
    except storage.NotFoundError:
        lost = f"shard {shard.number}'s {_ended(state)}"
        stopped = stops.requested() and (state.is_cancelled() or not state.is_final())
        status = "interrupted" if stopped else "failed"  # interrupted: `rerun` takes them
        shard.pairs = _settle(manifest, shard.rows, lost, run, given, started, status)
        return
    shard.pairs, shard.features = document["pairs"], document["style_features"]


def _ended(state: State) -> str:
    """'flow run crashed (…)': how a shard's flow run ended without a report."""
    verb = {StateType.CANCELLED: "was cancelled", StateType.CRASHED: "crashed"}.get(
        state.type, state.name.lower()
    )
    why = (state.message or "").strip().splitlines()
    return f"flow run {verb}" + (f" ({why[0]})" if why else "")


def _settle(
    manifest: Manifest,
    rows: list[int],
    error: str,
    run: Run,
    given: dict[str, Any],
    since: str,
    status: str = "failed",
) -> list[dict]:
    """Outcomes of a shard that left no report: pairs with an output are done, the rest have
    `status` (failed, or interrupted when a stop cancelled the shard)."""
    part = manifest.only(rows)
    networks = prepare.check_networks(part, prepare.run_options(given, run.preset))
    probes = prepare.probe_all(prepare.inputs(part))
    plan = prepare.plan(part, probes, run.output, networks, force=True)
    outcomes = [o.to_dict() for o in plan.settled]
    for job in plan.todo:
        lost = job.outcome(status, f"row {job.row}: {error}").to_dict()
        outcomes.append(_found(job, since) or lost)
    return outcomes


def _found(job: Job, since: str) -> dict | None:
    """The outcome of a pair whose output and sidecar exist: done by this run, or before it."""
    if not outputs.finished(job):
        return None
    sidecar = json.loads(storage.read_text(job.sidecar))
    status = "done" if sidecar.get("created", "") >= since else "skipped"
    outcome = job.outcome(status, seconds=sidecar.get("seconds", 0.0)).to_dict()
    return outcome | {"worker": ""}  # it ran in the lost flow run, on a host we cannot name


def merge(run: Run, given: dict[str, Any], run_id: str, started: str, shards: list[Shard]) -> dict:
    """One report of the whole run from the shards' pairs and style features."""
    document = report.build(
        run_id=run_id,
        manifest=run.manifest,
        output=run.output,
        started=started,
        finished=report.now(),
        features=[f for s in shards for f in s.features],
        pairs=[p for s in shards for p in s.pairs],
        given=given,
        preset=run.preset,
        feature_cache=run.feature_cache or default_root(),
        min_style_gain=run.min_style_gain,
    )
    document["shards"] = [s.entry() for s in shards]
    return document


def _age(run: FlowRun) -> float:
    return (datetime.datetime.now(datetime.UTC) - run.created).total_seconds()


def _span(rows: list[int]) -> str:
    return f"{rows[0]}–{rows[-1]}" if rows else "none"
