"""The run's report: report.json, reports/<run-id>.json, failed.csv, contact sheet, artifacts."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from flows import storage
from flows.contactsheet import contact_sheet
from flows.manifest import Manifest, error_row, failed_rows_csv, pair_row

log = logging.getLogger(__name__)
STATUSES = ("done", "skipped", "failed")


def new_run_id() -> str:
    """A run id when there is no Prefect flow run (direct calls in tests)."""
    return str(uuid.uuid4())


def error_text(exc: BaseException) -> str:
    """Our errors are written for users; anything else gets its type named."""
    from stylecore.errors import StyleError

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
) -> dict[str, Any]:
    """The report document (schema in ARCHITECTURE.md), pairs in row order."""
    pairs = sorted(pairs, key=lambda p: p["row"])
    return {
        "run_id": run_id,
        "manifest": manifest,
        "output": output,
        "started": started,
        "finished": finished,
        "summary": {s: sum(p["status"] == s for p in pairs) for s in STATUSES},
        "options": {"preset": preset, **given},  # the run's own options, for `stylebatch rerun`
        "feature_cache": feature_cache,
        "style_features": features,
        "pairs": pairs,
    }


def write_run_report(document: dict[str, Any], output: str) -> bytes:
    """OUTPUT/reports/<run-id>.json; returns the JSON bytes."""
    body = json.dumps(document, indent=1, ensure_ascii=False).encode()
    storage.write_bytes(storage.join(output, "reports", f"{document['run_id']}.json"), body)
    return body


def publish(document: dict[str, Any], manifest: Manifest, output: str) -> None:
    """Write the report files under the output root, then the Prefect artifacts."""
    body = write_run_report(document, output)
    storage.write_bytes(storage.join(output, "report.json"), body)
    storage.write_bytes(storage.join(output, "failed.csv"), failed_csv(document, manifest).encode())
    try:
        sheet = contact_sheet(document["pairs"])
        if sheet:
            storage.write_bytes(storage.join(output, "contact-sheet.png"), sheet)
    except Exception:  # a sheet is a convenience: never fail a finished batch over it
        log.exception("could not draw the contact sheet")
    from flows.artifacts import publish_artifacts

    publish_artifacts(document)


def failed_csv(document: dict[str, Any], manifest: Manifest) -> str:
    """A manifest of the failed rows, runnable as it is (absolute URIs)."""
    failed = {p["row"] for p in document["pairs"] if p["status"] == "failed"}
    rows = [pair_row(p) for p in manifest.pairs if p.row in failed]
    rows += [error_row(e, manifest) for e in manifest.errors if e.row in failed]
    return failed_rows_csv(rows) if rows else "content,style\n"
