"""GPU benchmark (issue 5): our core at 512² and 1024², batch 1 and 8, TF32 vs bf16 convolutions,
XLA off and on; seconds per 500 iterations and achieved TFLOP/s. Run through benchmarks/gpu.sh.

bf16 and XLA are the core's own options: `precision="bfloat16"` runs the network's convolutions,
ReLUs and pools in bfloat16 and hands float32 features back (Grams, losses, the gradient at the
image and the optimizer stay float32); `xla=True/False` compiles the optimizer's step with XLA
or not, whatever the auto rule would choose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
CEILING_TFLOPS = {"tf32": 400.0, "fp32": 67.0, "bf16": 790.0}  # H200 dense tensor-core peaks


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, few iterations; CPU is fine")
    p.add_argument("--weights", help="a VGG19 .mat (default: synthetic, real channel counts)")
    p.add_argument("--sizes", default=None, help="default 512,1024 (--smoke 32)")
    p.add_argument("--batches", default=None, help="default 1,8 (--smoke 1,2)")
    p.add_argument("--iterations", type=int, default=None, help="timed, default 500 (--smoke 3)")
    p.add_argument("--optimizer", default="lbfgs", choices=("lbfgs", "adam"))
    p.add_argument("--budget-s", type=float, default=360, help="start no config after this")
    p.add_argument("--json", type=Path, default=HERE / "out" / "gpu.json")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in (args.sizes or ("32" if args.smoke else "512,1024")).split(",")]
    args.batches = [int(b) for b in (args.batches or ("1,2" if args.smoke else "1,8")).split(",")]
    args.iterations = args.iterations or (3 if args.smoke else 500)
    return args


def floor_seconds(stylizer, x, xla: bool, repeats: int) -> float:
    """Median seconds of forward to relu5_1 + input gradient through this stylizer's network."""
    import tensorflow as tf

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(stylizer.net(x)["relu5_1"])
        return tape.gradient(total, x)

    step = tf.function(grad, jit_compile=xla)
    step(x).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x).numpy()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


PRECISION = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "auto": "auto"}


def run_config(weights, contents, style, config: dict, args) -> dict:
    """One configuration: `iterations` timed steps after a compiling one; the `defaults` variant
    runs as a user's default run does (precision and XLA auto, convergence stopping on, the
    iterations a ceiling), `tiled` in tiles of half the size."""
    import numpy as np
    import tensorflow as tf

    from stylecore.options import DEFAULTS
    from stylecore.stylize import Stylizer

    size, batch, precision, variant = (config[k] for k in ("size", "batch", "precision", "variant"))
    tf.config.experimental.enable_tensor_float_32_execution(precision != "fp32")
    options = DEFAULTS.replace(
        size=size,
        optimizer=args.optimizer,
        iterations=args.iterations + 1,
        precision=PRECISION[precision],
        xla=config["xla"],
        # The measured 0.005 (benchmarks/RESULTS.md) until it is the option's default.
        tolerance=(DEFAULTS.tolerance or 0.005) if variant == "defaults" else 0.0,
        tile=str(max(size // 2, 32)) if variant == "tiled" else DEFAULTS.tile,
    )
    stylizer = Stylizer(weights, options)
    if "relu5_1" not in stylizer.net.outputs:
        raise SystemExit("gpu.py: the floor needs relu5_1 among the network's outputs")
    grams = stylizer.grams(style, options)
    x = stylizer.net.preprocess(contents[:batch])
    floor = floor_seconds(stylizer, x, bool(config["xla"]), 2 if args.smoke else 20)
    steps = stylizer.steps(contents[:batch], lambda _: [grams], options)
    start = time.perf_counter()
    last = next(steps)  # traces and compiles
    compile_s = time.perf_counter() - start
    count, start = 0, time.perf_counter()
    for step in steps:  # keeps only the newest step's image
        last, count = step, count + 1
    seconds = time.perf_counter() - start
    image = np.clip(np.rint(stylizer.net.deprocess(last.image)), 0, 255).astype(np.uint8)
    return {
        "compile_s": compile_s,
        "seconds": seconds,
        "iterations": count,
        "floor_s": floor,
        "image": image,
        "precision_used": stylizer.net.precision,
    }


def main(argv=None) -> int:
    args = parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="stylebatch-gpu-") as tmp:
        work = args.workdir or Path(tmp)
        os.environ["STYLEBATCH_CACHE"] = str(work / "stylebatch-cache")
        sys.path.insert(0, str(HERE))
        return bench(args, work)


def bench(args, work: Path) -> int:
    import numpy as np
    import tensorflow as tf
    from common import machine, machine_line, square, synthetic_vgg19, table
    from flops import floor_flops, iteration_flops

    from stylecore.options import STYLE_LAYERS
    from stylecore.weights import UnknownReleaseWarning, load_weights

    warnings.filterwarnings("ignore", category=UnknownReleaseWarning)
    tf.get_logger().setLevel("ERROR")  # each config's fresh Stylizer retraces on purpose
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    weights_path = args.weights or str(synthetic_vgg19(work))
    weights = load_weights(weights_path)
    names = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.png", "brick.png", "gravel.png"]
    names += ["hubble-deep-field.png", "chelsea.png"]
    configs = [
        {"size": size, "batch": batch, "precision": precision, "xla": xla, "variant": ""}
        for size in args.sizes
        for batch in args.batches
        for precision in ("tf32", "bf16")
        for xla in (False, True)
    ]
    # Strict float32, the images' reference; a user's default run (precision and XLA auto,
    # convergence stopping, iterations a ceiling) batched; one pair in tiles of half the size.
    first, most = args.sizes[0], max(args.batches)
    configs.insert(0, {"size": first, "batch": 1, "precision": "fp32", "xla": False, "variant": ""})
    configs.append(
        {"size": first, "batch": most, "precision": "auto", "xla": None, "variant": "defaults"}
    )
    configs.append(
        {"size": first, "batch": 1, "precision": "auto", "xla": None, "variant": "tiled"}
    )
    # Cheapest first, so a cut budget keeps most; the defaults and tiled rows after their size.
    configs.sort(key=lambda c: (c["size"] ** 2 * c["batch"], c["variant"] != ""))
    started, rows, images = time.perf_counter(), [], {}
    for config in configs:
        label = dict(config)
        key = tuple(config.values())
        if time.perf_counter() - started > args.budget_s:
            rows.append({**label, "skipped": "time budget"})
            continue
        size, batch = config["size"], config["batch"]
        contents = np.stack([square(n, size) for n in names[:batch]])
        style = square("swirls.png", size)
        r = run_config(weights, contents, style, config, args)
        images[key] = r["image"]
        per_iteration = r["seconds"] / max(r["iterations"], 1)
        per500 = per_iteration * 500 if config["variant"] != "defaults" else r["seconds"]
        flop = iteration_flops(weights, size, size, STYLE_LAYERS) * batch
        rows.append(
            {
                **label,
                "compile_s": r["compile_s"],
                "s_per_500": per500,
                "s_per_pair_500": per500 / batch,
                "iterations": r["iterations"],
                "precision_used": r["precision_used"],
                "tflops": flop / per_iteration / 1e12,
                "floor_s": r["floor_s"],
                "floor_tflops": floor_flops(weights, size, size) * batch / r["floor_s"] / 1e12,
                "ceiling_tflops": CEILING_TFLOPS.get(config["precision"], CEILING_TFLOPS["bf16"]),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    for r in rows:  # bf16 against TF32 with the same XLA setting; strict fp32 against TF32, no XLA
        if "skipped" in r:
            continue
        xla = bool(r["xla"]) if r["precision"] != "fp32" else False
        ref = images.get((r["size"], r["batch"], "tf32", xla, ""))
        own = images[tuple(r[k] for k in ("size", "batch", "precision", "xla", "variant"))]
        r["mad_vs_tf32"] = (
            None
            if ref is None or r["precision"] == "tf32"
            else float(np.mean(np.abs(own.astype(np.float32) - ref.astype(np.float32))))
        )
    m = machine()
    headers = [
        "size",
        "batch",
        "convs",
        "XLA",
        "run",
        "s / 500 it.",
        "s / pair / 500 it.",
        "TFLOP/s (ceiling)",
        "floor ms/it.",
        "floor TFLOP/s",
        "compile s",
        "image Δ vs TF32",
    ]
    body = []
    for r in rows:
        if "skipped" in r:
            body.append(
                [r["size"], r["batch"], r["precision"], r["xla"], r["variant"], "skipped: budget"]
                + [""] * 6
            )
            continue
        body.append(
            [
                f"{r['size']}²",
                r["batch"],
                r["precision"] + (f" ({r['precision_used']})" if r["precision"] == "auto" else ""),
                {None: "auto", True: "on", False: "off"}[r["xla"]],
                {"defaults": f"defaults: stopped at {r['iterations'] + 1}", "tiled": "tiled ½"}.get(
                    r["variant"], "fixed"
                ),
                f"{r['s_per_500']:.2f}",
                f"{r['s_per_pair_500']:.2f}",
                f"{r['tflops']:.3g} ({r['ceiling_tflops']:.0f})",
                f"{r['floor_s'] * 1e3:.2f}",
                f"{r['floor_tflops']:.3g}",
                f"{r['compile_s']:.1f}",
                "—" if r["mad_vs_tf32"] is None else f"{r['mad_vs_tf32']:.2f}",
            ]
        )
    print(f"\n## GPU benchmark{' (smoke)' if args.smoke else ''}\n\n{machine_line(m)}\n")
    print(table(headers, body))
    print(
        f"\n{args.optimizer}, {args.iterations} timed iterations after one compiling step "
        "(tolerance 0); the `defaults` row runs at most that many with the default tolerance, "
        "precision and XLA auto, its s / 500 it. the whole run's seconds; "
        f"weights `{weights_path}`. TFLOP/s counts forward + input gradient through relu5_1 and "
        "the Grams (benchmarks/flops.py). Image Δ: mean |difference| in 0…255 units after "
        f"{args.iterations} iterations (bf16 vs TF32 with the same XLA setting; fp32 vs TF32, "
        "XLA off). Target (issue 5): a 512² pair, 500 iterations, ≤ 2 s when batched."
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": m, "smoke": args.smoke, "rows": rows}, indent=1))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
