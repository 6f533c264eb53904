"""Prefect artifacts: progress while pairs finish, a results table and a summary at the end."""

from __future__ import annotations

import logging
import os
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows import storage

log = logging.getLogger(__name__)
# How long links to s3:// outputs in artifacts stay valid: a week (S3's maximum), or the
# STYLEBATCH_LINK_EXPIRY environment variable in seconds.
PRESIGN_SECONDS = 7 * 24 * 3600


def link_expiry() -> int:
    """Seconds a presigned link in an artifact stays valid."""
    value = os.environ.get("STYLEBATCH_LINK_EXPIRY", "")
    return int(value) if value.strip().isdigit() else PRESIGN_SECONDS


class Progress:
    """A progress artifact over a run's pairs; silent outside a flow run."""

    def __init__(self, total: int):
        self.total, self.finished = max(total, 1), 0
        self.id: UUID | None = _quietly(
            create_progress_artifact,
            0.0,
            key="stylize-batch-progress",
            description=f"pairs finished of {total}",
        )

    def advance(self, _outcome: dict | None = None) -> None:
        self.finished += 1
        if self.id is not None:
            _quietly(update_progress_artifact, self.id, 100.0 * self.finished / self.total)


def publish_artifacts(report: dict[str, Any], presign_seconds: int | None = None) -> None:
    """The results table and the markdown summary of a finished run."""
    presign_seconds = presign_seconds or link_expiry()
    rows = [_table_row(p, presign_seconds) for p in report["pairs"]]
    _quietly(
        create_table_artifact,
        rows,
        key="stylize-batch-results",
        description=f"pairs of run {report['run_id']}",
    )
    _quietly(
        create_markdown_artifact,
        summary_markdown(report, presign_seconds),
        key="stylize-batch-summary",
        description="stylize-batch summary",
    )


def summary_markdown(report: dict[str, Any], presign_seconds: int = PRESIGN_SECONDS) -> str:
    """A short summary with the outputs shown as images."""
    s = report["summary"]
    lines = [
        f"# stylize-batch: {s['done']} done, {s['skipped']} skipped, {s['failed']} failed",
        f"manifest `{report['manifest']}` → `{report['output']}`",
        "",
    ]
    lines += [
        f"- row {p['row']}: **failed** — {p['error']}"
        for p in report["pairs"]
        if p["status"] == "failed"
    ]
    shown = [p for p in report["pairs"] if p["status"] == "done"][:24]
    lines += ["", *(f"![row {p['row']}]({_link(p['output'], presign_seconds)})" for p in shown)]
    return "\n".join(lines)


def _table_row(pair: dict, presign_seconds: int) -> dict[str, Any]:
    losses = pair.get("losses") or {}
    return {
        "row": pair["row"],
        "status": pair["status"],
        "content": pair["content"],
        "style": pair["style"],
        "output": _link(pair["output"], presign_seconds) if pair.get("output") else "",
        "seconds": pair.get("seconds", 0.0),
        "loss": round(losses["total"], 4) if "total" in losses else "",
        "error": pair.get("error") or "",
    }


def _link(uri: str, presign_seconds: int) -> str:
    try:
        return storage.presign(uri, presign_seconds)
    except Exception:  # a link is a convenience; the URI itself still says where the file is
        return uri


def _quietly(function, *args, **kwargs):
    """Artifacts need a flow run and an API; without them the batch still runs."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        log.debug("artifact skipped: %s", exc)
        return None
