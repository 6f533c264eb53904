"""From validated manifest pairs and input hashes to jobs: output names, feature keys, outcomes."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import socket
from dataclasses import dataclass, field
from typing import Any

from flows import storage
from flows.featurecache import feature_key
from flows.manifest import Pair, RowError
from stylecore.errors import StyleError
from stylecore.images import fit_shape
from stylecore.options import StyleOptions
from stylecore.stylize import level_sizes, shared_weights, style_size
from stylecore.weights import min_side, require_layers, resolve_spec

MAX_STEM = 60  # characters of each input's stem in an automatic output name


@dataclass(frozen=True)
class StyleInput:
    """One style of a job: where it is, its bytes' hash, its blend weight."""

    uri: str
    sha256: str
    weight: float | None


@dataclass(frozen=True)
class Probe:
    """What reading an input once told: its bytes' hash and pixel shape, or why it is unusable."""

    sha256: str = ""
    shape: tuple[int, int] = (0, 0)  # (H, W), upright
    error: str | None = None
    notes: tuple[str, ...] = ()  # what decoding changed: "animated GIF: used the first of 3 frames"


@dataclass(frozen=True)
class Job:
    """Everything a stylize task needs, as plain values: URIs and keys, never pixels."""

    row: int
    content: str
    content_sha: str
    styles: tuple[StyleInput, ...]
    output: str  # URI of the image
    options: dict[str, Any]  # StyleOptions.to_dict()
    feature_keys: dict[int, tuple[str, ...]]  # content longest side → one key per style
    label: str  # "chelsea × starry"
    shape: tuple[int, int]  # the content's working shape (H, W): jobs batch only when equal
    root: str = ""  # the output root: writes stay inside it
    notes: tuple[str, ...] = ()  # the styles' decoding notes, for the sidecar

    @property
    def sidecar(self) -> str:
        return posixpath.splitext(self.output)[0] + ".json"

    def style_options(self) -> StyleOptions:
        return StyleOptions.from_dict(self.options)

    def outcome(self, status: str, error: str | None = None, **more: Any) -> Outcome:
        """This job's line in the report."""
        style = style_text([(s.uri, s.weight) for s in self.styles])
        return Outcome(
            self.row, self.content, style, status, self.output, error, worker=worker_id(), **more
        )


@dataclass
class Outcome:
    """One pair's line in the report."""

    row: int
    content: str
    style: str
    status: str  # done | skipped | failed
    output: str | None = None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    losses: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(
        default_factory=list
    )  # e.g. a smaller size after running out of memory

    def to_dict(self) -> dict[str, Any]:
        line = dict(self.__dict__)
        if not line["notes"]:  # the report's schema has no notes; they appear only when there are
            del line["notes"]
        return line


def worker_id() -> str:
    """host:pid of this process, to say where a pair ran."""
    return f"{socket.gethostname()}:{os.getpid()}"


def stem(uri: str) -> str:
    """A file name's stem, made safe and short for use in another file name."""
    base = posixpath.splitext(posixpath.basename(uri.rstrip("/")))[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip(".-")
    return safe[:MAX_STEM] or "image"


def pair_key(
    content_sha: str, styles: tuple[StyleInput, ...], options: StyleOptions, weights_checksum: str
) -> str:
    """8 hex digits that change with any input byte, option or weights file."""
    identity = {
        "content": content_sha,
        "styles": [[s.sha256, s.weight] for s in styles],
        "options": options.to_dict(),
        "weights": weights_checksum,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def style_text(styles: list[tuple[str, float | None]]) -> str:
    """Styles as a manifest cell: a.jpg;b.jpg or a.jpg:0.7;b.jpg:0.3."""
    return ";".join(uri if weight is None else f"{uri}:{weight:g}" for uri, weight in styles)


def make_job(pair: Pair, probes: dict[str, Probe], output_root: str, weights_checksum: str) -> Job:
    """The job for a pair whose inputs were all read."""
    options = pair.options
    styles = tuple(StyleInput(s.uri, probes[s.uri].sha256, s.weight) for s in pair.styles)
    content_sha = probes[pair.content].sha256
    key = pair_key(content_sha, styles, options, weights_checksum)
    style_stem = "+".join(stem(s.uri) for s in styles[:3]) + ("+more" if len(styles) > 3 else "")
    name = pair.output or f"{stem(pair.content)}__{style_stem}__{key}.png"
    keys = {
        longest: tuple(
            feature_key(s.sha256, weights_checksum, options, style_size(longest, options))
            for s in styles
        )
        for longest in level_sizes(options)
    }
    shape = fit_shape(probes[pair.content].shape, options.size)
    return Job(
        row=pair.row,
        content=pair.content,
        content_sha=content_sha,
        styles=styles,
        output=storage.join(output_root, name),
        options=options.to_dict(),
        feature_keys=keys,
        label=f"{stem(pair.content)} × {style_stem}",
        shape=shape,
        root=output_root,
        notes=_upscaled(probes[pair.content].shape, shape)
        + tuple(f"style '{s.uri}': {n}" for s in styles for n in probes[s.uri].notes),
    )


UPSCALE_NOTE = 2.0  # a content enlarged this much or more is noted: the output will look soft


def _upscaled(shape: tuple[int, int], working: tuple[int, int]) -> tuple[str, ...]:
    """A note when the working shape enlarges the content a lot (e.g. an 8×8 icon at 512 px)."""
    factor = max(working) / max(shape)
    if factor < UPSCALE_NOTE:
        return ()
    h, w = working
    return (
        f"content enlarged {factor:.1f}× ({shape[1]}×{shape[0]} to {w}×{h} px): expect a soft result",
    )


def unreadable(pair: Pair, probes: dict[str, Probe]) -> Outcome | None:
    """A failed outcome naming the first input of the pair that cannot be used, if any: unreadable,
    too small for the network at its working size, or the network lacks a requested layer."""
    error = _unusable(pair, probes)
    if error is None:
        return None
    style = style_text([(s.uri, s.weight) for s in pair.styles])
    return Outcome(pair.row, pair.content, style, "failed", error=error, worker=worker_id())


def _unusable(pair: Pair, probes: dict[str, Probe]) -> str | None:
    inputs = [("content", pair.content)] + [("style", s.uri) for s in pair.styles]
    for role, uri in inputs:
        if probes[uri].error:
            return f"{role} '{uri}': {probes[uri].error}"
    o = pair.options
    spec = resolve_spec(o.network, o.weights)
    try:
        weights = shared_weights(spec)  # loaded once per process, before the plan
        require_layers(weights, (*o.content_layers, *o.style_layers))
    except StyleError as exc:
        return f"weights '{spec}': {str(exc).removeprefix(f'{spec}: ')}"
    least = min_side(weights, (*o.content_layers, *o.style_layers))
    for role, uri in inputs:
        small = _too_small(probes[uri].shape, role, o, least)
        if small:
            return f"{role} '{uri}': {small}"
    return None


def _too_small(shape: tuple[int, int], role: str, o: StyleOptions, least: int) -> str | None:
    """Why an image of this (H, W) cannot go through the network at its working sizes, or None."""
    final = fit_shape(shape, o.size)
    for longest in level_sizes(o):  # coarsest first: the smallest working shape comes first
        if role == "content":
            working = fit_shape(final, longest)
        else:
            working = fit_shape(shape, style_size(longest, o))
        if min(working) < least:
            return (
                f"{shape[1]}×{shape[0]} pixels shrink to {working[1]}×{working[0]} at the working "
                f"size ({max(working)} px), too small for the network, which needs at least "
                f"{least} px on each side; crop it or raise --size"
            )
    return None


def invalid_row(error: RowError) -> Outcome:
    """A row the manifest check refused, as a failed pair."""
    style = error.raw.get("style", error.raw.get("styles", ""))
    return Outcome(
        error.row,
        str(error.raw.get("content", "")),
        _text(style),
        "failed",
        error=error.message,
        worker=worker_id(),
    )


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ";".join(map(str, value))
    return "" if value is None else str(value)
