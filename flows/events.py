"""Prefect events, for automations: a batch started, finished, has failed or weak pairs; a
manifest is ready (what `stylebatch watch` says, and what the `adhoc` deployment's trigger hears).

Every batch event's resource is its output root (`stylebatch.output.<root>`), so an automation can
watch one folder or bucket; the payload carries counts and the report's location.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.events import emit_event

from flows import uri

log = logging.getLogger(__name__)
MANIFEST_READY = "stylebatch.manifest.ready"
STARTED, FINISHED = "stylebatch.batch.started", "stylebatch.batch.finished"
FAILED_PAIRS, WEAK_PAIRS = "stylebatch.batch.failed-pairs", "stylebatch.batch.weak-pairs"


def output_resource(output: str) -> dict[str, str]:
    """The resource a batch's events concern: its output root."""
    return {
        "prefect.resource.id": f"stylebatch.output.{output}",
        "prefect.resource.name": uri.name(output),
    }


def batch_started(manifest: str, output: str, pairs: int) -> None:
    """The batch's jobs are planned and about to run."""
    _emit(
        STARTED, output_resource(output), {"manifest": manifest, "output": output, "pairs": pairs}
    )


def batch_finished(document: dict[str, Any]) -> None:
    """The report is written: finished, and failed-pairs / weak-pairs when there are some."""
    output = document["output"]
    weak = [p["row"] for p in document["pairs"] if p.get("weak")]
    failed = [p["row"] for p in document["pairs"] if p["status"] == "failed"]
    payload = {
        "manifest": document["manifest"],
        "output": output,
        "report": uri.join(output, "report.json"),
        "run_id": document["run_id"],
        **document["summary"],
        "weak": len(weak),
    }
    resource = output_resource(output)
    _emit(FINISHED, resource, payload)
    if failed:
        _emit(FAILED_PAIRS, resource, payload | {"rows": failed[:100]})
    if weak:
        _emit(WEAK_PAIRS, resource, payload | {"rows": weak[:100]})


def manifest_ready(manifest: str, output: str) -> bool:
    """Say that a manifest is there to run into `output`; False when no API took the event."""
    resource = {
        "prefect.resource.id": f"stylebatch.manifest.{manifest}",
        "prefect.resource.name": uri.name(manifest),
    }
    return _emit(MANIFEST_READY, resource, {"manifest": manifest, "output": output})


def _emit(name: str, resource: dict[str, str], payload: dict[str, Any]) -> bool:
    try:
        return emit_event(name, resource=resource, payload=payload) is not None
    except Exception as exc:  # an event is a notification: never fail a batch over it
        log.warning("could not emit %s: %s", name, exc)
        return False
