"""Section: a varied batch with and without stopping when converged (option `tolerance`).

Each pair runs its full `iterations` once through `Stylizer.steps` with tolerance 0, recording
every step's seconds and total loss. A run with tolerance t takes exactly the same steps until
`stylecore.optimize.converged` (the core's own test) first says stop, so its image is the image
at that step and its time the time of those steps: one full run per pair measures every
tolerance. Each stopped image is scored by a float32 network against float32 Gram targets (the
sidecar's `quality`: style ratio and content error) and compared with the full run's image
(mean |difference| in 0…255 units); the default's images are written side by side to look at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import EXAMPLES, fmt, table

from stylecore import images
from stylecore.optimize import CONVERGENCE_WINDOW, converged
from stylecore.options import DEFAULTS
from stylecore.stylize import Stylizer, prepare_content, prepare_style, shared_weights
from stylecore.weights import resolve_spec

NETWORK = "vgg16-hed"
# Eight different contents and styles: photographs and a render, painterly and texture styles.
PAIRS = (
    ("chelsea.png", "swirls.png"),
    ("astronaut.png", "brick.png"),
    ("coffee.png", "hubble-deep-field.png"),
    ("rocket.png", "gravel.png"),
    ("astronaut.png", "swirls.png"),
    ("chelsea.png", "hubble-deep-field.png"),
    ("coffee.png", "gravel.png"),
    ("rocket.png", "brick.png"),
)
TOLERANCES = (0.001, 0.002, 0.005, 0.01, 0.02)


def measure(
    size: int,
    iterations: int,
    optimizer: str,
    out: Path,
    tolerances: tuple[float, ...] = TOLERANCES,
    show: float | None = None,
    pairs: tuple[tuple[str, str], ...] = PAIRS,
    partial: Path | None = None,
) -> dict[str, Any]:
    """Every pair once at full length; each tolerance's stop, time and scores derived from it
    (written to `partial` after each pair, when given)."""
    options = DEFAULTS.replace(
        network=NETWORK,
        size=size,
        iterations=iterations,
        optimizer=optimizer,
        tolerance=0.0,
        precision="auto",  # bfloat16 where native, as measured in RESULTS.md
    )
    weights = shared_weights(resolve_spec(NETWORK, None))
    stylizer = Stylizer(weights, options)
    scorer = Stylizer(weights, options.replace(precision="float32"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    result = {
        "network": NETWORK,
        "size": size,
        "iterations": iterations,
        "optimizer": optimizer,
        "precision": stylizer.net.precision,
        "window": CONVERGENCE_WINDOW,
        "tolerances": list(tolerances),
        "rows": rows,
    }
    for content_name, style_name in pairs:
        row = _pair(stylizer, scorer, options, content_name, style_name, tolerances, out, show)
        rows.append(row)
        print(_pair_line(row), flush=True)
        if partial:
            partial.write_text(json.dumps(result, indent=1))
    return result


def _pair(stylizer, scorer, options, content_name, style_name, tolerances, out, show) -> dict:
    content = prepare_content(images.read_path(EXAMPLES / content_name), options)
    style_rgb = prepare_style(
        images.read_path(EXAMPLES / style_name), max(content.shape[:2]), options
    )
    start = time.perf_counter()
    grams = stylizer.grams(style_rgb, options)
    targets = scorer.grams(style_rgb, options)
    setup = time.perf_counter() - start
    totals: list[np.ndarray] = []
    seconds: list[float] = []
    stops: dict[float, tuple[int, np.ndarray]] = {}
    last = None
    start = time.perf_counter()
    for last in stylizer.steps(content[None], lambda _: [grams], options):
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
        totals.append(last.losses["total"])
        for t in tolerances:
            if t not in stops and converged(totals, t):
                stops[t] = (last.iteration, _rgb(stylizer, last.image))
    final = _rgb(stylizer, last.image)
    stops = {t: stops.get(t, (len(totals), final)) for t in tolerances}
    candidates = [(0.0, len(totals), final)] + [(t, *stops[t]) for t in tolerances]
    row: dict[str, Any] = {"content": content_name, "style": style_name, "setup_s": setup}
    row["runs"] = [
        {
            "tolerance": t,
            "iterations": n,
            "seconds": setup + sum(seconds[:n]),
            **scorer.quality(rgb[None].astype(np.float32), content[None], [targets], options)[0],
            "mean_abs_diff": float(np.mean(np.abs(rgb.astype(np.float32) - final))),
        }
        for t, n, rgb in candidates
    ]
    if show is not None:
        side = np.concatenate([final, stops[show][1]], axis=1)
        name = f"converge-{content_name[:-4]}-{style_name[:-4]}-{show:g}.png"
        (out / name).write_bytes(images.encode(side, None, ".png"))
    return row


def _rgb(stylizer: Stylizer, x) -> np.ndarray:
    return np.clip(np.rint(stylizer.net.deprocess(x)[0]), 0, 255).astype(np.uint8)


def _pair_line(row: dict) -> str:
    runs = ", ".join(f"{r['tolerance']:g}→{r['iterations']}" for r in row["runs"])
    return f"{row['content']} × {row['style']}: {runs}"


def totals(result: dict, tolerance: float) -> dict[str, float]:
    """The batch's seconds and iterations, and its worst and mean score changes, at one tolerance."""
    runs = [next(r for r in row["runs"] if r["tolerance"] == tolerance) for row in result["rows"]]
    full = [row["runs"][0] for row in result["rows"]]

    def change(key: str) -> list[float]:
        return [(r[key] - f[key]) / f[key] for r, f in zip(runs, full, strict=True)]

    return {
        "seconds": sum(r["seconds"] for r in runs),
        "iterations": sum(r["iterations"] for r in runs),
        "style_change_max": max(change("style_ratio")),
        "style_change_mean": float(np.mean(change("style_ratio"))),
        "content_change_max": max(change("content_error")),
        "diff_mean": float(np.mean([r["mean_abs_diff"] for r in runs])),
        "diff_max": max(r["mean_abs_diff"] for r in runs),
    }


def render(result: dict[str, Any], default: float | None = None) -> str:
    """One row per tolerance: the batch's time against running every iteration, and the cost."""
    base = totals(result, 0.0)
    rows = []
    for t in [0.0, *result["tolerances"]]:
        s = totals(result, t)
        mark = " (default)" if t == default else ""  # the option's, or the one proposed
        rows.append(
            [
                f"{t:g}{mark}" if t else "0 (off: every iteration)",
                f"{s['iterations']} ({s['iterations'] / base['iterations']:.2f}×)",
                f"{fmt(s['seconds'], 1)} ({s['seconds'] / base['seconds']:.2f}×)",
                f"{s['style_change_mean']:+.1%} / {s['style_change_max']:+.1%}",
                f"{s['content_change_max']:+.1%}",
                f"{s['diff_mean']:.2f} / {s['diff_max']:.2f}",
            ]
        )
    headers = [
        "tolerance",
        "iterations, 8 pairs (÷ off)",
        "seconds (÷ off)",
        "style ratio change mean / worst",
        "content error change worst",
        "|Δ image| vs off, mean / worst pair",
    ]
    n = len(result["rows"])
    notes = (
        f"{result['network']}, {n} pairs (contents × styles of examples/), {result['size']} px, "
        f"`{result['optimizer']}`, precision {result['precision']}, at most "
        f"{result['iterations']} iterations; tolerance t stops a level when the total loss fell by "
        f"less than t over the last {result['window']} iterations. Seconds: each pair's style "
        "Grams plus its steps up to the stop, all measured in one full run per pair (a stopped "
        "run takes the same steps until it stops). Score changes are relative to running every "
        "iteration (positive = worse); |Δ image| in 0…255 units."
    )
    per_pair = table(
        ["pair", *[f"t={r['tolerance']:g}: it. / style ratio" for r in result["rows"][0]["runs"]]],
        [
            [
                f"{row['content'][:-4]} × {row['style'][:-4]}",
                *[f"{r['iterations']} / {r['style_ratio']:.4f}" for r in row["runs"]],
            ]
            for row in result["rows"]
        ],
    )
    return table(headers, rows) + "\n\n" + notes + "\n\n" + per_pair
