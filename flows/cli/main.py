"""The `stylebatch` command: one pair, features, weights, and the batch flow (run, serve)."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from flows.cli import EXIT_FAILED, EXIT_USAGE
from flows.cli.flags import add_option_flags, add_run_flags


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn our errors into one line and an exit code.
    Without `argv` (the `stylebatch` program), a batch command's process ends without tearing
    the interpreter down (`_end_at_once`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ending: list[int] = []
    if argv is None and getattr(args, "starts_server", False):
        atexit.register(_end_at_once, ending)  # the first handler registered runs last
    handler = logging.StreamHandler()
    # Prefect's run loggers propagate INFO here; the UI has them. The terminal shows warnings,
    # or what Prefect's own console level says (INFO: each pair's progress, every tenth iteration)
    level = os.environ.get("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING").upper()
    handler.setLevel(level if level in logging.getLevelNamesMapping() else logging.WARNING)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", handlers=[handler]
    )
    ending.append(_dispatch(args))
    return ending[0]


def _dispatch(args: argparse.Namespace) -> int:
    from stylecore.errors import NumericalError, StyleError  # after parsing: --help stays fast

    try:
        if getattr(args, "starts_server", False) and not getattr(args, "dry_run", False):
            from flows.cli import server

            server.start_early()  # it boots while the command loads TensorFlow and the weights
        return args.command(args)
    except NumericalError as exc:
        print(f"stylebatch: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except StyleError as exc:
        print(f"stylebatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("stylebatch: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report it


def _end_at_once(ending: list[int]) -> None:
    """The last exit handler: what flushes or stops has run by now (Prefect's log and event
    workers when its threads stopped, then the temporary server's stop and the other handlers,
    registered after this one). What is left is freeing TensorFlow's and Prefect's modules:
    1.5–2 s of a one-pair run, writing nothing. `ending` holds main's code; without one, main
    raised and the interpreter would exit with 1."""
    logging.shutdown()  # its handler, registered at logging's import, would run after this one
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(ending[0] if ending else 1)


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags."""
    parser = argparse.ArgumentParser(prog="stylebatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    _stylize_parser(sub)
    _features_parser(sub)
    _weights_parser(sub)
    _run_parsers(sub)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("stylebatch")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _command(sub, name: str, run: Callable[[argparse.Namespace], int], text: str):
    p = sub.add_parser(name, help=text, description=text)
    p.set_defaults(command=run)
    return p


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """Import the implementation only when the command runs (TensorFlow and Prefect are slow)."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), function)(args)

    return run


def _stylize_parser(sub) -> None:
    p = _command(sub, "stylize", _lazy("flows.cli.single", "stylize_command"), "stylize one pair")
    p.add_argument("content", help="content image (path or s3:// URI)")
    p.add_argument("styles", nargs="+", metavar="STYLE", help="one or more style images")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp, .tif)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_option_flags(p)


def _features_parser(sub) -> None:
    text = "write one float32 array per layer, shape (H, W, C), to an .npz"
    p = _command(sub, "features", _lazy("flows.cli.single", "features_command"), text)
    p.add_argument("image")
    p.add_argument("--weights", help="weights file (.mat or .h5); overrides --network")
    p.add_argument("--network", default="vgg19", help="known network (default vgg19)")
    p.add_argument("--layers", required=True, help="comma-separated, e.g. relu1_1,relu4_2")
    p.add_argument("--size", type=int, help="longest side; default: the image's own size")
    p.add_argument("--pooling", choices=("max", "avg"), default=None)
    p.add_argument("-o", "--output", required=True, help="the .npz to write")


def _weights_parser(sub) -> None:
    p = sub.add_parser("weights", help="fetch, describe or verify network weights")
    wsub = p.add_subparsers(required=True, metavar="ACTION")
    fetch = _command(wsub, "fetch", _lazy("flows.cli.single", "weights_fetch"), "download VGG19")
    fetch.add_argument("--url", help="download from here instead of vlfeat.org")
    fetch.add_argument("--md5", help="expected MD5 (default: the release's)")
    fetch.add_argument("-o", "--output", type=Path, help="where to save (default: the cache)")
    info = _command(wsub, "info", _lazy("flows.cli.single", "weights_info"), "describe a file")
    info.add_argument("weights", help="a path or a known name (vgg19, vgg16-hed)")
    text = "run the whole network on a sample image and print the top-5 classes"
    verify = _command(wsub, "verify", _lazy("flows.cli.single", "weights_verify"), text)
    verify.add_argument("weights", help="a path or a known name")
    verify.add_argument("--image", help="classify this image instead of the tabby cat")


def _run_parsers(sub) -> None:
    run = _command(sub, "run", _lazy("flows.cli.run", "run_command"), "run a manifest as a batch")
    run.add_argument("manifest", help="CSV, JSONL or YAML manifest (path or s3:// URI)")
    run.add_argument("-o", "--output", required=True, help="output root (directory or s3:// URI)")
    add_run_flags(run)
    add_option_flags(run)
    run.set_defaults(starts_server=True)
    text = "rerun only the failed pairs of a report"
    rerun = _command(sub, "rerun", _lazy("flows.cli.run", "rerun_command"), text)
    rerun.add_argument("report", help="a report.json written by `stylebatch run`")
    add_run_flags(rerun, rerun=True)
    add_option_flags(rerun)
    rerun.set_defaults(starts_server=True)
    text = "serve the batch flow from this process, on a schedule (needs a Prefect server)"
    serve = _command(sub, "serve", _lazy("flows.cli.serve", "serve_command"), text)
    serve.add_argument("manifest", help="CSV, JSONL or YAML manifest (path or s3:// URI)")
    serve.add_argument("-o", "--output", required=True, help="output root (directory or s3:// URI)")
    add_run_flags(serve, served=True)
    add_option_flags(serve)
    text = "emit stylebatch.manifest.ready for each new manifest in a folder or s3:// prefix"
    watch = _command(sub, "watch", _lazy("flows.cli.watch", "watch_command"), text)
    watch.add_argument("folder", help="a folder or s3:// prefix to poll for manifests")
    watch.add_argument(
        "-o", "--output", required=True, help="output root: each manifest runs into a folder of it"
    )
    watch.add_argument("--interval", type=float, default=10.0, help="seconds between polls")
    watch.add_argument("--once", action="store_true", help="poll once, then exit")
    watch.add_argument(
        "--existing", action="store_true", help="announce the manifests already there too"
    )
    text = "the README's main job: a small bundled batch with vgg16-hed"
    demo = _command(sub, "demo", _lazy("flows.cli.run", "demo_command"), text)
    demo.add_argument("-o", "--output", default="stylebatch-demo", help="default ./stylebatch-demo")
    demo.add_argument("--size", type=int, default=192, help="longest side (default 192)")
    demo.add_argument("--iterations", type=int, default=150, help="default 150")
    demo.set_defaults(starts_server=True)


if __name__ == "__main__":
    sys.exit(main())
