"""One run's preparation: the manifest read once, the networks checked once, inputs probed once,
jobs planned and the skip decision made once — before any model work.

The CLI prepares a run before a Prefect server starts (a bad manifest or weights file exits at
once) and hands the manifest it read to the flow run it starts in this process, which therefore
reads it no second time; a flow run started elsewhere (a deployment, a shard) reads it itself.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flows import outputs, storage, uri
from flows.featurecache import feature_key
from flows.manifest import Manifest, load_manifest
from flows.manifest.validate import CLIP_OUTPUTS
from flows.model import Job, Outcome, Pair, Probe, StyleInput
from flows.outputs import sha256
from flows.storage import clipsource
from stylecore import images
from stylecore.errors import ImageError, StyleError
from stylecore.images import fit_shape
from stylecore.netspec import NetworkWeights
from stylecore.options import StyleOptions, preset
from stylecore.stylize import level_sizes, shared_weights, style_size
from stylecore.weights import min_side, require_layers, resolve_spec

log = logging.getLogger(__name__)
HASH_THREADS = 4  # inputs read and decoded at once
MIN_STYLE_GAIN = 10.0  # a done pair whose style distance shrank less than this many times: weak
UPSCALE_NOTE = 2.0  # a content enlarged this much or more is noted: the output will look soft
_handed: dict[tuple[str, StyleOptions], Manifest] = {}
_frame_limits: dict[str, int] = {}  # content → the most frames a row naming it allows


class RunError(StyleError):
    """The run could not start: unreadable manifest, --strict with invalid rows, no weights."""


@dataclass(frozen=True)
class Run:
    """A run's own settings (everything but the stylization options)."""

    manifest: str
    output: str
    feature_cache: str | None = None
    force: bool = False
    strict: bool = False
    concurrency: int = 1  # pairs at once on each device
    rows: list[int] | None = None  # only these manifest rows (a rerun, a shard)
    preset: str = "default"
    batch_size: int | None = None  # pairs optimized together in one tensor; None: per device
    shards: int = 1  # > 1: split into child flow runs of the deployment (flows.shards)
    part_of: str | None = None  # the parent's run id when this run is one shard of it
    min_style_gain: float = MIN_STYLE_GAIN  # below it, a done pair is flagged weak


@dataclass(frozen=True)
class Networks:
    """Each network the pairs name, loaded once: its weights, or why it cannot be used."""

    loaded: dict[str, NetworkWeights]
    errors: dict[str, str]

    def checksum(self, options: StyleOptions) -> str:
        return self.loaded[resolve_spec(options.network, options.weights)].checksum


@dataclass(frozen=True)
class Plan:
    """What a run will do: the jobs to run, and the outcomes already known (invalid rows,
    unusable inputs, outputs already there)."""

    todo: list[Job]
    settled: list[Outcome]


def run_options(given: dict[str, Any], preset_name: str) -> StyleOptions:
    """The run's options: the preset with the given ones over it (bad ones stop the run)."""
    try:
        return StyleOptions.from_dict(given, preset(preset_name))
    except StyleError as exc:
        raise RunError(str(exc)) from exc


@contextmanager
def handing_over(manifest: Manifest, defaults: StyleOptions) -> Iterator[None]:
    """Within the block, `read_manifest` of the same source and defaults in this process takes
    this manifest instead of reading it again (once)."""
    key = (manifest.source, defaults)
    _handed[key] = manifest
    try:
        yield
    finally:
        _handed.pop(key, None)


def read_manifest(source: str, defaults: StyleOptions, strict: bool = False) -> Manifest:
    """The parsed manifest; with `strict`, any invalid row stops the run before any work."""
    manifest = _handed.pop((source, defaults), None) or load_manifest(source, defaults)
    if strict and manifest.errors:
        lines = "; ".join(e.message for e in manifest.errors[:5])
        more = f" (and {len(manifest.errors) - 5} more)" if len(manifest.errors) > 5 else ""
        raise RunError(
            f"{source}: {len(manifest.errors)} invalid rows, nothing run (--strict): {lines}{more}"
        )
    return manifest


def check_networks(manifest: Manifest, defaults: StyleOptions) -> Networks:
    """Load each network the pairs name. The run's own network stops the run when it cannot be
    read or lacks the run's layers; one that only some rows name fails those rows (`unusable`)."""
    run_spec = resolve_spec(defaults.network, defaults.weights)
    specs = {resolve_spec(p.options.network, p.options.weights) for p in manifest.pairs}
    loaded, errors = {}, {}
    for spec in sorted(specs):
        try:
            loaded[spec] = shared_weights(spec)  # loaded once per process
        except StyleError as exc:
            if spec == run_spec:
                raise RunError(str(exc)) from exc
            errors[spec] = str(exc).removeprefix(f"{spec}: ")
    if run_spec in loaded:
        try:
            require_layers(loaded[run_spec], (*defaults.content_layers, *defaults.style_layers))
        except StyleError as exc:
            raise RunError(str(exc)) from exc
    return Networks(loaded, errors)


def limit_frames(manifest: Manifest) -> None:
    """Let this process's probes refuse a clip longer than every row naming it allows
    (max_frames) from its header, before decoding it (a 4-hour clip)."""
    for pair in manifest.pairs:
        allowed = max(_frame_limits.get(pair.content, 0), pair.options.max_frames)
        _frame_limits[pair.content] = allowed


def inputs(manifest: Manifest) -> list[str]:
    """Every distinct input the pairs read, sorted: each is probed once."""
    return sorted({u for p in manifest.pairs for _, u in p.inputs()})


def probe_all(uris: list[str], logger: logging.Logger = log) -> dict[str, Probe]:
    """Each input's probe, HASH_THREADS at a time (each decodes one image: bounded memory)."""
    with concurrent.futures.ThreadPoolExecutor(HASH_THREADS) as pool:
        return dict(zip(uris, pool.map(lambda where: probe(where, logger), uris), strict=True))


def probe(where: str, logger: logging.Logger = log) -> Probe:
    """An input's sha256 and pixel shape, or the one-line cause it cannot be used; a cause that
    concerns the whole run (a missing bucket, no credentials) is raised."""
    try:
        if clipsource.is_clip(where):  # decoded once here: frames, rate, audio
            return clipsource.probe(where, _frame_limits.get(where))
        data = storage.read_bytes(where)
        picture = images.decode(data, where)  # decoded once here: bad images fail early
    except storage.NotFoundError:
        return Probe(error="not found")
    except storage.StorageError as exc:
        if exc.run_level:
            raise
        return Probe(error=without_uri(exc, where))
    except ImageError as exc:
        return Probe(error=without_uri(exc, where))
    except Exception as exc:  # a decoder's own bug must not stop the batch
        logger.exception("decoding %s failed", where)
        return Probe(error=f"cannot decode it ({type(exc).__name__}; see the log)")
    height, width = picture.rgb.shape[:2]
    return Probe(sha256(data), (int(height), int(width)), notes=picture.notes)


def without_uri(exc: BaseException, where: str) -> str:
    """An error's message without the URI it starts with: the report names the input itself."""
    text = str(exc)
    for prefix in (f"{where}: ", f"{uri.show(where)}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def plan(
    manifest: Manifest, probes: dict[str, Probe], output: str, networks: Networks, force: bool
) -> Plan:
    """A job per valid pair whose inputs can be used and whose output is not there yet (all of
    them with `force`); a failed or skipped outcome for every other row."""
    settled = [e.failed() for e in manifest.errors]
    todo = []
    for pair in manifest.pairs:
        problem = unusable(pair, probes, networks)
        if problem:
            settled.append(pair.failed(problem))
            continue
        job = make_job(pair, probes, output, networks.checksum(pair.options))
        if not force and outputs.finished(job):
            settled.append(job.outcome("skipped"))
        else:
            todo.append(job)
    return Plan(todo, settled)


def unusable(pair: Pair, probes: dict[str, Probe], networks: Networks) -> str | None:
    """Why a pair cannot run, naming the input: unreadable, a network that cannot be read or
    lacks a requested layer, an image too small for the network at its working size."""
    for role, where in pair.inputs():
        if probes[where].error:
            return f"{role} '{where}': {probes[where].error}"
    clip = clip_problem(pair, probes[pair.content])
    if clip:
        return f"content '{pair.content}': {clip}"
    o = pair.options
    spec = resolve_spec(o.network, o.weights)
    if spec in networks.errors:
        return f"weights '{spec}': {networks.errors[spec]}"
    layers = (*o.content_layers, *o.style_layers)
    try:
        require_layers(networks.loaded[spec], layers)
    except StyleError as exc:
        return f"weights '{spec}': {str(exc).removeprefix(f'{spec}: ')}"
    least = min_side(networks.loaded[spec], layers)
    for role, where in pair.inputs():
        small = _too_small(probes[where].shape, role, o, least)
        if small:
            return f"{role} '{where}': {small}"
    return None


def clip_problem(pair: Pair, content: Probe) -> str | None:
    """Why a clip row cannot run (more frames than max_frames, an output that is not a video), or
    an image row (an output named as a video)."""
    suffix = posixpath.splitext(pair.output or "")[1].lower()
    if not content.frames:
        video = suffix in CLIP_OUTPUTS
        return f"a still image; its output cannot be a video ('{suffix}')" if video else None
    if content.frames > pair.options.max_frames:
        return (
            f"{content.frames} frames, more than max_frames ({pair.options.max_frames}): "
            "raise --max-frames or cut the clip"
        )
    if pair.output and suffix not in CLIP_OUTPUTS:
        return f"a clip's output is a video ({', '.join(CLIP_OUTPUTS)}), not '{suffix}'"
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


def pair_key(
    content_sha: str, styles: tuple[StyleInput, ...], options: StyleOptions, weights_checksum: str
) -> str:
    """8 hex digits that change with any input byte, option or weights file."""
    identity = {
        "content": content_sha,
        "styles": [[s.sha256, s.weight] for s in styles],
        "options": options.identity(),
        "weights": weights_checksum,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def make_job(pair: Pair, probes: dict[str, Probe], output_root: str, weights_checksum: str) -> Job:
    """The job for a pair whose inputs were all read."""
    options = pair.options
    styles = tuple(StyleInput(s.uri, probes[s.uri].sha256, s.weight) for s in pair.styles)
    content_sha = probes[pair.content].sha256
    key = pair_key(content_sha, styles, options, weights_checksum)
    names = "+".join(uri.stem(s.uri) for s in styles[:3]) + ("+more" if len(styles) > 3 else "")
    probe = probes[pair.content]
    ext = ".mp4" if probe.frames else ".png"
    name = pair.output or f"{uri.stem(pair.content)}__{names}__{key}{ext}"
    keys = {
        longest: tuple(
            feature_key(s.sha256, weights_checksum, options, style_size(longest, options))
            for s in styles
        )
        for longest in level_sizes(options)
    }
    shape = fit_shape(probes[pair.content].shape, options.size)
    notes = tuple(f"style '{s.uri}': {n}" for s in styles for n in probes[s.uri].notes)
    return Job(
        row=pair.row,
        content=pair.content,
        content_sha=content_sha,
        styles=styles,
        output=uri.join(output_root, name),
        options=options.to_dict(),
        feature_keys=keys,
        label=f"{uri.stem(pair.content)} × {names}",
        shape=shape,
        root=output_root,
        notes=_upscaled(probe.shape, shape) + probe.notes * bool(probe.frames) + notes,
        frames=probe.frames,
        fps=probe.fps,
        audio=probe.audio,
        source_shape=probe.shape if probe.frames else (0, 0),
    )


def _upscaled(shape: tuple[int, int], working: tuple[int, int]) -> tuple[str, ...]:
    """A note when the working shape enlarges the content a lot (e.g. an 8×8 icon at 512 px)."""
    factor = max(working) / max(shape)
    if factor < UPSCALE_NOTE:
        return ()
    h, w = working
    return (
        f"content enlarged {factor:.1f}× ({shape[1]}×{shape[0]} to {w}×{h} px): expect a soft result",
    )
