"""Prefect tasks: thin wrappers around one I/O step or one core call, passing URIs and keys."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import tensorflow as tf
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import devices, oom, outputs, prepare, stops, storage
from flows.featurecache import FeatureCache, grams_source
from flows.model import Job, Probe
from flows.storage import checkpoints
from stylecore import images
from stylecore.errors import ImageError, StyleError
from stylecore.options import StyleOptions
from stylecore.stylize import Iteration, Resume, Stylizer, level_sizes, shared_stylizer


def transient(task, task_run, state) -> bool:
    """Retry only what may pass: storage trouble other than a missing object or a lasting cause."""
    try:
        state.result()
    except storage.NotFoundError:
        return False
    except storage.StorageError as exc:
        return not exc.lasting
    except Exception:
        return False
    return False


@task(
    name="hash-inputs",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=transient,
)
def hash_inputs(uris: list[str]) -> dict[str, Probe]:
    """Each input's sha256 and pixel shape, or the one-line cause it cannot be used."""
    logger = get_run_logger()  # the pool's threads have no run context of their own
    return prepare.probe_all(uris, logger)


@task(
    name="style-features",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=transient,
    task_run_name="features {label}",
)
def style_features(
    uri: str, key: str, options: dict, longest: int, cache_root: str, label: str
) -> dict:
    """Compute one style's Grams at one size into the cache, unless there: the report's entry
    fields, {"cache": "reused"} or {"cache": "computed", "seconds": time in the core}."""
    cache = FeatureCache(cache_root)
    if cache.has(key):
        return {"cache": "reused"}
    o = StyleOptions.from_dict(options)
    with _without_uri(uri), devices.pool().acquire() as device:  # the flow names the style
        start = time.perf_counter()
        stylizer = shared_stylizer(o, device)
        try:
            shape = cache.compute(key, uri, o, longest, stylizer)
        except tf.errors.ResourceExhaustedError:  # raised below, without the frames' tensors
            shape = None
        seconds = time.perf_counter() - start
    if shape is None:
        raise StyleError(f"out of memory computing its features at {longest} px: lower --size")
    get_run_logger().info("computed features of %s at %d px (%s)", uri, max(shape), key)
    return {"cache": "computed", "seconds": round(seconds, 3)}


@contextmanager
def _without_uri(where: str) -> Iterator[None]:
    """Our errors about `where` with the URI taken out of their message (the caller puts it in)."""
    try:
        yield
    except StyleError as exc:  # storage errors too, their flags kept
        if prepare.without_uri(exc, where) == str(exc):
            raise
        raise exc.reworded(prepare.without_uri(exc, where)) from exc


@task(
    name="stylize",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=transient,
    task_run_name="{label}",
)
def stylize_group(jobs: list[Job], cache_root: str, force: bool, label: str) -> list[dict]:
    """Stylize jobs that share options, styles and working shape, together in one tensor;
    each into its output and sidecar."""
    logger = get_run_logger()
    try:
        stops.check()  # a stop was asked while this waited its turn
        for job in jobs:  # a link leading out, a full or read-only disk: before the work
            storage.check_writable(job.output, job.sidecar, inside=job.root or None)
        return _stylize(jobs, cache_root, force, logger)
    except stops.Interrupted as exc:  # not a failure: `rerun` takes it, from its checkpoint
        logger.warning("%s: %s", label, exc)
        return [job.outcome("interrupted", str(exc)).to_dict() for job in jobs]
    except StyleError as exc:
        error = _naming(exc, jobs)
    raise error  # raised here, not from the handler: the failed state keeps no frames, no images


def _naming(exc: StyleError, jobs: list[Job]) -> StyleError:
    """A single job's error as one line naming its content; a batch's errors stay as they are (the
    flow retries its jobs one by one), and so do storage errors, which name their file."""
    if isinstance(exc, storage.StorageError) or len(jobs) > 1:
        return exc.with_traceback(None)
    content = jobs[0].content
    return type(exc)(f"content '{content}': {prepare.without_uri(exc, content)}")


def _stylize(jobs: list[Job], cache_root: str, force: bool, logger) -> list[dict]:
    """Each job's outcome for the report, its files written."""
    options = jobs[0].style_options()  # a group shares its options and styles
    contents = [images.decode(storage.read_bytes(j.content), j.content) for j in jobs]
    init = _init_image(options)
    with devices.pool().acquire() as device:
        stops.check()
        stylizer = shared_stylizer(options, device)
        grams = grams_source(
            FeatureCache(cache_root), jobs[0].styles, jobs[0].feature_keys, stylizer
        )
        saver = _checkpointer(jobs, options, stylizer)
        resume = _resume(saver.resume(), contents, options, logger)
        on_step = _watching(logger, stylizer, saver, options)
        results, used = oom.optimize(
            contents, grams, options, stylizer, init, on_step, logger, resume=resume
        )
    resumed = _resumed(resume, options, used)
    lines = []
    for index, (job, content, result) in enumerate(zip(jobs, contents, results, strict=True)):
        notes = [*content.notes, *job.notes, *oom.note(options, used), *_resumed_note(resumed)]
        status = outputs.write(job, used, stylizer.weights, result, notes, force, resumed)
        saver.remove(index)  # published, by this run or another: the checkpoint has served
        logger.info("row %d %s in %.1f s: %s", job.row, status, result.seconds, job.output)
        seconds = round(result.seconds, 3)
        final = result.history[-1]
        outcome = job.outcome(
            status, seconds=seconds, losses=final, notes=notes, quality=result.quality
        )
        lines.append(outcome.to_dict())
    return lines


def _checkpointer(
    jobs: list[Job], options: StyleOptions, stylizer: Stylizer
) -> checkpoints.Checkpointer:
    """The jobs' checkpoints, keyed like their outputs (another run's options never resume)."""
    identity, checksum = options.identity(), stylizer.weights.checksum
    keys = [checkpoints.key(job, identity, checksum) for job in jobs]
    return checkpoints.Checkpointer(jobs, keys, options.checkpoint_every)


def _resume(saved: checkpoints.Saved | None, contents: list, options: StyleOptions, logger):
    """Where the jobs continue: their checkpoint, when its image fits their level."""
    if saved is None:
        return None
    resume = Resume(saved.level, saved.iteration, saved.arrays)
    final = images.fit_shape(contents[0].rgb.shape[:2], options.size)
    if not resume.fits(final, level_sizes(options), len(contents)):
        logger.warning("checkpoint ignored: it does not fit level %d of this pair", saved.level)
        return None
    logger.info("resuming at level %d, iteration %d", resume.level, resume.iteration)
    return resume


def _resumed(resume: Resume | None, asked: StyleOptions, used: StyleOptions) -> dict | None:
    """Where the run resumed, for the sidecar; None when it started afresh (or ran out of memory
    and started again smaller, without the checkpoint)."""
    if resume is None or used.size != asked.size:
        return None
    return {"level": resume.level, "iteration": resume.iteration}


def _resumed_note(resumed: dict | None) -> list[str]:
    if resumed is None:
        return []
    return [f"resumed at level {resumed['level']}, iteration {resumed['iteration']}"]


def _watching(
    logger, stylizer: Stylizer, saver: checkpoints.Checkpointer, asked: StyleOptions
) -> oom.OnStep:
    """The step callback: log, checkpoint every options.checkpoint_every seconds, and stop at
    this iteration (checkpointed) when a stop was asked."""

    def for_options(options: StyleOptions) -> Callable[[Iteration], None]:
        log = _logging(logger, options)
        # a tiled retry keeps checkpointing (tiles do not change the result: the same key); a
        # smaller one after running out of memory keeps none
        own = options.identity() == asked.identity()

        def on_step(step: Iteration) -> None:
            log(step)
            keep = lambda stop: own and saver.keep(step, options, stylizer, stop)  # noqa: E731
            stops.after_step(step, options, keep)

        return on_step

    return for_options


def _init_image(options: StyleOptions):
    if options.init in ("content", "noise"):
        return None
    try:
        return images.composite(images.decode(storage.read_bytes(options.init), options.init))
    except storage.NotFoundError as exc:
        raise ImageError(f"init image '{options.init}' not found") from exc


def _logging(logger, options: StyleOptions) -> Callable[[Iteration], None]:
    """An on_step callback that logs about ten lines per level."""
    every = max(1, options.iterations // 10)
    start = time.perf_counter()

    def log(step: Iteration) -> None:
        if step.iteration % every == 0 or step.iteration == options.iterations:
            losses = {k: float(v[0]) for k, v in step.losses.items()}
            tiles = step.tiles
            logger.info(
                "iteration %d/%d at %d×%d%s: loss %.4g (content %.4g, style %.4g, tv %.4g), %.2f s",
                step.iteration,
                options.iterations,
                step.shape[1],
                step.shape[0],
                f" in {len(tiles.tiles)} tiles of {tiles.tile} px" if tiles else "",
                losses["total"],
                losses["content"],
                losses["style"],
                losses["tv"],
                time.perf_counter() - start,
            )

    return log
