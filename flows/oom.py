"""Out of memory: the same size again in smaller tiles, then (the last resort) smaller; said in notes.
A batch of several images fails instead (the flow retries its pairs one by one)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import tensorflow as tf

from stylecore.errors import StyleError
from stylecore.images import Picture, fit_shape
from stylecore.options import MIN_TILE, StyleOptions
from stylecore.stylize import GramsFor, Iteration, Result, Stylizer, stylize_many

OOM_SHRINK = 0.75  # the last resort: one more try with the longest side times this
GramsSource = Callable[[StyleOptions], GramsFor]  # the Gram targets for some options
OnStep = Callable[[StyleOptions], Callable[[Iteration], None]]  # a step callback for some options


def optimize(
    contents: list[Picture],
    grams: GramsSource,
    options: StyleOptions,
    stylizer: Stylizer,
    init,
    on_step: OnStep,
    logger: logging.Logger,
    **where,
) -> tuple[list[Result], StyleOptions]:
    """Results and the options they were made with: when the device runs out of memory, once
    more at the same size in tiles a quarter of the area of what was tried (unless --tile 0),
    then once at a smaller size. `where`: start, temporal, resume (Stylizer.steps)."""
    results, error = _attempt(contents, grams, options, stylizer, init, on_step, logger, where)
    if error is None:
        return results, options
    if not isinstance(error, tf.errors.ResourceExhaustedError):
        raise error
    if len(contents) > 1:
        raise StyleError(f"out of memory at {options.size} px with {len(contents)} images at once")
    tiled = _tiled(options, stylizer, contents[0])
    if tiled is not None:
        logger.warning(
            "out of memory at %d px %s; trying again at the same size in tiles of %s px",
            options.size,
            _how(options),
            tiled.tile,
        )
        results, error = _attempt(contents, grams, tiled, stylizer, init, on_step, logger, where)
        if error is None:
            return results, tiled
        if not isinstance(error, tf.errors.ResourceExhaustedError):
            raise error
    tried = tiled or options
    smaller = _smaller(tried)
    logger.warning(
        "out of memory at %d px %s; the last resort: %d px", tried.size, _how(tried), smaller.size
    )
    where.pop("resume", None)  # a checkpoint of the larger size does not fit the smaller one
    results, error = _attempt(contents, grams, smaller, stylizer, init, on_step, logger, where)
    if error is None:
        return results, smaller
    if isinstance(error, tf.errors.ResourceExhaustedError):
        raise StyleError(
            f"out of memory at {options.size} px (also {_how(tried)}), and again at "
            f"{smaller.size} px: lower --size or --tile"
        )
    raise error


def note(asked: StyleOptions, used: StyleOptions) -> list[str]:
    """The sidecar's notes when the result was made another way than asked."""
    notes = []
    if used.tile != asked.tile:
        notes.append(
            f"out of memory at {asked.size} px {_how(asked)}: stylized in tiles of {used.tile} px"
        )
    if used.size != asked.size:
        notes.append(
            f"out of memory at {asked.size} px even {_how(used)}: stylized at {used.size} px "
            "(made smaller: the last resort)"
        )
    return notes


def _how(options: StyleOptions) -> str:
    return "untiled" if options.tile in ("auto", "0") else f"in tiles of {options.tile} px"


def _tiled(options: StyleOptions, stylizer: Stylizer, content: Picture) -> StyleOptions | None:
    """The same options in tiles whose windows (tile and halos) have a quarter of the area of what
    failed (the whole image, or the tiles auto or --tile chose); None when --tile 0 or no smaller
    tile is left."""
    if options.tile == "0":
        return None
    shape = fit_shape(content.rgb.shape[:2], options.size)
    halo, align = stylizer.halo, stylizer.geometry.align
    plan = stylizer.tile_plan(shape, 1, options)
    window = max(shape) if plan is None else plan.tile + 2 * halo
    tile = max(MIN_TILE, (window // 2 - 2 * halo) // align * align)
    if plan is not None and tile >= plan.tile:
        return None
    return options.replace(tile=str(tile))


def _attempt(contents, grams: GramsSource, options, stylizer, init, on_step: OnStep, logger, where):
    """(results, None) or (None, the error) of one optimization. The error leaves without its
    traceback, whose frames hold the attempt's tensors: kept in a failed task's state, they would
    pin that memory (a GPU's) for the rest of the run."""
    try:
        log = on_step(options)
        return stylize_many(contents, grams(options), options, stylizer, init, log, **where), None
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
