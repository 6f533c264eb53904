"""`stylebatch run` without PREFECT_API_URL: its own temporary server (flows/cli/server.py).

The database the temporary server leaves has what the UI shows of the run (the flow run, its task
runs, logs, artifacts and events). A server not kept ends with its command, even one killed; a
kept one serves the next command, lives while a command uses it, and ends when unused.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import noise_image
from PIL import Image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
]
ROOT = Path(__file__).resolve().parent.parent


def write_batch(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for k in range(n):
        rgb = noise_image(40, 56, seed=k).round().astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"c{k}.png")
    Image.fromarray(noise_image(48, 48, seed=99).round().astype(np.uint8)).save(folder / "s.png")
    lines = ["content,style"] + [f"c{k}.png,s.png" for k in range(n)]
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    return folder / "m.csv"


def stylebatch(
    tmp_path: Path, weights: Path, iterations: int, keep: float = 0, name: str = "in"
) -> subprocess.Popen:
    """`stylebatch run` of two pairs as a user runs it, with no Prefect server configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONWARNINGS": "ignore",
        "STYLEBATCH_SERVER_KEEP": str(keep),
    }
    manifest = write_batch(tmp_path / name, 2)
    args = ["run", str(manifest), "-o", str(tmp_path / f"out-{name}"), "--weights", str(weights)]
    args += ["--size", "32", "--iterations", str(iterations), "--quiet"]
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def servers(home: Path) -> list[int]:
    """Pids of temporary-server processes (`python -m flows.cli.server`) of this PREFECT_HOME."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile, or not ours
            continue
        if b"flows.cli.server" in command and f"PREFECT_HOME={home}".encode() in env:
            found.append(int(proc.name))
    return found


def ui_view(home: Path) -> dict:
    """What the UI shows of the latest flow run, read from the temporary server's database."""
    db = sqlite3.connect(home / "prefect.db")
    run_id, state = db.execute(
        "select id, state_name from flow_run order by created desc limit 1"
    ).fetchone()
    tasks = db.execute("select name, state_name from task_run where flow_run_id = ?", (run_id,))
    logs = db.execute("select count(*) from log where flow_run_id = ?", (run_id,)).fetchone()[0]
    artifacts = db.execute("select key from artifact where flow_run_id = ?", (run_id,))
    events = db.execute(
        "select event from events where resource_id like ? or related_resource_ids like ?",
        (f"%{run_id}%", f"%{run_id}%"),
    )
    return {
        "state": state,
        "tasks": sorted(tasks.fetchall()),
        "logs": logs,
        "artifacts": [key for (key,) in artifacts.fetchall()],
        "events": {event for (event,) in events.fetchall()},
    }


def assert_the_ui_shows_the_run(view: dict) -> None:
    """The flow run of two pairs, completed, with its task runs, logs, artifacts and events."""
    assert view["state"] == "Completed"
    names = [name for name, _ in view["tasks"]]
    assert {state for _, state in view["tasks"]} == {"Completed"}
    assert any(n.startswith("features s.png") for n in names), names
    assert sum(n.startswith("row ") for n in names) == 2, names
    assert view["logs"] > 0
    assert {k.split("-out-")[0] for k in view["artifacts"]} >= {
        "stylize-batch-progress",
        "stylize-batch-results",
        "stylize-batch-summary",
    }
    assert {
        "prefect.flow-run.Running",
        "prefect.flow-run.Completed",
        "stylebatch.batch.started",
        "stylebatch.batch.finished",
    } <= view["events"]


def test_the_temporary_server_ends_with_a_killed_command(tmp_path, tiny_weights):
    run = stylebatch(tmp_path, tiny_weights, iterations=100_000)
    home = tmp_path / "prefect-home"
    deadline = time.monotonic() + 300
    while not (home / "prefect.db").exists() or not servers(home):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the temporary server did not start"
        time.sleep(0.1)
    os.kill(run.pid, signal.SIGKILL)  # no exit handler runs: the server sees its stdin close
    run.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while servers(home):
        assert time.monotonic() < deadline, "the temporary server outlived its command"
        time.sleep(0.2)


def test_a_kept_server_serves_the_next_command_then_ends_unused(tmp_path, tiny_weights):
    home = tmp_path / "prefect-home"
    record = home / "stylebatch-server.json"
    first = stylebatch(tmp_path, tiny_weights, iterations=3, keep=5, name="first")
    assert first.wait(timeout=600) == 0, first.communicate()
    assert "2 done, 0 skipped, 0 failed" in first.communicate()[0]
    # A kept server writes the events it received in batches, every few seconds
    deadline = time.monotonic() + 30
    while "stylebatch.batch.finished" not in ui_view(home)["events"]:
        assert time.monotonic() < deadline, ui_view(home)["events"]
        time.sleep(0.5)
    assert_the_ui_shows_the_run(ui_view(home))
    kept = json.loads(record.read_text())
    assert servers(home) == [kept["pid"]]
    # longer than the 5 s kept: the server lives while a command holds the lock
    second = stylebatch(tmp_path, tiny_weights, iterations=3, keep=5, name="second")
    assert second.wait(timeout=600) == 0, second.communicate()
    assert json.loads(record.read_text()) == kept
    db = sqlite3.connect(home / "prefect.db")
    assert db.execute("select count(*) from flow_run").fetchone()[0] == 2
    deadline = time.monotonic() + 60
    while servers(home):
        assert time.monotonic() < deadline, "the kept server did not end once unused"
        time.sleep(0.2)
    assert not record.exists()
