"""Adam and L-BFGS over the image, as loops that yield steps; the caller decides what to keep.

Both are pure functions of tensors compiled once per image shape: targets and loss weights are
arguments, not constants, so a new pair of the same size reuses the compiled graph. Every image in
a batch has its own optimizer state (L-BFGS history, step sizes): a batch is exactly separate runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from stylecore.errors import NumericalError
from stylecore.options import StyleOptions

Losses = dict[str, tf.Tensor]
Objective = Callable[[tf.Tensor, dict, dict, tf.Tensor, dict], Losses]


@dataclass(frozen=True)
class Targets:
    """What an optimization matches: content features, style Grams, weights (w_c, w_s, w_tv)."""

    content: dict[str, tf.Tensor]  # layer → (B, H, W, C)
    style: dict[str, tf.Tensor]  # layer → (B or 1, C, C)
    scales: tf.Tensor  # (3,) float32
    norms: dict[str, tf.Tensor]  # "content:relu4_2", "style:relu1_1", "tv" → (B,) divisors

    def as_args(self) -> tuple:
        """A plain nested structure: tf.function traces tuples and dicts by shape, not identity."""
        return (self.content, self.style, self.scales, self.norms)


@dataclass(frozen=True)
class Step:
    """The state after one iteration: losses are those of the image before the update."""

    iteration: int  # 1-based
    losses: dict[str, np.ndarray]  # content, style, tv, total — each (B,)
    image: tf.Tensor  # (B, H, W, 3), mean-subtracted, after the update


def _dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(a * b, axis=(1, 2, 3))  # (B,)


def _per_image(v: tf.Tensor) -> tf.Tensor:
    return v[:, tf.newaxis, tf.newaxis, tf.newaxis]  # (B,) → (B, 1, 1, 1) for broadcasting


class Optimizer:
    """Shared shape of both: value-and-gradient of the summed loss, bounds, the iteration loop."""

    def __init__(self, objective: Objective, options: StyleOptions, xla: bool = False):
        self.objective = objective
        self.options = options
        # Traced once per image shape; `xla` (the Stylizer decides: options.use_xla) compiles the
        # whole step into one.
        self._compiled = tf.function(self._step, jit_compile=xla)

    def _value_and_grad(self, x, targets: tuple) -> tuple[Losses, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            losses = self.objective(x, *targets)
            total = tf.reduce_sum(
                losses["total"]
            )  # images are independent: Σ keeps gradients apart
        return losses, tape.gradient(total, x)

    def run(
        self, x0: tf.Tensor, targets: Targets, bounds: tuple, iterations: int
    ) -> Iterator[Step]:
        """Yield one Step per iteration."""
        state = self.initial_state(x0)
        for i in range(1, iterations + 1):
            state, losses = self._compiled(state, targets.as_args(), bounds)
            values = {k: v.numpy() for k, v in losses.items()}
            if not np.all(np.isfinite(values["total"])):
                raise NumericalError(
                    f"the loss became {values['total'].tolist()} at iteration {i}; "
                    "lower the learning rate or the style/content weights"
                )
            yield Step(i, values, state[0])

    def initial_state(self, x0: tf.Tensor) -> tuple:
        raise NotImplementedError

    def _step(self, state: tuple, targets: Targets, bounds) -> tuple[tuple, Losses]:
        raise NotImplementedError


class Adam(Optimizer):
    """Adam in pixel units (the seed recipe: lr 10, β 0.9/0.999), projected onto valid pixels."""

    def initial_state(self, x0):
        zeros = tf.zeros_like(x0)
        return (x0, zeros, zeros, tf.constant(0.0))

    def _step(self, state, targets, bounds):
        x, m, v, t = state
        o = self.options
        losses, g = self._value_and_grad(x, targets)
        t = t + 1.0
        m = o.beta1 * m + (1 - o.beta1) * g
        v = o.beta2 * v + (1 - o.beta2) * tf.square(g)
        lr = o.step_size * tf.sqrt(1 - o.beta2**t) / (1 - o.beta1**t)
        x = tf.clip_by_value(x - lr * m / (tf.sqrt(v) + o.epsilon), *bounds)
        return (x, m, v, t), losses


class LBFGS(Optimizer):
    """Limited-memory BFGS with unit steps (as Torch's, which style transfer is known to favour),
    one history per image, projected onto valid pixels.

    No line search: each costs extra forward passes, and unit steps from the two-loop recursion
    (scaled by sᵀy/yᵀy) converge on this problem. Until a curvature pair is known, and wherever the
    loss is locally concave (a Gram far below its target makes it so), sᵀy ≤ 0 and the step falls
    back to the gradient scaled to move pixels by FIRST_STEP RMS: a fixed tiny step would crawl.
    """

    FIRST_STEP = 10.0  # pixel units, the seed recipe's Adam step

    def initial_state(self, x0):
        m, batch = self.options.lbfgs_memory, x0.shape[0]
        history = tf.zeros((m, *x0.shape), x0.dtype)
        return (
            x0,
            tf.zeros_like(x0),
            tf.zeros_like(x0),
            history,
            history,
            tf.zeros((m, batch)),
            tf.zeros((batch,)),
            tf.constant(True),
        )

    def _step(self, state, targets, bounds):
        x, g_prev, s_last, S, Y, rho, gamma, first = state
        losses, g = self._value_and_grad(x, targets)
        y = g - g_prev
        ys = _dot(y, s_last)
        valid = tf.logical_and(tf.logical_not(first), ys > 1e-10)  # curvature condition per image
        rho_new = tf.where(valid, 1.0 / tf.where(valid, ys, 1.0), 0.0)
        rms = tf.sqrt(_dot(g, g) / tf.cast(tf.size(g[0]), g.dtype))
        gamma = tf.where(first, self.FIRST_STEP / tf.maximum(rms, 1e-30), gamma)
        gamma = tf.where(valid, ys / tf.maximum(_dot(y, y), 1e-30), gamma)
        S = tf.concat([S[1:], s_last[tf.newaxis]], 0)  # oldest first, newest last
        Y = tf.concat([Y[1:], y[tf.newaxis]], 0)
        rho = tf.concat([rho[1:], rho_new[tf.newaxis]], 0)
        direction = -self._two_loop(g, S, Y, rho, gamma)
        x_new = tf.clip_by_value(x + self.options.step_size * direction, *bounds)
        return (x_new, g, x_new - x, S, Y, rho, gamma, tf.constant(False)), losses

    def _two_loop(self, g, S, Y, rho, gamma):
        """H·g by the two-loop recursion, per image; entries with rho = 0 are inert."""
        q, alphas = g, []
        for i in reversed(range(S.shape[0])):
            a = rho[i] * _dot(S[i], q)
            q = q - _per_image(a) * Y[i]
            alphas.append(a)
        r = _per_image(gamma) * q
        for i, a in zip(range(S.shape[0]), reversed(alphas), strict=True):
            b = rho[i] * _dot(Y[i], r)
            r = r + _per_image(a - b) * S[i]
        return r


def optimizer_for(objective: Objective, options: StyleOptions, xla: bool = False) -> Optimizer:
    """The optimizer the options name, its step XLA-compiled or not."""
    return {"adam": Adam, "lbfgs": LBFGS}[options.optimizer](objective, options, xla)
