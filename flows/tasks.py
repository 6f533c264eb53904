"""Prefect tasks: thin wrappers around one I/O step or one core call, passing URIs and keys."""

from __future__ import annotations

import concurrent.futures
import posixpath
import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import devices, storage
from flows.featurecache import FeatureCache
from flows.plan import Job
from flows.sidecar import dumps, sha256, sidecar
from stylecore import images
from stylecore.errors import ImageError
from stylecore.options import StyleOptions
from stylecore.stylize import Iteration, blend, prepare_style, shared_stylizer, stylize_with

HASH_THREADS = 8


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
def hash_inputs(uris: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """sha256 of each input's bytes, and a one-line cause for each one that cannot be read."""

    def one(uri: str) -> tuple[str, str | None, str | None]:
        try:
            return uri, sha256(storage.read_bytes(uri)), None
        except storage.NotFoundError:
            return uri, None, "not found"
        except storage.StorageError as exc:
            if exc.run_level:
                raise
            return uri, None, str(exc)

    hashes, errors = {}, {}
    with concurrent.futures.ThreadPoolExecutor(HASH_THREADS) as pool:
        for uri, digest, error in pool.map(one, uris):
            if error is None:
                hashes[uri] = digest
            else:
                errors[uri] = error
    return hashes, errors


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
    task_run_name="row {job.row}: {job.label}",
)
def stylize_pair(job: Job, cache_root: str, force: bool) -> dict:
    """Stylize one pair into job.output and its sidecar; skip when both exist already."""
    logger = get_run_logger()
    if not force and storage.exists(job.output) and storage.exists(job.sidecar):
        return job.outcome("skipped").to_dict()
    options = job.style_options()
    data = storage.read_bytes(job.content)
    content = images.decode(data, job.content)
    init = _init_image(options)
    cache = FeatureCache(cache_root)

    def grams_for(longest: int):
        per_style = [cache.get(key) for key in job.feature_keys[longest]]
        return [blend(per_style, options.style_blend)]

    with devices.pool().acquire() as device:
        stylizer = shared_stylizer(options, device)
        result = stylize_with(
            content, grams_for, options, stylizer, init, _logging(logger, options)
        )
    ext = posixpath.splitext(job.output)[1].lower() or ".png"
    storage.write_bytes(job.output, images.encode(result.rgb, result.alpha, ext))
    inputs = {
        "row": job.row,
        "content": {"uri": job.content, "sha256": job.content_sha},
        "styles": [{"uri": s.uri, "sha256": s.sha256, "weight": s.weight} for s in job.styles],
    }
    document = sidecar(inputs, job.output, options, stylizer.weights, result, list(content.notes))
    storage.write_bytes(job.sidecar, dumps(document))  # last: its presence marks the pair done
    logger.info("row %d done in %.1f s: %s", job.row, result.seconds, job.output)
    return job.outcome(
        "done", seconds=round(result.seconds, 3), losses=result.history[-1]
    ).to_dict()


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
