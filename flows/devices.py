"""The devices model work runs on: one task per GPU at a time, pinned; one on a CPU-only host."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import tensorflow as tf


def available() -> list[str]:
    """Logical GPU names, or the CPU when there is none."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in gpus] or ["/device:CPU:0"]


class DevicePool:
    """Hands out devices to tasks; a task waits while every device is busy."""

    def __init__(self, devices: list[str], per_device: int = 1):
        self.devices = devices
        self.per_device = per_device
        self._free: queue.Queue[str] = queue.Queue()
        for _ in range(per_device):
            for device in devices:
                self._free.put(device)

    @contextlib.contextmanager
    def acquire(self) -> Iterator[str]:
        """A free device for the duration of the block."""
        device = self._free.get()
        try:
            with tf.device(device):
                yield device
        finally:
            self._free.put(device)


_POOL: DevicePool | None = None
_LOCK = threading.Lock()


def pool(per_device: int | None = None) -> DevicePool:
    """The process-wide pool; `per_device` (tasks on each device at once) resizes it."""
    global _POOL
    with _LOCK:
        if _POOL is None or (per_device and per_device != _POOL.per_device):
            _POOL = DevicePool(available(), per_device or 1)
        return _POOL
