"""A TF2 feature extractor built from a layer list, truncated after the deepest layer asked for."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from stylecore.errors import WeightsError
from stylecore.hardware import resolve_precision
from stylecore.netspec import Layer, NetworkWeights

Features = dict[str, tf.Tensor]


class FeatureNet:
    """Maps mean-subtracted RGB images (B, H, W, 3) to the named layers' activations."""

    def __init__(
        self,
        weights: NetworkWeights,
        layers: Iterable[str],
        pooling: str | None = None,
        precision: str = "float32",
    ):
        self.outputs = tuple(dict.fromkeys(layers))
        missing = [name for name in self.outputs if name not in weights.layer_names]
        if missing:
            raise WeightsError(
                f"{weights.source}: network '{weights.name}' has no layer {', '.join(missing)} "
                f"(it has {_summary(weights.layer_names)})"
            )
        deepest = max(self.outputs, key=weights.layer_names.index)
        self.weights = weights.truncated(deepest)
        self.pooling = pooling
        self.mean = tf.constant(weights.mean_rgb.reshape(1, 1, 1, 3), tf.float32)
        # bfloat16 halves memory traffic, doubles tensor-core rates on GPUs and runs the CPU's
        # bf16 dot products (0.7× the float32 step at 256 px, README Performance); features come
        # back as float32 so Grams and losses keep their precision. "auto": bf16 where native.
        self.precision = resolve_precision(precision, tf.constant(0.0).device)
        self.dtype = tf.dtypes.as_dtype(self.precision)
        # Constants, not variables: the graph folds them, and nothing here is ever trained.
        self._params = [
            _conv_params(layer, self.dtype) if layer.kind == "conv" else None
            for layer in self.weights.layers
        ]

    def __call__(self, images: tf.Tensor) -> Features:
        """Activations of the requested layers; `images` are mean-subtracted, float32."""
        wanted = set(self.outputs)
        features: Features = {}
        x = tf.cast(images, self.dtype)
        for layer, params in zip(self.weights.layers, self._params, strict=True):
            x = self._apply(layer, params, x)
            if layer.name in wanted:
                features[layer.name] = tf.cast(x, tf.float32)
        return features

    @property
    def on_gpu(self) -> bool:
        """Whether the network's constants (so its convolutions) live on a GPU."""
        kernels = [p[0] for p in self._params if p is not None]
        return bool(kernels) and "GPU" in kernels[0].device.upper()

    def preprocess(self, rgb: np.ndarray | tf.Tensor) -> tf.Tensor:
        """0…255 RGB, (H, W, 3) or (B, H, W, 3), to the network's mean-subtracted input."""
        x = tf.convert_to_tensor(rgb, tf.float32)
        if x.shape.rank == 3:
            x = x[tf.newaxis]
        return x - self.mean

    def deprocess(self, x: tf.Tensor) -> np.ndarray:
        """The network's input back to 0…255 RGB floats, (B, H, W, 3)."""
        return (x + self.mean).numpy()

    def _apply(self, layer: Layer, params, x: tf.Tensor) -> tf.Tensor:
        if layer.kind == "conv":
            kernel, bias, flipped = params
            return _conv(x, layer, kernel, flipped) + bias
        if layer.kind == "relu":
            return tf.nn.relu(x)
        if layer.kind == "pool":
            return _pool(x, layer, self.pooling or layer.pool_method)
        if layer.kind == "softmax":
            return tf.nn.softmax(x, axis=-1)
        return x  # dropout and friends are the identity at inference


def _conv_params(layer: Layer, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """Kernel, bias and, where `_conv` can use it, the kernel flipped for the input gradient."""
    kernel = tf.constant(layer.kernel, dtype)
    kh, kw, cin, _ = layer.kernel.shape
    top, bottom, left, right = layer.pad
    # The image's 3 channels are the exception: there TF's own gradient is the faster one.
    usable = layer.stride == (1, 1) and max(top, bottom) < kh and max(left, right) < kw
    flipped = None
    if usable and cin > 3:
        flipped = tf.constant(np.transpose(layer.kernel[::-1, ::-1], (0, 1, 3, 2)), dtype)
    return kernel, tf.constant(layer.bias, dtype), flipped


def _conv(x: tf.Tensor, layer: Layer, kernel: tf.Tensor, flipped: tf.Tensor | None) -> tf.Tensor:
    """A convolution whose input gradient is a forward convolution with the flipped kernel.

    For a stride-1 convolution the gradient with respect to the input is the output gradient
    convolved with the kernel rotated 180° (in and out channels swapped), padded k-1-pad. That is
    the same sum TF's Conv2DBackpropInput computes, but on some CPUs the forward kernel is much
    faster: at 256² the VGG19 layers up to relu5_1 took 0.35 s that way against 0.62 s on one
    2-core EPYC, a whole step about 20% faster; on a newer one (with AVX-512 BF16) the two
    measured within 3% (benchmarks/RESULTS.md, issue 16). Nothing here takes a second derivative.
    """
    top, bottom, left, right = layer.pad
    padding = [[0, 0], [top, bottom], [left, right], [0, 0]]
    if flipped is None:
        return tf.nn.conv2d(x, kernel, (1, *layer.stride, 1), padding)
    kh, kw = layer.kernel.shape[:2]
    back = [[0, 0], [kh - 1 - top, kh - 1 - bottom], [kw - 1 - left, kw - 1 - right], [0, 0]]

    @tf.custom_gradient
    def conv(x):
        def input_gradient(dy):
            return tf.nn.conv2d(dy, flipped, 1, back)

        return tf.nn.conv2d(x, kernel, 1, padding), input_gradient

    return conv(x)


def _pool(x: tf.Tensor, layer: Layer, method: str) -> tf.Tensor:
    top, bottom, left, right = layer.pad
    if any(layer.pad):
        # MatConvNet pads max pooling with -inf, average pooling with zeros (counted in the mean).
        fill = -3.4e38 if method == "max" else 0.0
        x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=fill)
    # VALID matches MatConvNet's floor((H + pads - k) / s) + 1 output size.
    pool = tf.nn.max_pool2d if method == "max" else tf.nn.avg_pool2d
    return pool(x, layer.pool_size, layer.stride, "VALID")


def _summary(names: tuple[str, ...]) -> str:
    shown = [n for n in names if n.startswith("relu")] or list(names)
    return f"{len(names)} layers, e.g. {', '.join(shown[:3])} … {shown[-1]}"


def extract(net: FeatureNet, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """One image's features as float32 arrays (H, W, C), computed in a single graph call."""
    run = tf.function(lambda x: net(net.preprocess(x)))
    return {name: value.numpy()[0] for name, value in run(tf.constant(rgb, tf.float32)).items()}
