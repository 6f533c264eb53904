"""The temporary Prefect server of a batch command: a child process started the moment the command
starts, whose API this process then uses as PREFECT_API_URL.

Prefect's own temporary server starts only when the flow's first client asks for it, and that
client first imports the whole server application in this process (~3 s of CPU, and ~1 s more
at exit) only to start it in another. Started here instead, the server boots while TensorFlow,
the manifest and the weights load, and this process never imports the server. Its database,
services (task runs, events, logs, automations) and settings are Prefect's temporary server's,
so the UI shows the same runs. `python -m flows.cli.server` is the child.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from stylecore.errors import StyleError

# What Prefect's SubprocessASGIServer gives its server: no UI, the temporary server's services.
CHILD_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
NONE = "none"  # the child's answer when Prefect's settings name a server or forbid temporary ones
_child: list[subprocess.Popen] = []
_url: list[str] = []


def settings() -> None:
    """The Prefect settings a batch command runs with, unless the user set them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The terminal gets warnings and the progress bar; every log line still reaches the API/UI.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # A temporary server on a loaded 2-core machine can take over Prefect's default 20 s to start.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def start_early() -> None:
    """Start the temporary server's process, unless PREFECT_API_URL names a server (or, when
    this process has imported Prefect already, its settings do)."""
    settings()
    if os.environ.get("PREFECT_API_URL") or _child or _configured():
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "flows.cli.server"],
        stdin=subprocess.PIPE,  # closed when this process ends, however it ends: the child too
        stdout=subprocess.PIPE,  # one line: the API's URL, or `NONE`
        env={**os.environ, **CHILD_ENV},
        start_new_session=True,  # a Ctrl-C stops the run gracefully, which needs its server
    )
    _child.append(child)
    atexit.register(stop)


def _configured() -> bool:
    """Whether Prefect, already imported here (a caller's process), has a server or none."""
    if "prefect" not in sys.modules:
        return False  # the child reads the settings: importing Prefect here would wait for it
    from prefect.settings import get_current_settings

    current = get_current_settings()
    return bool(current.api.url) or not current.server.ephemeral.enabled


def use() -> None:
    """Point Prefect in this process (and its children) at the early server, if one started;
    call it before Prefect is imported or its settings are read."""
    settings()
    if not _child or _url:
        return
    line = _child[0].stdout.readline().decode().strip()
    if line == NONE:  # a profile names a server or forbids temporary ones: Prefect decides
        return
    if not line.startswith("http"):
        raise StyleError(_failed(f"its process ended with code {_child[0].wait()}"))
    _url.append(line)
    os.environ["PREFECT_API_URL"] = line
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def temporary() -> str | None:
    """The early server's API URL, when this command uses one."""
    return _url[0] if _url else None


def ready() -> None:
    """Wait until the early server answers (Prefect's startup timeout at most)."""
    if not _url:
        return
    from prefect.settings import get_current_settings

    deadline = time.monotonic() + get_current_settings().server.ephemeral.startup_timeout_seconds
    while not _healthy(_url[0]):
        if _child[0].poll() is not None:
            raise StyleError(_failed(f"its process ended with code {_child[0].returncode}"))
        if time.monotonic() > deadline:
            raise StyleError(_failed("it did not answer in time"))
        time.sleep(0.05)


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
            return response.status == 200
    except OSError:  # not listening yet
        return False


def _failed(why: str) -> str:
    return (
        f"the temporary Prefect server did not start ({why}); its errors are above. Set "
        "PREFECT_API_URL to a running server (`prefect server start`) instead"
    )


def stop() -> None:
    """Stop the early server as Prefect stops its own: SIGTERM, then SIGKILL after 5 s."""
    for child in _child:
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    _child.clear()


def serve() -> int:
    """The child: say the API's URL on stdout (or `NONE`), then serve until SIGTERM or until the
    command's process ends."""
    from prefect.settings import get_current_settings

    current = get_current_settings()
    if current.api.url or not current.server.ephemeral.enabled:
        print(NONE, flush=True)
        return 0
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))  # a free port, bound now: no port race to retry
    print(f"http://127.0.0.1:{listening.getsockname()[1]}/api", flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the command stops reading stdout
    threading.Thread(target=_end_with_parent, daemon=True).start()
    import uvicorn

    app = "prefect.server.api.server:create_app"
    config = uvicorn.Config(app, factory=True, log_level="error", lifespan="on")
    uvicorn.Server(config).run(sockets=[listening])
    return 0


def _end_with_parent() -> None:
    """Shut down gracefully when stdin closes: the command ended, even by SIGKILL."""
    sys.stdin.buffer.read()
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(serve())
