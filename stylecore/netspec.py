"""The network as data: a sequence of layers read from a weights file, independent of its format."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Layer:
    """One layer of a simplenn-style chain, named as MatConvNet names it ("conv1_1", "relu1_1")."""

    name: str
    kind: str  # conv | relu | pool | softmax | dropout (identity at inference)
    kernel: np.ndarray | None = None  # (kh, kw, in, out) float32, RGB input order for conv1_1
    bias: np.ndarray | None = None  # (out,) float32
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right (MatConvNet order)
    pool_method: str = "max"  # the file's own method; StyleOptions.pooling may override it
    pool_size: tuple[int, int] = (2, 2)


@dataclass(frozen=True)
class NetworkWeights:
    """A feature network read from a file: its layers in order, input mean, and provenance."""

    name: str  # e.g. "imagenet-vgg-verydeep-19", "vgg16-hed"
    layers: tuple[Layer, ...]
    mean_rgb: np.ndarray  # (3,) float32, subtracted from 0…255 RGB pixels
    source: str  # the file it came from
    checksum: str  # "sha256:…" of the original file's bytes
    layout: str  # matconvnet-old | matconvnet-beta16 | keras-h5
    classes: tuple[str, ...] = field(default=())  # class descriptions, when the file has them

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def truncated(self, deepest: str) -> NetworkWeights:
        """The same network cut after `deepest` (which must exist)."""
        end = self.layer_names.index(deepest) + 1
        return dataclasses.replace(self, layers=self.layers[:end])
