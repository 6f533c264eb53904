"""The references issue 5 measures against: the floor, and a plain TF2 port of the seed recipe.

Both are written here from scratch with tf.nn ops, independent of stylecore's network and
optimizers, so that speed work in the core cannot move its own yardstick. Only the weights come
from stylecore's loader (reading a file is not what is being timed).

- `PlainVGG`: the VGG up to a layer, 3×3 SAME convolutions, ReLU, 2×2 max pooling.
- `floor_step`: forward to relu5_1 and the gradient of Σ relu5_1 with respect to the input — the
  least work any iteration of the recipe can do.
- `SeedPort`: the obvious port a user would write of the StyleNet recipe (Gatys et al. 2015 as in
  anishathalye/neural-style's defaults, re-written, not copied): a tf.Variable image from noise,
  content from relu4_2, style Grams of relu1_1…relu5_1 recomputed every step, TV, weights
  5 / 500 / 100, tf.keras Adam (lr 10, β 0.9/0.999, ε 1e-8), one @tf.function train step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from stylecore.netspec import NetworkWeights

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


class PlainVGG:
    """Mean-subtracted RGB (B, H, W, 3) → every ReLU's activation up to `last`, as a dict."""

    def __init__(self, weights: NetworkWeights, last: str = "relu5_1"):
        self.mean = weights.mean_rgb.astype(np.float32)
        self.layers = []
        for layer in weights.truncated(last).layers:
            if layer.kind == "conv":
                if layer.pad != (1, 1, 1, 1) or layer.stride != (1, 1):
                    raise ValueError(f"{layer.name}: PlainVGG expects VGG's 3×3/pad 1 convs")
                params = (tf.constant(layer.kernel), tf.constant(layer.bias))
                self.layers.append((layer.name, "conv", params))
            elif layer.kind in ("relu", "pool"):
                self.layers.append((layer.name, layer.kind, None))

    def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        out = {}
        for name, kind, params in self.layers:
            if kind == "conv":
                x = tf.nn.conv2d(x, params[0], 1, "SAME") + params[1]
            elif kind == "relu":
                x = out[name] = tf.nn.relu(x)
            else:
                x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        return out


def gram(f: tf.Tensor) -> tf.Tensor:
    """FᵀF / (H·W·C) per image, (B, C, C)."""
    size = tf.cast(tf.reduce_prod(tf.shape(f)[1:]), f.dtype)
    return tf.einsum("bhwc,bhwd->bcd", f, f) / size


def floor_step(net: PlainVGG, last: str = "relu5_1"):
    """A compiled x → ∂Σ(last)/∂x: forward through the truncated network and back to the input."""

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(net(x)[last])
        return tape.gradient(total, x)

    return step


class SeedPort:
    """The seed recipe in plain TF2: one train step per call, returning the total loss."""

    def __init__(
        self,
        weights: NetworkWeights,
        content_rgb: np.ndarray,  # (H, W, 3) 0…255
        style_rgb: np.ndarray,  # (h, w, 3) 0…255
        content_weight: float = 5.0,
        style_weight: float = 500.0,
        tv_weight: float = 100.0,
        learning_rate: float = 10.0,
        seed: int = 0,
    ):
        self.net = PlainVGG(weights, "relu5_1")
        self.weights = (content_weight, style_weight, tv_weight)
        content = tf.constant((content_rgb - self.net.mean)[np.newaxis], tf.float32)
        style = tf.constant((style_rgb - self.net.mean)[np.newaxis], tf.float32)
        self.content_target = self.net(content)["relu4_2"]
        style_features = self.net(style)
        self.style_targets = {n: gram(style_features[n]) for n in STYLE_LAYERS}
        noise = np.random.default_rng(seed).standard_normal(content.shape) * 0.256
        self.image = tf.Variable(noise.astype(np.float32))
        self.optimizer = tf.keras.optimizers.Adam(
            learning_rate=learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8
        )

    def loss(self, x: tf.Tensor) -> tf.Tensor:
        wc, ws, wtv = self.weights
        f = self.net(x)
        content = tf.reduce_mean(tf.square(f["relu4_2"] - self.content_target))
        style = tf.add_n(
            [tf.reduce_mean(tf.square(gram(f[n]) - self.style_targets[n])) for n in STYLE_LAYERS]
        ) / len(STYLE_LAYERS)
        tv = tf.reduce_mean(tf.square(x[:, 1:] - x[:, :-1])) + tf.reduce_mean(
            tf.square(x[:, :, 1:] - x[:, :, :-1])
        )
        return wc * content + ws * style + wtv * tv

    @tf.function
    def train_step(self) -> tf.Tensor:
        with tf.GradientTape() as tape:
            total = self.loss(self.image)
        grad = tape.gradient(total, self.image)
        self.optimizer.apply_gradients([(grad, self.image)])
        return total


def main(argv: list[str]) -> None:
    """`python benchmarks/baseline.py WEIGHTS CONTENT STYLE SIZE ITERATIONS`: the port run as a
    user's script runs it, a whole process (imports, weights, tracing, then the steps)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import square

    from stylecore.weights import load_weights

    weights_path, content, style, size, iterations = argv
    port = SeedPort(
        load_weights(weights_path), square(content, int(size)), square(style, int(size))
    )
    for _ in range(int(iterations)):
        total = port.train_step()
    print(float(total))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
