"""Prefect tasks: thin wrappers around one I/O step or one core call, passing URIs and keys."""

from __future__ import annotations

import concurrent.futures
import posixpath
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import tensorflow as tf
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import devices, storage
from flows.featurecache import FeatureCache, grams_source
from flows.plan import Job, Probe
from flows.sidecar import dumps, sha256, sidecar
from stylecore import images
from stylecore.errors import ImageError, StyleError
from stylecore.options import StyleOptions
from stylecore.stylize import (
    Iteration,
    Result,
    Stylizer,
    shared_stylizer,
    stylize_many,
)

HASH_THREADS = 4  # each decodes one image at a time: bounded memory for huge photos
OOM_SHRINK = 0.75  # out of memory: one more try with the longest side times this
SIDECAR_GRACE = 30.0  # seconds another writer may take between an image and its sidecar


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


def cause(exc: BaseException, uri: str) -> str:
    """An error's message without the URI it starts with: the report names the input itself."""
    text = str(exc)
    for prefix in (f"{uri}: ", f"{storage.shown(uri)}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


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

    def one(uri: str) -> Probe:
        try:
            data = storage.read_bytes(uri)
            picture = images.decode(data, uri)  # decoded once here: bad images fail early
        except storage.NotFoundError:
            return Probe(error="not found")
        except storage.StorageError as exc:
            if exc.run_level:
                raise
            return Probe(error=cause(exc, uri))
        except ImageError as exc:
            return Probe(error=cause(exc, uri))
        except Exception as exc:  # a decoder's own bug must not stop the batch
            logger.exception("decoding %s failed", uri)
            return Probe(error=f"cannot decode it ({type(exc).__name__}; see the log)")
        height, width = picture.rgb.shape[:2]
        return Probe(sha256(data), (int(height), int(width)), notes=picture.notes)

    with concurrent.futures.ThreadPoolExecutor(HASH_THREADS) as pool:
        return dict(zip(uris, pool.map(one, uris), strict=True))


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
def _without_uri(uri: str) -> Iterator[None]:
    """Our errors about `uri` with the URI taken out of their message (the caller puts it in)."""
    try:
        yield
    except StyleError as exc:  # storage errors too, their flags kept
        if cause(exc, uri) == str(exc):
            raise
        raise exc.reworded(cause(exc, uri)) from exc


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
    each into its output and sidecar. Jobs whose output and sidecar exist are skipped."""
    logger = get_run_logger()
    done = [j for j in jobs if not force and storage.exists(j.output) and storage.exists(j.sidecar)]
    todo = [j for j in jobs if j not in done]
    outcomes = {j.row: j.outcome("skipped").to_dict() for j in done}
    if todo:
        error = None
        try:
            for job in todo:  # a link leading out, a full or read-only disk: before the work
                storage.check_writable(job.output, job.sidecar, inside=job.root or None)
            for job, status, result, notes in _stylize(todo, cache_root, force, logger):
                outcome = job.outcome(
                    status, seconds=round(result.seconds, 3), losses=result.history[-1], notes=notes
                )
                outcomes[job.row] = outcome.to_dict()
        except StyleError as exc:
            error = _naming(exc, todo)
        if error:  # raised here, not from the handler: the failed state keeps no frames, no images
            raise error
    return [outcomes[j.row] for j in jobs]


def _naming(exc: StyleError, jobs: list[Job]) -> StyleError:
    """A single job's error as one line naming its content; a batch's errors stay as they are (the
    flow retries its jobs one by one), and so do storage errors, which name their file."""
    if isinstance(exc, storage.StorageError) or len(jobs) > 1:
        return exc.with_traceback(None)
    content = jobs[0].content
    return type(exc)(f"content '{content}': {cause(exc, content)}")


def _stylize(
    jobs: list[Job], cache_root: str, force: bool, logger
) -> list[tuple[Job, str, Result, list]]:
    """(job, done | skipped, result, notes) for each job, its files written."""
    options = jobs[0].style_options()  # a group shares its options and styles
    contents = [images.decode(storage.read_bytes(j.content), j.content) for j in jobs]
    init = _init_image(options)
    with devices.pool().acquire() as device:
        stylizer = shared_stylizer(options, device)
        cache = FeatureCache(cache_root)
        grams = grams_source(cache, jobs[0].styles, jobs[0].feature_keys, stylizer)
        results, used = _optimize(contents, grams, options, stylizer, init, logger)
    shrunk = used.size != options.size
    smaller = [f"out of memory at {options.size} px: stylized at {used.size} px"] if shrunk else []
    written = []
    for job, content, result in zip(jobs, contents, results, strict=True):
        notes = [*content.notes, *job.notes, *smaller]
        status = _write(job, used, stylizer.weights, result, notes, force)
        logger.info("row %d %s in %.1f s: %s", job.row, status, result.seconds, job.output)
        written.append((job, status, result, notes))
    return written


def _optimize(contents, grams, options: StyleOptions, stylizer: Stylizer, init, logger):
    """Results and the options they were made with: once more at a smaller size when the device
    runs out of memory (a batch of several fails instead: the flow retries its pairs alone)."""
    results, error = _attempt(contents, grams, options, stylizer, init, logger)
    if error is None:
        return results, options
    if not isinstance(error, tf.errors.ResourceExhaustedError):
        raise error
    if len(contents) > 1:
        raise StyleError(f"out of memory at {options.size} px with {len(contents)} images at once")
    smaller = _smaller(options)
    logger.warning("out of memory at %d px; trying once more at %d px", options.size, smaller.size)
    results, error = _attempt(contents, grams, smaller, stylizer, init, logger)
    if error is None:
        return results, smaller
    if isinstance(error, tf.errors.ResourceExhaustedError):
        raise StyleError(
            f"out of memory at {options.size} px, and again at {smaller.size} px: lower --size"
        )
    raise error


def _attempt(contents, grams, options: StyleOptions, stylizer: Stylizer, init, logger):
    """(results, None) or (None, the error) of one optimization. The error leaves without its
    traceback, whose frames hold the attempt's tensors: kept in a failed task's state, they would
    pin that memory (a GPU's) for the rest of the run."""
    try:
        log = _logging(logger, options)
        return stylize_many(contents, grams(options), options, stylizer, init, log), None
    except tf.errors.ResourceExhaustedError as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        logger.warning("%s", next((x for x in lines if "OOM" in x), lines[0]).strip()[:300])
        error: BaseException = exc
    except StyleError as exc:
        error = exc
    except Exception as exc:  # not ours: the traceback goes to the log, the frames go
        logger.exception("the optimization failed")
        error = exc
    return None, error.with_traceback(None)


def _smaller(options: StyleOptions) -> StyleOptions:
    try:
        return options.replace(size=int(options.size * OOM_SHRINK))
    except StyleError:  # below the smallest size the options allow
        error = StyleError(f"out of memory at {options.size} px: lower --size")
    raise error


def _write(
    job: Job, options: StyleOptions, weights, result: Result, notes: list[str], force: bool
) -> str:
    """The image and its sidecar: done, or skipped when another run's are there (`force`:
    replaced, whoever wrote them)."""
    ext = posixpath.splitext(job.output)[1].lower() or ".png"
    image = images.encode(result.rgb, result.alpha, ext)
    inputs = {
        "row": job.row,
        "content": {"uri": job.content, "sha256": job.content_sha},
        "styles": [{"uri": s.uri, "sha256": s.sha256, "weight": s.weight} for s in job.styles],
    }
    document = sidecar(inputs, job.output, options, weights, result, notes)
    document["output_sha256"] = sha256(image)  # which image this sidecar describes
    body, inside = dumps(document), job.root or None
    if force:
        storage.write_bytes(job.output, image, inside=inside)
        storage.write_bytes(job.sidecar, body, inside=inside)
        return "done"
    return "done" if publish(job.output, image, job.sidecar, body, inside) else "skipped"


def publish(
    image_uri: str,
    image: bytes,
    sidecar_uri: str,
    body: bytes,
    inside: str | None = None,
    grace: float = SIDECAR_GRACE,
) -> bool:
    """Write an image, then its sidecar (whose presence marks the pair done), each once across
    concurrent runs: False when another run's image and sidecar are there instead.

    The image is written exclusively; its writer then writes the sidecar. A run that finds another's
    image waits for that sidecar; an image still without one `grace` seconds after it was written
    was left by a writer that died between the two writes, and is replaced.
    """
    if not storage.write_bytes(image_uri, image, exclusive=True, inside=inside):
        if _sidecar_arrives(sidecar_uri, image_uri, grace):
            return False
        storage.write_bytes(image_uri, image, inside=inside)
    try:
        if storage.write_bytes(sidecar_uri, body, exclusive=True, inside=inside):
            return True
    except storage.StorageError:
        with suppress(storage.StorageError):  # ours; without its sidecar, a half-written pair
            storage.delete(image_uri)
        raise
    if sha256(storage.read_bytes(image_uri)) != sha256(image):
        return False  # a run replaced our image after `grace`, and wrote its sidecar: theirs stand
    storage.write_bytes(sidecar_uri, body, inside=inside)  # a sidecar left from an earlier image
    return True


def _sidecar_arrives(sidecar_uri: str, image_uri: str, grace: float) -> bool:
    """Whether the sidecar of another writer's image appears before the image is `grace` old."""
    while not storage.exists(sidecar_uri):
        written = storage.modified(image_uri)
        if written is None or time.time() - written >= grace:
            return False
        time.sleep(min(0.2, grace))
    return True


def _init_image(options: StyleOptions):
    if options.init in ("content", "noise"):
        return None
    try:
        return images.composite(images.decode(storage.read_bytes(options.init), options.init))
    except storage.NotFoundError as exc:
        raise ImageError(f"init image '{options.init}' not found") from exc


def _logging(logger, options: StyleOptions):
    """An on_step callback that logs about ten lines per level."""
    every = max(1, options.iterations // 10)
    start = time.perf_counter()

    def log(step: Iteration) -> None:
        if step.iteration % every == 0 or step.iteration == options.iterations:
            losses = {k: float(v[0]) for k, v in step.losses.items()}
            logger.info(
                "iteration %d/%d at %d×%d: loss %.4g (content %.4g, style %.4g, tv %.4g), %.1f s",
                step.iteration,
                options.iterations,
                step.shape[1],
                step.shape[0],
                losses["total"],
                losses["content"],
                losses["style"],
                losses["tv"],
                time.perf_counter() - start,
            )

    return log
