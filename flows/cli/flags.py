"""Command-line flags: one per StyleOptions field (one name everywhere: --style-weight), and
the batch commands' own (--force, --shards, …)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from stylecore.options import PRESETS, StyleOptions, option_names, preset

HELP = {
    "network": "known network: vgg19 (default, MatConvNet file in the cache) or vgg16-hed",
    "weights": "a weights file (.mat or hed .h5); overrides --network",
    "pooling": "max or avg",
    "content_layers": "comma-separated, e.g. relu4_2",
    "content_layer_weights": "one per content layer (default equal)",
    "style_layers": "comma-separated, e.g. relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
    "style_layer_weight_exp": "layer i weighs exp**i; 1 is equal",
    "content_weight": "weight of the content loss",
    "style_weight": "weight of the style loss",
    "tv_weight": "weight of the total-variation smoothing",
    "normalize_losses": "divide each loss term by its target's energy (off: the recipe's sums)",
    "style_blend": "one weight per style (default equal)",
    "style_scale": "the style's size relative to the content's",
    "preserve_colors": "keep the content's colours (luminance-only transfer)",
    "init": "content, noise, or an image path",
    "init_noise": "noise std for --init noise, in pixel units",
    "seed": "random seed",
    "optimizer": "lbfgs or adam",
    "learning_rate": "step size (default: adam 10, lbfgs 1)",
    "beta1": "Adam's beta1",
    "beta2": "Adam's beta2",
    "epsilon": "Adam's epsilon",
    "lbfgs_memory": "L-BFGS history length",
    "iterations": "iterations per level",
    "size": "longest side of the output in pixels",
    "levels": "coarse-to-fine levels (each half the size of the next)",
    "precision": "the network's arithmetic: float32, bfloat16, or auto (bfloat16 where the CPU or "
    "GPU does it natively, else float32); Grams, losses and the image stay float32",
    "tile": "auto (tile only when a step does not fit the device), 0 (never) or N (tiles ≤ N px)",
    "tolerance": "stop a level when the loss improves by less than this fraction (0: never)",
    "checkpoint_every": "seconds between checkpoints of a running pair (0: none)",
    "temporal_weight": "clips: how strongly a frame follows the previous one warped by the flow",
    "frame_iterations": "clips: iterations of each frame after a shot's first (never more than --iterations)",
    "max_frames": "clips: refuse clips longer than this many frames",
    "xla": "compile each optimizer step with XLA (unset: off on CPUs; on GPUs from 256 px and 50 it.)",
}
_TYPES = typing.get_type_hints(StyleOptions)


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """Add --preset and one flag per option; unset flags stay None so presets show through."""
    group = parser.add_argument_group("stylization options")
    group.add_argument("--preset", choices=sorted(PRESETS), default="default")
    for field in dataclasses.fields(StyleOptions):
        flag = "--" + field.name.replace("_", "-")
        text = f"{HELP.get(field.name, '')} (default: {_shown(field.default)})"
        if _TYPES[field.name] in (bool, bool | None):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            group.add_argument(flag, default=None, metavar=_metavar(field.name), help=text)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options the user set on the command line, as written."""
    return {name: getattr(args, name) for name in option_names() if getattr(args, name) is not None}


def options_from_args(args: argparse.Namespace) -> StyleOptions:
    """The preset with the given flags over it (raises OptionsError naming a bad one)."""
    return StyleOptions.from_dict(given_options(args), preset(args.preset))


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _metavar(name: str) -> str:
    kind = _TYPES[name]
    if typing.get_origin(kind) is tuple:
        return "A,B,…"
    return {int: "N", float: "X"}.get(kind, "VALUE")


def add_run_flags(
    parser: argparse.ArgumentParser, rerun: bool = False, served: bool = False
) -> None:
    """--feature-cache, --force, --strict, --concurrency, --quiet, and the scale-out flags."""
    group = parser.add_argument_group("batch")
    group.add_argument(
        "--feature-cache",
        help="style-feature cache (directory or s3:// URI); "
        "default: the user cache" + (", or the report's" if rerun else ""),
    )
    group.add_argument("--force", action="store_true", help="redo pairs whose output exists")
    if not rerun:
        group.add_argument(
            "--strict",
            action="store_true",
            help="stop before running anything if any row is invalid",
        )
    group.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="pairs at once on each device (default 1: one per GPU, one on a CPU)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="same-size pairs sharing a style optimized together in one tensor "
        "(default 8 on a GPU, 1 on CPUs, where a batch is no faster per image)",
    )
    group.add_argument(
        "--min-style-gain",
        type=float,
        default=None,
        metavar="X",
        help="flag a done pair 'weak' when its distance to the style's statistics shrank less than "
        "X times from the content's (quality.style_ratio > 1/X; default 10)",
    )
    if rerun:
        group.add_argument(
            "--weak",
            action="store_true",
            help="redo the pairs flagged weak (not the failed ones) with twice the iterations",
        )
    if served:
        add_serve_flags(parser)
        return
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    group.add_argument(
        "--json", action="store_true", help="print the summary as one JSON document on stdout"
    )
    if not rerun:
        group.add_argument(
            "--dry-run",
            action="store_true",
            help="check every row and read every input, then print what would run, be skipped "
            "and fail (and the work, in pixel-iterations); writes nothing, starts no server",
        )
    add_scale_flags(parser)


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """--cron, --name and --shards of `stylebatch serve`."""
    group = parser.add_argument_group("serve")
    group.add_argument("--cron", help='a cron schedule, e.g. "0 2 * * *" (default: none)')
    group.add_argument(
        "--name", default="served", help="the deployment's name (default: stylize-batch/served)"
    )
    _shards_flag(group)


def add_scale_flags(parser: argparse.ArgumentParser) -> None:
    """--shards and the Dask task runner's flags."""
    group = parser.add_argument_group("scale-out")
    _shards_flag(group)
    group.add_argument(
        "--task-runner",
        choices=("threads", "dask"),
        default=None,
        help="where pair tasks run: threads of this process (default) or a Dask cluster",
    )
    group.add_argument(
        "--dask-address",
        metavar="tcp://HOST:PORT",
        help="the scheduler of an existing Dask cluster (implies --task-runner dask); "
        "default: a temporary local cluster",
    )
    group.add_argument(
        "--dask-workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the temporary local cluster (default: Dask's choice)",
    )
    group.add_argument(
        "--dask-cluster-class",
        metavar="MODULE.CLASS",
        help="the temporary cluster's class, e.g. dask_cuda.LocalCUDACluster: one worker per GPU",
    )


def _shards_flag(group) -> None:
    group.add_argument(
        "--shards",
        type=int,
        default=None,
        help="split the manifest into N shards: from a deployment, each a flow run of it that any "
        "worker takes; otherwise one after another in this process (default 1)",
    )
