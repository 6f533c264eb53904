"""The feature network's input gradient: the flipped-kernel convolution against TF's own."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from stylecore.netspec import Layer, NetworkWeights
from stylecore.network import FeatureNet, _conv_params


def _conv(rng, name, k, cin, cout, pad=(1, 1, 1, 1), stride=(1, 1)) -> Layer:
    kernel = (rng.standard_normal((*k, cin, cout)) * np.sqrt(2.0 / (k[0] * k[1] * cin))).astype(
        np.float32
    )
    bias = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    return Layer(name, "conv", kernel, bias, stride=stride, pad=pad)


def _network() -> NetworkWeights:
    """Every geometry the flipped gradient must handle, and the ones it must leave to TF."""
    rng = np.random.default_rng(7)
    layers = (
        _conv(rng, "conv1_1", (3, 3), 3, 5),  # the image's 3 channels: TF's gradient
        Layer("relu1_1", "relu"),
        _conv(rng, "conv1_2", (3, 3), 5, 6),  # VGG's 3×3, pad 1
        Layer("relu1_2", "relu"),
        Layer("pool1", "pool", stride=(2, 2)),
        _conv(rng, "conv2_1", (3, 2), 6, 4, pad=(0, 2, 1, 0)),  # non-square kernel, uneven pads
        Layer("relu2_1", "relu"),
        _conv(rng, "conv2_2", (5, 5), 4, 7, pad=(0, 0, 0, 0)),  # no padding, like fc6
        Layer("relu2_2", "relu"),
        _conv(rng, "conv3_1", (3, 3), 7, 5, stride=(2, 2)),  # strided: TF's gradient
        Layer("relu3_1", "relu"),
    )
    return NetworkWeights("gradient-test", layers, np.zeros(3, np.float32), "", "", "")


def _plain(weights: NetworkWeights, x: tf.Tensor) -> dict[str, tf.Tensor]:
    """Every layer's output through plain tf.nn ops, which take TF's built-in gradients."""
    h, out = x, {}
    for layer in weights.layers:
        if layer.kind == "conv":
            t, b, left, right = layer.pad
            pads = [[0, 0], [t, b], [left, right], [0, 0]]
            h = tf.nn.conv2d(h, layer.kernel, (1, *layer.stride, 1), pads) + layer.bias
        elif layer.kind == "relu":
            h = tf.nn.relu(h)
        else:
            h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        out[layer.name] = h
    return out


def _input_gradient(features, x: np.ndarray, seeds: dict) -> np.ndarray:
    """∂ Σ_layers ⟨seed, feature⟩ / ∂x for a function x → features."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = features(xt)
        total = tf.add_n([tf.reduce_sum(out[k] * seed) for k, seed in seeds.items()])
    return tape.gradient(total, xt).numpy()


def test_which_convolutions_take_the_flipped_gradient():
    flipped = {
        layer.name: _conv_params(layer, tf.float32)[2] is not None
        for layer in _network().layers
        if layer.kind == "conv"
    }
    assert flipped == {
        "conv1_1": False,
        "conv1_2": True,
        "conv2_1": True,
        "conv2_2": True,
        "conv3_1": False,
    }


@pytest.mark.parametrize("batch", [1, 2])
def test_input_gradient_equals_tfs_own_for_every_geometry(batch):
    weights = _network()
    names = [layer.name for layer in weights.layers if layer.kind == "relu"]
    net = FeatureNet(weights, names)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 23, 18, 3)).astype(np.float32) * 50
    shapes = {k: v.shape for k, v in net(tf.constant(x)).items()}
    seeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}

    ours = _input_gradient(net, x, seeds)
    expected = _input_gradient(lambda t: _plain(weights, t), x, seeds)
    assert ours.shape == x.shape
    assert np.abs(expected).max() > 1e-3  # the seeds reach the input
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_forward_features_are_unchanged_by_the_custom_gradient():
    weights = _network()
    net = FeatureNet(weights, ["relu2_2"])
    x = np.random.default_rng(2).standard_normal((1, 20, 20, 3)).astype(np.float32)
    expected = _plain(weights, tf.constant(x))["relu2_2"].numpy()
    np.testing.assert_allclose(net(tf.constant(x))["relu2_2"].numpy(), expected, atol=1e-5)
