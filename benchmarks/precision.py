"""Section: bfloat16 against float32 on real weights — the finished images' distances and pixels.

Each (size, optimizer) runs the same pair twice through `Stylizer.steps`, once with the network in
float32 and once in bfloat16 (Grams, losses, the image and the optimizer stay float32 in both), for
the same number of iterations. Both finished images are scored by one float32 network against the
float32 targets, so the scorer cannot favour either: the style ratio (Σ_l mean((G_l − A_l)²) over
the same for the content image) and the content error (‖F − P‖ / ‖P‖ at the content layers), as in
the sidecar's `quality`. Also the mean |difference| of the two images in 0…255 units, and the
seconds per iteration of each. The images are written side by side to look at.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from common import EXAMPLES, fmt, table

from stylecore import images
from stylecore.options import DEFAULTS
from stylecore.stylize import Stylizer, prepare_content, prepare_style, shared_weights
from stylecore.weights import resolve_spec

NETWORK = "vgg16-hed"
PRECISIONS = ("float32", "bfloat16")
QUALITY_BAR = 0.05  # the issue's: bf16's distances within 5% of float32's


def measure(
    sizes: list[int],
    iterations: dict[int, int],
    optimizers: tuple[str, ...],
    out: Path,
    pair: tuple[str, str] = ("chelsea.png", "swirls.png"),
) -> dict[str, Any]:
    """Both precisions at every (size, optimizer); images written under `out`."""
    weights = shared_weights(resolve_spec(NETWORK, None))
    content_pic = images.read_path(EXAMPLES / pair[0])
    style_pic = images.read_path(EXAMPLES / pair[1])
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:
        for optimizer in optimizers:
            options = DEFAULTS.replace(
                network=NETWORK, size=size, optimizer=optimizer, iterations=iterations[size]
            )
            content = prepare_content(content_pic, options)
            style = prepare_style(style_pic, max(content.shape[:2]), options)
            scorer = Stylizer(weights, options.replace(precision="float32"))
            targets = scorer.grams(style, options)
            row: dict[str, Any] = {
                "size": size,
                "optimizer": optimizer,
                "iterations": iterations[size],
            }
            finished = {}
            for precision in PRECISIONS:
                o = options.replace(precision=precision)
                rgb, seconds = _run(Stylizer(weights, o), content, style, o)
                score = scorer.quality(rgb[None], content[None], [targets], o)[0]
                row[precision] = {**score, "s_per_iteration": seconds}
                finished[precision] = rgb
            a, b = (finished[p].astype(np.float32) for p in PRECISIONS)
            row["mean_abs_diff"] = float(np.mean(np.abs(a - b)))
            row["max_abs_diff"] = float(np.max(np.abs(a - b)))
            side = np.concatenate([finished[p] for p in PRECISIONS], axis=1)
            png = out / f"precision-{size}-{optimizer}.png"
            png.write_bytes(images.encode(side.astype(np.uint8), None, ".png"))
            row["image"] = str(png)
            rows.append(row)
            print(render({"rows": [row], "network": NETWORK, "pair": pair}), flush=True)
    return {"network": NETWORK, "pair": list(pair), "rows": rows}


def _run(stylizer: Stylizer, content: np.ndarray, style: np.ndarray, options) -> tuple:
    """The finished image (H, W, 3) uint8 and the median seconds per iteration after the first."""
    grams = stylizer.grams(style, options)
    times, image = [], None
    start = time.perf_counter()
    for step in stylizer.steps(content[None], lambda _: [grams], options):
        image = step.image
        now = time.perf_counter()
        times.append(now - start)
        start = now
    rgb = np.clip(np.rint(stylizer.net.deprocess(image)[0]), 0, 255).astype(np.uint8)
    return rgb, float(np.median(times[1:]))


def _change(new: float, old: float) -> str:
    return f"{(new - old) / old * 100:+.1f}%"


def render(result: dict[str, Any]) -> str:
    """One row per (size, optimizer): each precision's distances and speed, and their difference."""
    rows = []
    for r in result["rows"]:
        f32, b16 = r["float32"], r["bfloat16"]
        rows.append(
            [
                r["size"],
                r["optimizer"],
                r["iterations"],
                f"{f32['style_ratio']:.5f}",
                f"{b16['style_ratio']:.5f} ({_change(b16['style_ratio'], f32['style_ratio'])})",
                f"{f32['content_error']:.4f}",
                f"{b16['content_error']:.4f} "
                f"({_change(b16['content_error'], f32['content_error'])})",
                f"{r['mean_abs_diff']:.2f} / {r['max_abs_diff']:.0f}",
                fmt(f32["s_per_iteration"]),
                f"{fmt(b16['s_per_iteration'])} "
                f"({b16['s_per_iteration'] / f32['s_per_iteration']:.2f}×)",
            ]
        )
    headers = [
        "size px",
        "optimizer",
        "iterations",
        "style ratio fp32",
        "style ratio bf16 (change)",
        "content err. fp32",
        "content err. bf16 (change)",
        "|bf16 − fp32| mean / max",
        "fp32 s/it.",
        "bf16 s/it. (÷ fp32)",
    ]
    pair = " × ".join(p.removesuffix(".png") for p in result["pair"])
    notes = (
        f"{result['network']}, {pair}, longest side as given, the defaults otherwise; both images "
        "scored by one float32 network against float32 Gram targets (style ratio: Gram distance "
        "over the content image's; content error: relative relu4_2 distance). Pixel differences "
        f"in 0…255 units. Bar (issue 16): both distances within {QUALITY_BAR:.0%} of float32's."
    )
    return table(headers, rows) + "\n\n" + notes
