"""`stylebatch` (flows.cli.main:main, called as the console script calls it) with clocks on its
phases, for a one-pair `run` or a `stylize`.

    PHASES=clocks.json python benchmarks/phases.py run MANIFEST -o OUT [flags]

Each module below is timed as it is imported, and the functions named are wrapped as the module
loads (an import hook, so the import order is the command's own). `phases` turns the clocks and
the process's wall time into one row per phase. A function that moved is left out, not guessed.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before anything else: the interpreter's own start is outside

import atexit  # noqa: E402
import functools  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

WRAP = {
    "flows.cli.main": ["main"],
    "flows.cli.server": ["use", "ready", "stop"],
    "flows.cli.run": ["run", "precheck"],
    "flows.batch": ["run_batch", "_features", "_stylize"],
    "flows.report": ["ending"],
    "flows.cli.single": ["stylize_command"],
    "stylecore.stylize": ["shared_stylizer", "stylize"],
}
TIMED_IMPORTS = {"flows.cli.run", "flows.cli.single", "flows.batch"}
clocks: dict[str, list[float]] = {}  # name → [start, end], seconds since T0; the first call's


def _clocked(function, name: str):
    @functools.wraps(function)
    def call(*args, **kwargs):
        start = time.perf_counter() - T0
        try:
            return function(*args, **kwargs)
        finally:
            clocks.setdefault(name, [start, time.perf_counter() - T0])

    return call


class _Hook(importlib.abc.MetaPathFinder):
    """Times the modules above as they load and wraps their functions."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in WRAP and fullname not in TIMED_IMPORTS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader.exec_module = self._timed(spec.loader.exec_module, fullname)
        return spec

    @staticmethod
    def _timed(exec_module, fullname: str):
        def run(module):
            start = time.perf_counter() - T0
            exec_module(module)
            clocks[f"import {fullname}"] = [start, time.perf_counter() - T0]
            for attr in WRAP.get(fullname, []):
                if hasattr(module, attr):
                    setattr(module, attr, _clocked(getattr(module, attr), f"{fullname}.{attr}"))
            if fullname == "flows.cli.run" and hasattr(module, "batch_flow"):
                make = module.batch_flow
                module.batch_flow = lambda args: _clocked(make(args), "flow call")

        return run


def _write() -> None:
    clocks.setdefault("exit handlers", [time.perf_counter() - T0] * 2)
    with open(os.environ["PHASES"], "w") as f:
        json.dump(clocks, f)


def _span(c: dict, a: tuple[str, int], b: tuple[str, int]) -> float | None:
    """Seconds from clock a's start (0) or end (1) to clock b's."""
    if a[0] in c and b[0] in c:
        return c[b[0]][b[1]] - c[a[0]][a[1]]
    return None


RUN_PHASES = {  # phase → (from, to): a clock's start (0) or end (1)
    "imports (TensorFlow, the CLI)": (("flows.cli.main.main", 0), ("flows.cli.run.run", 0)),
    "manifest precheck": (("flows.cli.run.precheck", 0), ("flows.cli.run.precheck", 1)),
    "server's URL, Prefect's import": (("flows.cli.run.precheck", 1), ("import flows.batch", 1)),
    "waiting for the server": (("flows.cli.server.ready", 0), ("flows.cli.server.ready", 1)),
    "flow engine, before the body": (("flow call", 0), ("flows.batch.run_batch", 0)),
    "body: inputs, style features": (("flows.batch.run_batch", 0), ("flows.batch._stylize", 0)),
    "body: the pair": (("flows.batch._stylize", 0), ("flows.batch._stylize", 1)),
    "body: report, sheet, artifacts": (("flows.batch._stylize", 1), ("flows.batch.run_batch", 1)),
    "flow engine, after the body": (("flows.batch.run_batch", 1), ("flow call", 1)),
    "summary, exit handlers (server stop)": (("flow call", 1), ("exit handlers", 1)),
}
STYLIZE_PHASES = {
    "imports (TensorFlow, the CLI)": (
        ("flows.cli.main.main", 0),
        ("flows.cli.single.stylize_command", 0),
    ),
    "weights, network": (
        ("stylecore.stylize.shared_stylizer", 0),
        ("stylecore.stylize.shared_stylizer", 1),
    ),
    "the pair (style features, iterations)": (
        ("stylecore.stylize.stylize", 0),
        ("stylecore.stylize.stylize", 1),
    ),
    "output, sidecar, exit handlers": (("stylecore.stylize.stylize", 1), ("exit handlers", 1)),
}


def phases(clocks_path: str, wall: float) -> dict[str, float | None]:
    """One command's phases in seconds; the rest of `wall` is the interpreter's start and exit."""
    with open(clocks_path) as f:
        c = json.load(f)
    table = RUN_PHASES if "flows.cli.run.run" in c else STYLIZE_PHASES
    out = {name: _span(c, a, b) for name, (a, b) in table.items()}
    out["interpreter start, exit"] = wall - c["exit handlers"][1]
    out["total (wall)"] = wall
    return out


if __name__ == "__main__":
    sys.meta_path.insert(0, _Hook())
    atexit.register(_write)  # registered first, so it runs last …
    import flows.cli.main

    if hasattr(flows.cli.main, "_end_at_once"):  # … unless the command ends at once: then here
        end = flows.cli.main._end_at_once
        flows.cli.main._end_at_once = lambda *a: (_write(), end(*a))
    sys.argv = ["stylebatch", *sys.argv[1:]]
    sys.exit(flows.cli.main.main())
