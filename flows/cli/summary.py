"""What a run did, or would do, told on stdout: lines for a person, or one JSON document."""

from __future__ import annotations

import json
import sys
from typing import Any

from flows import stops, uri
from flows.cli import EXIT_FAILED, EXIT_OK
from flows.prepare import Plan
from stylecore.images import fit_shape
from stylecore.stylize import level_sizes


def print_report(output: str, report: dict[str, Any], as_json: bool = False) -> int:
    """A finished run's summary: counts, failed and weak pairs, where the report is."""
    s = report["summary"]
    where = uri.join(output, "report.json")
    failed = [p for p in report["pairs"] if p["status"] == "failed"]
    weak = [p for p in report["pairs"] if p.get("weak")]
    code = EXIT_FAILED if s["failed"] else EXIT_OK
    features = [f["cache"] for f in report["style_features"]]
    if as_json:
        document = {
            "run_id": report["run_id"],
            "summary": s,
            "style_features": {k: features.count(k) for k in ("computed", "reused", "failed")},
            "failed": [{"row": p["row"], "error": p["error"]} for p in failed],
            "weak": [{"row": p["row"], "quality": p["quality"]} for p in weak],
            "report": where,
            "exit_code": code,
        }
        print(json.dumps(document, ensure_ascii=False))
        return code
    print(
        f"{s['done']} done, {s['skipped']} skipped, {s['failed']} failed; style features: "
        f"{features.count('computed')} computed, {features.count('reused')} reused"
    )
    for pair in failed:
        print(f"  row {pair['row']}: {_cause(pair)}")
    for pair in weak:
        ratio = pair["quality"]["style_ratio"]
        print(f"  row {pair['row']}: weak: the style barely took (style ratio {ratio:.3g})")
    print(f"report: {where}")
    if failed:
        print(f"after fixing the inputs: stylebatch rerun {where}")
    if weak:
        print(f"to redo the weak ones: stylebatch rerun --weak {where}")
    return code


def print_interrupted(output: str, report: dict[str, Any]) -> int:
    """A run a signal stopped: one line on stderr, and 128 + the signal (130 SIGINT, 143
    SIGTERM)."""
    s = report["summary"]
    where = uri.join(output, "report.json")
    print(
        f"stylebatch: stopped by {stops.signal_name()}: {s['interrupted']} interrupted "
        f"(checkpointed), {s['done']} done, {s['skipped']} skipped, {s['failed']} failed; "
        f"stylebatch rerun {where} finishes them",
        file=sys.stderr,
    )
    return stops.exit_code()


def print_plan(manifest: str, output: str, plan: Plan, as_json: bool = False) -> int:
    """What a run would do: each pair to run (size, iterations), skip or fail, and the work."""
    runs = [_planned(job) for job in plan.todo]
    settled = [o.to_dict() for o in plan.settled]
    document = {
        "manifest": manifest,
        "output": output,
        "run": runs,
        "skip": [
            {"row": o["row"], "output": o["output"]} for o in settled if o["status"] == "skipped"
        ],
        "fail": [
            {"row": o["row"], "error": o["error"]} for o in settled if o["status"] == "failed"
        ],
        "pixel_iterations": sum(r["pixel_iterations"] for r in runs),
    }
    if as_json:
        print(json.dumps(document, ensure_ascii=False))
        return EXIT_OK
    counts = {k: len(document[k]) for k in ("run", "skip", "fail")}
    print(
        f"would run {counts['run']}, skip {counts['skip']}, fail {counts['fail']} "
        f"(nothing written); about {document['pixel_iterations']:.3g} pixel-iterations"
    )
    for line in sorted([*runs, *document["skip"], *document["fail"]], key=lambda r: r["row"]):
        if "error" in line:
            print(f"  row {line['row']}: fail: {_cause(line)}")
        elif "label" in line:
            h, w = line["shape"]
            its = line["iterations"]
            print(
                f"  row {line['row']}: run {line['label']} at {w}×{h}, {its} it. → {line['output']}"
            )
        else:
            print(f"  row {line['row']}: skip (done): {line['output']}")
    return EXIT_OK


def _cause(line: dict[str, Any]) -> str:
    """A failed line's error without the 'row N: ' it may start with (the line says the row)."""
    return line["error"].removeprefix(f"row {line['row']}: ")


def _planned(job) -> dict[str, Any]:
    options = job.style_options()
    shapes = [fit_shape(job.shape, longest) for longest in level_sizes(options)]
    return {
        "row": job.row,
        "label": job.label,
        "output": job.output,
        "shape": list(job.shape),
        "iterations": options.iterations * len(shapes),
        "pixel_iterations": options.iterations * sum(h * w for h, w in shapes),
    }
