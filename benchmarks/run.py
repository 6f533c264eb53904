"""stylebatch's benchmark (issue 5): one command, markdown tables on stdout, every number in JSON.

    .venv/bin/python benchmarks/run.py [--quick] [--weights VGG19.mat] [--sizes 128,256,512]
                                       [--json out.json] [--only per-iteration,quality,…]

Sections: per-iteration (against the floor and a plain TF2 port of the seed recipe), quality
(time to the seed preset's quality), batch (`stylebatch run` against separate processes),
overhead (orchestration per pair, from the batch run), memory (peak RSS at 512 px).
See benchmarks/README.md for what each measures and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

SECTIONS = (
    "per-iteration",
    "user",
    "precision",
    "convergence",
    "start",
    "quality",
    "batch",
    "overhead",
    "memory",
)
HERE = Path(__file__).resolve().parent
TEXT_ARGS = ("sizes", "user_counts", "precision_sizes", "precision_iterations")
# (full, --quick) defaults; any flag given on the command line wins over both.
DEFAULTS = {
    "sizes": ("128,256,512", "64,128"),
    "warmup": (2, 2),
    "repeats": (10, 3),
    "quality_size": (256, 128),
    "seed_iterations": (1000, 100),
    "levels_iterations": (300, 30),
    "every": (5, 5),
    "pairs": (8, 8),
    "batch_px": (256, 64),
    "batch_iterations": (100, 10),
    "memory_size": (512, 512),
    "memory_iterations": (5, 2),
    "user_size": (256, 128),
    "user_counts": ("10,40", "5,15"),
    "user_repeats": (2, 1),
    "precision_sizes": ("256,512", "128"),
    "precision_iterations": ("300,200", "100"),
    "convergence_size": (256, 128),
    "convergence_iterations": (300, 100),
    "start_repeats": (3, 2),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (minutes)")
    p.add_argument("--weights", help="a VGG19 .mat for sections 1 and 5 (default: synthetic)")
    p.add_argument("--only", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    p.add_argument("--json", type=Path, default=HERE / "out" / "results.json")
    p.add_argument("--markdown", type=Path, default=HERE / "out" / "results.md")
    p.add_argument("--workdir", type=Path, help="keep temporary files here (default: a temp dir)")
    p.add_argument(
        "--neural-style",
        metavar="DIR",
        help="a checkout of anishathalye/neural-style: time its own code in section 1 too",
    )
    for name, (full, quick) in DEFAULTS.items():
        kind = str if name in TEXT_ARGS else int
        text = f"default {full}, --quick {quick}"
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)
    args = p.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    for name in TEXT_ARGS:
        setattr(args, name, [int(s) for s in str(getattr(args, name)).split(",") if s])
    args.only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    if args.weights and not Path(args.weights).is_file():
        p.error(f"--weights {args.weights}: no such file")
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stylebatch-bench-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        # Before stylecore or TensorFlow is imported: a private cache, quiet C++ logs.
        os.environ["STYLEBATCH_CACHE"] = str(work / "stylebatch-cache")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        results, text = run_sections(args, work)
    results["total_s"] = time.perf_counter() - start
    text.append(f"_Benchmark wall time: {results['total_s']:.0f} s._")
    for path, body in (
        (args.json, json.dumps(results, indent=1)),
        (args.markdown, "\n\n".join(text)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body + "\n")
    print(
        f"\n_Benchmark wall time: {results['total_s']:.0f} s; wrote {args.json}, {args.markdown}._"
    )
    return 0


def run_sections(args: argparse.Namespace, work: Path) -> tuple[dict, list[str]]:
    """Each selected section in turn; printed as it finishes, collected for the files."""
    import batch_pairs
    import convergence
    import per_iteration
    import precision
    import time_to_quality
    import user_way
    from common import machine, machine_line, synthetic_vgg19

    from stylecore.options import DEFAULTS
    from stylecore.weights import UnknownReleaseWarning

    # The option's default, marked in the table; 0.005 (measured) until it is the default.
    tolerance = DEFAULTS.tolerance or 0.005

    warnings.filterwarnings("ignore", category=UnknownReleaseWarning)
    weights = str(Path(args.weights).resolve()) if args.weights else str(synthetic_vgg19(work))
    label = "VGG19 (--weights)" if args.weights else "synthetic VGG19 (real channel counts)"
    results = {"quick": args.quick, "args": _plain(vars(args)), "weights": weights}
    results["machine"] = machine()
    text: list[str] = []

    def emit(title: str, key: str, body: str, raw) -> None:
        results[key] = raw
        m = machine()
        block = f"## {title}{' (quick)' if args.quick else ''}\n\n{machine_line(m)}\n\n{body}"
        text.append(block)
        print("\n" + block, flush=True)

    if "per-iteration" in args.only:
        raw = per_iteration.measure(
            weights, args.sizes, args.warmup, args.repeats, args.neural_style, work
        )
        emit(f"1. Seconds per iteration — {label}", "per_iteration", per_iteration.render(raw), raw)
    if "user" in args.only:
        counts = (args.user_counts[0], args.user_counts[-1])
        raw = user_way.per_iteration(
            work / "user", weights, args.user_size, counts, args.user_repeats
        )
        body = user_way.render_per_iteration(raw, results.get("per_iteration"))
        emit("1b. Per iteration as a user meets it (whole processes)", "user", body, raw)
    if "precision" in args.only:
        its = dict(zip(args.precision_sizes, args.precision_iterations, strict=False))
        its = {s: its.get(s, args.precision_iterations[-1]) for s in args.precision_sizes}
        raw = precision.measure(args.precision_sizes, its, ("lbfgs", "adam"), work / "images")
        emit("1c. bfloat16 against float32 (vgg16-hed)", "precision", precision.render(raw), raw)
    if "convergence" in args.only:
        raw = convergence.measure(
            args.convergence_size,
            args.convergence_iterations,
            "lbfgs",
            work / "images",
            show=tolerance,
        )
        body = convergence.render(raw, tolerance)
        emit(
            "1d. A varied 8-pair batch, with and without stopping when converged",
            "convergence",
            body,
            raw,
        )
    if "start" in args.only:
        raw = user_way.start(work / "start", "vgg16-hed", 64, 5, args.start_repeats)
        emit("1e. A batch's start: one pair", "start", user_way.render_start(raw), raw)
    if "quality" in args.only:
        raw = time_to_quality.measure(
            args.quality_size, args.seed_iterations, args.levels_iterations, args.every
        )
        emit("2. Time to the seed preset's quality", "quality", time_to_quality.render(raw), raw)
    if {"batch", "overhead"} & set(args.only):
        raw = batch_pairs.batch_vs_separate(
            work / "batch", args.pairs, args.batch_px, args.batch_iterations, "vgg16-hed"
        )
        if "batch" in args.only:
            emit("3. A batch sharing one style", "batch", batch_pairs.render_batch(raw), raw)
        else:
            results["batch"] = raw
        over = batch_pairs.overhead(raw)
        if "overhead" in args.only:
            body = batch_pairs.render_overhead(raw, over)
            emit("4. Orchestration overhead per pair", "overhead", body, over)
    if "memory" in args.only:
        networks = {"vgg16-hed": ["--network", "vgg16-hed"], "VGG19": ["--weights", weights]}
        raw = batch_pairs.peak_memory(
            work / "memory", networks, args.memory_size, args.memory_iterations
        )
        emit("5. Peak memory of one pair", "memory", batch_pairs.render_memory(raw), raw)
    return results, text


def _plain(values: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
