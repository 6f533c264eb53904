"""`stylebatch` (flows.cli.main:main, the console script's entry point) with clocks around the flow.

    python benchmarks/flowdriver.py run MANIFEST -o OUT [flags]   # same as `stylebatch run …`

Writes {"main_s", "flow_call_s", "flow_body_s"} to $STYLEBATCH_BENCH_TIMES: the whole command,
the Prefect flow call (engine, API, the temporary server if it starts lazily) and the flow's body
(`flows.batch.run_batch`: hashing, style features, the pair tasks, the report). A clock whose
function is missing (the code moved) is left out rather than guessed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time


def _timed(function, times: dict[str, float], key: str):
    @functools.wraps(function)
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times[key] = time.perf_counter() - start

    return call


def main() -> int:
    start = time.perf_counter()
    times: dict[str, float] = {}
    import flows.batch
    import flows.cli.main
    import flows.cli.run

    if hasattr(flows.batch, "run_batch"):  # stylize_batch looks it up at call time
        flows.batch.run_batch = _timed(flows.batch.run_batch, times, "flow_body_s")
    if hasattr(flows.cli.run, "batch_flow"):
        make = flows.cli.run.batch_flow
        flows.cli.run.batch_flow = lambda args: _timed(make(args), times, "flow_call_s")
    try:
        return flows.cli.main.main(sys.argv[1:])
    finally:
        times["main_s"] = time.perf_counter() - start
        with open(os.environ["STYLEBATCH_BENCH_TIMES"], "w") as f:
            json.dump(times, f)


if __name__ == "__main__":
    sys.exit(main())
