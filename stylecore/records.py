"""What a stylization yields and returns (iterations, results) and what steers one (a clip
frame's temporal target, a checkpoint's resume point)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from stylecore import images, tiling

Grams = dict[str, np.ndarray]  # layer → (C, C)
GramsFor = Callable[[int], Sequence[Grams]]  # level's longest side → one blended target per image


@dataclass(frozen=True)
class Iteration:
    """One optimizer step at one level of the coarse-to-fine schedule."""

    level: int  # 0 is the coarsest
    shape: tuple[int, int]  # (H, W) at this level
    iteration: int  # 1-based, within the level
    losses: dict[str, np.ndarray]  # content, style, tv, total — each (B,)
    image: tf.Tensor  # (B, H, W, 3) mean-subtracted
    state: tuple = ()  # the optimizer's state after this step (checkpoints save it)
    stopped: str | None = None  # "converged" when this step ends its level early
    tiles: tiling.Plan | None = None  # how this level is tiled; None: whole


@dataclass(frozen=True)
class Temporal:
    """For a clip's frame: the previous stylized frame warped onto this one (H, W, 3) 0…255, and
    where that warp can be trusted (H, W) 0…1. Pulled toward with options.temporal_weight."""

    warped: np.ndarray
    reliability: np.ndarray


@dataclass(frozen=True)
class Resume:
    """Where a checkpointed run continues: the level, the last finished iteration in it, and the
    optimizer's saved arrays (Optimizer.portable_state)."""

    level: int
    iteration: int
    arrays: tuple[np.ndarray, ...]

    def fits(self, final: tuple[int, int], sizes: Sequence[int], batch: int = 1) -> bool:
        """Whether the saved image has the shape its level gives `batch` outputs of `final`
        (H, W) on the schedule `sizes` (stylize.level_sizes): a checkpoint's key rules out other
        inputs and options; this, a file from a version that shaped levels otherwise."""
        if not 0 <= self.level < len(sizes) or not self.arrays:
            return False
        return self.arrays[0].shape == (batch, *images.fit_shape(final, sizes[self.level]), 3)


@dataclass(frozen=True)
class Result:
    """One finished image and what it cost."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) float32 0…1, put back on PNG output
    history: list[dict[str, float]]  # losses per iteration, all levels
    seconds: float
    quality: dict[str, float] = dataclasses.field(default_factory=dict)  # see Stylizer.quality
    stops: list[dict] = dataclasses.field(default_factory=list)  # each level's end: where, why
    tiling: list[dict] = dataclasses.field(default_factory=list)  # tiled levels: tile, halo, memory
