"""Scale: a catalogue of 1,000 and 10,000 rows, planned, then run again when every pair is done.

    python benchmarks/scale.py [--rows 1000 10000] [--work DIR] [--json OUT.json]

For each size: N distinct small contents and one style, a CSV manifest, and a tiny network file
(planning reads the network's description, never runs it). Two commands, each in its own process
started from benchmarks/maxrss.py so its peak RSS is its own:

- plan: `stylebatch run --dry-run --json`, which reads the manifest once, hashes each input once
  (prepare.probe_all) and plans as the flow does, writing nothing; the same steps are also timed
  inside a process of their own (`--plan-only`), without the command's start-up (TensorFlow's
  import);
- all skipped: every planned output and sidecar is then put in place, and the real
  `stylebatch run` (a temporary Prefect server, the flow, the report, failed.csv, the artifacts)
  runs again: every pair is skipped. Its clocks (benchmarks/flowdriver.py) split the whole command
  from the flow's body.

Prints one table: rows, plan seconds and peak RSS, all-skipped seconds (command and flow body),
seconds per 1,000 rows, peak RSS, and the report's size.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Child, check, fmt, machine, machine_line, run_child, table  # noqa: E402

CONTENT_PX = 24  # small: the benchmark measures planning and bookkeeping, not decoding big files


def child_env(work: Path) -> dict[str, str]:
    """A private Prefect home and cache: the temporary server starts empty."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "STYLEBATCH_CACHE": str(work / "stylebatch-cache"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONWARNINGS": "ignore",
    }


def tiny_weights(work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from matconvnet import tiny_vgg, write_matconvnet

    path = work / "tiny-vgg19.mat"
    if not path.exists():
        write_matconvnet(path, tiny_vgg("vgg19", channels=(4, 6, 8, 8, 8), fc=False), "beta16")
    return path


def write_catalogue(folder: Path, rows: int) -> Path:
    """`rows` distinct contents (random pixels, so each hashes differently), one style, a CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rows)
    for k in range(rows):
        pixels = rng.integers(0, 256, (CONTENT_PX, CONTENT_PX, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"c{k:05d}.png", compress_level=1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "style.png")
    manifest = folder / "catalogue.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["content", "style"])
        writer.writerows([f"c{k:05d}.png", "style.png"] for k in range(rows))
    return manifest


def fill_outputs(plan: dict) -> int:
    """Put a stand-in image and sidecar at every planned output: each pair is then done."""
    pixel = Path(tempfile.mkstemp(suffix=".png")[1])
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(pixel)
    for job in plan["run"]:
        output = Path(job["output"])
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pixel, output)
        output.with_suffix(".json").write_text("{}\n")
    pixel.unlink()
    return len(plan["run"])


def plan_only(manifest: str, out: str, weights: str) -> int:
    """The dry run's steps, timed one by one in this process: prints one JSON line."""
    import time

    from flows import prepare

    clocks, start = {}, time.perf_counter()
    defaults = prepare.run_options({"weights": weights, "size": 64}, "default")
    parsed = prepare.read_manifest(manifest, defaults)
    clocks["read_s"] = time.perf_counter() - start
    networks = prepare.check_networks(parsed, defaults)
    probes = prepare.probe_all(prepare.inputs(parsed))
    clocks["hash_s"] = time.perf_counter() - start - clocks["read_s"]
    plan = prepare.plan(parsed, probes, out, networks, False)
    clocks["plan_s"] = time.perf_counter() - start
    print(json.dumps({k: round(v, 3) for k, v in clocks.items()} | {"todo": len(plan.todo)}))
    return 0


def measure(work: Path, rows: int) -> dict:
    """Plan, fill, run again: seconds and peak RSS of each command."""
    base = work / f"rows-{rows}"
    shutil.rmtree(base, ignore_errors=True)
    manifest = write_catalogue(base / "in", rows)
    out, env, logs = base / "out", child_env(base), base / "logs"
    logs.mkdir(parents=True)
    common = ["-o", str(out), "--weights", str(tiny_weights(work)), "--size", "64", "--quiet"]
    stylebatch = [sys.executable, "-m", "flows.cli", "run", str(manifest), *common]
    plan_child = run_child([*stylebatch, "--dry-run", "--json"], env, logs / "plan.log")
    check(plan_child, f"the dry run of {rows} rows")
    plan = json.loads(plan_child.log.read_text().strip().splitlines()[-1])
    argv = [sys.executable, __file__, "--plan-only", str(manifest), str(out), common[3]]
    steps = run_child(argv, env, logs / "steps.log")
    check(steps, f"the timed plan of {rows} rows")
    clocks = json.loads(steps.log.read_text().strip().splitlines()[-1])
    filled = fill_outputs(plan)

    flow_clocks = base / "clocks.json"
    driver = [sys.executable, str(ROOT / "benchmarks" / "flowdriver.py"), "run", str(manifest)]
    again = run_child(
        [*driver, *common], env | {"STYLEBATCH_BENCH_TIMES": str(flow_clocks)}, logs / "again.log"
    )
    check(again, f"the all-skipped run of {rows} rows")
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["skipped"] == rows == filled, report["summary"]
    return {
        "rows": rows,
        "plan": _child(plan_child) | {"steps": clocks, "steps_max_rss_mb": steps.max_rss_mb},
        "all_skipped": _child(again) | {"clocks": json.loads(flow_clocks.read_text())},
        "report_bytes": (out / "report.json").stat().st_size,
        "failed_csv_bytes": (out / "failed.csv").stat().st_size,
    }


def _child(child: Child) -> dict:
    return {"seconds": round(child.seconds, 2), "max_rss_mb": round(child.max_rss_mb, 1)}


def print_table(results: list[dict]) -> None:
    headers = [
        "rows",
        "dry run s",
        "its plan s (read, hash, plan)",
        "dry run peak RSS MB",
        "all-skipped run s",
        "its flow body s",
        "run s per 1,000 rows",
        "run peak RSS MB",
        "report.json MB",
    ]
    lines = []
    for r in results:
        again = r["all_skipped"]
        body = again["clocks"].get("flow_body_s")
        steps = r["plan"]["steps"]
        lines.append(
            [
                f"{r['rows']:,}",
                fmt(r["plan"]["seconds"], 1),
                f"{steps['plan_s']:.1f} ({steps['read_s']:.1f}, {steps['hash_s']:.1f}, "
                f"{steps['plan_s'] - steps['read_s'] - steps['hash_s']:.1f})",
                fmt(r["plan"]["max_rss_mb"], 0),
                fmt(again["seconds"], 1),
                fmt(body, 1),
                fmt(again["seconds"] * 1000 / r["rows"], 2),
                fmt(again["max_rss_mb"], 0),
                fmt(r["report_bytes"] / 1e6, 2),
            ]
        )
    print(table(headers, lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--plan-only", nargs=3, metavar=("MANIFEST", "OUT", "WEIGHTS"))
    args = parser.parse_args()
    if args.plan_only:
        return plan_only(*args.plan_only)
    work = args.work or Path(tempfile.mkdtemp(prefix="stylebatch-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(machine_line(machine()))
    results = [measure(work, rows) for rows in args.rows]
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
