"""Stylization: a network loaded once, style targets computed once, an optimization that yields."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from stylecore import colour, images, quality, tiling
from stylecore.errors import OptionsError
from stylecore.losses import content_loss, gram, layer_weights, style_loss, temporal_loss, tv_loss
from stylecore.netspec import NetworkWeights
from stylecore.network import FeatureNet
from stylecore.optimize import Optimizer, Targets, converged, optimizer_for
from stylecore.options import StyleOptions
from stylecore.records import Grams, GramsFor, Iteration, Result, Resume, Temporal
from stylecore.weights import load_weights, min_side, resolve_spec

log = logging.getLogger(__name__)

__all__ = [  # the records are stylecore.records', importable from here as before
    "Grams",
    "GramsFor",
    "Iteration",
    "Result",
    "Resume",
    "Stylizer",
    "Temporal",
    "blend",
    "level_sizes",
    "prepare_content",
    "prepare_style",
    "shared_stylizer",
    "shared_weights",
    "style_size",
    "stylize",
    "stylize_many",
    "stylize_with",
]


def level_sizes(options: StyleOptions) -> list[int]:
    """Longest sides of the coarse-to-fine schedule, coarsest first, ending at options.size."""
    return [options.size >> k for k in reversed(range(options.levels))]


def style_size(content_longest: int, options: StyleOptions) -> int:
    """The style image's longest side for a content of that longest side."""
    return max(16, round(content_longest * options.style_scale))


class Stylizer:
    """A feature network and its compiled optimizers, reused across every pair of a process."""

    def __init__(self, weights: NetworkWeights, options: StyleOptions, device: str | None = None):
        layers = (*options.content_layers, *options.style_layers)
        self.weights = weights
        self.net = FeatureNet(weights, layers, options.pooling, options.precision)
        self.min_side = min_side(weights, layers)  # smaller inputs vanish before the deepest layer
        self.geometry = tiling.geometry(self.net.weights)
        self.halo = self.geometry.halo
        self._optimizers: dict[tuple, Optimizer] = {}
        self._device = device  # the device its constants were placed on, if one was named

    def grams(self, rgb: np.ndarray, options: StyleOptions) -> Grams:
        """The style's Gram matrix per style layer, for an RGB image already at its working size."""
        images.check_min_side(rgb.shape, self.min_side, "style image")
        plan = self.tile_plan(rgb.shape[:2], 1, options)
        if plan is not None:  # a print-size style: its Grams summed over tiles
            tiled = tiling.TiledNet(self.net, plan, options.style_layers, ())
            raw, _, _ = tiled.stats(self.net.preprocess(rgb))
            return {name: (raw[name] / tiled.count(name)).numpy()[0] for name in raw}
        features = self._compiled_features(
            self.net.preprocess(rgb), tuple(options.style_layers), True
        )
        return {name: value.numpy()[0] for name, value in features.items()}

    def quality(
        self, outputs: np.ndarray, contents: np.ndarray, grams: Sequence[Grams], options
    ) -> list[dict[str, float]]:
        """Scores of finished images against their contents and Gram targets (stylecore.quality)."""
        return quality.scores(self, outputs, contents, grams, options)

    def checkpoint_arrays(self, options: StyleOptions, step: Iteration) -> tuple[np.ndarray, ...]:
        """What a checkpoint saves of a step to continue it (Resume.arrays): Adam's image and
        moments, L-BFGS's image (its history is rebuilt in a few steps)."""
        return self._optimizer(options).portable_state(step.state)

    @functools.cached_property
    def _compiled_features(self):
        def run(x, names, grams):
            out = self.net(x)
            return {name: gram(out[name]) if grams else out[name] for name in names}

        # Runs once per image (style Grams, content targets), so a shape-generic trace is as fast
        # and a catalogue of many image shapes traces it twice, not once per shape (TF warns then).
        return tf.function(run, reduce_retracing=True)

    def steps(
        self,
        contents: np.ndarray,
        grams_for: GramsFor,
        options: StyleOptions,
        init: np.ndarray | None = None,
        *,
        start: np.ndarray | None = None,
        temporal: Temporal | None = None,
        resume: Resume | None = None,
    ) -> Iterator[Iteration]:
        """Optimize a batch of same-size contents (B, H, W, 3), 0…255, coarse to fine. `start`
        (H, W, 3) 0…255 is the first image instead of options.init (a clip's warped previous
        frame); `resume` continues a checkpointed run at its level and iteration."""
        optimizer = self._optimizer(options)
        final_shape = contents.shape[1:3]
        x = None
        for level, longest in enumerate(level_sizes(options)):
            if resume is not None and level < resume.level:
                continue
            shape = images.fit_shape(final_shape, longest)
            images.check_min_side(shape, self.min_side, "content image")
            level_contents = np.stack([images.resize(c, shape) for c in contents])
            content_x = self.net.preprocess(level_contents)
            state, first = None, 1
            if resume is not None and level == resume.level:
                state = optimizer.restore(resume.arrays)
                first = resume.iteration + 1
                x = state[0]
            else:
                x = self._start(content_x, x, init, options, shape, start)
            plan = self.tile_plan(shape, len(contents), options)
            if plan is None:
                targets = self._targets(content_x, grams_for(longest), options, temporal)
                gradient = None
            else:
                targets = None
                pulled = self._temporal(temporal, content_x)
                gradient = tiling.TiledObjective(
                    self, plan, content_x, grams_for(longest), options, pulled
                )
            lo, hi = -self.net.mean, 255.0 - self.net.mean
            totals: list[np.ndarray] = []
            run = optimizer.run(
                x, targets, (lo, hi), options.iterations, gradient, state=state, first=first
            )
            for step in run:
                x = step.image
                totals.append(step.losses["total"])
                done = step.iteration < options.iterations and converged(totals, options.tolerance)
                stopped = "converged" if done else None
                yield Iteration(
                    level, shape, step.iteration, step.losses, step.image, step.state, stopped, plan
                )
                if done:
                    break

    def _start(self, content_x, previous, init, options: StyleOptions, shape, start) -> tf.Tensor:
        """The first image of a level: the previous level's result upsampled, else `start`, else
        options.init."""
        if previous is not None:
            return tf.image.resize(previous, shape, method="bicubic")
        if start is not None:
            return self.net.preprocess(np.stack([images.resize(start, shape)] * content_x.shape[0]))
        if options.init == "content":
            return content_x
        if options.init == "noise":
            # Each image draws its own noise from the seed, so a batch repeats separate runs.
            one = (1, *content_x.shape[1:])
            noise = [np.random.default_rng(options.seed).standard_normal(one)] * content_x.shape[0]
            return tf.constant(np.concatenate(noise).astype(np.float32) * options.init_noise)
        if init is None:
            raise OptionsError(f"option 'init': {options.init!r} is an image, but none was given")
        return self.net.preprocess(np.stack([images.resize(init, shape)] * content_x.shape[0]))

    def _targets(
        self, content_x, grams: Sequence[Grams], options: StyleOptions, temporal=None
    ) -> Targets:
        content = self._compiled_features(content_x, tuple(options.content_layers), False)
        style = {
            name: tf.constant(np.stack([g[name] for g in grams])) for name in options.style_layers
        }
        weights = [options.content_weight, options.style_weight, options.tv_weight]
        scales = tf.constant([*weights, options.temporal_weight], tf.float32)
        norms = self._norms(content_x, content, style, options)
        return Targets(content, style, scales, norms, self._temporal(temporal, content_x))

    def _temporal(self, temporal: Temporal | None, content_x):
        """The temporal target at a level's shape: (warped, reliability) tensors, or None."""
        if temporal is None:
            return None
        shape, batch = content_x.shape[1:3], content_x.shape[0]
        warped = self.net.preprocess(np.stack([images.resize(temporal.warped, shape)] * batch))
        weight = images.resize(temporal.reliability.astype(np.float32)[..., None], shape)
        weight = np.clip(weight.reshape(*shape, 1), 0.0, 1.0)
        return warped, tf.constant(np.stack([weight] * batch), tf.float32)

    def tile_plan(self, shape, batch: int, options: StyleOptions) -> tiling.Plan | None:
        """How a step on `batch` images of `shape` is tiled (options.tile, the device's free
        memory), or None to run it whole."""
        free = tiling.free_memory(self.device)
        state = self._optimizer(options).state_bytes(shape[0] * shape[1], batch)
        return tiling.choose(
            tuple(shape), batch, options.tile_px, self.geometry, self.halo, free, state
        )

    @property
    def device(self) -> str | None:
        """Where the network's constants live ("GPU:0"), or None for the host."""
        if self._device and "GPU" in self._device.upper():
            return self._device
        return "GPU:0" if self.net.on_gpu else None

    @staticmethod
    def _norms(content_x, content, style, options: StyleOptions) -> dict[str, tf.Tensor]:
        """Per-image divisors of each loss term: the target's own energy, or 1 (the recipe's).

        Normalized, each layer's term is a relative squared error, so deep layers (whose Grams
        are orders of magnitude smaller) shape the result too, and the weights mean the same on
        any network.
        """
        batch = content_x.shape[0]
        ones = tf.ones((batch,))
        if not options.normalize_losses:
            return {
                **{f"content:{n}": ones for n in content},
                **{f"style:{n}": ones for n in style},
                "tv": ones,
            }
        eps = 1e-12
        norms = {
            f"content:{n}": tf.reduce_mean(tf.square(f), axis=(1, 2, 3)) + eps
            for n, f in content.items()
        }
        norms |= {
            f"style:{n}": tf.broadcast_to(tf.reduce_mean(tf.square(g), axis=(1, 2)), (batch,)) + eps
            for n, g in style.items()
        }
        norms["tv"] = tv_loss(content_x) + eps
        return norms

    def _optimizer(self, options: StyleOptions) -> Optimizer:
        """One compiled optimizer per graph-shaping choice; loss weights and targets are inputs."""
        xla = options.use_xla(self.net.on_gpu)
        key = (
            options.optimizer,
            options.step_size,
            options.beta1,
            options.beta2,
            options.epsilon,
            options.lbfgs_memory,
            options.content_layers,
            options.content_layer_weights,
            options.style_layers,
            options.style_layer_weight_exp,
            xla,
        )
        if key not in self._optimizers:
            self._optimizers[key] = optimizer_for(self._objective(options), options, xla)
        return self._optimizers[key]

    def layer_weights(self, options: StyleOptions) -> tuple[dict[str, float], dict[str, float]]:
        """Content and style layer weights, each summing to 1."""
        cw = dict(
            zip(
                options.content_layers,
                layer_weights(len(options.content_layers), options.content_layer_weights),
                strict=True,
            )
        )
        sw = dict(
            zip(
                options.style_layers,
                layer_weights(len(options.style_layers), exponent=options.style_layer_weight_exp),
                strict=True,
            )
        )
        return cw, sw

    def _objective(self, options: StyleOptions):
        cw, sw = self.layer_weights(options)

        def objective(x, content_targets, style_grams, scales, norms, temporal=None):
            features = self.net(x)
            cwn = {name: w / norms[f"content:{name}"] for name, w in cw.items()}
            swn = {name: w / norms[f"style:{name}"] for name, w in sw.items()}
            terms = {
                "content": scales[0] * content_loss(features, content_targets, cwn),
                "style": scales[1] * style_loss(features, style_grams, swn),
                "tv": scales[2] * tv_loss(x) / norms["tv"],
            }
            terms["total"] = terms["content"] + terms["style"] + terms["tv"]
            if temporal is not None:
                terms["temporal"] = scales[3] * temporal_loss(x, *temporal)
                terms["total"] = terms["total"] + terms["temporal"]
            return terms

        return objective


def blend(grams: Sequence[Grams], weights: Sequence[float]) -> Grams:
    """One Gram target per layer: Σ w_i G_i / Σ w_i. Matching it has the same gradient as the
    weighted sum of per-style losses, at the cost of one style."""
    if weights and len(weights) != len(grams):
        raise OptionsError(f"option 'style_blend': {len(weights)} weights for {len(grams)} styles")
    w = np.asarray(weights or [1.0] * len(grams), np.float64)
    w = w / w.sum()
    return {
        name: sum(wi * g[name] for wi, g in zip(w, grams, strict=True)).astype(np.float32)
        for name in grams[0]
    }


@functools.lru_cache(maxsize=4)
def shared_weights(spec: str) -> NetworkWeights:
    """The weights named by `spec`, read once per process."""
    return load_weights(spec)


def shared_stylizer(options: StyleOptions, device: str | None = None) -> Stylizer:
    """The process-wide Stylizer for these options on a device: weights are read once."""
    spec = resolve_spec(options.network, options.weights)
    network = StyleOptions(  # only what shapes the network: one Stylizer serves all the rest
        content_layers=options.content_layers,
        style_layers=options.style_layers,
        pooling=options.pooling,
        precision=options.precision,
    )
    return _stylizer(spec, network, device)


@functools.lru_cache(maxsize=16)
def _stylizer(spec: str, network: StyleOptions, device: str | None) -> Stylizer:
    if device is None:
        return Stylizer(shared_weights(spec), network)
    with tf.device(device):  # the network's constants live on this device
        return Stylizer(shared_weights(spec), network, device)


def prepare_content(picture: images.Picture, options: StyleOptions) -> np.ndarray:
    """The content composited over white and resized so its longest side is options.size."""
    rgb = images.composite(picture)
    return images.resize(rgb, images.fit_shape(rgb.shape[:2], options.size))


def prepare_style(
    picture: images.Picture, content_longest: int, options: StyleOptions
) -> np.ndarray:
    """The style composited and resized to the content's longest side × style_scale."""
    rgb = images.composite(picture)
    return images.resize(rgb, images.fit_shape(rgb.shape[:2], style_size(content_longest, options)))


def stylize(
    content: images.Picture,
    styles: Sequence[images.Picture],
    options: StyleOptions,
    stylizer: Stylizer | None = None,
    init: np.ndarray | None = None,
    on_step: Callable[[Iteration], None] | None = None,
    **where,
) -> Result:
    """Stylize one content with one or more (blended) styles; the simple, one-pair entry point.
    `where`: start, temporal, resume (Stylizer.steps)."""
    stylizer = stylizer or shared_stylizer(options)

    def grams_for(longest: int) -> list[Grams]:
        per_style = [stylizer.grams(prepare_style(s, longest, options), options) for s in styles]
        return [blend(per_style, options.style_blend)]

    return stylize_with(content, grams_for, options, stylizer, init, on_step, **where)


def stylize_with(
    content: images.Picture,
    grams_for: GramsFor,
    options: StyleOptions,
    stylizer: Stylizer,
    init: np.ndarray | None = None,
    on_step: Callable[[Iteration], None] | None = None,
    **where,
) -> Result:
    """Stylize one content towards the Gram targets `grams_for` gives at each level's size;
    `where`: start, temporal, resume (Stylizer.steps)."""
    return stylize_many([content], grams_for, options, stylizer, init, on_step, **where)[0]


def stylize_many(
    contents: Sequence[images.Picture],
    grams_for: GramsFor,
    options: StyleOptions,
    stylizer: Stylizer,
    init: np.ndarray | None = None,
    on_step: Callable[[Iteration], None] | None = None,
    **where,
) -> list[Result]:
    """Stylize contents of the same working shape together, in one tensor; `grams_for` gives
    one target per content (or one for all). Exactly separate runs, done at once. `where`:
    start, temporal, resume (Stylizer.steps)."""
    start = time.perf_counter()
    rgbs = [prepare_content(c, options) for c in contents]
    if len({rgb.shape for rgb in rgbs}) > 1:
        raise OptionsError("contents optimized together must have the same working shape")
    histories: list[list[dict[str, float]]] = [[] for _ in rgbs]
    last, stops, previous, tiled = None, [], None, {}
    for last in stylizer.steps(np.stack(rgbs), grams_for, options, init, **where):
        if previous is not None and previous.level != last.level and not previous.stopped:
            stops.append(_stop(previous, "iterations"))
        previous = last
        for i, history in enumerate(histories):
            history.append({k: float(v[i]) for k, v in last.losses.items()})
        if last.tiles is not None:  # the level's tiling and the memory it took so far
            tiled[last.level] = {"level": last.level, **last.tiles.describe()}
            tiled[last.level]["peak_rss_bytes"] = tiling.peak_rss()
        if on_step:
            on_step(last)
        if last.stopped:
            stops.append(_stop(last, last.stopped))
    if last is not None and not last.stopped:
        stops.append(_stop(last, "iterations"))
    outs = stylizer.net.deprocess(last.image)
    finished = [finish(o, rgb, c, options) for o, rgb, c in zip(outs, rgbs, contents, strict=True)]
    targets = grams_for(options.size)
    targets = list(targets) * len(rgbs) if len(targets) == 1 else targets
    pixels = np.stack([rgb for rgb, _ in finished]).astype(np.float32)
    scores = stylizer.quality(pixels, np.stack(rgbs), targets, options)
    seconds = (time.perf_counter() - start) / len(rgbs)  # each image's share of the time
    return [
        Result(rgb, alpha, history, seconds, score, stops, list(tiled.values()))
        for (rgb, alpha), history, score in zip(finished, histories, scores, strict=True)
    ]


def _stop(step: Iteration, reason: str) -> dict:
    """Where a level ended and why: 'iterations' (all of them) or 'converged' (options.tolerance)."""
    return {"level": step.level, "iteration": step.iteration, "reason": reason}


def finish(
    out: np.ndarray, content_rgb: np.ndarray, content: images.Picture, options: StyleOptions
):
    """Final pixels: colours preserved if asked, uint8, and the alpha at the output size."""
    if options.preserve_colors:
        out = colour.preserve_colors(content_rgb, out)
    alpha = None if content.alpha is None else images.resize(content.alpha, out.shape[:2])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), alpha
