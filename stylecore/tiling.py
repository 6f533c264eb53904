"""Tiled steps for images larger than the device holds: the network sees tiles, the loss is global.

The image and the optimizer's state stay whole; only the network's activations are tiled. Each
iteration computes the loss and gradient an untiled step computes, in two passes over the tiles:

1. forward only: each tile's *centre* (the part it owns; centres partition the image) adds its
   features' FᵀF to the whole image's Gram of every style layer, and its squared content error;
2. with the whole Grams known, so is dL/dG_l; a forward and backward pass of each tile on the
   surrogate Σ_l ⟨dL/dG_l, F_cᵀF_c⟩ + its content terms gives that tile's exact share of the
   gradient, added into the whole image's gradient over the tile's window (halo included).

A centre's features equal the whole image's when its window reaches `halo` pixels further on every
side inside the image and starts on the pooling grid (multiples of the network's total stride):
then every feature a centre owns sees the same pixels and the same padding as in the whole image.
Exact agreement needs the halo to cover the deepest layer's receptive field; smaller halos trade
agreement for speed (tests/test_tiling.py and benchmarks/tiling.py measure both). Total variation
and the temporal term need no network: they are computed on the whole image.
"""

from __future__ import annotations

import itertools
import math
import os
import resource
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from stylecore.losses import self_product, temporal_loss, tv_loss
from stylecore.netspec import NetworkWeights

# Bytes an untiled step (forward with tape + backward) holds per input pixel and per unit of
# Σ_layers channels/stride² (Geometry.activations): 3.4–3.5 measured on vgg16-hed at 512 and 1024 px
# on a CPU (peak RSS of one step over the process's before it; benchmarks/tiling.py), plus margin.
BYTES_PER_ACTIVATION = 4.0
MEMORY_SHARE = 0.6  # of the free memory a step may plan to use (the rest: state, copies, others)
# The halo as a share of the deepest layer's one-sided reach (half its receptive field). Measured
# on vgg16-hed at 384 px, relu1_1…relu5_1 + relu4_2, tiles of 128 (reach 66 px): the gradient's
# relative error against an untiled step is 4e-7 at 64 and 80 px, 1.8e-6 at 48, 2.2e-3 at 32 and
# 0.12 at 16 — features near a window's edge barely depend on its outermost pixels. 0.7 gives 48
# px there (64 for VGG19's reach of 78) and a 1.4× larger window than the tile at 512, not 1.7×.
HALO_REACH = 0.7
MIN_AUTO_TILE = 256  # px


@dataclass(frozen=True)
class Geometry:
    """What tiling must respect in a network cut after its deepest used layer."""

    align: int  # total stride: tile boundaries on multiples of it keep every pooling grid aligned
    field: int  # receptive field of the deepest layer, pixels
    strides: dict[str, int]  # layer → input pixels per feature pixel
    channels: dict[str, int]  # layer → its output's channels
    activations: float  # Σ over layers of channels / stride² (activation floats per input pixel)

    @property
    def exact_halo(self) -> int:
        """The smallest aligned halo covering half the receptive field: centres exact."""
        return _round_up(self.field // 2 + 1, self.align)

    @property
    def halo(self) -> int:
        """The halo tiles use: HALO_REACH of the reach, on the alignment grid."""
        return _round_up(math.ceil(HALO_REACH * (self.field // 2)), self.align)


@dataclass(frozen=True)
class Tile:
    """One tile: the input window the network sees and the centre whose features it owns."""

    window: tuple[int, int, int, int]  # y0, y1, x0, x1
    centre: tuple[int, int, int, int]


@dataclass(frozen=True)
class Plan:
    """How one level is tiled."""

    shape: tuple[int, int]  # (H, W) of the level
    tile: int  # the largest centre side, pixels
    halo: int
    tiles: tuple[Tile, ...]

    def describe(self) -> dict:
        """The sidecar's record of it."""
        return {
            "shape": list(self.shape),
            "tile": self.tile,
            "halo": self.halo,
            "tiles": len(self.tiles),
        }


def geometry(weights: NetworkWeights) -> Geometry:
    """Stride, receptive field and activation count of a (truncated) network's layers."""
    jump, field, activations, channels = 1, 1, 0.0, 3
    strides: dict[str, int] = {}
    depth: dict[str, int] = {}
    for layer in weights.layers:
        if layer.kind == "conv":
            field += (layer.kernel.shape[0] - 1) * jump
            jump *= layer.stride[0]
            channels = layer.kernel.shape[3]
        elif layer.kind == "pool":
            field += (layer.pool_size[0] - 1) * jump
            jump *= layer.stride[0]
        strides[layer.name] = jump
        depth[layer.name] = channels
        activations += channels / jump**2
    return Geometry(jump, field, strides, depth, activations)


def layout(shape: tuple[int, int], tile: int, halo: int, align: int) -> tuple[Tile, ...]:
    """Tiles whose centres partition the image (boundaries on the `align` grid, centres at most
    about `tile` px) and whose windows reach `halo` px further on every side within it."""
    rows, cols = _bands(shape[0], tile, align), _bands(shape[1], tile, align)
    tiles = []
    for y0, y1 in rows:
        for x0, x1 in cols:
            window = (
                max(0, y0 - halo),
                min(shape[0], y1 + halo),
                max(0, x0 - halo),
                min(shape[1], x1 + halo),
            )
            tiles.append(Tile(window, (y0, y1, x0, x1)))
    return tuple(tiles)


def _bands(length: int, tile: int, align: int) -> list[tuple[int, int]]:
    count = max(1, math.ceil(length / tile))
    cuts = sorted({0, length, *(_round_up(length * i // count, align) for i in range(1, count))})
    cuts = [c for c in cuts if c <= length]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def free_memory(device: str | None = None) -> int | None:
    """Bytes free for a step on the device: a GPU's free memory (via TensorFlow's view of what it
    holds and the card's total, where known), else the host's available RAM; None if unknown."""
    if device and "GPU" in device.upper():
        return _gpu_free(device)
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _gpu_free(device: str) -> int | None:
    name = device.upper().split("DEVICE:")[-1].replace("/", "")
    index = name.split(":")[-1] if ":" in name else "0"
    try:
        details = tf.config.experimental.get_memory_info(f"GPU:{index}")

        total = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=memory.total",
                "--format=csv,noheader,nounits",
                "-i",
                index,
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return int(float(total.stdout.strip()) * 2**20) - int(details["current"])
    except (ValueError, OSError, RuntimeError, tf.errors.OpError):
        return None


def step_bytes(geo: Geometry, pixels: int, batch: int) -> float:
    """Estimated memory of one untiled step of `batch` images of `pixels` pixels each."""
    return BYTES_PER_ACTIVATION * geo.activations * pixels * batch


def choose(
    shape: tuple[int, int],
    batch: int,
    tile_option: int | None,
    geo: Geometry,
    halo: int,
    free: int | None,
    reserved: int = 0,
) -> Plan | None:
    """The level's tiling, or None to run it whole. `tile_option`: None auto (whole when the
    step fits MEMORY_SHARE of `free`, else the largest tile whose window fits), 0 never, N tiles
    of at most N px (whole when the image is not larger). `reserved`: bytes already spoken for
    (the optimizer's state), taken from `free` first."""
    if tile_option == 0:
        return None
    if free is not None:
        free = max(0, free - reserved)
    if tile_option is None:
        if free is None or step_bytes(geo, shape[0] * shape[1], batch) <= MEMORY_SHARE * free:
            return None
        budget = MEMORY_SHARE * free / (BYTES_PER_ACTIVATION * geo.activations * batch)
        side = int(math.sqrt(max(budget, 1.0))) - 2 * halo  # a square window's centre
        # Not below MIN_AUTO_TILE: smaller tiles spend nearly all their work on halos, and where
        # memory is that short the out-of-memory retry says so instead of crawling.
        tile = max(MIN_AUTO_TILE, side // geo.align * geo.align)
    else:
        tile = max(geo.align, tile_option // geo.align * geo.align)
    if max(shape) <= tile:
        return None
    return Plan(tuple(shape), tile, halo, layout(shape, tile, halo, geo.align))


def map_size(weights: NetworkWeights, n: int) -> dict[str, int]:
    """Each layer's output size along one axis for an input of n pixels (MatConvNet's floor)."""
    sizes = {}
    for layer in weights.layers:
        if layer.kind == "conv":
            k, s = layer.kernel.shape[0], layer.stride[0]
            n = (n + layer.pad[0] + layer.pad[1] - k) // s + 1
        elif layer.kind == "pool":
            k, s = layer.pool_size[0], layer.stride[0]
            n = (n + layer.pad[0] + layer.pad[1] - k) // s + 1
        sizes[layer.name] = n
    return sizes


class TiledNet:
    """One FeatureNet run over a plan's tiles for fixed style (Gram) and content layers: per-tile
    centre slices and the two passes, each compiled once for any tile's shape."""

    def __init__(self, net, plan: Plan, grams: Sequence[str], content: Sequence[str]):
        self.net, self.plan = net, plan
        self.grams, self.content = tuple(grams), tuple(content)
        self.layers = tuple(dict.fromkeys((*self.grams, *self.content)))
        self.geometry = geo = geometry(net.weights)
        height, width = map_size(net.weights, plan.shape[0]), map_size(net.weights, plan.shape[1])
        self.sizes = {name: (height[name], width[name]) for name in self.layers}  # whole maps
        self.offsets = [self._offsets(t, geo) for t in plan.tiles]
        image = tf.TensorSpec([None, None, None, 3], tf.float32)
        offsets = tf.TensorSpec([len(self.layers), 4], tf.int32)
        maps = [
            tf.TensorSpec([None, None, None, geo.channels[n]], tf.float32) for n in self.content
        ]
        squares = [tf.TensorSpec([None, geo.channels[n], geo.channels[n]]) for n in self.grams]
        per_image = [tf.TensorSpec([None], tf.float32) for _ in self.content]
        self._centres = tf.function(self._centres_of, input_signature=[image, offsets])
        self._stats = tf.function(self._stats_of, input_signature=[image, offsets, maps])
        self._gradient = tf.function(
            self._gradient_of, input_signature=[image, offsets, squares, maps, per_image]
        )

    def count(self, name: str) -> float:
        """H·W·C of a layer's whole feature map: what its Gram and content mean divide by."""
        return float(np.prod(self.sizes[name]) * self.geometry.channels[name])

    def _offsets(self, tile: Tile, geo: Geometry) -> tf.Tensor:
        """(L, 4) int32: each layer's centre rows and columns within the tile's feature map."""
        y0, _, x0, _ = tile.window
        cy0, cy1, cx0, cx1 = tile.centre
        rows = []
        for name in self.layers:
            s, (h, w) = geo.strides[name], self.sizes[name]
            top, left = y0 // s, x0 // s  # the window's first feature row/column in the whole map
            end_y = h if cy1 == self.plan.shape[0] else cy1 // s
            end_x = w if cx1 == self.plan.shape[1] else cx1 // s
            rows.append([cy0 // s - top, end_y - top, cx0 // s - left, end_x - left])
        return tf.constant(rows, tf.int32)

    def _tiles(self, x: tf.Tensor):
        for tile, off in zip(self.plan.tiles, self.offsets, strict=True):
            y0, y1, x0, x1 = tile.window
            yield tile, off, x[:, y0:y1, x0:x1, :]

    def centres(self, x: tf.Tensor) -> list[list[tf.Tensor]]:
        """Each tile's centre features of the content layers (the content targets)."""
        return [self._centres(xw, off) for _, off, xw in self._tiles(x)]

    def stats(self, x: tf.Tensor, targets: list[list[tf.Tensor]] | None = None):
        """Pass 1: Σ_tiles F_cᵀF_c per Gram layer (B, C, C), and per content layer Σ (F_c − P_c)²
        and Σ P_c² (B,) against the targets (each tile's centres, from `centres`)."""
        sums = errors = energy = None
        for k, (_, off, xw) in enumerate(self._tiles(x)):
            g, e, z = self._stats(xw, off, targets[k] if targets else [])
            sums = g if sums is None else [a + b for a, b in zip(sums, g, strict=True)]
            errors = e if errors is None else [a + b for a, b in zip(errors, e, strict=True)]
            energy = z if energy is None else [a + b for a, b in zip(energy, z, strict=True)]
        return (
            dict(zip(self.grams, sums, strict=True)),
            dict(zip(self.content, errors, strict=True)),
            dict(zip(self.content, energy, strict=True)),
        )

    def gradient(self, x: tf.Tensor, dgrams: Mapping[str, tf.Tensor], targets, cweights):
        """Pass 2: the gradient of Σ_l ⟨dgrams_l, F_cᵀF_c⟩ + Σ_l cweights_l · Σ(F_c − P_c)²,
        accumulated from every tile's window (halo included) into the whole image's."""
        total = np.zeros(x.shape, np.float32)
        d = [dgrams[n] for n in self.grams]
        w = [cweights[n] for n in self.content]
        for k, (tile, off, xw) in enumerate(self._tiles(x)):
            y0, y1, x0, x1 = tile.window
            total[:, y0:y1, x0:x1, :] += self._gradient(xw, off, d, targets[k], w).numpy()
        return tf.constant(total)

    def _slice(self, out, off: tf.Tensor, name: str) -> tf.Tensor:
        i = self.layers.index(name)
        return out[name][:, off[i, 0] : off[i, 1], off[i, 2] : off[i, 3], :]

    def _centres_of(self, xw, off):
        out = self.net(xw)
        return [self._slice(out, off, n) for n in self.content]

    def _stats_of(self, xw, off, targets):
        out = self.net(xw)
        grams = [_raw_gram(self._slice(out, off, n)) for n in self.grams]
        errors, energy = [], []
        for n, p in zip(self.content, targets, strict=True):
            f = self._slice(out, off, n)
            errors.append(tf.reduce_sum(tf.square(f - p), axis=(1, 2, 3)))
            energy.append(tf.reduce_sum(tf.square(p), axis=(1, 2, 3)))
        return grams, errors, energy

    def _gradient_of(self, xw, off, dgrams, targets, cweights):
        with tf.GradientTape() as tape:
            tape.watch(xw)
            out = self.net(xw)
            terms = [
                tf.reduce_sum(d * _raw_gram(self._slice(out, off, n)))
                for n, d in zip(self.grams, dgrams, strict=True)
            ]
            for n, p, w in zip(self.content, targets, cweights, strict=True):
                f = self._slice(out, off, n)
                terms.append(tf.reduce_sum(w * tf.reduce_sum(tf.square(f - p), axis=(1, 2, 3))))
            surrogate = tf.add_n(terms)
        return tape.gradient(surrogate, xw)


def _raw_gram(f: tf.Tensor) -> tf.Tensor:
    """FᵀF of (B, h, w, C) features, unnormalized, (B, C, C)."""
    shape = tf.shape(f)
    return self_product(tf.reshape(f, (shape[0], shape[1] * shape[2], shape[3])))


class TiledObjective:
    """x → (losses, gradient) of the Stylizer's objective, computed tile by tile: what
    Optimizer.run takes as `gradient`. Content targets are computed tiled too, once per level."""

    def __init__(self, stylizer, plan: Plan, content_x, grams, options, temporal=None):
        self.plan, self.options = plan, options
        self.tiled = TiledNet(stylizer.net, plan, options.style_layers, options.content_layers)
        self.layers = self.tiled.layers
        self.content = self.tiled.centres(content_x)
        self.style = {n: tf.constant(np.stack([g[n] for g in grams])) for n in options.style_layers}
        cw, sw = stylizer.layer_weights(options)
        self.counts = {n: self.tiled.count(n) for n in self.layers}
        norms = self._norms(content_x) if options.normalize_losses else None
        batch = content_x.shape[0]
        ones = np.ones((batch,), np.float32)
        self.cw = {n: w / (norms[f"content:{n}"] if norms else ones) for n, w in cw.items()}
        self.sw = {n: w / (norms[f"style:{n}"] if norms else ones) for n, w in sw.items()}
        self.tv_norm = norms["tv"] if norms else ones
        self.temporal = temporal  # (warped, reliability) tensors or None
        self.peak_rss = 0

    def _norms(self, content_x) -> dict[str, np.ndarray]:
        eps = 1e-12
        norms = {}
        for n in self.options.content_layers:
            i = self.tiled.content.index(n)
            energy = sum(tf.reduce_sum(tf.square(c[i]), axis=(1, 2, 3)) for c in self.content)
            norms[f"content:{n}"] = energy.numpy() / self.counts[n] + eps
        for n, g in self.style.items():
            value = tf.reduce_mean(tf.square(g), axis=(1, 2)).numpy()
            norms[f"style:{n}"] = np.broadcast_to(value, (content_x.shape[0],)) + eps
        norms["tv"] = tv_loss(content_x).numpy() + eps
        return norms

    def __call__(self, x: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        o = self.options
        raw, errors, _ = self.tiled.stats(x, self.content)
        style = 0.0
        dgrams = {}
        for n in o.style_layers:
            c = int(raw[n].shape[-1])
            diff = raw[n] / self.counts[n] - self.style[n]  # G − A, (B, C, C)
            style += self.sw[n] * tf.reduce_mean(tf.square(diff), axis=(1, 2))
            scale = o.style_weight * self.sw[n] * 2.0 / (c * c * self.counts[n])
            dgrams[n] = tf.constant(scale, tf.float32)[:, None, None] * diff
        content = sum(self.cw[n] * errors[n] / self.counts[n] for n in o.content_layers)
        cweights = {
            n: tf.constant(o.content_weight * self.cw[n] / self.counts[n], tf.float32)
            for n in o.content_layers
        }
        grad = self.tiled.gradient(x, dgrams, self.content, cweights)
        with tf.GradientTape() as tape:  # the terms that need no network: on the whole image
            tape.watch(x)
            tv = o.tv_weight * tv_loss(x) / self.tv_norm
            local = tv
            temporal = None
            if self.temporal is not None:
                temporal = o.temporal_weight * temporal_loss(x, *self.temporal)
                local = local + temporal
            total_local = tf.reduce_sum(local)
        grad = grad + tape.gradient(total_local, x)
        losses = {
            "content": o.content_weight * tf.convert_to_tensor(content, tf.float32),
            "style": o.style_weight * tf.convert_to_tensor(style, tf.float32),
            "tv": tv,
        }
        losses["total"] = losses["content"] + losses["style"] + losses["tv"]
        if temporal is not None:
            losses["temporal"] = temporal
            losses["total"] = losses["total"] + temporal
        self.peak_rss = max(self.peak_rss, peak_rss())
        return losses, grad


def peak_rss() -> int:
    """This process's peak resident memory so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def borders(shape: tuple[int, int], tile: int, align: int = 16) -> tuple[list[int], list[int]]:
    """The rows and columns where the centres of tiles of `tile` px meet."""
    tiles = layout(shape, tile, 0, align)
    return sorted({t.centre[0] for t in tiles} - {0}), sorted({t.centre[2] for t in tiles} - {0})


def seam_ratio(rgb: np.ndarray, where: tuple[list[int], list[int]]) -> float:
    """Mean squared pixel step across the border rows/columns `where` over the mean squared step
    elsewhere: about 1 without seams, well above it with them."""
    rows, cols = where
    x = rgb.astype(np.float64)
    dy = np.square(np.diff(x, axis=0)).mean(axis=(1, 2))  # the step from row i to i+1 at [i]
    dx = np.square(np.diff(x, axis=1)).mean(axis=(0, 2))
    at = np.concatenate([dy[[r - 1 for r in rows]], dx[[c - 1 for c in cols]]])
    rest_y = np.delete(dy, [r - 1 for r in rows])
    rest_x = np.delete(dx, [c - 1 for c in cols])
    return float(at.mean() / np.concatenate([rest_y, rest_x]).mean())
