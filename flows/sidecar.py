"""The JSON sidecar written next to every output: what went in, how, and what it cost."""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
from importlib import metadata
from typing import Any

from stylecore.netspec import NetworkWeights
from stylecore.options import StyleOptions
from stylecore.stylize import Result


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
        "seconds": round(result.seconds, 3),
        "notes": notes,
        "versions": versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def dumps(document: dict[str, Any]) -> bytes:
    """Stable, readable JSON bytes."""
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()
