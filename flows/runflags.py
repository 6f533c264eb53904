"""Flags of `stylebatch run` and `rerun` beyond the stylization options."""

from __future__ import annotations

import argparse


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
    if served:
        add_serve_flags(parser)
        return
    group.add_argument("--quiet", action="store_true", help="no progress bar")
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
