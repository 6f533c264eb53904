"""The `stylize-batch` flow: validate, hash, compute style features once, fan out, report."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows import devices, report, storage
from flows.artifacts import Progress
from flows.featurecache import default_root
from flows.manifest import Manifest, load_manifest
from flows.plan import Job, Outcome, invalid_row, make_job, unreadable
from flows.tasks import hash_inputs, style_features, stylize_group
from stylecore.errors import StyleError
from stylecore.options import StyleOptions, option_names
from stylecore.stylize import shared_weights
from stylecore.weights import resolve_spec

# Called with each pair's outcome as it finishes (the CLI's progress bar listens here).
LISTENERS: list[Callable[[dict], None]] = []


class RunError(StyleError):
    """The run could not start: unreadable manifest, --strict with invalid rows, no weights."""


PAIRS_FAILED = "PairsFailed"  # the name of the Failed state that says: ran, but some pairs failed


@dataclass(frozen=True)
class Run:
    """A run's own settings (everything but the stylization options)."""

    manifest: str
    output: str
    feature_cache: str | None = None
    force: bool = False
    strict: bool = False
    concurrency: int = 1  # pairs at once on each device
    rows: list[int] | None = None  # only these manifest rows (a rerun, a shard)
    preset: str = "default"
    batch_size: int | None = None  # pairs optimized together in one tensor; None: per device
    shards: int = 1  # > 1: split into child flow runs of the deployment (flows.shards)
    part_of: str | None = None  # the parent's run id when this run is one shard of it


@flow(name="stylize-batch", task_runner=ThreadPoolTaskRunner(max_workers=16), log_prints=True)
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
    )
    if shards > 1 and part_of is None:
        from flows.shards import run_sharded

        return run_sharded(run, given)
    return run_batch(run, given)


def run_batch(run: Run, given: dict[str, Any]) -> dict | State:
    """The flow's body, for one process (or one shard)."""
    logger = get_run_logger()
    started = _now()
    defaults = run_defaults(given, run.preset)
    manifest = only_rows(read_manifest(run.manifest, defaults, run.strict), run.rows)
    cache_root = run.feature_cache or default_root()
    checksums = weights_checksums(manifest, resolve_spec(defaults.network, defaults.weights))
    devices.pool(max(1, run.concurrency))
    output, force = run.output, run.force
    outcomes = [invalid_row(e) for e in manifest.errors]
    jobs, failed = plan_jobs(manifest, output, checksums)
    outcomes += failed
    todo, skipped = _split_done(jobs, force)
    outcomes += skipped
    features, feature_errors = _features(todo, cache_root)
    runnable = []
    for job in todo:
        error = next(
            (
                feature_errors[k]
                for ks in job.feature_keys.values()
                for k in ks
                if k in feature_errors
            ),
            None,
        )
        if error:
            outcomes.append(job.outcome("failed", error))
        else:
            runnable.append(job)
    listeners = [*LISTENERS, Progress(len(outcomes) + len(runnable)).advance]
    for outcome in outcomes:
        _notify(outcome.to_dict(), listeners)
    batch_size = run.batch_size or default_batch_size()
    results = _stylize(runnable, cache_root, force, batch_size, logger, listeners)
    document = report.build(
        run_id=str(flow_run.get_id() or report.new_run_id()),
        manifest=run.manifest,
        output=output,
        started=started,
        finished=_now(),
        features=features,
        pairs=[o.to_dict() for o in outcomes] + results,
        given=given,
        preset=run.preset,
        feature_cache=cache_root,
    )
    if run.part_of:  # a shard: the parent merges the shards' reports and publishes one
        document["part_of"] = run.part_of
        report.write_run_report(document, output)
    else:
        report.publish(document, manifest, output)
    summary = document["summary"]
    logger.info(
        "done %d, skipped %d, failed %d", summary["done"], summary["skipped"], summary["failed"]
    )
    if summary["failed"]:
        # A Failed state rather than an exception: the UI offers Retry, and no traceback is
        # logged for what the report already explains.
        return Failed(
            name=PAIRS_FAILED,
            data=document,
            message=f"{summary['failed']} of {len(document['pairs'])} pairs failed; "
            f"see {storage.join(output, 'report.json')}",
        )
    return document


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_defaults(given: dict[str, Any], preset: str) -> StyleOptions:
    """The run's options: the preset with the given ones over it (bad ones stop the run)."""
    from stylecore.options import preset as named

    try:
        return StyleOptions.from_dict(given, named(preset))
    except StyleError as exc:
        raise RunError(str(exc)) from exc


def read_manifest(uri: str, defaults: StyleOptions, strict: bool) -> Manifest:
    """The parsed manifest; with `strict`, any invalid row stops the run before any work."""
    manifest = load_manifest(uri, defaults, read_text=storage.read_text, glob=storage.glob)
    if strict and manifest.errors:
        lines = "; ".join(e.message for e in manifest.errors[:5])
        more = f" (and {len(manifest.errors) - 5} more)" if len(manifest.errors) > 5 else ""
        raise RunError(
            f"{uri}: {len(manifest.errors)} invalid rows, nothing run (--strict): {lines}{more}"
        )
    return manifest


def only_rows(manifest: Manifest, rows: list[int] | None) -> Manifest:
    """The manifest cut down to some rows (a rerun of the failed ones)."""
    if rows is None:
        return manifest
    wanted = set(rows)
    return dataclasses.replace(
        manifest,
        pairs=tuple(p for p in manifest.pairs if p.row in wanted),
        errors=tuple(e for e in manifest.errors if e.row in wanted),
    )


def weights_checksums(manifest: Manifest, run_spec: str | None = None) -> dict[str, str]:
    """Each distinct network's checksum. The run's own (`run_spec`; any when None) stops the run
    when it cannot be read; one that only some rows name fails those rows (plan.unreadable)."""
    specs = {resolve_spec(p.options.network, p.options.weights) for p in manifest.pairs}
    checksums = {}
    for spec in sorted(specs):
        try:
            checksums[spec] = shared_weights(spec).checksum
        except StyleError as exc:
            if run_spec is None or spec == run_spec:
                raise RunError(str(exc)) from exc
    return checksums


def plan_jobs(
    manifest: Manifest, output: str, checksums: dict[str, str]
) -> tuple[list[Job], list[Outcome]]:
    """A job per valid pair whose inputs can be read; a failed outcome for each other pair."""
    uris = sorted({u for p in manifest.pairs for u in (p.content, *(s.uri for s in p.styles))})
    probes = hash_inputs(uris)
    jobs, failed = [], []
    for pair in manifest.pairs:
        failure = unreadable(pair, probes)
        if failure:
            failed.append(failure)
            continue
        spec = resolve_spec(pair.options.network, pair.options.weights)
        jobs.append(make_job(pair, probes, output, checksums[spec]))
    return jobs, failed


def _split_done(jobs: list[Job], force: bool) -> tuple[list[Job], list[Outcome]]:
    todo, skipped = [], []
    for job in jobs:
        if not force and storage.exists(job.output) and storage.exists(job.sidecar):
            skipped.append(job.outcome("skipped"))
        else:
            todo.append(job)
    return todo, skipped


def _features(jobs: list[Job], cache_root: str) -> tuple[list[dict], dict[str, str]]:
    """One task per distinct feature key; returns report entries and errors by key."""
    wanted: dict[str, tuple[str, dict, int]] = {}
    for job in jobs:
        for longest, keys in job.feature_keys.items():
            for style, key in zip(job.styles, keys, strict=True):
                wanted.setdefault(key, (style.uri, job.options, longest))
    futures = {
        key: style_features.submit(
            uri, key, options, longest, cache_root, f"{uri.rsplit('/', 1)[-1]} @ {longest}px"
        )
        for key, (uri, options, longest) in wanted.items()
    }
    entries, errors = [], {}
    for key, future in futures.items():
        uri = wanted[key][0]
        try:
            entries.append({"style": uri, "key": key, **future.result()})
        except Exception as exc:
            errors[key] = f"style '{uri}': {report.error_text(exc)}"
            entries.append({"style": uri, "key": key, "cache": "failed", "error": errors[key]})
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
        stylize_group.submit(batch, cache_root, force, _label(batch)): batch for batch in batches
    }
    for future in as_completed(list(futures)):
        try:
            yield futures[future], future.result(), None
        except Exception as exc:  # the traceback is in the task run's log
            yield futures[future], None, report.error_text(exc)


def _label(batch: list[Job]) -> str:
    if len(batch) == 1:
        return f"row {batch[0].row}: {batch[0].label}"
    rows = ", ".join(str(j.row) for j in batch)
    return f"rows {rows}: {len(batch)} × {batch[0].label.split(' × ')[-1]}"


def _notify(outcome: dict, listeners: list[Callable[[dict], None]]) -> None:
    for listener in listeners:
        listener(outcome)
