"""The temporary Prefect server of a batch command, started in the background as soon as the
command starts, so that it boots while TensorFlow, the manifest and the weights load instead of
after them (`stylebatch run` of one small pair spent ~12 s waiting for it)."""

from __future__ import annotations

import os
import threading

_booting: list[threading.Thread] = []
_failed: list[BaseException] = []


def settings() -> None:
    """The Prefect settings a batch command runs with, unless the user set them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The terminal gets warnings and the progress bar; every log line still reaches the API/UI.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # A temporary server on a loaded 2-core machine can take over Prefect's default 20 s to start.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def start_early() -> None:
    """Start the temporary server in a thread, when no API is configured (a server the user
    runs, or a test's) and temporary servers are allowed."""
    settings()
    from prefect.settings import get_current_settings

    current = get_current_settings()  # read here: a thread does not see a settings context
    if current.api.url or not current.server.ephemeral.enabled or _booting:
        return

    def boot() -> None:
        from prefect.server.api.server import SubprocessASGIServer

        try:
            SubprocessASGIServer().start()  # the instance the flow's client will use
        except Exception as exc:  # the flow's own start tries again and reports it
            _failed.append(exc)

    _booting.append(threading.Thread(target=boot, name="prefect-server", daemon=True))
    _booting[0].start()


def ready() -> None:
    """Wait until the early server (if one is starting) answers."""
    for thread in _booting:
        thread.join()
