"""Graceful stops through the real CLI: SIGTERM stops the pair in progress at its next iteration,
checkpointed, reports it `interrupted` and exits 143 with one line; `rerun` finishes it from its
checkpoint. A second signal ends the process at once, leaving nothing half-written."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import imageio.v3 as iio
import pytest
from test_checkpoints import PROGRESS
from test_hardening_runtime import (
    child_env,
    cli_args,
    finish,
    stylebatch,
    temp_files,
    visible_files_are_whole,
    write_batch,
)

from flows.cli.main import main
from flows.storage import checkpoints

pytestmark = [
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
    pytest.mark.usefixtures("prefect_server"),
]


def signal_at(process, signals: list[signal.Signals], at: int) -> int:
    """Send `signals` to the run's process once its first pair reports iteration `at`, all while
    it is stopped (SIGSTOP … SIGCONT), so none is handled before the last is sent; the iteration
    reported. Two of one number would be handled once: the kernel and Python merge them."""
    assert len(set(signals)) == len(signals), "one of each: the same signal twice counts once"
    for line in process.stderr:
        match = PROGRESS.search(line)
        if match and int(match[1]) >= at:
            process.send_signal(signal.SIGSTOP)
            for sig in signals:
                process.send_signal(sig)
            process.send_signal(signal.SIGCONT)
            return int(match[1])
    raise AssertionError(f"no progress line reached iteration {at}: {finish(process)}")


def test_sigterm_interrupts_the_pair_in_progress_and_rerun_finishes_it(
    tmp_path, tiny_weights, capsys
):
    iterations = 200
    manifest, out = write_batch(tmp_path / "in", 2), tmp_path / "out"
    args = cli_args(manifest, out, tiny_weights, size=64, iterations=iterations)
    args += ["--optimizer", "adam", "--checkpoint-every", "60"]  # no timed save: the stop's own
    args += ["--tolerance", "0"]  # every iteration runs: the counts below are exact
    env = child_env(PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="INFO")
    run = stylebatch(args, env=env)
    reached = signal_at(run, [signal.SIGTERM], iterations // 2)
    code, _, err = finish(run)

    assert code == 143, err
    lines = [line for line in err.splitlines() if line.startswith("stylebatch: ")]
    assert len(lines) == 1 and lines[0].startswith("stylebatch: stopped by SIGTERM: 2 interrupted")
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == {"done": 0, "skipped": 0, "failed": 0, "interrupted": 2}
    assert [p["status"] for p in report["pairs"]] == ["interrupted", "interrupted"]
    # the pair that got the device first was stopped in progress; which row that is, is the
    # task runner's choice (both wait on this host's one-at-a-time device queue)
    waiting = [p for p in report["pairs"] if "before it started" in p["error"]]
    (first,) = [p for p in report["pairs"] if p not in waiting]
    (second,) = waiting
    stopped = int(first["error"].split("iteration ")[1].split(";")[0])
    assert reached <= stopped < iterations and first["error"].endswith("checkpoint saved")
    assert "before it started" in second["error"]  # it waited for the device: never started
    assert len((out / "failed.csv").read_text().splitlines()) == 3  # both rows, runnable again
    assert list(out.glob(".*.checkpoint.npz")) == [
        Path(checkpoints.location(first["output"]))
    ]  # the stop's checkpoint, whole; nothing else hidden or half-written
    assert visible_files_are_whole(out) == [] and temp_files(out) == []

    assert main(["rerun", str(out / "report.json"), "--quiet"]) == 0, capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == {"done": 2, "skipped": 0, "failed": 0}
    sidecar = json.loads(Path(first["output"]).with_suffix(".json").read_text())
    assert sidecar["resumed"] == {"level": 0, "iteration": stopped}  # not one iteration redone
    assert len(sidecar["losses"]["history"]) == iterations - stopped
    assert json.loads(Path(second["output"]).with_suffix(".json").read_text())["resumed"] is None
    assert len(visible_files_are_whole(out)) == 2 and not list(out.glob(".*.checkpoint.npz"))
    assert iio.imread(first["output"]).ndim == 3


def test_a_second_signal_stops_at_once_and_leaves_nothing_half_written(tmp_path, tiny_weights):
    manifest, out = write_batch(tmp_path / "in", 1), tmp_path / "out"
    args = cli_args(manifest, out, tiny_weights, size=64, iterations=300)
    env = child_env(PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="INFO")
    # --tolerance 0: the pair is still running when the signals come (it could converge first)
    run = stylebatch(args + ["--checkpoint-every", "0.2", "--tolerance", "0"], env=env)
    # Both arrive together, in either order, before the graceful stop can reach its next
    # iteration. Sent 50 ms apart instead, the second could come after the report: the whole
    # graceful stop takes 30–50 ms here when the machine is idle.
    signal_at(run, [signal.SIGINT, signal.SIGTERM], 60)
    code, _, err = finish(run)

    lines = [line for line in err.splitlines() if line.startswith("stylebatch: ")]
    assert len(lines) == 1, err
    second, first = re.fullmatch(
        r"stylebatch: (\w+) after (\w+): stopped at once", lines[0]
    ).groups()
    assert {first, second} == {"SIGINT", "SIGTERM"} and code == 128 + signal.Signals[second]
    assert not (out / "report.json").exists()  # stopped at once: no report, no output
    assert visible_files_are_whole(out) == [] and temp_files(out) == []
    for left in out.glob(".*.checkpoint.npz"):  # a checkpoint, if one was written, reads whole
        assert checkpoints.decode(left.read_bytes(), "a key") == "made from other inputs or options"


def test_sigterm_in_the_first_of_two_local_shards_interrupts_the_second_before_it_starts(
    tmp_path, tiny_weights
):
    manifest, out = write_batch(tmp_path / "in", 2), tmp_path / "out"
    args = cli_args(manifest, out, tiny_weights, size=48, iterations=400)  # a line every 40
    args += ["--optimizer", "adam", "--tolerance", "0", "--shards", "2"]  # subflows, in turn
    run = stylebatch(args, env=child_env(PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="INFO"))
    signal_at(run, [signal.SIGTERM], 40)
    code, _, err = finish(run)

    assert code == 143, err
    lines = [line for line in err.splitlines() if line.startswith("stylebatch: ")]
    assert len(lines) == 1 and lines[0].startswith("stylebatch: stopped by SIGTERM: 2 interrupted")
    report = json.loads((out / "report.json").read_text())  # the merged one
    assert [s["rows"] for s in report["shards"]] == [[2], [3]]
    first, second = report["pairs"]
    assert re.fullmatch(r"interrupted by SIGTERM at level 0, iteration \d+; .*", first["error"])
    assert second["status"] == "interrupted" and "before it started" in second["error"]
