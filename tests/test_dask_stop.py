"""A graceful stop reaches tasks that run in a Dask worker's process, which no signal reaches."""

from __future__ import annotations

import os
import signal
import time

import pytest
from prefect import flow, task

from flows import stops

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_a_stop_asked_in_the_flow_process_reaches_a_task_in_a_dask_worker():
    from prefect_dask import DaskTaskRunner

    @task
    def wait_for_a_stop(seconds: float) -> tuple[str, int]:
        deadline = time.monotonic() + seconds
        while not stops.requested() and time.monotonic() < deadline:
            time.sleep(0.05)
        return stops.signal_name(), os.getpid()

    cluster = {"n_workers": 1, "threads_per_worker": 1, "processes": True}

    @flow(task_runner=DaskTaskRunner(cluster_kwargs=cluster))
    def batch() -> tuple[str, int, float]:
        with stops.reaching_workers():
            future = wait_for_a_stop.submit(60)
            time.sleep(1)
            stops.request(signal.SIGTERM)  # as the first SIGTERM does
            asked = time.monotonic()
            name, pid = future.result()
            return name, pid, time.monotonic() - asked

    try:
        name, pid, seconds = batch()
    finally:
        stops.reset()
    assert pid != os.getpid()  # the task ran in the worker's process
    assert name == "SIGTERM" and seconds < 20  # read within a second of the task's start
