"""The temporary Prefect server of a batch command: a child process started the moment the command
starts, whose API this process then uses as PREFECT_API_URL; kept a while for the next command.

Prefect's own temporary server starts only when the flow's first client asks for it, and that
client first imports the whole server application in this process (~3 s of CPU, and ~1 s more
at exit) only to start it in another. Started here instead, the server boots while TensorFlow,
the manifest and the weights load, and this process never imports the server. Its database,
services (task runs, events, logs, automations) and settings are Prefect's temporary server's,
so the UI shows the same runs. `python -m flows.cli.server` is the child.

Booting it is still ~5 s of CPU, as much as the rest of a one-pair run, so the server stays up
STYLEBATCH_SERVER_KEEP seconds (default 300; 0: it ends with its command) after the last command
that used it, and the next command with the same Prefect settings uses it (a record in
PREFECT_HOME). Each command holds a shared lock on PREFECT_HOME/stylebatch-server.lock while it
runs; the server ends only once it has held the lock exclusively for that long.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from stylecore.errors import StyleError

# What Prefect's SubprocessASGIServer gives its server: no UI, the temporary server's services.
CHILD_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
NONE = "none"  # the child's answer when Prefect's settings name a server or forbid temporary ones
KEEP_SECONDS = 300.0
_child: list[subprocess.Popen] = []
_url: list[str] = []
_lock: list = []  # this command's shared lock: held until the process ends, however it ends
_settings: list[str] = []  # the fingerprint of this command's Prefect settings, as it started


def settings() -> None:
    """The Prefect settings a batch command runs with, unless the user set them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The terminal gets warnings and the progress bar; every log line still reaches the API/UI.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # A temporary server on a loaded 2-core machine can take over Prefect's default 20 s to start.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def keep_seconds() -> float:
    """How long the server outlives the last command that used it (STYLEBATCH_SERVER_KEEP)."""
    value = os.environ.get("STYLEBATCH_SERVER_KEEP", "")
    try:
        return max(0.0, float(value)) if value else KEEP_SECONDS
    except ValueError as exc:
        raise StyleError(
            f"STYLEBATCH_SERVER_KEEP={value!r}: give seconds (0: do not keep)"
        ) from exc


def start_early() -> None:
    """Use the kept server, or start the temporary server's process; neither when
    PREFECT_API_URL names a server (or, when this process has imported Prefect already, its
    settings do)."""
    settings()
    if os.environ.get("PREFECT_API_URL") or _child or _url or _configured():
        return
    keep = keep_seconds()
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    log = _keeping(home) if keep else None
    if keep and log is None:
        keep = 0.0  # an unwritable PREFECT_HOME: not kept (Prefect's own error will say more)
    if keep and (url := _kept(home / "stylebatch-server.json")):
        _url.append(url)
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "flows.cli.server", str(home)],
        stdin=subprocess.DEVNULL if keep else subprocess.PIPE,  # not kept: ends with the command
        stdout=subprocess.PIPE,  # one line: the API's URL, or `NONE`
        stderr=log,  # not kept: this terminal
        env={**os.environ, **CHILD_ENV, "STYLEBATCH_SERVER_KEEP": str(keep)},
        start_new_session=True,  # a Ctrl-C stops the run gracefully, which needs its server
    )
    _child.append(child)
    if not keep:
        atexit.register(stop)


def _configured() -> bool:
    """Whether Prefect, already imported here (a caller's process), has a server or none."""
    if "prefect" not in sys.modules:
        return False  # the child reads the settings: importing Prefect here would wait for it
    from prefect.settings import get_current_settings

    current = get_current_settings()
    return bool(current.api.url) or not current.server.ephemeral.enabled


def _keeping(home: Path):
    """This command's lock and settings, and the log a new kept server writes; None when
    PREFECT_HOME cannot hold them."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        _hold(home / "stylebatch-server.lock")
        _settings.append(_fingerprint())
        return open(home / "stylebatch-server.log", "ab")  # noqa: SIM115  (the child's stderr)
    except OSError:
        _lock.clear()
        return None


def _hold(path: Path) -> None:
    """A shared lock for this process's life; a kept server ending holds it exclusively."""
    lock = open(path, "a")  # noqa: SIM115  (closed by the process's end)
    deadline = time.monotonic() + 10
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            break
        except BlockingIOError:  # a kept server is ending: wait for it, then start another
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    _lock.append(lock)


def _fingerprint() -> str:
    """Whatever the server's settings come from: a kept server serves only the same ones (read
    at the start, before PREFECT_API_URL names the server)."""
    from importlib.metadata import version

    parts = [sys.executable, version("prefect")]
    parts += sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("PREFECT_"))
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    for source in (home / "profiles.toml", *map(Path, ("prefect.toml", ".env", "pyproject.toml"))):
        parts.append(source.read_text(errors="replace") if source.is_file() else "")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _kept(record: Path) -> str | None:
    """The kept server's API URL, when it is alive, answers and has this command's settings."""
    try:
        kept = json.loads(record.read_text())
        os.kill(kept["pid"], 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if kept.get("fingerprint") != _settings[0] or not _healthy(kept["url"]):
        return None
    return kept["url"]


def use() -> None:
    """Point Prefect in this process (and its children) at the early server, if one started;
    call it before Prefect is imported or its settings are read."""
    settings()
    if _child and not _url:
        line = _child[0].stdout.readline().decode().strip()
        if line == NONE:  # a profile names a server or forbids temporary ones: Prefect decides
            return
        if not line.startswith("http"):
            raise StyleError(_failed(f"its process ended with code {_child[0].wait()}"))
        _url.append(line)
    if not _url or os.environ.get("PREFECT_API_URL") == _url[0]:
        return
    os.environ["PREFECT_API_URL"] = _url[0]
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def temporary() -> str | None:
    """The early or kept server's API URL, when this command uses one."""
    return _url[0] if _url else None


def ready() -> None:
    """Wait until the early server answers (Prefect's startup timeout at most); a kept one then
    gets its record, for the next command."""
    if not _url or not _child:
        return
    from prefect.settings import get_current_settings

    deadline = time.monotonic() + get_current_settings().server.ephemeral.startup_timeout_seconds
    while not _healthy(_url[0]):
        if _child[0].poll() is not None:
            raise StyleError(_failed(f"its process ended with code {_child[0].returncode}"))
        if time.monotonic() > deadline:
            raise StyleError(_failed("it did not answer in time"))
        time.sleep(0.05)
    if _lock:
        record = {"url": _url[0], "pid": _child[0].pid, "fingerprint": _settings[0]}
        home = Path(_lock[0].name).parent
        (home / "stylebatch-server.json").write_text(json.dumps(record))


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
            return response.status == 200
    except OSError:  # not listening yet, or gone
        return False


def _failed(why: str) -> str:
    where = "above" if not _lock else f"in {Path(_lock[0].name).parent / 'stylebatch-server.log'}"
    return (
        f"the temporary Prefect server did not start ({why}); its errors are {where}. Set "
        "PREFECT_API_URL to a running server (`prefect server start`) instead"
    )


def stop() -> None:
    """Stop a server that is not kept as Prefect stops its own: SIGTERM, SIGKILL after 5 s."""
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


def serve(home: Path) -> int:
    """The child: say the API's URL on stdout (or `NONE`), then serve until SIGTERM, until the
    command's process ends (not kept) or until no command used it for `keep_seconds`."""
    from prefect.settings import get_current_settings

    current = get_current_settings()
    if current.api.url or not current.server.ephemeral.enabled:
        print(NONE, flush=True)
        return 0
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))  # a free port, bound now: no port race to retry
    url = f"http://127.0.0.1:{listening.getsockname()[1]}/api"
    print(url, flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the command stops reading stdout
    keep = keep_seconds()
    watch = (_end_when_unused, (home, url, keep)) if keep else (_end_with_parent, ())
    threading.Thread(target=watch[0], args=watch[1], daemon=True).start()
    import uvicorn

    app = "prefect.server.api.server:create_app"
    config = uvicorn.Config(app, factory=True, log_level="error", lifespan="on")
    uvicorn.Server(config).run(sockets=[listening])
    return 0


def _end_with_parent() -> None:
    """Shut down gracefully when stdin closes: the command ended, even by SIGKILL."""
    sys.stdin.buffer.read()
    os.kill(os.getpid(), signal.SIGTERM)


def _end_when_unused(home: Path, url: str, seconds: float) -> None:
    """Shut down once no command has held the lock for `seconds`; the record goes first, while
    the lock is held exclusively, so no command finds this server ending."""
    lock = open(home / "stylebatch-server.lock", "a")  # noqa: SIM115  (held until the exit)
    unused_since = None
    while True:
        time.sleep(1)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a command is using it
            unused_since = None
            continue
        unused_since = unused_since or time.monotonic()
        if time.monotonic() - unused_since >= seconds:
            break
        fcntl.flock(lock, fcntl.LOCK_UN)
    record = home / "stylebatch-server.json"
    try:
        if json.loads(record.read_text()).get("url") == url:
            record.unlink()
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1])))
