"""Adam and L-BFGS over the image, as loops that yield steps; the caller decides what to keep.

Both are pure functions of tensors compiled once per image shape: targets and loss weights are
arguments, not constants, so a new pair of the same size reuses the compiled graph. Every image in
a batch has its own optimizer state (L-BFGS history, step sizes): a batch is exactly separate runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from stylecore.errors import NumericalError
from stylecore.options import StyleOptions

Losses = dict[str, tf.Tensor]
Objective = Callable[..., Losses]  # (x, content, style, scales, norms, temporal) → losses
# x → (losses, gradient) computed outside the compiled step (tiles: stylecore/tiling.py)
Gradient = Callable[[tf.Tensor], tuple[Losses, tf.Tensor]]


@dataclass(frozen=True)
class Targets:
    """What an optimization matches: content features, style Grams, weights (w_c, w_s, w_tv, w_t)
    and, for a clip's frame, the previous stylized frame warped onto this one."""

    content: dict[str, tf.Tensor]  # layer → (B, H, W, C)
    style: dict[str, tf.Tensor]  # layer → (B or 1, C, C)
    scales: tf.Tensor  # (4,) float32: content, style, tv, temporal
    norms: dict[str, tf.Tensor]  # "content:relu4_2", "style:relu1_1", "tv" → (B,) divisors
    # (warped (B, H, W, 3) mean-subtracted, reliability (B, H, W, 1) 0…1), or None
    temporal: tuple[tf.Tensor, tf.Tensor] | None = None

    def as_args(self) -> tuple:
        """A plain nested structure: tf.function traces tuples and dicts by shape, not identity."""
        return (self.content, self.style, self.scales, self.norms, self.temporal)


@dataclass(frozen=True)
class Step:
    """The state after one iteration: losses are those of the image before the update."""

    iteration: int  # 1-based
    losses: dict[str, np.ndarray]  # content, style, tv, total — each (B,)
    image: tf.Tensor  # (B, H, W, 3), mean-subtracted, after the update
    state: tuple = ()  # the optimizer's whole state after the update: run(state=…) continues it


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
        self._compiled_update = tf.function(self._update, jit_compile=xla)
        self._compiled_gradient = tf.function(self._value_and_grad, jit_compile=xla)

    def _value_and_grad(self, x, targets: tuple) -> tuple[Losses, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            losses = self.objective(x, *targets)
            total = tf.reduce_sum(
                losses["total"]
            )  # images are independent: Σ keeps gradients apart
        return losses, tape.gradient(total, x)

    def run(
        self,
        x0: tf.Tensor,
        targets: Targets | None,
        bounds: tuple,
        iterations: int,
        gradient: Gradient | None = None,
        state: tuple | None = None,
        first: int = 1,
    ) -> Iterator[Step]:
        """Yield one Step per iteration, `first` … `iterations`. `gradient` computes the losses
        and gradient outside the compiled step (tiled images); `state` continues a saved run."""
        # Tiled, the image and the optimizer's state live in host memory: the device keeps room
        # for a tile (L-BFGS's history alone is 2·lbfgs_memory images).
        host = tf.device("/CPU:0") if gradient is not None else contextlib.nullcontext()
        with host:
            state = self.initial_state(x0) if state is None else tuple(state)
        for i in range(first, iterations + 1):
            if gradient is None:
                state, losses = self._compiled(state, targets.as_args(), bounds)
            else:
                losses, g = gradient(state[0])
                with host:
                    state = self._compiled_update(state, g, bounds)
            values = {k: v.numpy() for k, v in losses.items()}
            if not np.all(np.isfinite(values["total"])):
                raise NumericalError(
                    f"the loss became {values['total'].tolist()} at iteration {i}; "
                    "lower the learning rate or the style/content weights"
                )
            yield Step(i, values, state[0], state)

    def state_bytes(self, pixels: int, batch: int) -> int:
        """Memory of the state for `batch` images of `pixels` pixels (float32 RGB images)."""
        return self.STATE_IMAGES * 12 * pixels * batch

    def value_and_grad(self, x: tf.Tensor, targets: Targets) -> tuple[Losses, tf.Tensor]:
        """The losses at x and the gradient of their sum, compiled (what a step starts with)."""
        return self._compiled_gradient(x, targets.as_args())

    def initial_state(self, x0: tf.Tensor) -> tuple:
        raise NotImplementedError

    def portable_state(self, state: tuple) -> tuple[np.ndarray, ...]:
        """What a checkpoint keeps of a state to continue sensibly (restore takes it back)."""
        return tuple(np.asarray(v) for v in state)

    def restore(self, arrays: tuple[np.ndarray, ...]) -> tuple:
        """A state from portable_state's arrays."""
        return tuple(tf.constant(a) for a in arrays)

    def _step(self, state: tuple, targets: tuple, bounds) -> tuple[tuple, Losses]:
        losses, g = self._value_and_grad(state[0], targets)
        return self._update(state, g, bounds), losses

    def _update(self, state: tuple, g: tf.Tensor, bounds) -> tuple:
        raise NotImplementedError


class Adam(Optimizer):
    """Adam in pixel units (the seed recipe: lr 10, β 0.9/0.999), projected onto valid pixels."""

    STATE_IMAGES = 4  # x, m, v and the update's copy

    def initial_state(self, x0):
        zeros = tf.zeros_like(x0)
        return (x0, zeros, zeros, tf.constant(0.0))

    def _update(self, state, g, bounds):
        x, m, v, t = state
        o = self.options
        t = t + 1.0
        m = o.beta1 * m + (1 - o.beta1) * g
        v = o.beta2 * v + (1 - o.beta2) * tf.square(g)
        lr = o.step_size * tf.sqrt(1 - o.beta2**t) / (1 - o.beta1**t)
        x = tf.clip_by_value(x - lr * m / (tf.sqrt(v) + o.epsilon), *bounds)
        return (x, m, v, t)


class LBFGS(Optimizer):
    """Limited-memory BFGS with unit steps (as Torch's, which style transfer is known to favour),
    one history per image, projected onto valid pixels.

    No line search: each costs extra forward passes, and unit steps from the two-loop recursion
    (scaled by sᵀy/yᵀy) converge on this problem. Until a curvature pair is known (the first step,
    and every step while the loss stays locally concave: a Gram far below its target makes it so,
    and sᵀy ≤ 0), the step is the gradient scaled to move pixels by FIRST_STEP RMS: a fixed tiny
    step would crawl, and the last scale would grow with |g|. A new pair without curvature, once
    older ones are known, is inert (rho 0, it only takes the oldest pair's slot): the other pairs
    and their scale carry on.
    """

    FIRST_STEP = 10.0  # pixel units, the seed recipe's Adam step

    @property
    def STATE_IMAGES(self) -> int:  # noqa: N802  (as Adam's constant)
        """x, g, s and the history S, Y, each replaced whole by an update (so twice)."""
        return 3 + 4 * self.options.lbfgs_memory

    def portable_state(self, state):
        """The image only: the history is 2·memory images, and rebuilding it costs a few steps."""
        return (np.asarray(state[0]),)

    def restore(self, arrays):
        return self.initial_state(tf.constant(arrays[0]))

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

    def _update(self, state, g, bounds):
        x, g_prev, s_last, S, Y, rho, gamma, first = state
        y = g - g_prev
        ys = _dot(y, s_last)
        valid = tf.logical_and(tf.logical_not(first), ys > 1e-10)  # curvature condition per image
        rho_new = tf.where(valid, 1.0 / tf.where(valid, ys, 1.0), 0.0)
        S = tf.concat([S[1:], s_last[tf.newaxis]], 0)  # oldest first, newest last
        Y = tf.concat([Y[1:], y[tf.newaxis]], 0)
        rho = tf.concat([rho[1:], rho_new[tf.newaxis]], 0)
        known = tf.reduce_any(rho != 0.0, axis=0)  # per image: some pair in memory has curvature
        rms = tf.sqrt(_dot(g, g) / tf.cast(tf.size(g[0]), g.dtype))
        gamma = tf.where(known, gamma, self.FIRST_STEP / tf.maximum(rms, 1e-30))
        gamma = tf.where(valid, ys / tf.maximum(_dot(y, y), 1e-30), gamma)
        direction = -self._two_loop(g, S, Y, rho, gamma)
        x_new = tf.clip_by_value(x + self.options.step_size * direction, *bounds)
        return (x_new, g, x_new - x, S, Y, rho, gamma, tf.constant(False))

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


CONVERGENCE_WINDOW = 10  # iterations over which options.tolerance compares the loss


def converged(totals: list[np.ndarray], tolerance: float, window: int = CONVERGENCE_WINDOW) -> bool:
    """Whether every image's total loss fell by less than `tolerance` (a fraction) over the last
    `window` iterations of a level; never with tolerance 0 or fewer iterations than the window."""
    if tolerance <= 0 or len(totals) <= window:
        return False
    before, now = np.asarray(totals[-1 - window]), np.asarray(totals[-1])
    gain = (before - now) / np.maximum(np.abs(before), 1e-30)
    return bool(np.all(gain < tolerance))


def optimizer_for(objective: Objective, options: StyleOptions, xla: bool = False) -> Optimizer:
    """The optimizer the options name, its step XLA-compiled or not."""
    return {"adam": Adam, "lbfgs": LBFGS}[options.optimizer](objective, options, xla)
