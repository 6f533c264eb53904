"""Prefect tasks: thin wrappers around one I/O step or one core call, passing URIs and keys."""

from __future__ import annotations

import concurrent.futures
import posixpath
import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import devices, storage
from flows.featurecache import FeatureCache
from flows.plan import Job, Probe
from flows.sidecar import dumps, sha256, sidecar
from stylecore import images
from stylecore.errors import ImageError
from stylecore.options import StyleOptions
from stylecore.stylize import (
    Iteration,
    Result,
    blend,
    prepare_style,
    shared_stylizer,
    stylize_many,
)

HASH_THREADS = 4  # each decodes one image at a time: bounded memory for huge photos


def transient(task, task_run, state) -> bool:
    """Retry only what may pass: storage trouble other than a missing object."""
    try:
        state.result()
    except storage.NotFoundError:
        return False
    except storage.StorageError:
        return True
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

    def one(uri: str) -> Probe:
        try:
            data = storage.read_bytes(uri)
            shape = images.decode(data, uri).rgb.shape[
                :2
            ]  # decoded once here: bad images fail early
            return Probe(sha256(data), (int(shape[0]), int(shape[1])))
        except storage.NotFoundError:
            return Probe(error="not found")
        except storage.StorageError as exc:
            if exc.run_level:
                raise
            return Probe(error=str(exc))
        except ImageError as exc:
            return Probe(error=str(exc).removeprefix(f"{uri}: "))

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
) -> str:
    """Compute one style's Grams at one size into the cache, unless there: computed | reused."""
    cache = FeatureCache(cache_root)
    if cache.has(key):
        return "reused"
    o = StyleOptions.from_dict(options)
    with devices.pool().acquire() as device:
        stylizer = shared_stylizer(o, device)
        rgb = prepare_style(images.decode(storage.read_bytes(uri), uri), longest, o)
        grams = stylizer.grams(rgb, o)
    cache.put(
        key,
        grams,
        {
            "style": uri,
            "network": stylizer.weights.checksum,
            "style_shape": list(rgb.shape[:2]),
            "layers_order": list(o.style_layers),
        },
    )
    get_run_logger().info("computed features of %s at %d px (%s)", uri, max(rgb.shape[:2]), key)
    return "computed"


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
        for job, result in _stylize(todo, cache_root, logger):
            outcomes[job.row] = job.outcome(
                "done", seconds=round(result.seconds, 3), losses=result.history[-1]
            ).to_dict()
    return [outcomes[j.row] for j in jobs]


def _stylize(jobs: list[Job], cache_root: str, logger) -> list[tuple[Job, Result]]:
    options = jobs[0].style_options()  # a group shares its options and styles
    contents = [images.decode(storage.read_bytes(j.content), j.content) for j in jobs]
    init = _init_image(options)
    cache = FeatureCache(cache_root)

    def grams_for(longest: int):
        per_style = [cache.get(key) for key in jobs[0].feature_keys[longest]]
        return [blend(per_style, options.style_blend)]

    with devices.pool().acquire() as device:
        stylizer = shared_stylizer(options, device)
        results = stylize_many(
            contents, grams_for, options, stylizer, init, _logging(logger, options)
        )
    for job, content, result in zip(jobs, contents, results, strict=True):
        _write(job, content, options, stylizer.weights, result)
        logger.info("row %d done in %.1f s: %s", job.row, result.seconds, job.output)
    return list(zip(jobs, results, strict=True))


def _write(job: Job, content, options: StyleOptions, weights, result: Result) -> None:
    """The image, then its sidecar: the sidecar's presence marks the pair done."""
    ext = posixpath.splitext(job.output)[1].lower() or ".png"
    storage.write_bytes(job.output, images.encode(result.rgb, result.alpha, ext))
    inputs = {
        "row": job.row,
        "content": {"uri": job.content, "sha256": job.content_sha},
        "styles": [{"uri": s.uri, "sha256": s.sha256, "weight": s.weight} for s in job.styles],
    }
    document = sidecar(inputs, job.output, options, weights, result, list(content.notes))
    storage.write_bytes(job.sidecar, dumps(document))


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
