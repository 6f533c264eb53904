"""Clip inputs read through storage: a video file (a local copy for ffmpeg when it is an object)
or a frame sequence (a folder or a glob, in natural order), probed once and read frame by frame."""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from flows import storage, uri
from flows.model import Probe
from stylecore import images, video

CLIP_SUFFIXES = tuple(s for s in video.VIDEO_SUFFIXES if s != ".gif")  # a GIF row stays a still


def is_clip(content: str) -> bool:
    """Whether a manifest's content is a clip: a video file, a folder of frames, or a glob."""
    if any(c in content for c in "*?[") or content.endswith("/"):
        return True
    if posixpath.splitext(content)[1].lower() in CLIP_SUFFIXES:
        return True
    return not uri.is_s3(content) and os.path.isdir(content)


def frame_uris(content: str) -> list[str] | None:
    """A frame sequence's frames in natural order; None for a video file."""
    if not (any(c in content for c in "*?[") or content.endswith("/") or _is_dir(content)):
        return None
    pattern = content if any(c in content for c in "*?[") else uri.join(content, "*")
    found = [u for u in storage.glob(pattern) if video.is_frame(u)]
    return sorted(found, key=video.natural_key)


def _is_dir(content: str) -> bool:
    return not uri.is_s3(content) and os.path.isdir(content)


@contextmanager
def local_copy(where: str, data: bytes | None = None) -> Iterator[str]:
    """A local path to a video file: the file itself, or a temporary copy of an object."""
    if not uri.is_s3(where):
        yield where
        return
    suffix = posixpath.splitext(where)[1]
    with tempfile.TemporaryDirectory(prefix="stylebatch-clip-") as folder:
        path = os.path.join(folder, "clip" + suffix)
        with open(path, "wb") as file:
            file.write(data if data is not None else storage.read_bytes(where))
        yield path


def probe(content: str, max_frames: int | None = None) -> Probe:
    """A clip's hash, shape, frames, rate and audio; ImageError (one line) when it cannot be used."""
    uris = frame_uris(content)
    if uris is None:
        data = storage.read_bytes(content)
        with local_copy(content, data) as path:
            info = video.probe(path, max_frames, name=uri.show(content))
        sha = "sha256:" + hashlib.sha256(data).hexdigest()
    else:
        digest = hashlib.sha256()

        def read(where: str) -> images.Picture:
            data = storage.read_bytes(where)
            digest.update(hashlib.sha256(data).digest())
            return images.decode(data, where)

        info = video.probe_sequence(uris, max_frames, uri.show(content), read)
        sha = "sha256:" + digest.hexdigest()
    h, w = info.shape
    return Probe(sha, (h, w), notes=info.notes, frames=info.frames, fps=info.fps, audio=info.audio)


def read_frames(content: str, start: int = 0) -> Iterator[np.ndarray]:
    """A clip's frames from index `start` on, each (H, W, 3) float32 0…255."""
    uris = frame_uris(content)
    if uris is not None:
        yield from video.read_sequence(uris[start:], decode)
        return
    with local_copy(content) as path:
        for index, frame in enumerate(video.read_frames(path)):
            if index >= start:
                yield frame


def decode(where: str) -> images.Picture:
    return images.decode(storage.read_bytes(where), where)
