"""Section 1: seconds per iteration of our Adam and L-BFGS steps against the floor and the seed port.

Every column is timed in this process, round-robin (one step of each in turn), so background
load on a shared machine lands on all of them alike. A step of ours is one `next()` of
`Stylizer.steps`: the compiled update plus the losses copied to the host, as the CLI runs it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from baseline import SeedPort, floor_step
from common import (
    ROOT,
    check,
    fmt,
    interleaved,
    run_child,
    square,
    table,
)
from flops import floor_flops, iteration_flops
from peak import peaks

from stylecore.hardware import resolve_precision
from stylecore.network import FeatureNet
from stylecore.options import DEFAULTS
from stylecore.stylize import Stylizer
from stylecore.weights import load_weights

COLUMNS = ("floor", "floor_bf16", "adam_fp32", "adam", "lbfgs", "seed_port")


def measure(
    weights_path: str,
    sizes: list[int],
    warmup: int,
    repeats: int,
    neural_style: str | None = None,
    work: Path | None = None,
) -> dict[str, Any]:
    """Per-iteration seconds of every column at every size, the achieved GFLOP/s against the
    measured matmul peak of each precision; with `neural_style` (a checkout of
    anishathalye/neural-style) its own code too, in a child process after the other columns."""
    weights = load_weights(weights_path)
    peak = peaks()
    rows = []
    for size in sizes:
        timings = _one_size(weights, weights_path, size, warmup, repeats)
        timings["flops"] = iteration_flops(weights, size, size, DEFAULTS.style_layers)
        timings["floor_flops"] = floor_flops(weights, size, size)
        if neural_style:
            timings["neural_style"] = _neural_style(
                neural_style, weights_path, size, warmup, repeats, work or Path(".")
            )
        rows.append({"size": size, **timings})
    return {
        "weights": weights_path,
        "warmup": warmup,
        "repeats": repeats,
        "peak_gflops": peak,
        "auto": resolve_precision("auto", tf.constant(0.0).device),
        "rows": rows,
    }


def _one_size(weights, weights_path: str, size: int, warmup: int, repeats: int) -> dict:
    content, style = square("chelsea.png", size), square("swirls.png", size)
    options = DEFAULTS.replace(
        weights=weights_path, size=size, iterations=warmup + repeats, tolerance=0.0
    )
    variants = {
        "adam_fp32": options.replace(optimizer="adam", precision="float32"),
        "adam": options.replace(optimizer="adam", precision="auto"),
        "lbfgs": options.replace(optimizer="lbfgs", precision="auto"),
    }
    ours = {}
    for name, o in variants.items():
        stylizer = Stylizer(weights, o)
        grams = stylizer.grams(style, o)
        ours[name] = stylizer.steps(content[np.newaxis], lambda _, g=grams: [g], o)
    # The floor from our own network code (flipped-kernel input gradients), in each precision.
    floors = {
        p: floor_step(FeatureNet(weights, ["relu5_1"], precision=p))
        for p in ("float32", "bfloat16")
    }
    x = tf.constant((content - weights.mean_rgb)[np.newaxis], tf.float32)
    port = SeedPort(weights, content, style)
    steps = {
        "floor": lambda: floors["float32"](x).numpy(),
        "floor_bf16": lambda: floors["bfloat16"](x).numpy(),
        "adam_fp32": lambda: next(ours["adam_fp32"]),
        "adam": lambda: next(ours["adam"]),
        "lbfgs": lambda: next(ours["lbfgs"]),
        "seed_port": lambda: float(port.train_step()),
    }
    return interleaved(steps, warmup, repeats)


def _neural_style(checkout, weights_path, size, warmup, repeats, work: Path) -> dict:
    out = work / f"neural-style-{size}.json"
    script = str(ROOT / "benchmarks" / "neural_style_ref.py")
    argv = [sys.executable, script, checkout, weights_path, str(size), str(warmup), str(repeats)]
    child = run_child([*argv, str(out)], dict(os.environ), work / f"neural-style-{size}.log")
    check(child, f"anishathalye/neural-style at {size} px")
    return json.loads(out.read_text())


def render(result: dict[str, Any]) -> str:
    """Two tables: seconds against the floor and the port; GFLOP/s against the matmul peak."""
    auto, peak = result["auto"], result["peak_gflops"]
    measured = all("neural_style" in r for r in result["rows"])
    rows, rates = [], []
    for r in result["rows"]:
        m = {c: r[c]["median"] for c in COLUMNS}
        floor_auto = m["floor_bf16"] if auto == "bfloat16" else m["floor"]
        reference = []
        if measured:
            ns = r["neural_style"]["median"]
            reference = [fmt(ns), f"{m['adam'] / ns:.2f}"]
        rows.append(
            [
                r["size"],
                fmt(m["floor"]),
                fmt(m["floor_bf16"]),
                f"{fmt(m['adam_fp32'])} ({m['adam_fp32'] / m['floor']:.2f}×)",
                f"{fmt(m['adam'])} ({m['adam'] / floor_auto:.2f}×)",
                f"{fmt(m['lbfgs'])} ({m['lbfgs'] / floor_auto:.2f}×)",
                fmt(m["seed_port"]),
                f"{m['adam_fp32'] / m['seed_port']:.2f}",
                f"**{m['adam'] / m['seed_port']:.2f}**",
                *reference,
            ]
        )
        rates.append(
            [
                r["size"],
                *[
                    f"{r[key] / m[col] / 1e9:.0f} ({r[key] / m[col] / 1e9 / peak[p]:.0%})"
                    for key, col, p in (
                        ("floor_flops", "floor", "float32"),
                        ("flops", "adam_fp32", "float32"),
                        ("floor_flops", "floor_bf16", "bfloat16"),
                        ("flops", "adam" if auto == "bfloat16" else "adam_fp32", "bfloat16"),
                    )
                ],
                f"{r['flops'] / 1e9:.1f}",
            ]
        )
    headers = [
        "size px",
        "floor fp32 s",
        "floor bf16 s",
        "ours adam fp32 s (× floor fp32)",
        f"ours adam auto={auto} s (× its floor)",
        f"ours lbfgs auto={auto} s (× its floor)",
        "seed-port s",
        "adam fp32 ÷ port",
        "adam auto ÷ port",
    ]
    if measured:
        headers += ["neural-style s", "ours adam auto ÷ neural-style"]
    rate_headers = [
        "size px",
        "floor fp32 GFLOP/s (% fp32 peak)",
        "ours adam fp32 GFLOP/s (% fp32 peak)",
        "floor bf16 GFLOP/s (% bf16 peak)",
        "ours adam bf16 GFLOP/s (% bf16 peak)",
        "GFLOP / iteration",
    ]
    notes = [
        f"Median of {result['repeats']} timed steps after {result['warmup']} warm-up steps, "
        f"taken round-robin in one process; weights `{result['weights']}`, content chelsea × "
        "style swirls, square, batch 1, XLA as auto decides (off on CPUs).",
        "Floor: forward to relu5_1 + gradient of Σ relu5_1 w.r.t. the input, one tf.function "
        "through **our own** `FeatureNet` (the same flipped-kernel input gradients as our "
        "step), in float32 and in bfloat16. Until issue 16 the floor was a plain tf.nn VGG with "
        "TF's own convolution gradient, which our step beat by construction.",
        "seed-port: `baseline.SeedPort`, the plain TF2 port of the seed recipe (float32, TF's "
        "own gradients, tf.keras Adam, Grams as one einsum).",
        "Matmul peak measured here (`benchmarks/peak.py`, best of 10 2048² matmuls): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items())
        + ". FLOPs from the layer shapes (`benchmarks/flops.py`): forward + input gradient "
        "through relu5_1, plus the Grams and their gradients.",
        "Targets (issue 16): the default adam step (auto) ≤ 0.75× the port at 256 px.",
    ]
    return table(headers, rows) + "\n\n" + table(rate_headers, rates) + "\n\n" + "\n".join(notes)
