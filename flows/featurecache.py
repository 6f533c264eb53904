"""The style-feature cache: Gram targets per style layer, keyed by everything that shapes them."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np

from flows import storage
from stylecore.options import StyleOptions
from stylecore.paths import cache_dir
from stylecore.stylize import Grams

FORMAT = 1  # bump when the meaning of a cached array changes


def default_root() -> str:
    """The user cache directory's features/ folder."""
    return str(cache_dir() / "features")


def feature_key(style_sha: str, weights_checksum: str, options: StyleOptions, longest: int) -> str:
    """A key for one style's Grams: style bytes, network, layers, pooling and the style's size."""
    identity = {
        "format": FORMAT,
        "style": style_sha,
        "weights": weights_checksum,
        "layers": list(options.style_layers),
        "pooling": options.pooling,
        "longest": longest,  # the style's own longest side: content size × style scale
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


class FeatureCache:
    """`.npz` of Grams plus a `.json` of metadata per key, under a local or s3:// root."""

    def __init__(self, root: str | None = None):
        self.root = root or default_root()

    def _uri(self, key: str, ext: str) -> str:
        return storage.join(self.root, f"{key}{ext}")

    def has(self, key: str) -> bool:
        """Whether the key's arrays are stored (the metadata is written after them)."""
        return storage.exists(self._uri(key, ".json"))

    def get(self, key: str) -> Grams:
        """The stored Grams of a key."""
        data = storage.read_bytes(self._uri(key, ".npz"))
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:  # never unpickle cache files
            return {name: arrays[name] for name in arrays.files}

    def put(self, key: str, grams: Grams, meta: dict[str, Any]) -> None:
        """Store Grams, then their metadata: a reader that sees the .json finds a whole .npz."""
        buffer = io.BytesIO()
        np.savez(buffer, **{name: value.astype(np.float32) for name, value in grams.items()})
        storage.write_bytes(self._uri(key, ".npz"), buffer.getvalue())
        document = {"key": key, "layers": sorted(grams), **meta}
        storage.write_bytes(self._uri(key, ".json"), json.dumps(document, indent=1).encode())
