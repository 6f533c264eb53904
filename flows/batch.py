"""The `stylize-batch` flow: orchestration only — prepare, style features once, fan out, report."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from flows import devices, events, prepare, report, stops, uri
from flows.artifacts import Progress
from flows.clips import stylize_clips
from flows.featurecache import default_root
from flows.model import Job
from flows.prepare import Run
from flows.shards import run_sharded
from flows.tasks import hash_inputs, style_features, stylize_group
from stylecore.options import option_names

# Called with each pair's outcome as it finishes (the CLI's progress bar listens here).
LISTENERS: list[Callable[[dict], None]] = []


def run_name() -> str:
    """'demo.csv → stylebatch-demo': which manifest into which output. A shard keeps the name its
    parent gave it ('… shard 2/4'); one run in the parent's process adds its rows."""
    params = flow_run.parameters
    if params.get("part_of") and " shard " in (flow_run.name or ""):
        return flow_run.name
    name = f"{uri.name(params['manifest'])} → {uri.name(params['output'])}"
    rows = params.get("rows")
    if params.get("part_of") and rows:
        name += f" rows {rows[0]}–{rows[-1]}"
    return name


@flow(
    name="stylize-batch",
    flow_run_name=run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=16),
    log_prints=True,
)
def stylize_batch(
    manifest: str,
    output: str,
    feature_cache: str | None = None,
    force: bool = False,
    strict: bool = False,
    concurrency: int = 1,
    rows: list[int] | None = None,
    batch_size: int | None = None,
    shards: int = 1,
    part_of: str | None = None,
    min_style_gain: float = prepare.MIN_STYLE_GAIN,
    network: str | None = None,
    weights: str | None = None,
    pooling: str | None = None,
    content_layers: str | None = None,
    content_layer_weights: str | None = None,
    style_layers: str | None = None,
    style_layer_weight_exp: float | None = None,
    content_weight: float | None = None,
    style_weight: float | None = None,
    tv_weight: float | None = None,
    normalize_losses: bool | None = None,
    style_blend: str | None = None,
    style_scale: float | None = None,
    preserve_colors: bool | None = None,
    init: str | None = None,
    init_noise: float | None = None,
    seed: int | None = None,
    optimizer: str | None = None,
    learning_rate: float | None = None,
    beta1: float | None = None,
    beta2: float | None = None,
    epsilon: float | None = None,
    lbfgs_memory: int | None = None,
    iterations: int | None = None,
    size: int | None = None,
    levels: int | None = None,
    precision: str | None = None,
    xla: bool | None = None,
    tile: str | None = None,
    tolerance: float | None = None,
    checkpoint_every: float | None = None,
    temporal_weight: float | None = None,
    frame_iterations: int | None = None,
    max_frames: int | None = None,
    preset: str = "default",
) -> dict[str, Any] | State:
    """Stylize every pair of a manifest into `output`; returns the report."""
    given = {k: v for k, v in locals().items() if k in option_names() and v is not None}
    run = Run(
        manifest=manifest,
        output=output,
        feature_cache=feature_cache,
        force=force,
        strict=strict,
        concurrency=concurrency,
        rows=rows,
        preset=preset,
        batch_size=batch_size,
        shards=shards,
        part_of=part_of,
        min_style_gain=min_style_gain,
    )
    if shards > 1 and part_of is None:
        return run_sharded(run, given)
    return run_batch(run, given)


@stops.graceful()  # SIGINT, SIGTERM: pairs stop at their next iteration, reported interrupted
@stops.reaching_workers()  # in Dask workers' processes too
def run_batch(run: Run, given: dict[str, Any]) -> dict | State:
    """The flow's body, for one process (or one shard)."""
    logger = get_run_logger()
    started = report.now()
    defaults = prepare.run_options(given, run.preset)
    manifest = prepare.read_manifest(run.manifest, defaults, run.strict).only(run.rows)
    networks = prepare.check_networks(manifest, defaults)
    devices.pool(max(1, run.concurrency))
    prepare.limit_frames(manifest)
    probes = hash_inputs(prepare.inputs(manifest))
    plan = prepare.plan(manifest, probes, run.output, networks, run.force)
    cache_root = run.feature_cache or default_root()
    features, feature_errors = _features(plan.todo, cache_root)
    outcomes, runnable = list(plan.settled), []
    for job in plan.todo:
        keys = [k for ks in job.feature_keys.values() for k in ks if k in feature_errors]
        if keys:
            outcomes.append(job.outcome("failed", feature_errors[keys[0]]))
        else:
            runnable.append(job)
    listeners = [*LISTENERS, Progress(len(outcomes) + len(runnable), run.output).advance]
    events.batch_started(run.manifest, run.output, len(outcomes) + len(runnable))
    for outcome in outcomes:
        _notify(outcome.to_dict(), listeners)
    batch_size = run.batch_size or default_batch_size()
    stills = [job for job in runnable if not job.frames]
    results = _stylize(stills, cache_root, run.force, batch_size, logger, listeners)
    for line in stylize_clips([job for job in runnable if job.frames], cache_root, run.force):
        results.append(line)
        _notify(line, listeners)
    document = report.build(
        run_id=str(flow_run.get_id() or report.new_run_id()),
        manifest=run.manifest,
        output=run.output,
        started=started,
        finished=report.now(),
        features=features,
        pairs=[o.to_dict() for o in outcomes] + results,
        given=given,
        preset=run.preset,
        feature_cache=cache_root,
        min_style_gain=run.min_style_gain,
    )
    if run.part_of:  # a shard: the parent merges the shards' reports and publishes one
        document["part_of"] = run.part_of
        report.write_run_report(document, run.output)
    else:
        report.publish(document, manifest, run.output)
        events.batch_finished(document)
    return report.ending(document, run.output, logger)


def _features(jobs: list[Job], cache_root: str) -> tuple[list[dict], dict[str, str]]:
    """One task per distinct feature key; returns report entries and errors by key."""
    wanted: dict[str, tuple[str, dict, int]] = {}
    for job in jobs:
        for longest, keys in job.feature_keys.items():
            for style, key in zip(job.styles, keys, strict=True):
                wanted.setdefault(key, (style.uri, job.options, longest))
    futures = {
        key: style_features.with_options(tags=_tags(options, [where])).submit(
            where, key, options, longest, cache_root, f"{uri.name(where)} @ {longest}px"
        )
        for key, (where, options, longest) in wanted.items()
    }
    entries, errors = [], {}
    for key, future in futures.items():
        where = wanted[key][0]
        try:
            entries.append({"style": where, "key": key, **future.result()})
        except Exception as exc:
            errors[key] = f"style '{where}': {report.error_text(exc)}"
            entries.append({"style": where, "key": key, "cache": "failed", "error": errors[key]})
    return entries, errors


def groups(jobs: list[Job], batch_size: int) -> list[list[Job]]:
    """Jobs that can share one tensor (same options, styles and working shape), in batches."""
    by_key: dict[str, list[Job]] = {}
    for job in jobs:
        key = json.dumps([job.options, job.feature_keys, job.shape], sort_keys=True, default=str)
        by_key.setdefault(key, []).append(job)
    return [
        same[i : i + batch_size]
        for same in by_key.values()
        for i in range(0, len(same), max(1, batch_size))
    ]


def default_batch_size() -> int:
    """Batching pays on a GPU; on two CPU cores a batch measured no faster per image."""
    return 8 if "gpu" in devices.available()[0].lower() else 1


def _stylize(
    jobs: list[Job],
    cache_root: str,
    force: bool,
    batch_size: int,
    logger: logging.Logger,
    listeners: list[Callable[[dict], None]],
) -> list[dict]:
    """Run the jobs in batches; a failed batch of several is retried one job at a time, so one
    bad pair never fails its batch-mates."""
    results, retry = [], []
    for batch, outcomes, error in _run_batches(groups(jobs, batch_size), cache_root, force):
        if error and len(batch) > 1:
            retry += [[job] for job in batch]
            continue
        for job, outcome in zip(batch, outcomes or [None] * len(batch), strict=True):
            results.append(outcome or job.outcome("failed", error).to_dict())
            _notify(results[-1], listeners)
    for _batch, outcomes, error in _run_batches(retry, cache_root, force):
        results.append(outcomes[0] if outcomes else _batch[0].outcome("failed", error).to_dict())
        _notify(results[-1], listeners)
    for line in results:
        if line["status"] == "failed":
            logger.warning("row %d failed: %s", line["row"], line["error"])
    return results


def _run_batches(batches: list[list[Job]], cache_root: str, force: bool):
    """Submit every batch; yield (batch, outcomes, None) or (batch, None, error) as each ends."""
    futures = {
        stylize_group.with_options(tags=_tags(b[0].options, [s.uri for s in b[0].styles])).submit(
            b, cache_root, force, _label(b)
        ): b
        for b in batches
    }
    for future in as_completed(list(futures)):
        try:
            yield futures[future], future.result(), None
        except Exception as exc:  # the traceback is in the task run's log
            yield futures[future], None, report.error_text(exc)


def _tags(options: dict, styles: list[str]) -> list[str]:
    """A task run's tags, to filter the UI by: its styles and its network."""
    network = uri.name(options["weights"]) if options.get("weights") else options["network"]
    return [f"style:{uri.name(s)}" for s in styles[:3]] + [f"network:{network}"]


def _label(batch: list[Job]) -> str:
    if len(batch) == 1:
        return f"row {batch[0].row}: {batch[0].label}"
    rows = ", ".join(str(j.row) for j in batch)
    return f"rows {rows}: {len(batch)} × {batch[0].label.split(' × ')[-1]}"


def _notify(outcome: dict, listeners: list[Callable[[dict], None]]) -> None:
    for listener in listeners:
        listener(outcome)
