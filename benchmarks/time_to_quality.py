"""Section 2: seconds until the defaults reach the distances the `seed` preset ends with.

The `seed` preset runs its full course; its final style distance (Σ over relu1_1…relu5_1 of
mean((G − A)²), unweighted) and content distance (‖F − P‖ / ‖P‖ at relu4_2) are the target.
Then the defaults (and a coarse-to-fine variant) run until both distances of the current image
are at or below the target. Distances are measured every `every` iterations by a separate
compiled function on baseline.PlainVGG (independent of the core); that time is off the clock.
The clock covers every `next()` of `Stylizer.steps` (content features, tracing, the steps); the
style Grams are computed before it starts, for every run alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from baseline import STYLE_LAYERS, PlainVGG, gram
from common import EXAMPLES, fmt, table

from stylecore import images
from stylecore.options import DEFAULTS, SEED, StyleOptions
from stylecore.stylize import level_sizes, prepare_content, prepare_style, shared_stylizer

NETWORK = "vgg16-hed"


class Distances:
    """x (1, H, W, 3) mean-subtracted → (style distance, content distance), compiled once."""

    def __init__(self, net: PlainVGG, content_rgb: np.ndarray, style_rgb: np.ndarray):
        self.net = net
        content = net(tf.constant((content_rgb - net.mean)[np.newaxis], tf.float32))
        style = net(tf.constant((style_rgb - net.mean)[np.newaxis], tf.float32))
        self.content = content["relu4_2"]
        self.grams = {n: gram(style[n]) for n in STYLE_LAYERS}
        self._compiled = tf.function(self._distances)

    def _distances(self, x):
        f = self.net(x)
        style = tf.add_n(
            [tf.reduce_mean(tf.square(gram(f[n]) - self.grams[n])) for n in STYLE_LAYERS]
        )
        content = tf.norm(f["relu4_2"] - self.content) / tf.norm(self.content)
        return style, content

    def __call__(self, x: tf.Tensor) -> tuple[float, float]:
        style, content = self._compiled(x)
        return float(style), float(content)


@dataclass(frozen=True)
class Outcome:
    name: str
    seconds: float  # on the clock until reached (or until the end when never reached)
    first_step: float  # seconds of the first step: content features, tracing, compiling
    iteration: int | None  # the final level's iteration at which it got there; None: never
    final: tuple[float, float]  # (style, content) distances at the last measurement
    curve: list[dict[str, float]]  # every measurement: iteration, seconds, style, content


def measure(size: int, seed_iterations: int, levels_iterations: int, every: int) -> dict:
    """Run seed, then defaults and defaults with levels=2, at `size` px with vgg16-hed."""
    content = images.read_path(EXAMPLES / "chelsea.png")
    style = images.read_path(EXAMPLES / "swirls.png")
    seed = SEED.replace(network=NETWORK, size=size, iterations=seed_iterations)
    defaults = DEFAULTS.replace(network=NETWORK, size=size, iterations=seed_iterations)
    two_levels = defaults.replace(levels=2, iterations=levels_iterations)
    stylizer = shared_stylizer(seed)
    content_rgb = prepare_content(content, seed)
    style_rgb = prepare_style(style, max(content_rgb.shape[:2]), seed)
    distances = Distances(PlainVGG(stylizer.weights, "relu5_1"), content_rgb, style_rgb)

    runs = [_run("seed", seed, content, style, distances, every, None)]
    target = runs[0].final
    runs.append(_run("defaults", defaults, content, style, distances, every, target))
    runs.append(_run("defaults, levels=2", two_levels, content, style, distances, every, target))
    return {
        "size": size,
        "network": NETWORK,
        "every": every,
        "target": {"style": target[0], "content": target[1]},
        "runs": [
            {
                "name": r.name,
                "options": o.to_dict(),
                "seconds": r.seconds,
                "first_step_s": r.first_step,
                "iteration": r.iteration,
                "final": {"style": r.final[0], "content": r.final[1]},
                "curve": r.curve,
            }
            for r, o in zip(runs, (seed, defaults, two_levels), strict=True)
        ],
    }


def _run(name, options: StyleOptions, content, style, distances, every, target) -> Outcome:
    stylizer = shared_stylizer(options)
    content_rgb = prepare_content(content, options)
    grams = {  # off the clock, for every run alike
        n: [stylizer.grams(prepare_style(style, n, options), options)] for n in level_sizes(options)
    }
    last = options.levels - 1
    steps = stylizer.steps(content_rgb[np.newaxis], grams.__getitem__, options)
    clock, curve, reached, first = 0.0, [], None, None
    start = time.perf_counter()
    for step in steps:
        clock += time.perf_counter() - start
        first = clock if first is None else first
        if step.level == last and (step.iteration % every == 0 or step.iteration == 1):
            s, c = distances(step.image)
            curve.append({"iteration": step.iteration, "seconds": clock, "style": s, "content": c})
            if target and s <= target[0] and c <= target[1]:
                reached = step.iteration
                break
        start = time.perf_counter()
    if not curve or curve[-1]["iteration"] != step.iteration:
        s, c = distances(step.image)
        curve.append({"iteration": step.iteration, "seconds": clock, "style": s, "content": c})
        if target and s <= target[0] and c <= target[1]:
            reached = step.iteration
    final = (curve[-1]["style"], curve[-1]["content"])
    return Outcome(name, clock, first, reached, final, curve)


def render(result: dict[str, Any]) -> str:
    seed = result["runs"][0]
    rows = [
        [
            seed["name"],
            fmt(seed["seconds"], 1),
            fmt(seed["first_step_s"], 1),
            "1.00",
            f"ran {seed['iteration'] or seed['curve'][-1]['iteration']} (target set here)",
            f"{seed['final']['style']:.4g}",
            f"{seed['final']['content']:.3f}",
        ]
    ]
    for run in result["runs"][1:]:
        got = run["iteration"] is not None
        ratio = run["seconds"] / seed["seconds"]
        levels = run["options"]["levels"]
        where = f"{run['iteration']}" + (" (final level)" if levels > 1 else "")
        rows.append(
            [
                run["name"],
                fmt(run["seconds"], 1) if got else f"> {fmt(run['seconds'], 1)}",
                fmt(run["first_step_s"], 1),
                f"{ratio:.2f}" if got else f"> {ratio:.2f}",
                where if got else f"not reached in {run['curve'][-1]['iteration']}",
                f"{run['final']['style']:.4g}",
                f"{run['final']['content']:.3f}",
            ]
        )
    headers = [
        "run",
        "seconds",
        "of which 1st step",
        "÷ seed",
        "iteration reached",
        "style dist.",
        "content dist.",
    ]
    seed_iterations = seed["options"]["iterations"]
    notes = [
        f"{result['network']}, chelsea × swirls, {result['size']} px longest side; target = the "
        f"seed preset's distances after {seed_iterations} iterations; distances measured every "
        f"{result['every']} iterations, off the clock. Defaults are capped at {seed_iterations} "
        f"iterations; levels=2 runs {result['runs'][2]['options']['iterations']} iterations per "
        "level (the option applies to every level).",
        "Target (issue 5): defaults ≤ 0.2× the seed's seconds.",
    ]
    return table(headers, rows) + "\n\n" + "\n".join(notes)
