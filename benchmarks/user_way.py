"""Section: what a user meets — per-iteration seconds of whole processes, and a batch's start.

Per iteration: `stylebatch stylize` at two iteration counts, whole processes (imports, weights,
tracing and all), the difference of their wall times divided by the difference of the counts;
the same for the plain TF2 port run as a script (`baseline.py`'s `main`). Round-robin over the
configurations, `repeats` times, medians. Start: one small pair through `stylebatch run` (its
temporary Prefect server, the flow) against the same pair through `stylebatch stylize`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

import phases
from batch_pairs import STYLE, child_env, stylebatch, write_contents, write_manifest
from common import EXAMPLES, ROOT, check, fmt, run_child, square, table

from stylecore import images


def per_iteration(
    work: Path, weights_path: str, size: int, counts: tuple[int, int], repeats: int
) -> dict[str, Any]:
    """Whole-process seconds of each configuration at both counts, and the per-iteration slope."""
    env = child_env(work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    content, style = EXAMPLES / "chelsea.png", EXAMPLES / "swirls.png"
    # The port takes both images square (common.square); stylize is given the same squares, or
    # it would fit chelsea to 256×170 px, two thirds of the port's pixels per iteration
    squares = {p: work / f"square-{size}-{p.name}" for p in (content, style)}
    for source, path in squares.items():
        path.write_bytes(images.encode_png(square(source.name, size).round().astype("uint8")))
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
                    argv = [*stylebatch(), "stylize", str(squares[content]), str(squares[style])]
                    argv += ["-o", str(out)]
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
        f"{result['size']}×{result['size']} px (chelsea × swirls cropped square, as in section 1 "
        "and the port), the section-1 weights; `stylebatch stylize "
        "--optimizer adam --tolerance 0` (every iteration run) and the port as a script, each a "
        f"whole process; per iteration = (wall at {hi} − wall at {lo}) / {hi - lo}, median of "
        f"{result['repeats']} round-robin repeats."
    )
    return table(headers, rows) + "\n\n" + notes


def start(work: Path, network: str, size: int, iterations: int, repeats: int) -> dict[str, Any]:
    """Wall seconds and phases of a one-pair `stylebatch run` against `stylebatch stylize` of that
    pair, alternating, after one warm-up run of each (the Prefect database's migration, the
    weights' conversion). `run` finds the server the warm-up kept; `run, own server` starts and
    stops one (STYLEBATCH_SERVER_KEEP=0), as every run did before servers were kept. All run
    through phases.py, which calls the console script's entry point."""
    env = child_env(work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    contents = write_contents(work / "contents", 1, size)
    manifest = write_manifest(work / "start.csv", contents, STYLE)
    options = ["--network", network, "--size", str(size), "--iterations", str(iterations)]

    def run(r, name):
        out, features = work / f"{name}-{r}", work / f"{name}-{r}-features"
        return ["run", str(manifest), "-o", str(out), "--feature-cache", str(features), "--quiet"]

    def stylize(r, name):
        return ["stylize", str(contents[0]), str(STYLE), "-o", str(work / f"{name}-{r}.png")]

    commands = {
        "run": (run, {}),
        "run, own server": (run, {"STYLEBATCH_SERVER_KEEP": "0"}),
        "stylize": (stylize, {}),
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    split: dict[str, list[dict]] = {name: [] for name in commands}
    loads = []
    for r in ["warmup", *range(repeats)]:
        for name, (argv, more) in commands.items():
            slug = name.replace(", ", "-").replace(" ", "-")
            clocks = work / "logs" / f"start-{slug}-{r}.json"
            driver = [sys.executable, str(ROOT / "benchmarks" / "phases.py")]
            loads.append(round(os.getloadavg()[0], 2))
            child = run_child(
                [*driver, *argv(r, slug), "--quiet", *options],
                env | more | {"PHASES": str(clocks)},
                work / "logs" / f"start-{slug}-{r}.log",
            )
            check(child, f"stylebatch {name} (start)")
            if r != "warmup":
                walls[name].append(child.seconds)
                split[name].append(phases.phases(str(clocks), child.seconds))
    _stop_kept_server(Path(env["PREFECT_HOME"]))
    return {
        "network": network,
        "size": size,
        "iterations": iterations,
        "run_s": walls["run"],
        "own_server_s": walls["run, own server"],
        "stylize_s": walls["stylize"],
        "phases": split,
        "load_average": [min(loads), max(loads)],
    }


def _stop_kept_server(home: Path) -> None:
    """The server the runs kept would outlive the benchmark's folder by its keep time."""
    record = home / "stylebatch-server.json"
    if record.exists():
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.kill(json.loads(record.read_text())["pid"], signal.SIGTERM)


def render_start(result: dict[str, Any]) -> str:
    sty = statistics.median(result["stylize_s"])
    rows = []
    for label, key in (("`stylebatch run`", "run_s"), ("…, own server", "own_server_s")):
        if not result.get(key):
            continue
        run = statistics.median(result[key])
        each = ", ".join(fmt(s, 1) for s in result[key])
        rows.append([label, f"{fmt(run, 1)} ({each})", f"{run / sty:.2f}", fmt(run - sty, 1)])
    rows.append(
        [
            "`stylebatch stylize`",
            f"{fmt(sty, 1)} ({', '.join(fmt(s, 1) for s in result['stylize_s'])})",
        ]
        + ["1", "0"]
    )
    headers = ["one pair", "s (each)", "÷ stylize", "− stylize s"]
    low, high = result.get("load_average", [None, None])
    notes = (
        f"{result['size']} px, {result['iterations']} it., `--network {result['network']}`; whole "
        "commands, alternating, after one warm-up run of each, no PREFECT_API_URL. `stylebatch "
        "run` uses the temporary server the warm-up kept (the default, for "
        "STYLEBATCH_SERVER_KEEP s after the last command); 'own server' starts and stops its own "
        f"(STYLEBATCH_SERVER_KEEP=0). Load average {low}–{high} at the commands' starts. "
        "Target (issue 16): run ÷ stylize ≤ 1.4."
    )
    text = table(headers, rows) + "\n\n" + notes
    if result.get("phases"):
        text += "\n\n" + render_phases(result["phases"])
    return text


def render_phases(split: dict[str, list[dict]]) -> str:
    """Each command's phases side by side, medians over the repeats ('' where it has none)."""
    names = list(dict.fromkeys(phase for runs in split.values() for phase in runs[0]))
    rows = []
    for phase in names:
        row = [phase]
        for runs in split.values():
            values = [r[phase] for r in runs if r.get(phase) is not None]
            row.append(fmt(statistics.median(values), 2) if values else "")
        rows.append(row)
    notes = (
        "Seconds, clocks from benchmarks/phases.py, medians of the repeats; the interpreter's "
        "start and exit is the wall time after the last clock; small steps between phases are in no row. The temporary server boots in its own "
        "process from the command's first line, alongside TensorFlow's import; 'waiting for the "
        "server' is what is left of that boot."
    )
    return table(["phase", *[f"`{name}`" for name in split]], rows) + "\n\n" + notes
