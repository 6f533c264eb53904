"""Outputs: the image and its JSON sidecar (what went in, how, what it cost), published once.

A pair is finished when its image and its sidecar are both there; the image is written first and
exclusively, so two runs on one output root write each output once (`publish`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import posixpath
import time
from contextlib import suppress
from importlib import metadata
from typing import Any

from flows import storage
from flows.model import Job
from stylecore import images
from stylecore.netspec import NetworkWeights
from stylecore.options import StyleOptions
from stylecore.stylize import Result

SIDECAR_GRACE = 30.0  # seconds another writer may take between an image and its sidecar


def sha256(data: bytes) -> str:
    """'sha256:<hex>' of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def versions() -> dict[str, str]:
    """Versions of what produced an output, for reproducing it."""
    found = {"python": platform.python_version()}
    for package in ("stylebatch", "tensorflow", "numpy", "scikit-image", "imageio", "prefect"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def network_info(weights: NetworkWeights) -> dict[str, str]:
    """The network's identity: a different file gives a different checksum."""
    return {
        "name": weights.name,
        "checksum": weights.checksum,
        "layout": weights.layout,
        "source": weights.source,
    }


def sidecar(
    inputs: dict[str, Any],
    output: str,
    options: StyleOptions,
    weights: NetworkWeights,
    result: Result,
    notes: list[str],
) -> dict[str, Any]:
    """The sidecar document; `inputs` holds content and styles with their sha256."""
    final = result.history[-1] if result.history else {}
    return {
        **inputs,
        "output": output,
        "size": list(result.rgb.shape[:2]),
        "options": options.to_dict(),
        "network": network_info(weights),
        "losses": {"final": final, "history": result.history},
        "quality": result.quality,
        "stops": result.stops,  # each level's last iteration and why it ended there
        "tiling": result.tiling,  # per level: tile, halo, tiles, peak memory (empty: untiled)
        "seconds": round(result.seconds, 3),
        "notes": notes,
        "versions": versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def dumps(document: dict[str, Any]) -> bytes:
    """Stable, readable JSON bytes."""
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()


def finished(job: Job) -> bool:
    """Whether a job's output and its sidecar are both there: the pair is done, by any run."""
    return storage.exists(job.output) and storage.exists(job.sidecar)


def write(
    job: Job,
    options: StyleOptions,
    weights: NetworkWeights,
    result: Result,
    notes: list[str],
    force: bool,
    resumed: dict[str, int] | None = None,
) -> str:
    """The image and its sidecar: done, or skipped when another run's are there (`force`:
    replaced, whoever wrote them). `resumed`: the checkpoint's level and iteration the run
    continued from (its loss history starts after it)."""
    ext = posixpath.splitext(job.output)[1].lower() or ".png"
    image = images.encode(result.rgb, result.alpha, ext)
    inputs = {
        "row": job.row,
        "content": {"uri": job.content, "sha256": job.content_sha},
        "styles": [{"uri": s.uri, "sha256": s.sha256, "weight": s.weight} for s in job.styles],
    }
    document = sidecar(inputs, job.output, options, weights, result, notes)
    document["output_sha256"] = sha256(image)  # which image this sidecar describes
    document["resumed"] = resumed
    body, inside = dumps(document), job.root or None
    if force:
        storage.write_bytes(job.output, image, inside=inside)
        storage.write_bytes(job.sidecar, body, inside=inside)
        return "done"
    return "done" if publish(job.output, image, job.sidecar, body, inside) else "skipped"


def publish(
    image_uri: str,
    image: bytes,
    sidecar_uri: str,
    body: bytes,
    inside: str | None = None,
    grace: float = SIDECAR_GRACE,
) -> bool:
    """Write an image, then its sidecar (whose presence marks the pair done), each once across
    concurrent runs: False when another run's image and sidecar are there instead.

    The image is written exclusively; its writer then writes the sidecar. A run that finds another's
    image waits for that sidecar; an image still without one `grace` seconds after it was written
    was left by a writer that died between the two writes, and is replaced.
    """
    if not storage.write_bytes(image_uri, image, exclusive=True, inside=inside):
        if _sidecar_arrives(sidecar_uri, image_uri, grace):
            return False
        storage.write_bytes(image_uri, image, inside=inside)
    try:
        if storage.write_bytes(sidecar_uri, body, exclusive=True, inside=inside):
            return True
    except storage.StorageError:
        with suppress(storage.StorageError):  # ours; without its sidecar, a half-written pair
            storage.delete(image_uri)
        raise
    if sha256(storage.read_bytes(image_uri)) != sha256(image):
        return False  # a run replaced our image after `grace`, and wrote its sidecar: theirs stand
    storage.write_bytes(sidecar_uri, body, inside=inside)  # a sidecar left from an earlier image
    return True


def _sidecar_arrives(sidecar_uri: str, image_uri: str, grace: float) -> bool:
    """Whether the sidecar of another writer's image appears before the image is `grace` old."""
    while not storage.exists(sidecar_uri):
        written = storage.modified(image_uri)
        if written is None or time.time() - written >= grace:
            return False
        time.sleep(min(0.2, grace))
    return True
