"""One-shot commands: stylize one pair, write features, fetch/describe/verify weights."""

from __future__ import annotations

import argparse
import io
import posixpath
import sys
import time

import numpy as np

from flows import prepare, stops, storage, uri
from flows.cli.flags import options_from_args
from flows.cli.progress import download_bar, iteration_bar, pair_bar
from flows.featurecache import default_root
from flows.manifest.validate import CLIP_OUTPUTS
from flows.model import Job, Pair, StyleInput, StyleRef
from flows.outputs import dumps, sha256, sidecar
from flows.storage import checkpoints, clipsource
from flows.uri import sidecar_of
from stylecore import images
from stylecore.errors import ImageError
from stylecore.network import FeatureNet, extract
from stylecore.options import StyleOptions
from stylecore.records import Iteration, Resume
from stylecore.stylize import level_sizes, shared_stylizer, stylize
from stylecore.weights import describe, load_weights, resolve_spec, sample_image, top_classes


def read_picture(uri: str, role: str) -> tuple[images.Picture, str]:
    """Decode an input; errors name its role and URI. Returns the picture and its sha256."""
    try:
        data = storage.read_bytes(uri)
    except storage.NotFoundError as exc:
        raise ImageError(f"{role} '{uri}' not found") from exc
    return images.decode(data, uri), sha256(data)


def stylize_command(args: argparse.Namespace) -> int:
    """`stylebatch stylize`: one pair, a progress bar, OUT and its sidecar. It checkpoints beside
    OUT as a batch's pairs do: Ctrl-C or SIGTERM stops it at the next iteration, checkpointed
    (exit 130/143), and the same command again resumes there."""
    options = options_from_args(args)
    if _is_clip(args.content, args.output):
        return stylize_clip_command(args, options)
    suffix = posixpath.splitext(args.output)[1].lower() or ".png"
    content, content_sha = read_picture(args.content, "content")
    styles = [read_picture(uri, "style") for uri in args.styles]
    init = (
        read_picture(options.init, "init")[0].rgb
        if options.init not in ("content", "noise")
        else None
    )
    stylizer = shared_stylizer(options)
    saver = _checkpointer(args, options, content_sha, [h for _, h in styles], stylizer)
    resume = _resume(saver.resume(), content, options)
    if resume and not args.quiet:
        print(f"resuming at level {resume.level}, iteration {resume.iteration} (its checkpoint)")
    total = options.iterations * options.levels
    done = resume.level * options.iterations + resume.iteration if resume else 0
    stops.reset()
    try:
        with stops.graceful(), iteration_bar(total, args.quiet, done) as advance:
            on_step = _watching(advance, saver, stylizer, options)
            pictures = [s for s, _ in styles]
            result = stylize(content, pictures, options, stylizer, init, on_step, resume=resume)
    except stops.Interrupted as exc:
        print(f"stylebatch: {exc}; the same command resumes it", file=sys.stderr)
        return stops.exit_code()
    storage.write_bytes(args.output, images.encode(result.rgb, result.alpha, suffix))
    inputs = {
        "content": {"uri": args.content, "sha256": content_sha},
        "styles": [{"uri": u, "sha256": h} for u, (_, h) in zip(args.styles, styles, strict=True)],
    }
    notes = list(content.notes) + [n for s, _ in styles for n in s.notes]
    if resume:
        notes.append(f"resumed at level {resume.level}, iteration {resume.iteration}")
    document = sidecar(inputs, args.output, options, stylizer.weights, result, notes)
    if resume:
        document["resumed"] = {"level": resume.level, "iteration": resume.iteration}
    storage.write_bytes(sidecar_of(args.output), dumps(document))
    saver.remove(0)  # published: the checkpoint has served
    final = result.history[-1]
    print(
        f"wrote {args.output} ({result.rgb.shape[1]}×{result.rgb.shape[0]}) in "
        f"{result.seconds:.1f} s; loss {final['total']:.4g} "
        f"(content {final['content']:.4g}, style {final['style']:.4g}, tv {final['tv']:.4g})"
    )
    return 0


def _checkpointer(
    args: argparse.Namespace,
    options: StyleOptions,
    content_sha: str,
    style_shas: list[str],
    stylizer,
) -> checkpoints.Checkpointer:
    """OUT's checkpoint, keyed like a batch's pair of the same inputs and options."""
    job = Job(  # the blend's weights are in the options, hence in the key
        row=0,
        content=args.content,
        content_sha=content_sha,
        styles=tuple(StyleInput(u, h, None) for u, h in zip(args.styles, style_shas, strict=True)),
        output=args.output,
        options=options.to_dict(),
        feature_keys={},
        label="",
        shape=(0, 0),
    )
    key = checkpoints.key(job, options.identity(), stylizer.weights.checksum)
    return checkpoints.Checkpointer([job], [key], options.checkpoint_every)


def _resume(saved: checkpoints.Saved | None, content: images.Picture, options: StyleOptions):
    """Where the run continues: the checkpoint, when its image has its level's shape."""
    if saved is None:
        return None
    resume = Resume(saved.level, saved.iteration, saved.arrays)
    final = images.fit_shape(content.rgb.shape[:2], options.size)
    return resume if resume.fits(final, level_sizes(options)) else None


def _watching(advance, saver: checkpoints.Checkpointer, stylizer, options: StyleOptions):
    """The step callback: the bar, a checkpoint every options.checkpoint_every seconds, and a
    stop at this iteration (checkpointed) when a signal asked for one."""

    def on_step(step: Iteration) -> None:
        advance(step)
        stops.after_step(step, options, lambda stop: saver.keep(step, options, stylizer, stop))

    return on_step


def _is_clip(content: str, output: str) -> bool:
    """A clip: a video, a frame folder or glob; an animated GIF when the output is a video."""
    gif = content.lower().endswith(".gif") and output.lower().endswith(CLIP_OUTPUTS)
    return gif or clipsource.is_clip(content)


def stylize_clip_command(args: argparse.Namespace, options: StyleOptions) -> int:
    """`stylebatch stylize CLIP STYLE -o OUT.mp4`: OUT's frames under OUT/ (a rerun resumes at the
    first missing frame), OUT encoded at the source's rate with its audio, OUT's sidecar."""
    content, output = uri.absolute(args.content), uri.absolute(args.output)
    if not output.lower().endswith(CLIP_OUTPUTS):
        raise ImageError(f"output '{args.output}': a clip's output is a video (.mp4)")
    styles = [uri.absolute(s) for s in args.styles]
    probes = {content: _clip_probe(content, options.max_frames), **prepare.probe_all(styles)}
    pair = Pair(
        0, content, tuple(StyleRef(s, None) for s in styles), uri.name(output), options, {}, {}
    )
    problem = prepare.clip_problem(pair, probes[content]) or next(
        (f"style '{s}': {probes[s].error}" for s in styles if probes[s].error), None
    )
    if problem:
        raise ImageError(problem)
    from flows import clips  # Prefect's tasks: imported for clips only, so a still starts fast

    weights = shared_stylizer(options).weights
    job = prepare.make_job(pair, probes, uri.parent(output), weights.checksum)
    cache = args.feature_cache if getattr(args, "feature_cache", None) else default_root()
    with pair_bar(job.frames, quiet=args.quiet) as advance:
        line = clips.run_clip(job, cache, True, lambda i: advance(f"frame {i + 1}"))
    print(
        f"wrote {args.output} ({job.frames} frames at {job.fps:g} fps) and its frames under "
        f"{posixpath.splitext(args.output)[0]}/ in {line['seconds']:.1f} s"
    )
    return 0


def _clip_probe(content: str, max_frames: int):
    try:
        return clipsource.probe(content, max_frames)
    except storage.NotFoundError as exc:
        raise ImageError(f"content '{content}' not found") from exc


def features_command(args: argparse.Namespace) -> int:
    """`stylebatch features`: one float32 (H, W, C) array per requested layer."""
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    weights = load_weights(resolve_spec(args.network, args.weights))
    picture, _ = read_picture(args.image, "image")
    rgb = images.composite(picture)
    if args.size:
        rgb = images.resize(rgb, images.fit_shape(rgb.shape[:2], args.size))
    features = extract(FeatureNet(weights, layers, args.pooling), rgb)
    buffer = io.BytesIO()
    np.savez(buffer, **{name: value.astype(np.float32) for name, value in features.items()})
    storage.write_bytes(args.output, buffer.getvalue())
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in features.items())
    print(f"wrote {args.output}: {shapes}")
    return 0


def weights_fetch(args: argparse.Namespace) -> int:
    """`stylebatch weights fetch`: VGG19 into the cache, MD5-checked."""
    from stylecore import fetch

    dest = args.output or fetch.default_vgg19_path()
    if dest.exists() and not args.url:
        print(f"already there: {dest}")
        return 0
    url = args.url or fetch.VGG19_URL
    md5 = args.md5 if args.md5 is not None else (fetch.VGG19_MD5 if not args.url else None)
    start = time.perf_counter()
    with download_bar(url) as progress:
        fetch.fetch(url, dest, md5, progress)
    print(
        f"saved {dest} in {time.perf_counter() - start:.0f} s" + (" (MD5 verified)" if md5 else "")
    )
    return 0


def weights_info(args: argparse.Namespace) -> int:
    """`stylebatch weights info`: layout, layers, mean and checksum."""
    print(describe(load_weights(resolve_spec(args.weights, None), include_fc=True)))
    return 0


def weights_verify(args: argparse.Namespace) -> int:
    """`stylebatch weights verify`: the top-5 classes of a sample image."""
    weights = load_weights(resolve_spec(args.weights, None), include_fc=True)
    if args.image:
        rgb = images.composite(read_picture(args.image, "image")[0])
        shown = args.image
    else:
        rgb, shown = sample_image(), "the sample image (a tabby cat)"
    print(f"top-5 classes of {shown} with {weights.source}:")
    for name, probability in top_classes(weights, rgb):
        print(f"  {probability:7.2%}  {name}")
    return 0
