"""A shot of a clip stylized frame by frame, each tied to the one before (Ruder et al. 2016).

Frame t starts from the stylized frame t−1 warped by the optical flow between the content frames
and is pulled toward it (options.temporal_weight) where the flow is reliable; it then needs fewer
iterations (options.frame_iterations). With temporal_weight 0, every frame is stylized on its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from stylecore import images, opticalflow
from stylecore.opticalflow import FramePair
from stylecore.options import StyleOptions
from stylecore.stylize import (
    GramsFor,
    Iteration,
    Result,
    Resume,
    Stylizer,
    Temporal,
    prepare_content,
    stylize_with,
)

SCENE_CUT = 0.1  # opticalflow.scene_change above which a frame opens a new shot
PairFor = Callable[[int, np.ndarray, np.ndarray], FramePair]  # (index, previous, current) → pair


@dataclass(frozen=True)
class Previous:
    """The frame before a shot's next one: its content and its stylized pixels (H, W, 3) 0…255 at
    the working size. A resumed shot starts from its last finished frame."""

    content: np.ndarray
    stylized: np.ndarray


def computed_pair(index: int, previous: np.ndarray, current: np.ndarray) -> FramePair:
    """The flow between two working-size content frames, computed (no cache)."""
    return opticalflow.frame_pair(previous, current)


def frame_options(options: StyleOptions, first: bool) -> StyleOptions:
    """A frame's options: after a shot's first frame, frame_iterations when set (never more than
    `iterations`: a tied frame needs fewer, not more, than one on its own)."""
    if first or options.temporal_weight == 0 or options.frame_iterations is None:
        return options
    return options.replace(iterations=min(options.frame_iterations, options.iterations))


def stylize_frame(
    frame: np.ndarray,
    grams_for: GramsFor,
    options: StyleOptions,
    stylizer: Stylizer,
    previous: Previous | None,
    pair: FramePair | None = None,
    on_step: Callable[[Iteration], None] | None = None,
    optimize=None,
    resume: Resume | None = None,
) -> Result:
    """One frame (H, W, 3) 0…255: on its own when it opens a shot (or temporal_weight is 0), else
    started from and pulled toward the previous stylized frame warped onto it. `optimize`
    (default stylize.stylize_with's shape) lets a caller add its own handling (out of memory);
    `resume` continues the frame from a checkpoint made with the same `previous` and `pair`."""
    optimize = optimize or stylize_with
    picture = images.Picture(frame, None)
    linked = previous is not None and options.temporal_weight > 0
    o = frame_options(options, not linked)
    if not linked:
        return optimize(picture, grams_for, o, stylizer, None, on_step, resume=resume)
    warped = opticalflow.warp(previous.stylized.astype(np.float32), pair.backward)
    # Where the flow is unreliable (uncovered background, boundaries) start from the content: a
    # warped start there smeared a moving object into a trail, which the temporal loss then kept.
    c = pair.reliability[..., None]
    start = c * warped + (1.0 - c) * prepare_content(picture, o)
    temporal = Temporal(warped, pair.reliability)
    where = {"start": start, "temporal": temporal, "resume": resume}
    return optimize(picture, grams_for, o, stylizer, None, on_step, **where)


def temporal_digest(previous: Previous | None, pair: FramePair | None) -> str:
    """A digest of what a linked frame starts from and is pulled toward besides its own content:
    the previous stylized frame (as its uint8 pixels, the same whether just made or read back from
    its PNG) and the flow tying the two. "" for a frame that is not linked."""
    if previous is None or pair is None:
        return ""
    digest = hashlib.sha256()
    pixels = np.clip(np.rint(previous.stylized), 0, 255).astype(np.uint8)
    for array in (pixels, pair.backward.astype(np.float32), pair.reliability.astype(np.float32)):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def stylize_shot(
    frames: Iterable[np.ndarray],
    grams_for: GramsFor,
    options: StyleOptions,
    stylizer: Stylizer,
    previous: Previous | None = None,
    pair_for: PairFor = computed_pair,
    first_index: int = 0,
) -> Iterator[tuple[Result, FramePair | None]]:
    """Each frame's result in order, with the flow that tied it to the frame before (None for a
    shot's first frame). `previous` continues a shot whose earlier frames are done."""
    for index, frame in enumerate(frames, first_index):
        content = prepare_content(images.Picture(frame, None), options)
        pair = None
        if previous is not None and options.temporal_weight > 0:
            pair = pair_for(index, previous.content, content)
        result = stylize_frame(frame, grams_for, options, stylizer, previous, pair)
        yield result, pair
        previous = Previous(content, result.rgb.astype(np.float32))


def shots(frames: Iterable[np.ndarray], threshold: float = SCENE_CUT) -> list[int]:
    """The indices where shots start (0 first): a frame whose scene_change from the one before
    exceeds `threshold` opens a new shot."""
    starts, before = [], None
    for index, frame in enumerate(frames):
        if before is None or opticalflow.scene_change(before, frame) > threshold:
            starts.append(index)
        before = frame
    return starts
