"""Shards without workers: the split, the merge, a lost shard's pairs, and shards as subflows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import noise_image

from flows.batch import stylize_batch
from flows.cli.main import main
from flows.prepare import Run
from flows.report import PAIRS_FAILED
from flows.shards import Shard, _checked_manifest, _settle, merge, split_rows
from stylecore import images

pytestmark = [
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
    pytest.mark.usefixtures("prefect_server"),
]
SIZE, ITERATIONS = 32, 2


@pytest.fixture
def batch(tmp_path, tiny_weights) -> dict:
    """Five pairs over two styles; row 4 names a content file that does not exist."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        (inputs / f"c{i}.png").write_bytes(images.encode_png(noise_image(40, 48 + 4 * i, seed=i)))
    for i in range(2):
        (inputs / f"s{i}.png").write_bytes(images.encode_png(noise_image(48, 48, seed=10 + i)))
    rows = [
        "c0.png,s0.png",
        "c1.png,s1.png",
        "missing.png,s0.png",
        "c2.png,s1.png",
        "c3.png,s0.png",
    ]
    (inputs / "manifest.csv").write_text("content,style\n" + "\n".join(rows) + "\n")
    return {
        "manifest": str(inputs / "manifest.csv"),
        "output": str(tmp_path / "out"),
        "feature_cache": str(tmp_path / "features"),
        "weights": str(tiny_weights),
    }


def read_report(b: dict) -> dict:
    return json.loads((Path(b["output"]) / "report.json").read_text())


@pytest.mark.parametrize(
    ("rows", "shards", "expected"),
    [
        ([2, 3, 4, 5, 6], 2, [[2, 3, 4], [5, 6]]),
        ([2, 3, 4, 5, 6, 7, 8], 3, [[2, 3, 4], [5, 6], [7, 8]]),
        ([2, 3], 5, [[2], [3]]),
        ([], 3, []),
        ([7], 1, [[7]]),
    ],
)
def test_split_rows_is_contiguous_and_balanced(rows, shards, expected):
    assert split_rows(rows, shards) == expected


def test_shards_without_a_deployment_run_here_as_subflows_and_merge(batch, capsys):
    """`stylebatch run --shards 2` locally: one merged report, failed.csv, and the usual exit."""
    common = ["-o", batch["output"], "--weights", batch["weights"], "--quiet"]
    more = ["--size", str(SIZE), "--iterations", str(ITERATIONS)]
    code = main(["run", batch["manifest"], *common, *more, "--shards", "2"])
    assert code == 1  # row 4's content is missing
    assert "4 done, 0 skipped, 1 failed" in capsys.readouterr().out
    report = read_report(batch)
    assert [p["row"] for p in report["pairs"]] == [2, 3, 4, 5, 6]
    assert [s["rows"] for s in report["shards"]] == [[2, 3, 4], [5, 6]]
    assert {s["state"] for s in report["shards"]} == {"PairsFailed", "Completed"}
    (failed,) = [p for p in report["pairs"] if p["status"] == "failed"]
    assert failed["row"] == 4 and "missing.png" in failed["error"]
    assert "missing.png" in (Path(batch["output"]) / "failed.csv").read_text()
    assert len(report["style_features"]) >= 2  # each shard lists the styles it used
    for shard in report["shards"]:  # every shard's own report stays, marked as a part
        own = json.loads(
            (Path(batch["output"]) / "reports" / f"{shard['flow_run']}.json").read_text()
        )
        assert (
            own["part_of"] == report["run_id"] and [p["row"] for p in own["pairs"]] == shard["rows"]
        )

    # The same again: everything done is skipped, in every shard.
    state = stylize_batch(
        manifest=batch["manifest"],
        output=batch["output"],
        weights=batch["weights"],
        size=SIZE,
        iterations=ITERATIONS,
        shards=2,
        return_state=True,
    )
    assert state.is_failed() and state.name == PAIRS_FAILED
    assert read_report(batch)["summary"] == {"done": 0, "skipped": 4, "failed": 1}


@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs")
def test_a_lost_shard_keeps_its_finished_pairs_and_fails_the_rest(batch):
    """A shard that left no report: pairs with an output count, the others fail with the cause."""
    stylize_batch(
        manifest=batch["manifest"],
        output=batch["output"],
        weights=batch["weights"],
        size=SIZE,
        iterations=ITERATIONS,
        rows=[5],
    )
    run = Run(batch["manifest"], batch["output"], shards=2)
    given = {"weights": batch["weights"], "size": SIZE, "iterations": ITERATIONS}
    cause = "shard 2's flow run crashed (Flow run infrastructure exited with status -9)"
    pairs = _settle(
        _checked_manifest(run, given), [4, 5, 6], cause, run, given, "2000-01-01T00:00:00+00:00"
    )
    by_row = {p["row"]: p for p in pairs}
    assert by_row[5]["status"] == "done" and by_row[5]["output"].endswith(".png")
    assert by_row[6]["status"] == "failed"
    assert by_row[6]["error"] == f"row 6: {cause}"
    assert by_row[4]["status"] == "failed" and "missing.png" in by_row[4]["error"]

    shards = [Shard(1, [2, 3]), Shard(2, [4, 5, 6], "child", pairs, [], "Crashed")]
    document = merge(run, given, "parent-id", "2000-01-01T00:00:00+00:00", shards)
    assert document["summary"] == {"done": 1, "skipped": 0, "failed": 2}
    assert document["shards"][1] == {
        "shard": 2,
        "rows": [4, 5, 6],
        "flow_run": "child",
        "state": "Crashed",
    }
