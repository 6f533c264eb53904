"""Checkpoints of running pairs: an optimizer's arrays beside the output, under a hidden name.

`.<output name>.checkpoint.npz` sits in the output's folder (or under its S3 prefix), written whole
or not at all like every write here, so a run killed while writing one leaves the previous one. It
holds a key made like the output's (content and style bytes, the options that shape the pixels,
the network's checksum, the output's name): a checkpoint of other inputs or options is ignored,
never resumed from. Publishing the output removes it.

A batch of several jobs optimized in one tensor saves one checkpoint per job (its slice of each
array); it resumes only when every job of the batch has one at the same level and iteration.

A clip's frame is a job whose output is the frame's PNG; its key also holds the digest of what
the frame starts from and is pulled toward (clip.temporal_digest: the previous stylized frame and
the flow), so a checkpoint made after another previous frame is ignored too.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os.path
import posixpath
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from flows import storage
from flows.model import Job

if TYPE_CHECKING:  # annotations only: this module does not import TensorFlow
    from stylecore.options import StyleOptions
    from stylecore.records import Iteration
    from stylecore.stylize import Stylizer

FORMAT = 1  # bumped when the file's layout changes: older checkpoints are then ignored
SUFFIX = ".checkpoint.npz"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saved:
    """A checkpoint's content: the level, its last finished iteration, the optimizer's arrays."""

    level: int
    iteration: int
    arrays: tuple[np.ndarray, ...]


def location(output: str) -> str:
    """Where an output's checkpoint lives: hidden, beside it (`a/.x.png.checkpoint.npz`)."""
    folder, name = (posixpath if "://" in output else os.path).split(output)
    return f"{folder}/.{name}{SUFFIX}" if folder else f".{name}{SUFFIX}"


def key(job: Job, options: dict[str, Any], weights_checksum: str, temporal: str = "") -> str:
    """What a checkpoint must match to be resumed from: the output's identity (`options` is
    StyleOptions.identity() of the options the job runs with; `temporal`, a clip frame's
    clip.temporal_digest)."""
    identity = {
        "format": FORMAT,
        "output": job.output,
        "content": job.content_sha,
        "styles": [[s.sha256, s.weight] for s in job.styles],
        "options": options,
        "weights": weights_checksum,
    }
    if temporal:  # linked frames only: the keys of stills stay as they were
        identity["temporal"] = temporal
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def encode(key_: str, saved: Saved) -> bytes:
    """The .npz bytes of a checkpoint (no pickles: `meta` is a JSON string)."""
    meta = json.dumps({"key": key_, "level": saved.level, "iteration": saved.iteration})
    buffer = io.BytesIO()
    arrays = {f"a{i}": np.asarray(a) for i, a in enumerate(saved.arrays)}
    np.savez(buffer, meta=np.array(meta), **arrays)
    return buffer.getvalue()


def decode(data: bytes, key_: str) -> Saved | str:
    """The checkpoint in `data`, or why it cannot be resumed from (another key, unreadable)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            count = len([n for n in npz.files if n.startswith("a")])
            arrays = tuple(npz[f"a{i}"] for i in range(count))
    except Exception as exc:  # a file we did not write, or a format we no longer read
        return f"unreadable ({type(exc).__name__})"
    if meta.get("key") != key_:
        return "made from other inputs or options"
    return Saved(int(meta["level"]), int(meta["iteration"]), arrays)


def save(uri: str, key_: str, saved: Saved, inside: str | None = None) -> None:
    """Write a checkpoint whole, replacing the previous one."""
    storage.write_bytes(uri, encode(key_, saved), inside=inside)


def load(uri: str, key_: str) -> Saved | None:
    """The checkpoint at `uri` when there is one made for `key_`; None otherwise (said in the
    log when one is there but cannot be used)."""
    try:
        data = storage.read_bytes(uri)
    except storage.NotFoundError:
        return None
    except storage.StorageError as exc:
        log.warning("checkpoint ignored: %s", exc)
        return None
    found = decode(data, key_)
    if isinstance(found, str):
        log.warning("checkpoint %s ignored: %s", uri, found)
        return None
    return found


def remove(uri: str) -> None:
    """Remove a checkpoint; none there, or a store that refuses, is fine (it is only ignored)."""
    with suppress(storage.StorageError):
        storage.delete(uri)


def split(arrays: Sequence[np.ndarray], batch: int) -> list[tuple[np.ndarray, ...]]:
    """Each job's slice of a batch's arrays: those with the batch as first axis are cut, the rest
    (Adam's step count) are shared."""
    cut = [np.ndim(a) > 0 and np.shape(a)[0] == batch for a in arrays]
    return [
        tuple(a[i : i + 1] if c else np.asarray(a) for a, c in zip(arrays, cut, strict=True))
        for i in range(batch)
    ]


def join(parts: Sequence[Saved]) -> Saved | None:
    """One batch's checkpoint from its jobs' (split's inverse); None unless they agree on the
    level, the iteration, the shapes and the shared arrays."""
    first = parts[0]
    if any((p.level, p.iteration) != (first.level, first.iteration) for p in parts):
        return None
    if any(len(p.arrays) != len(first.arrays) for p in parts):
        return None
    arrays = []
    for column in zip(*(p.arrays for p in parts), strict=True):
        if any(a.shape != column[0].shape for a in column):
            return None
        if column[0].ndim == 0:  # shared by the batch (Adam's step count): the same in each
            if any(not np.array_equal(a, column[0]) for a in column):
                return None
            arrays.append(column[0])
        else:
            arrays.append(np.concatenate(column))
    return Saved(first.level, first.iteration, tuple(arrays))


class Checkpointer:
    """One batch's checkpoints: found before it runs, saved every `every` seconds while it runs
    (0: never), removed once its outputs are published."""

    def __init__(self, jobs: Sequence[Job], keys: Sequence[str], every: float) -> None:
        self.uris = [location(job.output) for job in jobs]
        self.roots = [job.root or None for job in jobs]
        self.keys = list(keys)
        self.every = every
        self.since = time.monotonic()
        self.failures = 0

    def resume(self) -> Saved | None:
        """The batch's checkpoint, when each of its jobs has a usable one and they agree."""
        found = [load(uri, k) for uri, k in zip(self.uris, self.keys, strict=True)]
        if any(f is None for f in found):
            return None
        return join([f for f in found if f is not None])

    def due(self) -> bool:
        """Whether `every` seconds went by since the start or the last save."""
        return self.every > 0 and time.monotonic() - self.since >= self.every

    def save(self, saved: Saved) -> bool:
        """Write each job's checkpoint; a failed write (a full disk) is logged, not raised: the
        pair goes on, and the previous checkpoint, whole, stays."""
        parts = split(saved.arrays, len(self.uris))
        try:
            for uri, k, root, arrays in zip(self.uris, self.keys, self.roots, parts, strict=True):
                save(uri, k, Saved(saved.level, saved.iteration, arrays), inside=root)
        except storage.StorageError as exc:
            self.failures += 1
            log.warning("checkpoint not written: %s", exc)
            return False
        finally:
            self.since = time.monotonic()  # the time a save took is not counted against the next
        return True

    def keep(
        self, step: Iteration, options: StyleOptions, stylizer: Stylizer, stopping: bool
    ) -> bool:
        """Save `step` when due, or when the run stops at it (and checkpoints at all): whether it
        was saved. A level that ended early (converged) is saved as finished."""
        if not (self.due() or (stopping and self.every > 0)):
            return False
        ends = step.stopped is not None or step.iteration >= options.iterations
        done = options.iterations if ends else step.iteration
        return self.save(Saved(step.level, done, stylizer.checkpoint_arrays(options, step)))

    def remove(self, index: int) -> None:
        """Remove one job's checkpoint (its output is published)."""
        remove(self.uris[index])
