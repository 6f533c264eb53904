"""Clips in a batch: a clip's shots as tasks, frames in order with per-frame resume, then the
frames folder's encoded video (the source's rate and audio), its sidecar and a progress artifact.

A clip's output `NAME.mp4` has its frames under `NAME/` (`000001.png` … each with its `.json`);
a frame is finished when both are there, and is never written again: a killed run resumes at a
shot's first missing frame, warping from the last finished one. Within a frame, the stills'
checkpoints (flows/storage/checkpoints.py) beside the frame's PNG: every `checkpoint_every` seconds
and at a graceful stop, resumed at their level and iteration, removed once the frame is published.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import posixpath
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import devices, outputs, stops, storage, uri
from flows.artifacts import ClipProgress, publish_clip_link
from flows.featurecache import FeatureCache, FlowCache, grams_source
from flows.model import Job
from flows.report import error_text
from flows.storage import checkpoints, clipsource
from flows.tasks import transient
from stylecore import clip, images, opticalflow, video
from stylecore.errors import ImageError, StyleError, cause
from stylecore.opticalflow import FramePair
from stylecore.stylize import (
    Iteration,
    Resume,
    Stylizer,
    level_sizes,
    prepare_content,
    shared_stylizer,
)

STRIP = 3  # frames the report names for the contact sheet's strip
log = logging.getLogger(__name__)


def frame_uri(job: Job, index: int) -> str:
    """Where frame `index` (0-based) of a clip's output goes: NAME/000001.png …"""
    digits = max(6, len(str(job.frames)))
    return uri.join(posixpath.splitext(job.output)[0], f"{index + 1:0{digits}d}.png")


def frame_done(job: Job, index: int) -> bool:
    """A frame is finished when its image and its sidecar are both there (sidecar written last)."""
    return storage.exists(uri.sidecar_of(frame_uri(job, index)))


def plan_shots(job: Job) -> list[tuple[int, int]]:
    """The clip's shots as [start, stop) frame ranges, split at scene cuts."""
    options = job.style_options()
    small = (
        prepare_content(images.Picture(f, None), options.replace(size=64))
        for f in clipsource.read_frames(job.content)
    )
    starts = clip.shots(small)
    return list(zip(starts, [*starts[1:], job.frames], strict=True))


def run_shot(
    job: Job, start: int, stop: int, cache_root: str, on_frame: Callable[[int], None] | None = None
) -> int:
    """Stylize a shot's missing frames in order, each published as it finishes; how many were
    stylized. A failed frame raises one line naming it; the frames before it stay finished."""
    first = next((i for i in range(start, stop) if not frame_done(job, i)), stop)
    if first == stop:
        return 0
    options = job.style_options()
    with devices.pool().acquire() as device:
        stylizer = shared_stylizer(options, device)
        grams = grams_source(FeatureCache(cache_root), job.styles, job.feature_keys, stylizer)
        grams_for = functools.cache(grams(options))  # read from the cache once per shot
        frames = clipsource.read_frames(job.content, first - 1 if first > start else first)
        with _naming(first - 1):
            previous = _previous(job, first, frames, options) if first > start else None
        for index in range(first, stop):
            if stops.requested():  # a graceful stop: between frames, every finished one kept
                raise stops.Interrupted(
                    f"interrupted by {stops.signal_name()} at frame {index + 1} of {job.frames}"
                )
            with _naming(index):
                previous = _frame(job, index, frames, previous, stylizer, grams_for, cache_root)
            if on_frame:
                on_frame(index)
    return stop - first


@contextmanager
def _naming(index: int) -> Iterator[None]:
    """Any error of a frame as one line that names it (storage errors keep their flags)."""
    try:
        yield
    except stops.Interrupted:  # it names its frame, and is no failure of it
        raise
    except StyleError as exc:
        raise exc.reworded(f"frame {index + 1}: {exc}") from None
    except Exception as exc:  # not ours: its type and first line
        raise StyleError(f"frame {index + 1}: {cause(exc)}") from exc


def _frame(job: Job, index: int, frames, previous, stylizer, grams_for, cache_root: str):
    """Frame `index` stylized (tied to `previous`) and published; what the next frame needs."""
    options = job.style_options()
    frame = next(frames, None)
    if frame is None:
        raise ImageError("the clip ended early (was it changed?)")
    content = prepare_content(images.Picture(frame, None), options)
    pair = None
    if previous is not None and options.temporal_weight > 0:
        cache = FlowCache(cache_root)
        pair = FramePair(
            *cache.get_or_compute(previous.content, content, _pair, opticalflow.METHOD)
        )
    temporal = clip.temporal_digest(previous, pair)
    saver = _checkpointer(job, index, options, stylizer.weights.checksum, temporal)
    o = clip.frame_options(options, pair is None)
    resume = _resume(saver.resume(), content.shape[:2], o, index)
    on_step = _watching(saver, stylizer, o, f"frame {index + 1} of {job.frames}")
    result = clip.stylize_frame(
        frame, grams_for, options, stylizer, previous, pair, on_step, resume=resume
    )
    _publish_frame(job, index, result, pair is not None, resume)
    saver.remove(0)  # published: the checkpoint has served
    return clip.Previous(content, result.rgb.astype(np.float32))


def _checkpointer(
    job: Job, index: int, options, checksum: str, temporal: str
) -> checkpoints.Checkpointer:
    """A frame's checkpoint: beside its PNG, keyed like it and by its temporal inputs."""
    frame_job = dataclasses.replace(job, output=frame_uri(job, index))
    key = checkpoints.key(frame_job, options.identity(), checksum, temporal)
    return checkpoints.Checkpointer([frame_job], [key], options.checkpoint_every)


def _resume(saved: checkpoints.Saved | None, shape, options, index: int) -> Resume | None:
    """Where a frame continues: its checkpoint when its image has the shape of its level (the
    key rules out other inputs and options; this, a file from a version that shaped levels
    otherwise)."""
    if saved is None:
        return None
    resume = Resume(saved.level, saved.iteration, saved.arrays)
    if resume.fits(shape, level_sizes(options)):
        log.info(
            "frame %d: resuming at level %d, iteration %d", index + 1, saved.level, saved.iteration
        )
        return resume
    log.warning("frame %d: checkpoint ignored: it does not fit level %d", index + 1, saved.level)
    return None


def _watching(
    saver: checkpoints.Checkpointer, stylizer: Stylizer, options, where: str
) -> Callable[[Iteration], None]:
    """A frame's step callback: checkpoint every options.checkpoint_every seconds, and stop at
    this iteration (checkpointed) when a stop was asked."""

    def on_step(step: Iteration) -> None:
        keep = lambda stop: saver.keep(step, options, stylizer, stop)  # noqa: E731
        stops.after_step(step, options, keep, f" in {where}")

    return on_step


def _pair(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pair = opticalflow.frame_pair(previous, current)
    return pair.backward, pair.reliability


def _previous(job: Job, first: int, frames: Iterator[np.ndarray], options) -> clip.Previous:
    """The last finished frame before `first`: its content and its stylized pixels, read back."""
    content = prepare_content(images.Picture(next(frames), None), options)
    stylized = clipsource.decode(frame_uri(job, first - 1)).rgb
    return clip.Previous(content, stylized)


def _publish_frame(job: Job, index: int, result, linked: bool, resume: Resume | None) -> None:
    """A frame's PNG, then its sidecar (losses, scores, time, where it resumed): written once."""
    where = frame_uri(job, index)
    record = {
        "frame": index + 1,
        "linked": linked,  # started from the previous frame warped, with the temporal loss
        "iterations": len(result.history),  # by this run: after `resumed`'s iteration, if any
        "seconds": round(result.seconds, 3),
        "losses": result.history[-1] if result.history else {},
        "quality": result.quality,
        "resumed": None,
    }
    if resume is not None:
        record["resumed"] = {"level": resume.level, "iteration": resume.iteration}
        record["notes"] = [f"resumed at level {resume.level}, iteration {resume.iteration}"]
    png = images.encode_png(result.rgb)
    inside = job.root or None
    outputs.publish(where, png, uri.sidecar_of(where), outputs.dumps(record), inside)


def finish(
    job: Job, weights, notes: list[str], force: bool, shots: list[tuple[int, int]]
) -> tuple[str, dict]:
    """Encode the finished frames (the source's rate and audio) and write the clip's sidecar:
    ('done' | 'skipped', the sidecar). Every frame must be finished."""
    missing = next((i for i in range(job.frames) if not frame_done(job, i)), None)
    if missing is not None:
        raise StyleError(f"frame {missing + 1} of {job.frames} is not finished")
    records = [
        json.loads(storage.read_bytes(uri.sidecar_of(frame_uri(job, i)))) for i in range(job.frames)
    ]
    data = _encoded(job)
    document = _sidecar(job, weights, records, notes)
    document["shots"] = [[a + 1, b] for a, b in shots]  # first and last frame of each, 1-based
    document["output_sha256"] = outputs.sha256(data)
    body, inside = outputs.dumps(document), job.root or None
    if force:
        storage.write_bytes(job.output, data, inside=inside)
        storage.write_bytes(job.sidecar, body, inside=inside)
        return "done", document
    published = outputs.publish(job.output, data, job.sidecar, body, inside)
    return ("done" if published else "skipped"), document


def _encoded(job: Job) -> bytes:
    """The frames as one video file's bytes, encoded in a temporary folder."""
    suffix = posixpath.splitext(job.output)[1].lower() or ".mp4"
    frames = (
        _at_source_size(job, clipsource.decode(frame_uri(job, i)).rgb) for i in range(job.frames)
    )
    with tempfile.TemporaryDirectory(prefix="stylebatch-encode-") as folder:
        target = os.path.join(folder, "clip" + suffix)
        if job.audio and clipsource.frame_uris(job.content) is None:
            with clipsource.local_copy(job.content) as source:
                video.encode(frames, target, job.fps, audio_from=source)
        else:
            video.encode(frames, target, job.fps)
        with open(target, "rb") as file:
            return file.read()


def _at_source_size(job: Job, rgb: np.ndarray) -> np.ndarray:
    """A stylized frame (working size) at the source clip's size, uint8."""
    if tuple(job.source_shape) not in ((0, 0), rgb.shape[:2]):
        rgb = images.resize(rgb, tuple(job.source_shape))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _sidecar(job: Job, weights, records: list[dict], notes: list[str]) -> dict:
    options = job.style_options()
    return {
        "row": job.row,
        "content": {"uri": job.content, "sha256": job.content_sha},
        "styles": [{"uri": s.uri, "sha256": s.sha256, "weight": s.weight} for s in job.styles],
        "output": job.output,
        "frames_folder": posixpath.splitext(job.output)[0],
        "frames": job.frames,
        "fps": job.fps,
        "audio": job.audio,
        "size": list(job.shape),  # the frames' (H, W); the encoded clip is the source's
        "video_size": list(job.source_shape),
        "flow": opticalflow.METHOD,
        "options": options.to_dict(),
        "network": outputs.network_info(weights),
        "per_frame": records,  # each frame's losses, scores, iterations and seconds
        "seconds": round(sum(r["seconds"] for r in records), 3),
        "notes": [
            *notes,
            *(f"frame {r['frame']}: {n}" for r in records for n in r.get("notes", [])),
        ],
        "versions": outputs.versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def strip(job: Job) -> list[str]:
    """Frames for the contact sheet's strip: first, middle, last."""
    picks = sorted({0, job.frames // 2, job.frames - 1})[:STRIP]
    return [frame_uri(job, i) for i in picks]


def clear_frames(job: Job) -> None:
    """Forget a clip's finished frames (their sidecars go first: a frame without one is redone)."""
    for index in range(job.frames):
        for where in (uri.sidecar_of(frame_uri(job, index)), frame_uri(job, index)):
            if storage.exists(where):
                storage.delete(where)


def frames_done(job: Job) -> int:
    """How many of a clip's frames are finished."""
    return sum(frame_done(job, i) for i in range(job.frames))


def run_clip(job: Job, cache_root: str, force: bool, on_frame: Callable[[int], None]) -> dict:
    """A whole clip in this process, shot after shot (the CLI's `stylize`): its report line."""
    started = time.perf_counter()
    shots = plan_shots(job)
    for start, stop in shots:
        run_shot(job, start, stop, cache_root, on_frame)
    weights = shared_stylizer(job.style_options()).weights
    status, document = finish(job, weights, list(job.notes), force, shots)
    return outcome(job, status, time.perf_counter() - started, document)


def outcome(
    job: Job, status: str, seconds: float, document: dict | None = None, error=None
) -> dict:
    """A clip's report line: its outcome plus frames done/total and the strip's frames."""
    notes = document["notes"] if document else list(job.notes)
    line = job.outcome(status, error, seconds=round(seconds, 3), notes=notes).to_dict()
    line["frames"] = {"done": frames_done(job), "total": job.frames}
    line["strip"] = strip(job)
    if document:
        line["losses"] = document["per_frame"][-1]["losses"]
        scores = [r["quality"] for r in document["per_frame"] if r.get("quality")]
        if scores:  # the frames' mean: a clip whose style barely moved is flagged weak too
            line["quality"] = {
                k: round(float(np.mean([q[k] for q in scores])), 6) for k in scores[0]
            }
    return line


# --- the flow's tasks ---------------------------------------------------------------------------


@task(name="clip-shots", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=transient, task_run_name="shots of {label}")  # fmt: skip
def shots_task(job: Job, label: str) -> list[tuple[int, int]]:
    """A clip's shots, split at scene cuts."""
    return plan_shots(job)


@task(name="stylize-shot", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5,
      retry_condition_fn=transient, task_run_name="{label}")  # fmt: skip
def shot_task(job: Job, start: int, stop: int, cache_root: str, label: str) -> int:
    """One shot's missing frames, in order."""
    progress = _PROGRESS.get(job.output)
    return run_shot(job, start, stop, cache_root, progress.advance if progress else None)


@task(name="encode-clip", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=transient, task_run_name="encode {label}")  # fmt: skip
def finish_task(job: Job, force: bool, shots: list, seconds: float, label: str) -> dict:
    """The finished frames encoded, the clip's sidecar; its report line."""
    weights = shared_stylizer(job.style_options()).weights
    status, document = finish(job, weights, list(job.notes), force, shots)
    publish_clip_link(job.output, job.label, job.frames)
    get_run_logger().info("row %d %s: %s (%d frames)", job.row, status, job.output, job.frames)
    return outcome(job, status, seconds, document)


_PROGRESS: dict[str, ClipProgress] = {}  # by output: the shots of a clip share one artifact


def stylize_clips(jobs: list[Job], cache_root: str, force: bool) -> Iterator[dict]:
    """Every clip's shots as parallel tasks (frames within a shot in order), then each clip's
    encoding; yields each clip's report line. A failed frame fails its clip; its other shots
    still finish."""
    started = time.perf_counter()
    for job in jobs if force else []:  # --force redoes a clip: its finished frames too
        clear_frames(job)
    if stops.requested():  # stopped before the clips began: none starts
        for job in jobs:
            yield outcome(job, "interrupted", 0.0, error=f"interrupted by {stops.signal_name()}")
        return
    planned = {job.output: shots_task.submit(job, _label(job)) for job in jobs}
    shots: dict[str, list[tuple[int, int]]] = {}
    running: dict[str, list] = {}
    for job in jobs:
        _PROGRESS[job.output] = ClipProgress(job.output, job.label, job.frames, frames_done(job))
        try:
            shots[job.output] = planned[job.output].result()
        except Exception as exc:
            running[job.output] = [exc]
            continue
        running[job.output] = [
            shot_task.submit(job, a, b, cache_root, f"{_label(job)} frames {a + 1}–{b}")
            for a, b in shots[job.output]
        ]
    for job in jobs:
        error = next(filter(None, [_error(f) for f in running[job.output]]), None)
        _PROGRESS.pop(job.output, None)
        seconds = time.perf_counter() - started
        if error and stops.requested():  # a rerun resumes the clip at its first missing frame
            yield outcome(job, "interrupted", time.perf_counter() - started, error=error)
            continue
        try:
            if error:
                raise StyleError(error)
            cuts = shots[job.output]
            yield finish_task.submit(job, force, cuts, seconds, _label(job)).result()
        except Exception as exc:
            error = f"content '{job.content}': {error_text(exc)}"
            yield outcome(job, "failed", seconds, error=error)


def _error(future) -> str | None:
    """A shot's one-line error, or None when it finished."""
    if isinstance(future, BaseException):
        return error_text(future)
    try:
        future.result()
    except Exception as exc:
        return error_text(exc)
    return None


def _label(job: Job) -> str:
    return f"row {job.row}: {job.label}"
