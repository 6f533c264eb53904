"""The run's report: report.json, reports/<run-id>.json, failed.csv, contact sheet, artifacts,
and the flow run's final state."""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from typing import Any

from prefect.states import Cancelled, Failed, State

from flows import storage, uri
from flows.artifacts import publish_artifacts
from flows.contactsheet import contact_sheet
from flows.manifest import Manifest, error_row, failed_rows_csv, pair_row
from flows.prepare import MIN_STYLE_GAIN
from stylecore.errors import StyleError

log = logging.getLogger(__name__)
STATUSES = ("done", "skipped", "failed")  # always counted; `interrupted` only when there are some
PAIRS_FAILED = "PairsFailed"  # the name of the Failed state that says: ran, but some pairs failed
INTERRUPTED = "Interrupted"  # the Cancelled state's: a signal stopped some pairs (reported)
RERUN = ("failed", "interrupted")  # the statuses `stylebatch rerun` takes and failed.csv lists


def now() -> str:
    """The report's timestamps: UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    """A run id when there is no Prefect flow run (direct calls in tests)."""
    return str(uuid.uuid4())


def error_text(exc: BaseException) -> str:
    """Our errors are written for users; anything else gets its type named."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, StyleError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def build(
    *,
    run_id: str,
    manifest: str,
    output: str,
    started: str,
    finished: str,
    features: list[dict],
    pairs: list[dict],
    given: dict,
    preset: str,
    feature_cache: str,
    min_style_gain: float = MIN_STYLE_GAIN,
) -> dict[str, Any]:
    """The report document, pairs in row order: run_id, manifest, output, started, finished,
    summary (done/skipped/failed counts), options (the run's own, for `rerun`), feature_cache,
    style_features ({style, key, cache: computed|reused|failed, seconds|error}) and pairs (each
    an `Outcome`: row, content, style, status, output, error, seconds, worker, losses, notes,
    quality, and `weak: true` on a done pair whose style barely moved: see `is_weak`)."""
    pairs = [_flagged(p, min_style_gain) for p in sorted(pairs, key=lambda p: p["row"])]
    return {
        "run_id": run_id,
        "manifest": manifest,
        "output": output,
        "started": started,
        "finished": finished,
        "summary": summarize(pairs),
        "options": {"preset": preset, **given},  # the run's own options, for `stylebatch rerun`
        "feature_cache": feature_cache,
        "min_style_gain": min_style_gain,
        "style_features": features,
        "pairs": pairs,
    }


def summarize(pairs: list[dict[str, Any]]) -> dict[str, int]:
    """Pairs per status: done, skipped, failed, and interrupted when a signal stopped some."""
    counts = {s: 0 for s in STATUSES}
    for pair in pairs:
        counts[pair["status"]] = counts.get(pair["status"], 0) + 1
    return counts


def is_weak(pair: dict[str, Any], min_style_gain: float) -> bool:
    """Whether a done pair's style barely moved: its Gram distance to the style shrank from the
    content's by less than `min_style_gain` times (quality.style_ratio > 1 / min_style_gain)."""
    ratio = (pair.get("quality") or {}).get("style_ratio")
    return pair["status"] == "done" and ratio is not None and ratio * min_style_gain > 1


def _flagged(pair: dict[str, Any], min_style_gain: float) -> dict[str, Any]:
    line = {k: v for k, v in pair.items() if k != "weak"}
    return {**line, "weak": True} if is_weak(line, min_style_gain) else line


def write_run_report(document: dict[str, Any], output: str) -> bytes:
    """OUTPUT/reports/<run-id>.json; returns the JSON bytes."""
    body = json.dumps(document, indent=1, ensure_ascii=False).encode()
    storage.write_bytes(uri.join(output, "reports", f"{document['run_id']}.json"), body)
    return body


def publish(document: dict[str, Any], manifest: Manifest, output: str) -> None:
    """Write the report files under the output root, then the Prefect artifacts."""
    body = write_run_report(document, output)
    storage.write_bytes(uri.join(output, "report.json"), body)
    storage.write_bytes(uri.join(output, "failed.csv"), failed_csv(document, manifest).encode())
    try:
        sheet = contact_sheet(document["pairs"])
        if sheet:
            storage.write_bytes(uri.join(output, "contact-sheet.png"), sheet)
    except Exception:  # a sheet is a convenience: never fail a finished batch over it
        log.exception("could not draw the contact sheet")
    publish_artifacts(document)


def failed_csv(document: dict[str, Any], manifest: Manifest) -> str:
    """A manifest of the failed and interrupted rows, runnable as it is (absolute URIs)."""
    failed = {p["row"] for p in document["pairs"] if p["status"] in RERUN}
    rows = [pair_row(p) for p in manifest.pairs if p.row in failed]
    rows += [error_row(e, manifest) for e in manifest.errors if e.row in failed]
    return failed_rows_csv(rows) if rows else "content,style\n"


def ending(document: dict[str, Any], output: str, logger: logging.Logger) -> dict[str, Any] | State:
    """The flow run's result: the report, or a Failed state when some pair failed — rather than
    an exception, so the UI offers Retry and no traceback is logged for what the report says.
    Those states carry no data: Prefect makes a failed state's data the exception it raises (of
    a dict it could not, and logged the whole report in a TypeError); the report is on disk."""
    summary = document["summary"]
    shards = f" over {len(document['shards'])} shards" if "shards" in document else ""
    counts = (summary["done"], summary["skipped"], summary["failed"])
    logger.info("done %d, skipped %d, failed %d%s", *counts, shards)
    if summary.get("interrupted"):
        return Cancelled(
            name=INTERRUPTED,
            message=f"{summary['interrupted']} of {len(document['pairs'])} pairs interrupted; "
            f"`stylebatch rerun {uri.join(output, 'report.json')}` finishes them",
        )
    if not summary["failed"]:
        return document
    return Failed(
        name=PAIRS_FAILED,
        message=f"{summary['failed']} of {len(document['pairs'])} pairs failed; "
        f"see {uri.join(output, 'report.json')}",
    )
