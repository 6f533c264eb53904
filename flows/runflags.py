"""Flags of `stylebatch run` and `rerun` beyond the stylization options."""

from __future__ import annotations

import argparse


def add_run_flags(parser: argparse.ArgumentParser, rerun: bool = False) -> None:
    """--feature-cache, --force, --strict, --concurrency, --quiet."""
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
    group.add_argument("--quiet", action="store_true", help="no progress bar")
