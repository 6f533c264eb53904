"""`stylebatch serve`: the batch flow served from this process, on a schedule, without a pool."""

from __future__ import annotations

import argparse

from flows.cliopts import given_options
from flows.runner import absolute, precheck
from stylecore.errors import StyleError
from stylecore.options import StyleOptions, preset


def serve_command(args: argparse.Namespace) -> int:
    """Register deployment `stylize-batch/NAME` and run its scheduled and triggered runs here."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise StyleError(
            "stylebatch serve needs a Prefect server that outlives it: start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    given = given_options(args)
    manifest, output = absolute(args.manifest), absolute(args.output)
    precheck(manifest, StyleOptions.from_dict(given, preset(args.preset)), None)
    from flows.batch import stylize_batch

    parameters = {
        "manifest": manifest,
        "output": output,
        "feature_cache": args.feature_cache and absolute(args.feature_cache),
        "force": args.force,
        "strict": args.strict,
        "concurrency": args.concurrency or 1,
        "batch_size": args.batch_size,
        "shards": args.shards or 1,
        "preset": args.preset,
        **given,
    }
    stylize_batch.serve(
        name=args.name,
        cron=args.cron,
        parameters=stylize_batch.validate_parameters(parameters),  # '512' → 512, as `run` does
        tags=["stylebatch"],
        description=f"served by `stylebatch serve`: {manifest} into {output}",
    )
    return 0
