"""Optical flow between content frames, its forward–backward reliability, and warping.

Ruder et al. 2016 (Artistic style transfer for videos): a frame starts from the previous stylized
frame warped onto it and is pulled toward it where the flow can be trusted. Flow is OpenCV's DIS
(dense inverse search) on grey frames: benchmarks/video.py measured it in milliseconds at 512 px,
against seconds for scikit-image's TV-L1, on the same accuracy of known shifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

METHOD = "opencv-dis-medium"  # recorded in sidecars and flow cache keys
FLOW_MIN_SIDE = 256  # frames are enlarged to at least this longest side for the flow
# Ruder et al.'s thresholds (eq. 6–7): disoccluded where forward and backward flow do not cancel,
# a motion boundary where the flow's gradient is large.
OCCLUSION = (0.01, 0.5)
BOUNDARY = (0.01, 0.002)


@dataclass(frozen=True)
class FramePair:
    """What frame t needs from frame t−1: the flow from t back to t−1, (H, W, 2) in pixels as
    (dx, dy), and where it is reliable, (H, W) 0 or 1."""

    backward: np.ndarray
    reliability: np.ndarray


def grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) 0…255 → (H, W) uint8 luma."""
    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense flow from `source` to `target` (H, W, 3): where each source pixel moved, (H, W, 2).
    Small frames are enlarged to FLOW_MIN_SIDE first: DIS's 8-px patches and pyramid found a
    third of a 2-px shift at 64 px, all of it at 256 px."""
    height, width = source.shape[:2]
    scale = max(1.0, FLOW_MIN_SIDE / max(height, width))
    size = (round(width * scale), round(height * scale))
    a, b = (cv2.resize(grey(f), size, interpolation=cv2.INTER_CUBIC) for f in (source, target))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    found = dis.calc(a, b, None)
    if scale == 1.0:
        return found
    return cv2.resize(found, (width, height), interpolation=cv2.INTER_AREA) / np.float32(scale)


def warp(image: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """`image` (frame t−1's pixels) moved onto frame t: out(x) = image(x + backward(x)),
    bilinear, edges replicated."""
    height, width = backward.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = xs + backward[..., 0], ys + backward[..., 1]
    channels = image if image.ndim == 3 else image[..., None]
    out = cv2.remap(
        channels.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return out.reshape(image.shape)


def reliability(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """1 where frame t's pixel is seen in frame t−1 and lies off a motion boundary, else 0:
    `forward` t−1 → t, `backward` t → t−1 (H, W, 2). Forward–backward consistency: following the
    backward flow and then the forward one should return to the start."""
    there = warp(forward, backward)  # the forward flow at each pixel's place in frame t−1
    mismatch = np.sum(np.square(there + backward), axis=-1)
    energy = np.sum(np.square(there), axis=-1) + np.sum(np.square(backward), axis=-1)
    occluded = mismatch > OCCLUSION[0] * energy + OCCLUSION[1]
    du = np.gradient(backward[..., 0])
    dv = np.gradient(backward[..., 1])
    gradient = sum(np.square(d) for d in (*du, *dv))
    boundary = gradient > BOUNDARY[0] * np.sum(np.square(backward), axis=-1) + BOUNDARY[1]
    reliable = (~(occluded | boundary)).astype(np.uint8)
    # One pixel more of doubt around every unreliable region: its edge is where the flow blurs.
    return cv2.erode(reliable, np.ones((3, 3), np.uint8)).astype(np.float32)


def frame_pair(previous: np.ndarray, current: np.ndarray) -> FramePair:
    """The backward flow and its reliability between two content frames of the same shape."""
    forward = flow(previous, current)
    backward = flow(current, previous)
    return FramePair(backward, reliability(forward, backward))


def temporal_error(stylized: np.ndarray, previous: np.ndarray, pair: FramePair) -> float:
    """Σ c·(s_t − warp(s_{t−1}))² / Σ c over pixels and channels: the flicker the flow explains."""
    warped = warp(previous.astype(np.float32), pair.backward)
    c = pair.reliability[..., None]
    squared = np.square(stylized.astype(np.float32) - warped)
    return float(np.sum(c * squared) / max(np.sum(c) * stylized.shape[-1], 1e-12))


def scene_change(previous: np.ndarray, current: np.ndarray) -> float:
    """How different two frames are, 0…1: the mean absolute difference of small grey copies
    (a cut between shots scores high, motion within a shot low)."""
    small = [
        cv2.resize(grey(f), (64, 64), interpolation=cv2.INTER_AREA) for f in (previous, current)
    ]
    return float(np.mean(np.abs(small[0].astype(np.float32) - small[1])) / 255.0)
