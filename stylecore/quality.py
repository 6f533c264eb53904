"""Scores of finished images: how near their Grams came to the style's, how far the content moved.

`style_ratio` = Σ_l mean((G_l(out) − A_l)²) over the same for the content image (0: the style's
statistics reached; 1: they did not move); `content_error` = ‖F(out) − F(content)‖ / ‖F(content)‖
over the content layers. Whatever the loss weights, so scores compare across options. Print-size
images are scored tile by tile (stylecore/tiling.py), with the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stylecore import tiling
from stylecore.losses import gram


def scores(stylizer, outputs: np.ndarray, contents: np.ndarray, grams: Sequence[dict], options):
    """One score dict per image of `outputs` (B, H, W, 3), 0…255, against `contents` and one
    Gram target per image."""
    n = len(outputs)
    targets = {name: np.stack([g[name] for g in grams]) for name in options.style_layers}
    plan = stylizer.tile_plan(outputs.shape[1:3], 2 * n, options)
    if plan is None:
        own, base, error, energy = _whole(stylizer, outputs, contents, options)
    else:
        own, base, error, energy = _tiled(stylizer, plan, outputs, contents, options)
    distance = sum(np.mean(np.square(own[k] - targets[k]), axis=(1, 2)) for k in targets)
    start = sum(np.mean(np.square(base[k] - targets[k]), axis=(1, 2)) for k in targets)
    return [
        {
            "style_ratio": round(float(distance[i] / max(start[i], 1e-30)), 6),
            "content_error": round(float(np.sqrt(error[i] / max(energy[i], 1e-30))), 6),
        }
        for i in range(n)
    ]


def _whole(stylizer, outputs, contents, options):
    """One forward pass of outputs and contents together."""
    net, n = stylizer.net, len(outputs)
    features = net(net.preprocess(np.concatenate([outputs, contents])))
    grams = {k: gram(features[k]).numpy() for k in options.style_layers}
    content = [features[k].numpy() for k in options.content_layers]
    error = sum(np.sum(np.square(f[:n] - f[n:]), axis=(1, 2, 3)) for f in content)
    energy = sum(np.sum(np.square(f[n:]), axis=(1, 2, 3)) for f in content)
    return {k: g[:n] for k, g in grams.items()}, {k: g[n:] for k, g in grams.items()}, error, energy


def _tiled(stylizer, plan, outputs, contents, options):
    """The same sums, tile by tile."""
    net = stylizer.net
    tiled = tiling.TiledNet(net, plan, options.style_layers, options.content_layers)
    x, c = net.preprocess(outputs), net.preprocess(contents)
    centres = tiled.centres(c)
    own, errors, energies = tiled.stats(x, centres)
    base, _, _ = tiled.stats(c, centres)
    error = sum(e.numpy() for e in errors.values())
    energy = sum(e.numpy() for e in energies.values())

    def normalized(raw):
        return {k: (v / tiled.count(k)).numpy() for k, v in raw.items()}

    return normalized(own), normalized(base), error, energy
