"""Graceful stops: the first SIGINT or SIGTERM asks running pairs to stop at their next iteration
(checkpointed, reported `interrupted`); a second one ends the process at once.

Every write is whole or absent (a temporary name then a rename, or one PUT), so ending at once
leaves no half-written file either; what it loses is the report of the run, and the iterations
since each pair's last checkpoint.

Pairs on a Dask cluster run in its workers' processes, which the signal never reaches: while a
flow run's body is inside `reaching_workers`, a stop is also set in the Dask scheduler's metadata
under the flow run's id, and `requested()` in a worker reads it at most once a second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from stylecore.errors import StyleError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_asked = threading.Event()
_signal: list[int] = []  # the first signal received, for the exit code and the messages
_listeners: list[Callable[[int], None]] = []  # told the signal's number when a stop is asked
_at_once: list[Callable[[], None]] = []  # run just before a second signal ends the process
READ_EVERY = 1.0  # seconds between a Dask worker's reads of its flow run's stop
_read: dict[str, tuple[float, int | None]] = {}  # flow run id: (when last read, its signal)
SCHEDULER_KEY = "stylebatch-stop"  # the scheduler's metadata: {flow run id: signal number}


class Interrupted(StyleError):
    """A pair stopped by a signal before it finished; its checkpoint, if any, is saved."""


def requested() -> bool:
    """Whether a stop was asked (by a signal, or `request`; in a Dask worker, in the flow run's
    own process)."""
    return _asked.is_set() or _asked_in_flow_process() is not None


def signal_name() -> str:
    """The first signal's name ('SIGTERM'), or 'a stop request'."""
    signum = _signal[0] if _signal else _asked_in_flow_process()
    return signal.Signals(signum).name if signum else "a stop request"


def exit_code() -> int:
    """128 + the first signal's number, as shells report a process a signal ended: 130, 143."""
    return 128 + (_signal[0] if _signal else signal.SIGINT)


def request(signum: int = signal.SIGTERM) -> None:
    """Ask for a graceful stop, as the first signal does."""
    if not _signal:
        _signal.append(signum)
    _asked.set()
    for listener in list(_listeners):
        listener(_signal[0])


def before_ending_at_once(clean_up: Callable[[], None]) -> None:
    """Have a second signal run `clean_up` (quick, never raising) before it ends the process."""
    _at_once.append(clean_up)


def reset() -> None:
    """Forget an earlier stop (a new run in the same process)."""
    _signal.clear()
    _asked.clear()


def check(where: str = "") -> None:
    """Raise Interrupted when a stop was asked: pairs not yet started never start."""
    if requested():
        raise Interrupted(f"interrupted by {signal_name()} before it started{where}")


def after_step(step, options, keep: Callable[[bool], bool], where: str = "") -> None:
    """A running image's step callback's end: `keep(stopping)` checkpoints it (when due, or at a
    stop), then a stop asked raises Interrupted saying where. Not after the last step of the
    last level: the output is next, and stopping there would waste it."""
    ends = step.stopped is not None or step.iteration >= options.iterations
    if step.level == options.levels - 1 and ends:
        return
    stop = requested()
    saved = keep(stop)
    if stop:
        kept = "checkpoint saved" if saved else "no checkpoint"
        raise Interrupted(
            f"interrupted by {signal_name()}{where} at level {step.level}, "
            f"iteration {step.iteration}; {kept}"
        )


def _received(signum: int) -> None:
    """The first signal asks for a graceful stop; a second one ends the process at once."""
    if requested():
        name, first = signal.Signals(signum).name, signal_name()
        again = "again" if name == first else f"after {first}"
        # on a line of its own: the signal may have come in the middle of a log line
        print(f"\nstylebatch: {name} {again}: stopped at once", file=sys.stderr)
        sys.stderr.flush()
        for clean_up in _at_once:  # a checkpoint being written: no temporary file left behind
            clean_up()
        os._exit(128 + signum)
    request(signum)  # quietly: the run ends with one line that says what was stopped


def _handle(signum: int, frame) -> None:
    """Installed so that the signals reach the wakeup pipe, not raise KeyboardInterrupt; the
    watcher thread acts on them."""


def _watch(pipe: int) -> None:
    """Act on each SIGINT or SIGTERM as the C-level handler writes it to the wakeup pipe, from
    whichever thread the kernel gave it to. Python runs `_handle` in the main thread only, and
    only once it runs Python again: a main thread waiting on a pair's future (or stopped by
    SIGSTOP when the signals came) would see the stop only after the pair had finished."""
    try:
        while chunk := os.read(pipe, 64):  # empty: the write end was closed on leaving
            for signum in chunk:
                if signum in SIGNALS and signal.getsignal(signum) is _handle:  # not Prefect's
                    _received(signum)
    finally:
        os.close(pipe)


_watching = 0  # depth of `graceful` blocks: the outermost owns the pipe and its watcher


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """SIGINT and SIGTERM stop gracefully while inside (in the main thread; elsewhere nothing
    changes); the handlers that were there before come back after. An inner block puts ours
    back over Prefect's SIGTERM handler, which its flow engine installs."""
    global _watching
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _handle) for s in SIGNALS}
    read = write = wakeup = None
    if not _watching:
        read, write = os.pipe()
        os.set_blocking(write, False)  # the C handler must never block on a full pipe
        wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        threading.Thread(target=_watch, args=(read,), name="stops", daemon=True).start()
    _watching += 1
    try:
        yield
    finally:
        _watching -= 1
        for s, handler in before.items():
            signal.signal(s, handler)
        if write is not None:
            signal.set_wakeup_fd(wakeup)
            os.close(write)  # the watcher reads the end of the pipe, closes it and returns


@contextlib.contextmanager
def reaching_workers() -> Iterator[None]:
    """Inside a flow run on a Dask task runner: a stop asked in this process is set on the
    scheduler too, for the tasks in its workers' processes. Elsewhere nothing changes."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if "prefect_dask" not in sys.modules or type(runner).__name__ != "DaskTaskRunner":
        yield
        return
    where, client = [SCHEDULER_KEY, str(context.flow_run.id)], runner.client

    def tell(signum: int) -> None:
        try:
            client.set_metadata(where, signum)
        except Exception as exc:  # the scheduler is gone: its workers with it
            print(f"stylebatch: the Dask workers were not told to stop: {exc}", file=sys.stderr)

    def publish(signum: int) -> None:  # not in the watcher: a second signal must not wait on it
        threading.Thread(target=tell, args=(signum,), name="stops-dask", daemon=True).start()

    _listeners.append(publish)
    if requested():
        publish(_signal[0] if _signal else signal.SIGTERM)
    try:
        yield
    finally:
        _listeners.remove(publish)


def _asked_in_flow_process() -> int | None:
    """In a Dask worker, inside a task run: the signal that stopped its flow run's process, read
    from the scheduler at most once every READ_EVERY seconds; None anywhere else."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_client, get_worker
    from prefect.runtime import flow_run

    try:
        get_worker()
    except ValueError:  # not in a worker
        return None
    run_id = flow_run.get_id()
    last, signum = _read.get(run_id or "", (0.0, None))
    if not run_id or signum is not None or time.monotonic() - last < READ_EVERY:
        return signum
    try:
        signum = get_client().get_metadata([SCHEDULER_KEY, run_id], default=None)
    except Exception:  # no scheduler: no stop known here
        signum = None
    _read[run_id] = (time.monotonic(), signum)
    return signum
