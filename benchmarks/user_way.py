"""Section: what a user meets — per-iteration seconds of whole processes, and a batch's start.

Per iteration: `stylebatch stylize` at two iteration counts, whole processes (imports, weights,
tracing and all), the difference of their wall times divided by the difference of the counts;
the same for the plain TF2 port run as a script (`baseline.py`'s `main`). Round-robin over the
configurations, `repeats` times, medians. Start: one small pair through `stylebatch run` (its
temporary Prefect server, the flow) against the same pair through `stylebatch stylize`.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from batch_pairs import STYLE, _flow_run, child_env, stylebatch, write_contents
from common import EXAMPLES, ROOT, check, fmt, run_child, table


def per_iteration(
    work: Path, weights_path: str, size: int, counts: tuple[int, int], repeats: int
) -> dict[str, Any]:
    """Whole-process seconds of each configuration at both counts, and the per-iteration slope."""
    env = child_env(work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    content, style = EXAMPLES / "chelsea.png", EXAMPLES / "swirls.png"
    common = ["--weights", weights_path, "--size", str(size), "--optimizer", "adam"]
    configs = {
        "ours adam fp32": ["--precision", "float32"],
        "ours adam auto": ["--precision", "auto"],
        "seed-port": None,
    }
    walls: dict[str, dict[int, list[float]]] = {c: {n: [] for n in counts} for c in configs}
    for r in range(repeats):
        for name, extra in configs.items():
            for n in counts:
                log = work / "logs" / f"user-{len(walls[name][n])}-{n}-{r}-{hash(name)}.log"
                if extra is None:
                    script = str(ROOT / "benchmarks" / "baseline.py")
                    argv = [sys.executable, script, weights_path, content.name, style.name]
                    argv += [str(size), str(n)]
                else:
                    out = work / "user" / f"out-{n}.png"
                    out.parent.mkdir(exist_ok=True)
                    argv = [*stylebatch(), "stylize", str(content), str(style), "-o", str(out)]
                    argv += [*common, *extra, "--iterations", str(n), "--tolerance", "0"]
                    argv += ["--quiet"]
                child = run_child(argv, env, log)
                check(child, f"{name}, {n} iterations")
                walls[name][n].append(child.seconds)
    lo, hi = counts
    rows = {}
    for name, by_count in walls.items():
        slopes = [(b - a) / (hi - lo) for a, b in zip(by_count[lo], by_count[hi], strict=True)]
        rows[name] = {
            "walls": by_count,
            "per_iteration": statistics.median(slopes),
            "start": statistics.median(by_count[lo]) - lo * statistics.median(slopes),
        }
    return {"size": size, "counts": list(counts), "repeats": repeats, "rows": rows}


def render_per_iteration(result: dict[str, Any], in_process: dict | None) -> str:
    lo, hi = result["counts"]
    port = result["rows"]["seed-port"]["per_iteration"]
    inside = {}
    if in_process:
        row = next((r for r in in_process["rows"] if r["size"] == result["size"]), None)
        if row:
            inside = {
                "ours adam fp32": row["adam_fp32"]["median"],
                "ours adam auto": row["adam"]["median"],
                "seed-port": row["seed_port"]["median"],
            }
    rows = []
    for name, r in result["rows"].items():
        walls = r["walls"]
        own = inside.get(name)
        rows.append(
            [
                name,
                fmt(statistics.median(walls.get(lo) or walls[str(lo)]), 1),
                fmt(statistics.median(walls.get(hi) or walls[str(hi)]), 1),
                fmt(r["per_iteration"]),
                f"{r['per_iteration'] / port:.2f}",
                fmt(own) if own else "—",
                f"{own / inside['seed-port']:.2f}" if own else "—",
            ]
        )
    headers = [
        "",
        f"whole process, {lo} it. s",
        f"whole process, {hi} it. s",
        "per iteration s (difference)",
        "÷ port",
        "in-process s (section 1)",
        "÷ port in-process",
    ]
    notes = (
        f"{result['size']} px, chelsea × swirls, the section-1 weights; `stylebatch stylize "
        "--optimizer adam --tolerance 0` (every iteration run) and the port as a script, each a "
        f"whole process; per iteration = (wall at {hi} − wall at {lo}) / {hi - lo}, median of "
        f"{result['repeats']} round-robin repeats."
    )
    return table(headers, rows) + "\n\n" + notes


def start(work: Path, network: str, size: int, iterations: int, repeats: int) -> dict[str, Any]:
    """Wall seconds of a one-pair `stylebatch run` against `stylebatch stylize` of that pair,
    after one warm-up run (the Prefect database's migration, the weights' conversion)."""
    env = child_env(work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    contents = write_contents(work / "contents", 1, size)
    options = ["--network", network, "--size", str(size), "--iterations", str(iterations)]
    _flow_run(work, "start-warmup", contents, env, options)
    runs, stylizes = [], []
    for r in range(repeats):
        runs.append(_flow_run(work, f"start-{r}", contents, env, options)["child"].seconds)
        out = work / "start-stylize" / "out.png"
        out.parent.mkdir(exist_ok=True)
        argv = [*stylebatch(), "stylize", str(contents[0]), str(STYLE), "-o", str(out), "--quiet"]
        child = run_child([*argv, *options], env, work / "logs" / f"start-stylize-{r}.log")
        check(child, "stylebatch stylize (start)")
        stylizes.append(child.seconds)
    return {
        "network": network,
        "size": size,
        "iterations": iterations,
        "run_s": runs,
        "stylize_s": stylizes,
    }


def render_start(result: dict[str, Any]) -> str:
    run, sty = statistics.median(result["run_s"]), statistics.median(result["stylize_s"])
    rows = [
        [
            f"{result['size']} px, {result['iterations']} it.",
            f"{fmt(run, 1)} ({', '.join(fmt(s, 1) for s in result['run_s'])})",
            f"{fmt(sty, 1)} ({', '.join(fmt(s, 1) for s in result['stylize_s'])})",
            f"{run / sty:.2f}",
            fmt(run - sty, 1),
        ]
    ]
    headers = [
        "one pair",
        "`stylebatch run` s (each)",
        "`stylebatch stylize` s (each)",
        "run ÷ stylize",
        "run − stylize s",
    ]
    notes = (
        f"`--network {result['network']}`; whole commands, alternating, after one warm-up run; "
        "`stylebatch run` starts its own temporary Prefect server (no PREFECT_API_URL). "
        "Target (issue 16): run ÷ stylize ≤ 1.4."
    )
    return table(headers, rows) + "\n\n" + notes
