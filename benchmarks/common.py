"""What every section shares: the machine, weights, images, timing, tables and child processes."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
VGG19_CHANNELS = (64, 128, 256, 512, 512)  # the real network's, so FLOPs match the real file
# Published, not measured here (issue 5, quoting anishathalye/neural-style on 2 CPU cores).
PUBLISHED_NEURAL_STYLE_256 = 0.63
ISSUE_FLOOR = {128: 0.12, 256: 0.47, 512: 2.1}  # the issue's own measurement, for reference


def machine() -> dict[str, Any]:
    """CPU model, cores, load and versions: printed above every table, kept in the JSON."""
    import tensorflow as tf

    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "git": git_revision(),
    }


def git_revision() -> str:
    """The commit measured, with '+dirty' when the tree has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def machine_line(m: dict[str, Any]) -> str:
    gpus = f", GPUs {', '.join(m['gpus'])}" if m["gpus"] else ""
    return (
        f"_Machine: {m['cpu']}, {m['cores']} cores{gpus}; TensorFlow {m['tensorflow']}, "
        f"Python {m['python']}; load average {m['load_average'][0]} at start; "
        f"commit {m['git']}._"
    )


def synthetic_vgg19(directory: Path) -> Path:
    """A VGG19 .mat, every conv layer to relu5_4, with the real channel counts and random weights
    (the same FLOPs), laid out as the published file is (top-level `normalization`, each layer's
    `weights` its first field), so that anishathalye/neural-style's loader reads it too."""
    sys.path.insert(0, str(ROOT / "tests"))
    import scipy.io
    from matconvnet import _classes, _layer_struct, _normalization, tiny_vgg

    path = directory / "synthetic-vgg19.mat"
    if not path.exists():
        net = tiny_vgg("vgg19", channels=VGG19_CHANNELS, fc=False)
        cells = np.empty((1, len(net.layers)), dtype=object)
        for i, layer in enumerate(net.layers):
            cells[0, i] = _layer_struct(layer, "beta16")  # weights first
        top = {
            "layers": cells,
            "normalization": _normalization(net, "old"),
            "classes": _classes(net),
        }
        scipy.io.savemat(path, top, oned_as="row")
    return path


def square(name: str, size: int) -> np.ndarray:
    """An example image, centre-cropped to a square and resized to size × size, 0…255 float32."""
    from stylecore import images

    rgb = images.composite(images.read_path(EXAMPLES / name))
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return images.resize(rgb[top : top + side, left : left + side], (size, size))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def interleaved(steps: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict:
    """Seconds per call of each step, taken round-robin so background load hits all alike.

    Returns {name: {"median", "min", "max", "samples"}}; warm-up calls (tracing) are dropped.
    """
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if r >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {
        name: {"median": median(s), "min": min(s), "max": max(s), "samples": s}
        for name, s in samples.items()
    }


@dataclass(frozen=True)
class Child:
    """A finished child process: exit code, wall seconds, peak RSS, and where its output went."""

    code: int
    seconds: float
    max_rss_mb: float
    log: Path


def run_child(argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> Child:
    """Run argv to completion, started from the small maxrss.py so its peak RSS is its own."""
    rss = log.with_suffix(".rss.json")
    wrapper = [sys.executable, str(ROOT / "benchmarks" / "maxrss.py"), str(rss)]
    with open(log, "w") as out:
        start = time.perf_counter()
        code = subprocess.run(
            [*wrapper, *argv], env=env, cwd=cwd, stdout=out, stderr=out
        ).returncode
        seconds = time.perf_counter() - start
    max_rss = json.loads(rss.read_text())["max_rss_kib"] / 1024 if rss.exists() else float("nan")
    return Child(code, seconds, max_rss, log)


def check(child: Child, what: str) -> None:
    """Stop with the child's last lines when it failed: a benchmark of a failure means nothing."""
    if child.code != 0:
        tail = "\n".join(child.log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit {child.code}); last lines of {child.log}:\n{tail}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats already formatted by the caller."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(seconds: float | None, digits: int = 3) -> str:
    return "—" if seconds is None else f"{seconds:.{digits}f}"
