"""Out of memory: one more try at ¾ of the size, said in the notes; a batch of several fails
instead (the flow retries its pairs one by one)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import tensorflow as tf

from stylecore.errors import StyleError
from stylecore.images import Picture
from stylecore.options import StyleOptions
from stylecore.stylize import GramsFor, Iteration, Result, Stylizer, stylize_many

OOM_SHRINK = 0.75  # out of memory: one more try with the longest side times this
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
    """Results and the options they were made with: once more at a smaller size when the device
    runs out of memory. `where`: start, temporal, resume (Stylizer.steps)."""
    results, error = _attempt(contents, grams, options, stylizer, init, on_step, logger, where)
    if error is None:
        return results, options
    if not isinstance(error, tf.errors.ResourceExhaustedError):
        raise error
    if len(contents) > 1:
        raise StyleError(f"out of memory at {options.size} px with {len(contents)} images at once")
    smaller = _smaller(options)
    logger.warning("out of memory at %d px; trying once more at %d px", options.size, smaller.size)
    where.pop("resume", None)  # a checkpoint of the larger size does not fit the smaller one
    results, error = _attempt(contents, grams, smaller, stylizer, init, on_step, logger, where)
    if error is None:
        return results, smaller
    if isinstance(error, tf.errors.ResourceExhaustedError):
        raise StyleError(
            f"out of memory at {options.size} px, and again at {smaller.size} px: lower --size"
        )
    raise error


def note(asked: StyleOptions, used: StyleOptions) -> list[str]:
    """The sidecar's note when the result was made smaller than asked."""
    if used.size == asked.size:
        return []
    return [f"out of memory at {asked.size} px: stylized at {used.size} px"]


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
