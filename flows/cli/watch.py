"""`stylebatch watch`: emit stylebatch.manifest.ready when a new manifest lands in a folder or
an s3:// prefix (polling), so a deployment trigger can run it."""

from __future__ import annotations

import argparse
import time

from flows import events, storage, uri
from flows.uri import absolute
from stylecore.errors import StyleError

MANIFEST_SUFFIXES = ("csv", "tsv", "jsonl", "ndjson", "yaml", "yml")
SETTLE_SECONDS = 2.0  # a local manifest this recently modified may still be being written


def watch_command(args: argparse.Namespace) -> int:
    """Poll `folder` every `interval` seconds; each new or changed manifest is announced once."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise StyleError(
            "stylebatch watch needs a Prefect server to send its events to: set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (see `prefect server start`)"
        )
    folder, output = absolute(args.folder), absolute(args.output)
    seen = {} if args.existing else manifests(folder)
    print(f"watching {folder} for manifests ({len(seen)} there already); outputs under {output}")
    while True:
        for manifest, modified in manifests(folder).items():
            if seen.get(manifest) == modified or time.time() - modified < SETTLE_SECONDS:
                continue
            target = uri.join(output, uri.stem(manifest))
            if events.manifest_ready(manifest, target):
                seen[manifest] = modified
                print(f"ready: {manifest} → {target}", flush=True)
        EventsWorker.drain_all(timeout=30)  # sent before the next poll or the exit
        if args.once:
            return 0
        time.sleep(args.interval)


def manifests(folder: str) -> dict[str, float]:
    """The manifests directly in `folder` and when each was last written."""
    found = [
        m for suffix in MANIFEST_SUFFIXES for m in storage.glob(uri.join(folder, f"*.{suffix}"))
    ]
    times = {m: storage.modified(m) for m in found}
    return {m: t for m, t in times.items() if t is not None}
