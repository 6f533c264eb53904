"""The `stylize-batch` flow: validate, hash, compute style features once, fan out, report."""

from __future__ import annotations

import dataclasses
import datetime
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
from flows.tasks import hash_inputs, style_features, stylize_pair
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
    preset: str = "default",
) -> dict[str, Any] | State:
    """Stylize every pair of a manifest into `output`; returns the report."""
    given = {k: v for k, v in locals().items() if k in option_names() and v is not None}
    run = Run(manifest, output, feature_cache, force, strict, concurrency, rows, preset, shards,
              part_of)
    if shards > 1 and part_of is None:
        from flows.shards import run_sharded

        return run_sharded(run, given)
    return run_batch(run, given)


def run_batch(run: Run, given: dict[str, Any]) -> dict | State:
    """The flow's body, for one process (or one shard)."""
    logger = get_run_logger()
    started = _now()
    defaults = _defaults(given, run.preset)
    manifest = _only(_manifest(run.manifest, defaults, run.strict), run.rows)
    cache_root = run.feature_cache or default_root()
    checksums = _checksums(manifest)
    devices.pool(max(1, run.concurrency))
    output, force = run.output, run.force
    outcomes = [invalid_row(e) for e in manifest.errors]
    jobs, failed = _plan(manifest, output, checksums)
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
    results = _stylize(runnable, cache_root, force, logger, listeners)
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


def _defaults(given: dict[str, Any], preset: str) -> StyleOptions:
    from stylecore.options import preset as named

    try:
        return StyleOptions.from_dict(given, named(preset))
    except StyleError as exc:
        raise RunError(str(exc)) from exc


def _manifest(uri: str, defaults: StyleOptions, strict: bool) -> Manifest:
    manifest = load_manifest(uri, defaults, read_text=storage.read_text, glob=storage.glob)
    if strict and manifest.errors:
        lines = "; ".join(e.message for e in manifest.errors[:5])
        more = f" (and {len(manifest.errors) - 5} more)" if len(manifest.errors) > 5 else ""
        raise RunError(
            f"{uri}: {len(manifest.errors)} invalid rows, nothing run (--strict): {lines}{more}"
        )
    return manifest


def _only(manifest: Manifest, rows: list[int] | None) -> Manifest:
    """The manifest cut down to some rows (a rerun of the failed ones)."""
    if rows is None:
        return manifest
    wanted = set(rows)
    return dataclasses.replace(
        manifest,
        pairs=tuple(p for p in manifest.pairs if p.row in wanted),
        errors=tuple(e for e in manifest.errors if e.row in wanted),
    )


def _checksums(manifest: Manifest) -> dict[str, str]:
    """Each distinct network's checksum; a missing or broken weights file stops the run here."""
    specs = {resolve_spec(p.options.network, p.options.weights) for p in manifest.pairs}
    try:
        return {spec: shared_weights(spec).checksum for spec in sorted(specs)}
    except StyleError as exc:
        raise RunError(str(exc)) from exc


def _plan(manifest: Manifest, output: str, checksums: dict[str, str]):
    uris = sorted({u for p in manifest.pairs for u in (p.content, *(s.uri for s in p.styles))})
    hashes, errors = hash_inputs(uris)
    jobs, failed = [], []
    for pair in manifest.pairs:
        failure = unreadable(pair, errors)
        if failure:
            failed.append(failure)
            continue
        spec = resolve_spec(pair.options.network, pair.options.weights)
        jobs.append(make_job(pair, hashes, output, checksums[spec]))
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
            entries.append({"style": uri, "key": key, "cache": future.result()})
        except Exception as exc:
            errors[key] = f"style '{uri}': {report.error_text(exc)}"
            entries.append({"style": uri, "key": key, "cache": "failed", "error": errors[key]})
    return entries, errors


def _stylize(
    jobs: list[Job],
    cache_root: str,
    force: bool,
    logger: logging.Logger,
    listeners: list[Callable[[dict], None]],
) -> list[dict]:
    futures = {stylize_pair.submit(job, cache_root, force): job for job in jobs}
    results = []
    for future in as_completed(list(futures)):
        job = futures[future]
        try:
            outcome = future.result()
        except Exception as exc:  # the traceback is in the task run's log
            outcome = job.outcome("failed", report.error_text(exc)).to_dict()
            logger.warning("row %d failed: %s", job.row, outcome["error"])
        results.append(outcome)
        _notify(outcome, listeners)
    return results


def _notify(outcome: dict, listeners: list[Callable[[dict], None]]) -> None:
    for listener in listeners:
        listener(outcome)
