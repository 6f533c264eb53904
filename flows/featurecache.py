"""The feature cache: style Grams keyed by everything that shapes them, and clips' optical flow."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flows import storage, uri
from flows.model import StyleInput
from stylecore import images
from stylecore.options import StyleOptions
from stylecore.paths import cache_dir
from stylecore.stylize import Grams, GramsFor, Stylizer, blend, prepare_style, style_size

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
        return uri.join(self.root, f"{key}{ext}")

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

    def compute(
        self, key: str, uri: str, options: StyleOptions, longest: int, stylizer: Stylizer
    ) -> tuple[int, int]:
        """Store the Grams of the style at `uri` for a content of this longest side; the style's
        working shape."""
        rgb = prepare_style(images.decode(storage.read_bytes(uri), uri), longest, options)
        meta = {
            "style": uri,
            "network": stylizer.weights.checksum,
            "style_shape": list(rgb.shape[:2]),
            "layers_order": list(options.style_layers),
        }
        self.put(key, stylizer.grams(rgb, options), meta)
        return rgb.shape[:2]


def grams_source(
    cache: FeatureCache,
    styles: Sequence[StyleInput],
    keys: dict[int, tuple[str, ...]],
    stylizer: Stylizer,
) -> Callable[[StyleOptions], GramsFor]:
    """For some options, the function from a level's longest side to the blended Gram targets,
    from the cache; computed into it first when missing (a smaller size after running out of
    memory, a cache cleaned up in the meantime). `keys`: the planned keys by longest side."""

    def for_options(options: StyleOptions) -> GramsFor:
        def grams_for(longest: int) -> list[Grams]:
            wanted = keys.get(longest) or tuple(
                feature_key(
                    s.sha256, stylizer.weights.checksum, options, style_size(longest, options)
                )
                for s in styles
            )
            per_style = []
            for style, key in zip(styles, wanted, strict=True):
                if not cache.has(key):
                    cache.compute(key, style.uri, options, longest, stylizer)
                per_style.append(cache.get(key))
            return [blend(per_style, options.style_blend)]

        return grams_for

    return for_options


def flow_key(previous: np.ndarray, current: np.ndarray, method: str) -> str:
    """A key for the flow between two working-size content frames: their pixels and the method."""
    digest = hashlib.sha256(f"{FORMAT}:{method}:{previous.shape}".encode())
    for frame in (previous, current):
        digest.update(np.ascontiguousarray(frame, np.float32).tobytes())
    return digest.hexdigest()[:32]


class FlowCache:
    """Optical flow between a clip's content frames, one `.npz` per frame pair under
    `<root>/flow/`: a rerun, a resumed shot or another style of the same clip reads it back."""

    def __init__(self, root: str | None = None):
        self.root = uri.join(root or default_root(), "flow")

    def get_or_compute(
        self, previous: np.ndarray, current: np.ndarray, compute: Callable, method: str
    ):
        """The cached (backward, reliability) of two frames, else `compute(previous, current)`'s,
        stored first; an unreadable entry is computed again."""
        where = uri.join(self.root, flow_key(previous, current, method) + ".npz")
        if storage.exists(where):
            try:
                with np.load(io.BytesIO(storage.read_bytes(where)), allow_pickle=False) as a:
                    return a["backward"].astype(np.float32), a["reliability"].astype(np.float32)
            except (OSError, KeyError, ValueError):
                pass
        backward, reliability = compute(previous, current)
        stored = backward.astype(np.float16)  # returned as stored: a rerun reads the same values
        buffer = io.BytesIO()
        np.savez_compressed(buffer, backward=stored, reliability=reliability.astype(np.uint8))
        storage.write_bytes(where, buffer.getvalue())
        return stored.astype(np.float32), reliability.astype(np.float32)
