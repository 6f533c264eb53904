"""A real Prefect server, the process work pool `stylebatch` and its workers, as subprocesses.

`prefect server start` runs on 127.0.0.1 and a free port with SQLite in a temporary
PREFECT_HOME; workers are `prefect worker start` processes with the project's venv on PATH.
Nothing is patched: the tests talk to them over HTTP and through the `prefect` CLI, as a user
would. Import the fixtures into a test module:

    from prefectserver import pool_server_fixture  # noqa: F401  (the fixture `pool_server`)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent  # the checkout: `prefect deploy` runs here
BIN = Path(sys.executable).parent  # the project's venv: prefect, python
POOL = "stylebatch"
SERVER_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # no 02:00 run in the middle of a test
    "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "1",  # see a dead worker's silence soon
    "PREFECT_UI_ENABLED": "false",
}
WORKER_SETTINGS = {
    "PREFECT_WORKER_QUERY_SECONDS": "1",  # workers poll every second, not every ten
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "2",  # offline three beats (six seconds) after dying
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


@dataclass
class Server:
    """A running `prefect server start`: its API URL and the environment that reaches it."""

    url: str
    home: Path
    process: subprocess.Popen
    workers: list[Worker] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """This process's environment, pointed at this server."""
        return api_env(self.url, self.home)

    def cli(self, *args: str, timeout: float = 300, cwd: Path = ROOT) -> str:
        """Run `prefect ARGS` against this server; its output, or a failure showing it."""
        done = subprocess.run(
            [str(BIN / "prefect"), *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"prefect {' '.join(args)} exited {done.returncode}:\n{output}"
        return output

    def client(self):
        """A synchronous Prefect client of this server."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.url)

    def create_pool(self) -> None:
        """The process work pool `stylebatch` (`prefect work-pool create stylebatch --type process`)."""
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()  # what the CLI puts there
        with self.client() as client:
            client.create_work_pool(
                WorkPoolCreate(name=POOL, type="process", base_job_template=template)
            )

    def start_worker(self, name: str, workdir: Path, limit: int = 1) -> Worker:
        """`prefect worker start` for the pool, one flow run at a time, from a folder of its own."""
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / f"{name}.log"
        command = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name]
        process = subprocess.Popen(
            [*command, "--limit", str(limit)],
            env=self.env | WORKER_SETTINGS,
            cwd=workdir,  # not the checkout: the deployment's pull step must find the code
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(name, process, log)
        self.workers.append(worker)
        return worker

    def wait_online(self, names: set[str], timeout: float = 120) -> None:
        """Until these workers have sent the server a heartbeat."""
        with self.client() as client:
            until(lambda: names <= _online(client), timeout, f"workers {sorted(names)} online")


@dataclass
class Worker:
    """A `prefect worker start` subprocess and its log."""

    name: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker and every process under it, as when its machine dies."""
        tree = _tree(self.process.pid)
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(tree, timeout=10)

    def stop(self) -> None:
        """Ctrl-C, then SIGKILL what is left (a worker may wait on a server that is gone)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        self.kill()


@contextlib.contextmanager
def prefect_server(home: Path, timeout: float = 180, ui: bool = False) -> Iterator[Server]:
    """`prefect server start` on 127.0.0.1 with SQLite under `home` (with its UI when `ui`);
    stops it and its workers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command,
        env=api_env(url, home) | SERVER_SETTINGS | (_ui_settings(url) if ui else {}),
        cwd=home,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(url, home, process)
    try:
        until(lambda: _healthy(url, process, log), timeout, f"prefect server on port {port}")
        yield server
    finally:
        for worker in server.workers:
            worker.stop()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            Worker("server", process, log).kill()


def _ui_settings(url: str) -> dict[str, str]:
    """The UI on, talking to this server's API (it assumes port 4200 otherwise)."""
    return {"PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": url}


def api_env(url: str, home: Path) -> dict[str, str]:
    """This process's environment without its Prefect settings, pointed at a server's API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # workers run the venv's python
        "PREFECT_API_URL": url,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def deploy(server: Server) -> str:
    """Create the pool and deploy deployments/prefect.yaml, as the README says, from the root."""
    server.cli("work-pool", "create", POOL, "--type", "process")
    return server.cli("deploy", "--all", "--prefect-file", "deployments/prefect.yaml", timeout=600)


@pytest.fixture(scope="module", name="pool_server")
def pool_server_fixture(tmp_path_factory) -> Iterator[Server]:
    """A server with the pool `stylebatch`, this checkout's deployments and workers w1, w2."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as server:
        server.create_pool()
        workers = tmp_path_factory.mktemp("workers")
        for name in ("w1", "w2"):  # one flow run at a time each: one per GPU on a GPU host
            server.start_worker(name, workers / name)
        server.cli("deploy", "--all", "--prefect-file", "deployments/prefect.yaml", timeout=600)
        server.wait_online({"w1", "w2"})
        yield server


def run_deployment(server: Server, name: str, params: dict[str, object]) -> UUID:
    """`prefect deployment run NAME --param k=v …`; the new flow run's id."""
    args = [f"{k}={v}" for k, v in params.items()]
    output = server.cli("deployment", "run", name, *[x for a in args for x in ("--param", a)])
    return UUID(re.search(r"UUID: ([0-9a-f-]{36})", output).group(1))


def wait_final(server: Server, flow_run_id: UUID, timeout: float = 240, after_run_count: int = 0):
    """The flow run once it is in a final state (and has run more than `after_run_count` times)."""

    def final():
        run = client.read_flow_run(flow_run_id)
        return run if run.state.is_final() and run.run_count > after_run_count else None

    with server.client() as client:
        return until(final, timeout, f"flow run {flow_run_id} to end")


def until(condition, timeout: float, what: str, every: float = 0.5):
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str, process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(
            f"prefect server exited {process.returncode}:\n{log.read_text()[-3000:]}"
        )
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _online(client) -> set[str]:
    return {w.name for w in client.read_workers_for_work_pool(POOL) if w.status.value == "ONLINE"}


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
