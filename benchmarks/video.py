"""Clips: optical flow's cost and accuracy per method, and temporal consistency against frames
stylized on their own, with seconds per frame beside a still of the same size.

    .venv/bin/python benchmarks/video.py                       # vgg16-hed, 128 px, 8 frames
    .venv/bin/python benchmarks/video.py --size 256 --frames 12 --frame-iterations 10,25,50

The clip is generated: a still texture and a square moving by known offsets (tests/test_video.py's
scene, scaled). Temporal error is Σ c·(s_t − warp(s_{t−1}))² / Σ c over frames 2…n; style is the
mean style_ratio (the final Gram distance over the content's own; lower is more stylized).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from skimage.registration import optical_flow_ilk, optical_flow_tvl1

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from common import machine, machine_line, table  # noqa: E402
from test_video import scene, stripes  # noqa: E402

from stylecore import clip, images, opticalflow  # noqa: E402
from stylecore.options import StyleOptions  # noqa: E402
from stylecore.stylize import Stylizer, prepare_style, shared_weights, stylize_with  # noqa: E402


def flow_methods(a: np.ndarray, b: np.ndarray) -> dict:
    """Each method's backward flow b → a as (dx, dy) per pixel."""
    ga, gb = (opticalflow.grey(f) / 255.0 for f in (a, b))

    def skimage(method):
        v, u = method(gb, ga)  # reference b, moving a: b(x) = a(x + flow(x)), as ours
        return np.stack([u, v], axis=-1)

    return {
        "opencv DIS (ours)": lambda: opticalflow.flow(b, a),
        "skimage TV-L1": lambda: skimage(optical_flow_tvl1),
        "skimage ILK": lambda: skimage(optical_flow_ilk),
    }


def flow_table(sizes: list[int]) -> str:
    rows = []
    for longest in sizes:
        h, w = longest * 3 // 4, longest
        shift = (max(2, longest // 32), max(1, longest // 64))
        a, b = scene(h, w, 0, shift), scene(h, w, 1, shift)
        side, y, x = h // 3, h // 4 + shift[1], w // 5 + shift[0]
        for name, run in flow_methods(a, b).items():
            run()  # warm
            start = time.perf_counter()
            found = run()
            seconds = time.perf_counter() - start
            inside = found[
                y + side // 4 : y + side - side // 4, x + side // 4 : x + side - side // 4
            ]
            error = np.abs(inside.mean(axis=(0, 1)) + np.array(shift)).max()
            rows.append([f"{w}×{h}", name, f"{1000 * seconds:.1f}", f"{shift}", f"{error:.2f}"])
    headers = ["frame", "method", "ms per pair", "shift (dx, dy)", "shift error px"]
    return table(headers, rows)


def clip_table(args) -> str:
    h, w = args.size * 3 // 4, args.size
    shift = (max(2, args.size // 32), max(1, args.size // 64))
    frames = [scene(h, w, t, shift) for t in range(args.frames)]
    base = StyleOptions(
        network=args.network, size=args.size, iterations=args.iterations, seed=0, init="content"
    )
    stylizer = Stylizer(shared_weights(args.network), base)
    style = stripes()

    def grams_for(longest):
        return [stylizer.grams(prepare_style(style, longest, base), base)]

    contents = [clip.prepare_content(images.Picture(f, None), base) for f in frames]
    start = time.perf_counter()
    pairs = [opticalflow.frame_pair(contents[i - 1], contents[i]) for i in range(1, len(frames))]
    flow_seconds = (time.perf_counter() - start) / max(1, len(pairs))
    start = time.perf_counter()
    stylize_with(images.Picture(frames[0], None), grams_for, base, stylizer)
    still = time.perf_counter() - start

    def run(options):
        start = time.perf_counter()
        results = [r for r, _ in clip.stylize_shot(frames, grams_for, options, stylizer)]
        seconds = (time.perf_counter() - start) / len(frames)
        errors = [
            opticalflow.temporal_error(results[i].rgb, results[i - 1].rgb, pairs[i - 1])
            for i in range(1, len(frames))
        ]
        return (
            float(np.mean(errors)),
            float(np.mean([r.quality["style_ratio"] for r in results])),
            seconds,
        )

    own = run(base.replace(temporal_weight=0.0))
    rows = [
        [
            "on their own (temporal_weight 0)",
            "—",
            f"{own[0]:.1f}",
            "1.00",
            f"{own[1]:.4f}",
            "+0.0%",
            f"{own[2]:.2f}",
        ]
    ]
    for weight in args.temporal_weights:
        for fi in args.frame_iterations:
            err, ratio, seconds = run(base.replace(temporal_weight=weight, frame_iterations=fi))
            rows.append([
                f"linked, temporal_weight {weight:g}", str(fi), f"{err:.1f}", f"{err / own[0]:.2f}",
                f"{ratio:.4f}", f"{100 * (ratio / own[1] - 1):+.1f}%", f"{seconds:.2f}",
            ])  # fmt: skip
    headers = [
        "frames",
        "frame_iterations",
        "temporal error",
        "× own",
        "style",
        "style vs own",
        "s/frame",
    ]
    title = (
        f"{args.network}, {w}×{h}, {args.frames} frames, {args.iterations} iterations; "
        f"flow {1000 * flow_seconds:.1f} ms per frame pair; a still of the same size {still:.2f} s"
    )
    return title + "\n\n" + table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="vgg16-hed")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument(
        "--frame-iterations", default="10,25", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument(
        "--temporal-weights", default="1,10", type=lambda s: [float(x) for x in s.split(",")]
    )
    parser.add_argument(
        "--flow-sizes", default="64,256,512", type=lambda s: [int(x) for x in s.split(",")]
    )
    args = parser.parse_args()
    print(machine_line(machine()), "\n", flush=True)
    print(flow_table(args.flow_sizes), "\n", flush=True)
    print(clip_table(args), flush=True)


if __name__ == "__main__":
    main()
