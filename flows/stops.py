"""Graceful stops: the first SIGINT or SIGTERM asks running pairs to stop at their next iteration
(checkpointed, reported `interrupted`); a second one ends the process at once.

Every write is whole or absent (a temporary name then a rename, or one PUT), so ending at once
leaves no half-written file either; what it loses is the report of the run, and the iterations
since each pair's last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from stylecore.errors import StyleError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_asked = threading.Event()
_signal: list[int] = []  # the first signal received, for the exit code and the messages


class Interrupted(StyleError):
    """A pair stopped by a signal before it finished; its checkpoint, if any, is saved."""


def requested() -> bool:
    """Whether a stop was asked (by a signal, or `request`)."""
    return _asked.is_set()


def signal_name() -> str:
    """The first signal's name ('SIGTERM'), or 'a stop request'."""
    return signal.Signals(_signal[0]).name if _signal else "a stop request"


def exit_code() -> int:
    """128 + the first signal's number, as shells report a process a signal ended: 130, 143."""
    return 128 + (_signal[0] if _signal else signal.SIGINT)


def request(signum: int = signal.SIGTERM) -> None:
    """Ask for a graceful stop, as the first signal does."""
    if not _signal:
        _signal.append(signum)
    _asked.set()


def reset() -> None:
    """Forget an earlier stop (a new run in the same process)."""
    _signal.clear()
    _asked.clear()


def check(where: str = "") -> None:
    """Raise Interrupted when a stop was asked: pairs not yet started never start."""
    if requested():
        raise Interrupted(f"interrupted by {signal_name()} before it started{where}")


def _handle(signum: int, frame) -> None:
    if requested():  # the second signal: at once
        # on a line of its own: the signal may have come in the middle of a log line
        print(
            f"\nstylebatch: {signal.Signals(signum).name} again: stopped at once", file=sys.stderr
        )
        sys.stderr.flush()
        os._exit(128 + signum)
    request(signum)  # quietly: the run ends with one line that says what was stopped


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """SIGINT and SIGTERM stop gracefully while inside (in the main thread; elsewhere nothing
    changes); the handlers that were there before come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
