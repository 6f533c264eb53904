"""`stylebatch run`, `rerun` and `demo`: the batch flow from the command line, with exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flows import prepare, stops, storage
from flows.cli import EXIT_OK, EXIT_USAGE, server
from flows.cli.flags import given_options
from flows.cli.progress import pair_bar
from flows.cli.summary import print_interrupted, print_plan, print_report
from flows.model import Manifest
from flows.uri import absolute, join
from stylecore.errors import StyleError
from stylecore.options import StyleOptions

DEMO = Path(__file__).resolve().parent.parent / "demo"  # package data: images and demo.csv


def run_command(args: argparse.Namespace) -> int:
    """`stylebatch run MANIFEST -o OUTPUT`."""
    given = given_options(args)
    return run(absolute(args.manifest), absolute(args.output), given, args.preset, args)


def rerun_command(args: argparse.Namespace) -> int:
    """`stylebatch rerun REPORT`: the failed and interrupted rows of a report, same manifest,
    output and options (an interrupted pair continues from its checkpoint); with --weak, the rows
    flagged weak instead, with twice the iterations."""
    from flows.report import RERUN

    report = json.loads(storage.read_text(absolute(args.report)))
    kind = "weak" if args.weak else "failed or interrupted"
    rows = [
        p["row"] for p in report["pairs"] if (p.get("weak") if args.weak else p["status"] in RERUN)
    ]
    if not rows:
        print(f"nothing to rerun: no pair {kind} in {args.report}")
        return EXIT_OK
    options = dict(report.get("options", {}))
    preset_name = options.pop("preset", "default")
    options.update(given_options(args))
    if args.preset != "default":
        preset_name = args.preset
    if args.weak and not args.iterations:  # twice what they had (rows that set their own keep it)
        had = options.get("iterations") or prepare.run_options(options, preset_name).iterations
        options["iterations"] = 2 * int(had)
        args.force = True  # an output named in the manifest is replaced, not skipped
    args.feature_cache = args.feature_cache or report.get("feature_cache")
    args.min_style_gain = args.min_style_gain or report.get("min_style_gain")
    args.strict = False
    print(f"rerunning {len(rows)} {kind} pair(s): rows {', '.join(map(str, rows))}")
    return run(report["manifest"], report["output"], options, preset_name, args, rows=rows)


def demo_command(args: argparse.Namespace) -> int:
    """`stylebatch demo`: the bundled manifest with vgg16-hed, into ./stylebatch-demo."""
    manifest = DEMO / "demo.csv"
    if not manifest.exists():
        raise StyleError(f"{manifest}: the demo's data is missing from this installation")
    options = {"network": "vgg16-hed", "size": args.size, "iterations": args.iterations}
    args.feature_cache, args.force, args.strict = None, False, False
    args.concurrency, args.quiet, args.batch_size = None, False, None
    args.dry_run, args.json, args.min_style_gain = False, False, None
    code = run(str(manifest), absolute(args.output), options, "default", args)
    if code != EXIT_USAGE:
        out = Path(args.output)
        print(
            f"look at {out / 'contact-sheet.png'} (content, style, output per row), the images "
            f"in {out}/, and {out / 'report.json'}"
        )
    return code


def run(
    manifest: str,
    output: str,
    given: dict[str, Any],
    preset_name: str,
    args: argparse.Namespace,
    rows: list[int] | None = None,
) -> int:
    """Run the flow with a progress bar over pairs; 0 all good, 1 some failed, 2 not started."""
    defaults = prepare.run_options(given, preset_name)  # bad options: exit 2 now
    parsed = precheck(manifest, defaults)
    if getattr(args, "dry_run", False):
        return dry_run(parsed, output, defaults, args, rows)
    count = len(parsed.only(rows).rows())
    server.use()
    from flows.batch import LISTENERS  # Prefect loads only now, pointed at the early server
    from flows.report import INTERRUPTED, PAIRS_FAILED

    server.ready()
    check_api()
    storage.check_writable(join(output, "report.json"))  # a read-only root: exit 2 now

    parameters = flow_parameters(manifest, output, given, preset_name, args, rows)
    flow = batch_flow(args)
    stops.reset()
    with pair_bar(count, quiet=args.quiet) as advance, prepare.handing_over(parsed, defaults):
        seen: set[int] = set()
        listener = _listener(advance, seen)
        LISTENERS.append(listener)
        try:
            with stops.graceful():  # the flow's own body takes SIGTERM over from Prefect's
                state = flow(**parameters, return_state=True)
        finally:
            LISTENERS.remove(listener)
        finished = state.is_completed() or state.name in (PAIRS_FAILED, INTERRUPTED)
        if finished:
            report = _own_report(output, state)
            _catch_up(advance, seen, report)
    if finished and report["summary"].get("interrupted"):
        return print_interrupted(output, report)
    if finished:
        return print_report(output, report, getattr(args, "json", False))
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        message = (
            str(result) if isinstance(result, StyleError) else f"{type(result).__name__}: {result}"
        )
        print(f"stylebatch: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"stylebatch: error: the flow run ended {state.type.value}: {state.message}",
        file=sys.stderr,
    )
    return EXIT_USAGE


def flow_parameters(
    manifest: str,
    output: str,
    given: dict[str, Any],
    preset_name: str,
    args: argparse.Namespace,
    rows: list[int] | None = None,
) -> dict[str, Any]:
    """The stylize-batch flow's parameters: the run's own settings from the flags, the options."""
    return dict(
        manifest=manifest,
        output=output,
        feature_cache=args.feature_cache and absolute(args.feature_cache),
        force=args.force,
        strict=args.strict,
        concurrency=args.concurrency or 1,
        batch_size=getattr(args, "batch_size", None),
        rows=rows,
        shards=getattr(args, "shards", None) or 1,
        preset=preset_name,
        **({"min_style_gain": gain} if (gain := getattr(args, "min_style_gain", None)) else {}),
        **given,
    )


def dry_run(
    parsed: Manifest,
    output: str,
    defaults: StyleOptions,
    args: argparse.Namespace,
    rows: list[int] | None,
) -> int:
    """What the run would do, decided as the flow decides it (`prepare.plan`), writing nothing
    and starting no Prefect server."""
    manifest = parsed.only(rows)
    networks = prepare.check_networks(manifest, defaults)
    probes = prepare.probe_all(prepare.inputs(manifest))
    plan = prepare.plan(manifest, probes, output, networks, args.force)
    return print_plan(parsed.source, output, plan, getattr(args, "json", False))


def precheck(manifest: str, defaults: StyleOptions) -> Manifest:
    """Fail fast, before any server starts: the manifest read and the networks checked, as the
    flow does (`prepare`). A weights file only some rows name fails those rows in the flow."""
    parsed = prepare.read_manifest(manifest, defaults)
    prepare.check_networks(parsed, defaults)
    return parsed


def check_api() -> None:
    """A Prefect API that PREFECT_API_URL names but that does not answer: one line, now."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url or url == server.temporary():  # a temporary local server (answering already)
        return
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise StyleError(
            f"cannot reach the Prefect API at {url} ({type(problem).__name__}); start the server "
            "or unset PREFECT_API_URL to use a temporary one"
        )


def batch_flow(args: argparse.Namespace):
    """The stylize-batch flow, on a Dask cluster when asked (`--task-runner dask`)."""
    from flows.batch import stylize_batch

    if getattr(args, "task_runner", None) != "dask" and not getattr(args, "dask_address", None):
        return stylize_batch
    return stylize_batch.with_options(task_runner=dask_runner(args))


def dask_runner(args: argparse.Namespace):
    """A DaskTaskRunner: the cluster at --dask-address, or a temporary one made here."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise StyleError(
            "--task-runner dask needs the dask extra: pip install 'stylebatch[dask]'"
        ) from exc
    workers, kind = getattr(args, "dask_workers", None), getattr(args, "dask_cluster_class", None)
    if args.dask_address:
        if workers or kind:
            raise StyleError(
                "--dask-workers and --dask-cluster-class shape a temporary cluster; "
                "with --dask-address the cluster exists already"
            )
        _reachable(args.dask_address)
        return DaskTaskRunner(address=args.dask_address)
    try:
        return DaskTaskRunner(
            cluster_class=kind, cluster_kwargs={"n_workers": workers} if workers else None
        )
    except (ImportError, AttributeError, ValueError) as exc:
        raise StyleError(f"--dask-cluster-class {kind}: cannot load it ({exc})") from exc


def _reachable(address: str, seconds: float = 10) -> None:
    """Fail now, in one line, when nothing listens at a Dask scheduler's address."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        socket.create_connection((where.hostname, where.port or 8786), timeout=seconds).close()
    except OSError as exc:
        raise StyleError(f"--dask-address {address}: cannot connect ({exc})") from exc


def _listener(advance, seen: set[int]):
    def listener(outcome: dict) -> None:
        if outcome["row"] not in seen:
            seen.add(outcome["row"])
            advance(f"row {outcome['row']}: {outcome['status']}")

    return listener


def _own_report(output: str, state) -> dict:
    """This run's report: reports/<flow-run-id>.json, since report.json may already be another
    run's when two runs share the output root."""
    own = join(output, "reports", f"{state.state_details.flow_run_id}.json")
    uri = own if storage.exists(own) else join(output, "report.json")
    return json.loads(storage.read_text(uri))


def _catch_up(advance, seen: set[int], report: dict) -> None:
    """Advance the bar for pairs this process never heard of (they ran in other processes)."""
    for pair in report["pairs"]:
        if pair["row"] not in seen:
            seen.add(pair["row"])
            advance(f"row {pair['row']}: {pair['status']}")
