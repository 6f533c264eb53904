"""`stylebatch serve`: the batch flow served from this process, on a schedule, without a pool."""

from __future__ import annotations

import argparse

from flows import prepare
from flows.cli.flags import given_options
from flows.cli.run import flow_parameters, precheck
from flows.uri import absolute
from stylecore.errors import StyleError


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
    precheck(manifest, prepare.run_options(given, args.preset))
    from flows.batch import stylize_batch

    parameters = flow_parameters(manifest, output, given, args.preset, args)
    stylize_batch.serve(
        name=args.name,
        cron=args.cron,
        parameters=stylize_batch.validate_parameters(parameters),  # '512' → 512, as `run` does
        tags=["stylebatch"],
        description=f"served by `stylebatch serve`: {manifest} into {output}",
    )
    return 0
