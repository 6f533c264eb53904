"""Sections 3–5, all in child processes as a user runs them.

3. `stylebatch run` on a manifest of N contents × 1 style against N `stylebatch stylize`
   processes one after another, same options: wall-clock of each.
4. Orchestration overhead per pair, from that run: (flow wall − Σ pairs' core seconds) / pairs.
5. Peak RSS of one `stylebatch stylize` at 512 px.

Every child gets a private PREFECT_HOME and STYLEBATCH_CACHE under the work directory, and no
PREFECT_API_URL, so `stylebatch run` starts its own temporary Prefect server. One small warm-up
run first migrates that Prefect database and converts the weights once, so neither side of the
comparison pays those one-time costs (the warm-up's time is reported on its own).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from common import EXAMPLES, ROOT, check, fmt, run_child, square, table

CONTENTS = (
    "chelsea.png",
    "astronaut.png",
    "coffee.png",
    "rocket.png",
    "brick.png",
    "gravel.png",
    "hubble-deep-field.png",
)
STYLE = EXAMPLES / "swirls.png"


def child_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The default 20 s is too short for a loaded 2-core machine; the wait is still timed.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "STYLEBATCH_CACHE": str(work / "stylebatch-cache"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return env


def stylebatch() -> list[str]:
    """The `stylebatch` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "stylebatch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def write_contents(directory: Path, count: int, size: int) -> list[Path]:
    """`count` square contents at `size` px: the example photos (mirrored when they run out)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rgb = square(CONTENTS[i % len(CONTENTS)], size)
        if i >= len(CONTENTS):
            rgb = rgb[:, ::-1]
        path = directory / f"content{i}.png"
        iio.imwrite(path, np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
        paths.append(path)
    return paths


def write_manifest(path: Path, contents: list[Path], style: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["content", "style"])
        writer.writerows([str(c), str(style)] for c in contents)
    return path


def batch_vs_separate(work: Path, pairs: int, size: int, iterations: int, network: str) -> dict:
    """Sections 3 and 4: one flow run against `pairs` separate processes."""
    env = child_env(work)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    options = ["--network", network, "--size", str(size), "--iterations", str(iterations)]
    contents = write_contents(work / "contents", pairs, size)
    tiny = ["--network", network, "--size", "32", "--iterations", "1"]
    warm = _flow_run(work, "warmup", contents[:1], env, tiny)
    separate = []
    for i, content in enumerate(contents):
        out = work / "separate" / f"out{i}.png"
        out.parent.mkdir(exist_ok=True)
        argv = [*stylebatch(), "stylize", str(content), str(STYLE), "-o", str(out), "--quiet"]
        child = run_child([*argv, *options], env, logs / f"stylize{i}.log")
        check(child, f"stylebatch stylize #{i}")
        separate.append(child)
    batch = _flow_run(work, "batch", contents, env, options)
    return {
        "pairs": pairs,
        "size": size,
        "iterations": iterations,
        "network": network,
        "warmup": {"seconds": warm["child"].seconds},
        "separate": {
            "seconds": [c.seconds for c in separate],
            "total_s": sum(c.seconds for c in separate),
            "max_rss_mb": max(c.max_rss_mb for c in separate),
        },
        "batch": {
            "seconds": batch["child"].seconds,
            "max_rss_mb": batch["child"].max_rss_mb,
            "clocks": batch["clocks"],
            "report": _report_summary(batch["report"]),
        },
    }


def _flow_run(work: Path, name: str, contents, env, options: list[str]) -> dict[str, Any]:
    """`stylebatch run` (through flowdriver, the same entry point) into a fresh output folder."""
    manifest = write_manifest(work / f"{name}.csv", contents, STYLE)
    out, cache = work / f"{name}-out", work / f"{name}-features"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    clocks = work / f"{name}-clocks.json"
    driver = [sys.executable, str(ROOT / "benchmarks" / "flowdriver.py")]
    argv = [*driver, "run", str(manifest), "-o", str(out), "--quiet", "--feature-cache", str(cache)]
    env = env | {"STYLEBATCH_BENCH_TIMES": str(clocks)}
    child = run_child([*argv, *options], env, work / "logs" / f"{name}.log")
    check(child, f"stylebatch run ({name})")
    report = json.loads((out / "report.json").read_text())
    return {"child": child, "clocks": json.loads(clocks.read_text()), "report": report}


def _report_summary(report: dict) -> dict[str, Any]:
    return {
        "started": report["started"],
        "finished": report["finished"],
        "summary": report["summary"],
        "style_features": report["style_features"],
        "pair_seconds": [p.get("seconds") for p in report["pairs"]],
    }


def overhead(result: dict) -> dict[str, Any]:
    """Section 4 from section 3's flow run: (wall − Σ core seconds) / pairs, at three scopes."""
    batch, pairs = result["batch"], result["pairs"]
    pairs_s = sum(s for s in batch["report"]["pair_seconds"] if s is not None)
    # The style's Grams are core work too (the report has their seconds since the flipped-kernel
    # change; older reports lack them and count them as overhead).
    features_s = sum(f.get("seconds", 0.0) for f in batch["report"]["style_features"])
    core = pairs_s + features_s
    walls = {"flow body": batch["clocks"].get("flow_body_s")}
    walls["flow call"] = batch["clocks"].get("flow_call_s")
    walls["whole command"] = batch["seconds"]
    return {
        "core_s": core,
        "pairs_core_s": pairs_s,
        "features_core_s": features_s,
        "per_pair_s": {k: None if w is None else (w - core) / pairs for k, w in walls.items()},
        "wall_s": walls,
    }


def peak_memory(work: Path, networks: dict[str, list[str]], size: int, iterations: int) -> dict:
    """Section 5: max RSS of `stylebatch stylize` at `size` px, per network, and of bare imports."""
    env = child_env(work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    content = write_contents(work / "memory-contents", 1, size)[0]
    rows = {}
    probe = "import tensorflow, stylecore.stylize"
    child = run_child([sys.executable, "-c", probe], env, work / "logs" / "imports.log")
    check(child, "importing TensorFlow")
    rows["imports only (python -c 'import tensorflow, stylecore.stylize')"] = child
    for label, flags in networks.items():
        out = work / "memory" / f"{label}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [*stylebatch(), "stylize", str(content), str(STYLE), "-o", str(out), "--quiet"]
        argv += [*flags, "--size", str(size), "--iterations", str(iterations)]
        log = work / "logs" / f"memory-{label}.log"
        warm = [*argv[: argv.index("--size")], "--size", "32", "--iterations", "1"]
        check(run_child(warm, env, log), f"warm-up ({label})")  # converts the weights once
        child = run_child(argv, env, log)
        check(child, f"stylebatch stylize at {size} px ({label})")
        rows[f"stylize {label}, {size} px, {iterations} it."] = child
    return {
        "size": size,
        "iterations": iterations,
        "rows": {k: {"max_rss_mb": c.max_rss_mb, "seconds": c.seconds} for k, c in rows.items()},
    }


def render_batch(result: dict) -> str:
    sep, batch = result["separate"]["total_s"], result["batch"]["seconds"]
    rows = [
        [
            result["pairs"],
            f"{result['size']} px, {result['iterations']} it.",
            fmt(sep, 1),
            fmt(batch, 1),
            f"{batch / sep:.2f}",
            fmt(result["warmup"]["seconds"], 1),
        ]
    ]
    headers = [
        "pairs",
        "options",
        f"{result['pairs']} × `stylebatch stylize` s",
        "`stylebatch run` s",
        "run ÷ separate",
        "warm-up run s (not counted)",
    ]
    note = (
        f"`--network {result['network']}`, one style (swirls), contents are square crops of the "
        "example photos; wall-clock of whole commands, run one after another. "
        "Target (issue 5): run ÷ separate ≤ 0.5."
    )
    return table(headers, rows) + "\n\n" + note


def render_overhead(result: dict, over: dict) -> str:
    rows = [
        [
            scope,
            fmt(over["wall_s"][scope], 2),
            fmt(over.get("pairs_core_s", over["core_s"]), 2),
            fmt(over.get("features_core_s"), 2),
            fmt(per, 3),
        ]
        for scope, per in over["per_pair_s"].items()
    ]
    headers = [
        "flow wall measured over",
        "wall s",
        "Σ pairs' core s",
        "style features' core s",
        "overhead s/pair",
    ]
    note = (
        f"From the `stylebatch run` above ({result['pairs']} pairs). flow body = "
        "`flows.batch.run_batch`; flow call = the Prefect flow call (engine, API, temporary "
        "server); whole command = process start to exit. Core seconds are report.json's: each "
        "pair's `seconds` and each computed style feature's `seconds` (the Grams, and the "
        "network's first load in the process). Target (issue 5): ≤ 0.3 s per pair (flow body)."
    )
    return table(headers, rows) + "\n\n" + note


def render_memory(result: dict) -> str:
    rows = [
        [name, fmt(r["max_rss_mb"], 0), fmt(r["seconds"], 1)] for name, r in result["rows"].items()
    ]
    note = (
        "Max RSS of each process (wait4's ru_maxrss; started from the small benchmarks/maxrss.py, "
        "so the benchmark's own memory is not counted), after a 32 px warm-up run that converted "
        "the weights into the cache (a first load of a .mat reads the whole file)."
    )
    return table(["process", "max RSS MiB", "wall s"], rows) + "\n\n" + note
