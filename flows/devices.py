"""The devices model work runs on: one task per GPU at a time, pinned; one on a CPU-only host.

Within a process a queue hands out devices; across processes (several `stylebatch run`s, Dask
workers, workers of a pool on one host) each GPU is also a Prefect global concurrency limit,
`stylebatch-<host>-gpu-<physical index>`, created on first use with `per_device` slots, so the
slots hold everywhere and show on the UI's Concurrency page; a dead holder's slot frees when its
lease lapses. The physical index comes through CUDA_VISIBLE_DEVICES, so two workers pinned to
GPUs 0 and 1 (each seeing its own GPU:0) hold different limits. A CPU-only host keeps the
process's queue alone, as do hosts without a Prefect API.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import socket
import threading
from collections.abc import Iterator

import tensorflow as tf

log = logging.getLogger(__name__)
# A holder renews its slot's lease while it works; a holder that died (a worker killed with its
# machine) frees the slot when the lease runs out: within this many seconds, not Prefect's 300.
SLOT_LEASE_SECONDS = 60  # the least the server accepts


def available() -> list[str]:
    """Logical GPU names, or the CPU when there is none."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in gpus] or ["/device:CPU:0"]


def limit_name(device: str, host: str | None = None, visible: str | None = None) -> str:
    """The global concurrency limit of a device of a host, 'stylebatch-<host>-gpu-3': a GPU by
    its physical index (logical GPU:k is the k-th of CUDA_VISIBLE_DEVICES, when that is set)."""
    kind, _, index = device.rpartition("device:")[2].lower().partition(":")
    listed = visible if visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES", "")
    listed = [v.strip() for v in listed.split(",") if v.strip()]
    if kind == "gpu" and index.isdigit() and int(index) < len(listed):
        index = listed[int(index)]
    where = f"{host or socket.gethostname()}-{kind}-{index}"
    return "stylebatch-" + re.sub(r"[^a-z0-9]+", "-", where.lower()).strip("-")


class DevicePool:
    """Hands out devices to tasks; a task waits while every device is busy."""

    def __init__(self, devices: list[str], per_device: int = 1, shared: bool | None = None):
        self.devices = devices
        self.per_device = per_device
        # across processes too: GPUs (unless told otherwise)
        self.shared = any("GPU" in d.upper() for d in devices) if shared is None else shared
        self._free: queue.Queue[str] = queue.Queue()
        for _ in range(per_device):
            for device in devices:
                self._free.put(device)

    @contextlib.contextmanager
    def acquire(self) -> Iterator[str]:
        """A free device for the duration of the block, and its slot across processes."""
        device = self._free.get()
        held = (
            _slot(limit_name(device), self.per_device) if self.shared else contextlib.nullcontext()
        )
        try:
            with held, tf.device(device):
                yield device
        finally:
            self._free.put(device)


@contextlib.contextmanager
def _slot(name: str, slots: int) -> Iterator[None]:
    """One slot of the global concurrency limit `name` (made with `slots` if missing), or
    nothing when no Prefect API answers."""
    from prefect.concurrency.sync import concurrency

    if not _ensure_limit(name, slots):
        yield
        return
    lease = {"lease_duration": SLOT_LEASE_SECONDS, "raise_on_lease_renewal_failure": False}
    with concurrency(name, occupy=1, strict=True, **lease):  # an API hiccup stops no pair
        yield


_known: dict[tuple[str | None, str], int] = {}  # (API, limit) this process made sure of: slots
_known_lock = threading.Lock()


def _ensure_limit(name: str, slots: int) -> bool:
    """Whether the limit exists with `slots` slots (made or resized now if needed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    key = (get_current_settings().api.url, name)
    with _known_lock:
        if _known.get(key) == slots:
            return True
        try:
            with get_client(sync_client=True) as client:
                try:
                    found = client.read_global_concurrency_limit_by_name(name)
                except ObjectNotFound:
                    limit = GlobalConcurrencyLimitCreate(name=name, limit=slots)
                    client.create_global_concurrency_limit(limit)
                else:
                    if found.limit != slots:
                        change = GlobalConcurrencyLimitUpdate(limit=slots)
                        client.update_global_concurrency_limit(name, change)
        except Exception as exc:  # no API (or it failed): this process's queue still holds
            log.debug("no global concurrency limit %s: %s", name, exc)
            return False
        _known[key] = slots
        return True


_POOL: DevicePool | None = None
_LOCK = threading.Lock()


def pool(per_device: int | None = None) -> DevicePool:
    """The process-wide pool; `per_device` (tasks on each device at once) resizes it."""
    global _POOL
    with _LOCK:
        if _POOL is None or (per_device and per_device != _POOL.per_device):
            _POOL = DevicePool(available(), per_device or 1)
        return _POOL
