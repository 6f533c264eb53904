"""Tiling: memory set by the tile, not the image; what a tiled iteration costs; seams.

    python benchmarks/tiling.py            # the table (sizes up to 2048 px), ~10 min on 2 cores
    python benchmarks/tiling.py --print    # also a 4096×4096 output, tile auto (~15 min more)
    python benchmarks/tiling.py --seams    # a real stylization tiled and whole: seam measure, PNGs

Each configuration runs in its own process (started from benchmarks/maxrss.py, so its peak RSS
is its own): vgg16-hed, Adam, `iterations` steps after one warm-up step; s/iteration is the median
of the timed steps. "whole ratio" is s/iteration over that of the same size untiled, where that
runs; "window" is the largest input a tile's network sees (tile + 2 halos).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, machine_line, table  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "tiling"


def child(size: int, tile: str, iterations: int, result: str, precision: str) -> None:
    """One configuration, in this process: times per step and the tiling record."""
    from stylecore import images, tiling
    from stylecore.options import StyleOptions
    from stylecore.stylize import shared_stylizer, stylize

    name = "astronaut.png" if size >= 4096 else "chelsea.png"  # the print: a square 4096×4096
    with open(ROOT / "examples" / name, "rb") as f:
        content = images.decode(f.read(), name)
    with open(ROOT / "examples" / "swirls.png", "rb") as f:
        style = images.decode(f.read(), "swirls.png")
    options = StyleOptions(
        network="vgg16-hed",
        size=size,
        iterations=iterations + 1,
        optimizer="adam",
        tile=tile,
        precision=precision,
        style_scale=min(1.0, 512 / size),  # the style's features at one scale for every size
    )
    stylizer = shared_stylizer(options)
    before = tiling.peak_rss()
    stamps: list[float] = []
    started = time.perf_counter()
    result_ = stylize(
        content, [style], options, stylizer, on_step=lambda s: stamps.append(time.perf_counter())
    )
    steps = np.diff(stamps)  # the first step (compile, content targets) is the warm-up
    record = result_.tiling[0] if result_.tiling else {}
    Path(result).write_text(
        json.dumps(
            {
                "size": size,
                "shape": list(result_.rgb.shape[:2]),
                "tile": record.get("tile"),
                "halo": record.get("halo"),
                "tiles": record.get("tiles"),
                "s_per_iteration": float(np.median(steps)) if len(steps) else None,
                "seconds": time.perf_counter() - started,
                "rss_before_bytes": before,
                "quality": result_.quality,
            }
        )
    )
    images_path = Path(result).with_suffix(".png")
    images_path.write_bytes(images.encode_png(result_.rgb))


def run(size: int, tile: str, iterations: int, precision: str, workdir: Path) -> dict:
    """A child process for one configuration; its result with its peak RSS."""
    import subprocess

    result = workdir / f"{size}-{tile}.json"
    rss = workdir / f"{size}-{tile}.rss.json"
    argv = [
        sys.executable,
        str(ROOT / "benchmarks" / "maxrss.py"),
        str(rss),
        sys.executable,
        __file__,
        "--child",
        str(size),
        tile,
        str(iterations),
        str(result),
        precision,
    ]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        return {"size": size, "tile": tile, "error": done.stderr.strip().splitlines()[-1:]}
    row = json.loads(result.read_text())
    row["peak_rss_bytes"] = json.loads(rss.read_text())["max_rss_kib"] * 1024
    row["asked_tile"] = tile
    return row


def seams(workdir: Path, precision: str) -> None:
    """A real stylization at 512 px in tiles of 160 and whole: the seam measure of both, and
    crops around a tile corner at full size to look at."""
    from stylecore import images, tiling
    from stylecore.options import StyleOptions
    from stylecore.stylize import stylize

    with open(ROOT / "examples" / "chelsea.png", "rb") as f:
        content = images.decode(f.read(), "chelsea.png")
    with open(ROOT / "examples" / "swirls.png", "rb") as f:
        style = images.decode(f.read(), "swirls.png")
    base = StyleOptions(network="vgg16-hed", size=512, iterations=80, precision=precision)
    rows = []
    outputs = {}
    for tile in ("0", "160"):
        started = time.perf_counter()
        result = stylize(content, [style], base.replace(tile=tile))
        outputs[tile] = result.rgb
        (OUT / f"seams-tile{tile}.png").write_bytes(images.encode_png(result.rgb))
        borders = tiling.borders(result.rgb.shape[:2], 160)
        rows.append(
            [
                "whole" if tile == "0" else f"tiles of {tile}",
                f"{time.perf_counter() - started:.0f}",
                result.quality["style_ratio"],
                result.quality["content_error"],
                f"{tiling.seam_ratio(result.rgb, borders):.3f}",
            ]
        )
    print(
        table(["run (512 px, L-BFGS 80)", "s", "style ratio", "content error", "seam ratio"], rows)
    )
    y, x = (
        tiling.borders(outputs["160"].shape[:2], 160)[0][0],
        tiling.borders(outputs["160"].shape[:2], 160)[1][0],
    )
    crop = np.concatenate(
        [
            o[max(0, y - 64) : y + 64, max(0, x - 64) : x + 64]
            for o in (outputs["160"], outputs["0"])
        ],
        axis=1,
    )
    (OUT / "seams-crop.png").write_bytes(images.encode_png(crop))
    print(f"crops at the tile corner ({x}, {y}), tiled | whole: {OUT / 'seams-crop.png'}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        size, tile, iterations, result, precision = sys.argv[2:7]
        child(int(size), tile, int(iterations), result, precision)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="also a 4096×4096 output (tile auto)")
    parser.add_argument("--only-print", action="store_true", help="only the 4096×4096 output")
    parser.add_argument("--seams", action="store_true", help="a tiled and a whole stylization")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(machine_line(machine()))
    if args.seams:
        seams(OUT, args.precision)
        return 0
    configs = [(512, "0"), (608, "0"), (1024, "0"), (1024, "512"), (2048, "0"), (2048, "512")]
    if args.only_print:
        configs = []
    if args.print or args.only_print:
        configs.append((4096, "auto"))
    rows, whole = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for size, tile in configs:
            r = run(size, tile, args.iterations if size < 4096 else 1, args.precision, Path(tmp))
            if "error" in r:
                rows.append([size, tile, "", "", "", "", "", f"failed: {r['error']}"])
                continue
            if tile == "0":
                whole[size] = r["s_per_iteration"]
            ratio = r["s_per_iteration"] / whole[size] if tile != "0" and size in whole else None
            window = r["tile"] + 2 * r["halo"] if r["tile"] else None
            if size == 4096:
                Path(OUT / "print-4096.png").write_bytes(Path(tmp, "4096-auto.png").read_bytes())
            rows.append(
                [
                    f"{r['shape'][1]}×{r['shape'][0]}",
                    r["tile"] or "whole",
                    window or "",
                    r["tiles"] or 1,
                    f"{r['peak_rss_bytes'] / 2**30:.2f}",
                    f"{r['s_per_iteration']:.2f}",
                    f"{ratio:.2f}" if ratio else "",
                    f"{r['seconds']:.0f}",
                ]
            )
            print(rows[-1], flush=True)
    print(
        table(
            [
                "size",
                "tile",
                "window",
                "tiles",
                "peak RSS GiB",
                "s/iteration",
                "whole ratio",
                "total s",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
