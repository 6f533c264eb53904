"""Prefect artifacts: progress while pairs finish, a results table and a summary with images.

Artifact keys derive from the output root, so each output folder (and deployment writing to it)
keeps its own history in the UI. The summary shows outputs as images a browser can load inside
the UI's http page: small JPEG thumbnails embedded as `data:` URIs for local outputs (a `file://`
link never loads there), presigned links for s3:// outputs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import threading
from typing import Any
from uuid import UUID

from PIL import Image
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows import storage, uri
from stylecore import images

log = logging.getLogger(__name__)
# How long links to s3:// outputs in artifacts stay valid: a week (S3's maximum), or the
# STYLEBATCH_LINK_EXPIRY environment variable in seconds.
PRESIGN_SECONDS = storage.MAX_PRESIGN_SECONDS
THUMB = 160  # pixels, the longest side of a summary's embedded thumbnail
SHOWN = 12  # images in the summary: the failed pairs are listed, the first done ones shown


def link_expiry() -> int:
    """Seconds a presigned link in an artifact stays valid."""
    value = os.environ.get("STYLEBATCH_LINK_EXPIRY", "")
    return int(value) if value.strip().isdigit() else PRESIGN_SECONDS


def artifact_key(kind: str, output: str) -> str:
    """'stylize-batch-<kind>-<output folder>-<8 hex>': one history per output root (Prefect
    allows lowercase letters, digits and dashes in a key)."""
    slug = re.sub(r"[^a-z0-9]+", "-", uri.name(output).lower()).strip("-")[:40] or "root"
    digest = hashlib.sha256(output.rstrip("/").encode()).hexdigest()[:8]
    return f"stylize-batch-{kind}-{slug}-{digest}"


class Progress:
    """A progress artifact over a run's pairs; silent outside a flow run."""

    def __init__(self, total: int, output: str):
        self.total, self.finished, self.shown = max(total, 1), 0, 0.0
        self.id: UUID | None = _quietly(
            create_progress_artifact,
            0.0,
            key=artifact_key("progress", output),
            description=f"pairs finished of {total}",
        )

    def advance(self, _outcome: dict | None = None) -> None:
        """One more pair finished; the artifact moves by whole percents (at most ~101 API calls
        a run: one per pair cost 27 ms each, most of an all-skipped 10,000-row rerun)."""
        self.finished += 1
        percent = 100.0 * self.finished / self.total
        if self.id is not None and (percent - self.shown >= 1 or self.finished == self.total):
            self.shown = percent
            _quietly(update_progress_artifact, self.id, percent)


class ClipProgress:
    """A progress artifact over one clip's frames, shared by its shots (threads); silent outside
    a flow run."""

    def __init__(self, output: str, label: str, total: int, done: int = 0):
        self.total, self.done, self._lock = max(total, 1), done, threading.Lock()
        self.id: UUID | None = _quietly(
            create_progress_artifact,
            100.0 * done / self.total,
            key=artifact_key("clip", output),
            description=f"frames of {label} ({total})",
        )

    def advance(self, _index: int | None = None) -> None:
        with self._lock:
            self.done += 1
            percent = 100.0 * self.done / self.total
        if self.id is not None:
            _quietly(update_progress_artifact, self.id, percent)


def publish_clip_link(output: str, label: str, frames: int) -> None:
    """A markdown artifact linking a finished clip (a presigned link for s3:// outputs)."""
    link = _link(output, link_expiry()) if uri.is_s3(output) else output
    _quietly(
        create_markdown_artifact,
        f"**{label}**: {frames} frames → [{uri.name(output)}]({link})",
        key=artifact_key("clip-link", output),
        description=f"finished clip {label}",
    )


def publish_artifacts(report: dict[str, Any], presign_seconds: int | None = None) -> None:
    """The results table and the markdown summary of a finished run."""
    presign_seconds = presign_seconds or link_expiry()
    rows = [_table_row(p, presign_seconds) for p in report["pairs"]]
    _quietly(
        create_table_artifact,
        rows,
        key=artifact_key("results", report["output"]),
        description=f"pairs of run {report['run_id']}",
    )
    _quietly(
        create_markdown_artifact,
        summary_markdown(report, presign_seconds),
        key=artifact_key("summary", report["output"]),
        description="stylize-batch summary",
    )


def summary_markdown(report: dict[str, Any], presign_seconds: int = PRESIGN_SECONDS) -> str:
    """A short summary: counts, the failed pairs, the first done outputs as images, and where the
    contact sheet and the report are."""
    s, output = report["summary"], report["output"]
    lines = [
        f"# stylize-batch: {s['done']} done, {s['skipped']} skipped, {s['failed']} failed",
        f"manifest `{report['manifest']}` → `{output}`",
        "",
    ]
    lines += [
        f"- row {p['row']}: **failed** — {p['error']}"
        for p in report["pairs"]
        if p["status"] == "failed"
    ]
    lines += [
        f"- row {p['row']}: **weak** — the style barely took "
        f"(style ratio {p['quality']['style_ratio']:.3g}); `stylebatch rerun --weak` redoes it"
        for p in report["pairs"]
        if p.get("weak")
    ]
    done = [p for p in report["pairs"] if p["status"] == "done"]
    if done:
        lines += ["", "| row | pair | output | style ratio |", "| --- | --- | --- | --- |"]
        lines += [_image_row(p, presign_seconds) for p in done[:SHOWN]]
    if len(done) > SHOWN:
        lines.append(f"\n… and {len(done) - SHOWN} more done pairs.")
    sheet, whole = uri.join(output, "contact-sheet.png"), uri.join(output, "report.json")
    lines += ["", f"Contact sheet: `{sheet}` · report: `{whole}`"]
    return "\n".join(lines)


def _image_row(pair: dict[str, Any], presign_seconds: int) -> str:
    """A summary table's row: the pair's names, its output as an image, its style score."""
    styles = [uri.name(uri.split_weight(s)[0]) for s in pair["style"].split(";") if s]
    names = f"{uri.name(pair['content'])} × {' + '.join(styles)}".replace("|", "\\|")
    ratio = (pair.get("quality") or {}).get("style_ratio")
    score = "" if ratio is None else f"{ratio:.3g}" + (" (weak)" if pair.get("weak") else "")
    image = f"![row {pair['row']}]({_image(pair['output'], presign_seconds)})"
    return f"| {pair['row']} | {names} | {image} | {score} |"


def thumbnail_uri(where: str) -> str:
    """A `data:image/jpeg;base64,…` thumbnail of an image, THUMB px on its longest side."""
    rgb = images.composite(images.decode(storage.read_bytes(where), where))
    small = images.resize(rgb, images.fit_shape(rgb.shape[:2], min(THUMB, max(rgb.shape[:2]))))
    buffer = io.BytesIO()
    Image.fromarray(small.clip(0, 255).round().astype("uint8")).save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image(where: str, presign_seconds: int) -> str:
    """What a markdown image points at: an embedded thumbnail locally, a presigned link on S3."""
    if uri.is_s3(where):
        return _link(where, presign_seconds)
    try:
        return thumbnail_uri(where)
    except Exception:  # an image is a convenience; the URI still says where the file is
        return where


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
        "style ratio": (pair.get("quality") or {}).get("style_ratio", ""),
        "content error": (pair.get("quality") or {}).get("content_error", ""),
        "weak": "weak" if pair.get("weak") else "",
        "error": pair.get("error") or "",
    }


def _link(where: str, presign_seconds: int) -> str:
    try:
        return storage.presign(where, presign_seconds)
    except Exception:  # a link is a convenience; the URI itself still says where the file is
        return where


def _quietly(function, *args, **kwargs):
    """Artifacts need a flow run and an API; without them the batch still runs."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        log.debug("artifact skipped: %s", exc)
        return None
