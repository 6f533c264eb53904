"""Checkpoints inside a pair: a pair SIGKILLed at two thirds resumes from its checkpoint through the
real CLI, redoing at most a checkpoint interval's iterations; checkpoints are keyed like outputs,
whole or absent, on local disk and S3."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from s3server import make_bucket, s3_client
from test_hardening_runtime import child_env, cli_args, finish, stylebatch, write_batch

from flows.cli.main import main
from flows.model import Job, StyleInput
from flows.storage import checkpoints

pytestmark = [
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
    pytest.mark.usefixtures("prefect_server"),
]
# A task run's log line (Prefect's console handler): "iteration 120/300 at 64×46: loss …, 3.2 s"
PROGRESS = re.compile(r"iteration (\d+)/(\d+) at (\d+)×(\d+): .*, ([0-9.]+) s")


def job(output: str, content_sha: str = "sha256:c") -> Job:
    return Job(
        row=2,
        content="c.png",
        content_sha=content_sha,
        styles=(StyleInput("s.png", "sha256:s", None),),
        output=output,
        options={},
        feature_keys={},
        label="c × s",
        shape=(8, 8),
    )


def adam_arrays(batch: int, step: float = 7.0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(batch)
    image, m, v = (rng.normal(size=(batch, 4, 6, 3)).astype(np.float32) for _ in range(3))
    return image, m, v, np.float32(step)


# --- the store ---------------------------------------------------------------------------------


def test_a_checkpoint_is_hidden_beside_its_output_and_keyed_like_it(tmp_path):
    output = str(tmp_path / "sub" / "a b é.png")
    where = checkpoints.location(output)
    assert where == str(tmp_path / "sub" / ".a b é.png.checkpoint.npz")
    assert checkpoints.location("s3://b/out/x.png") == "s3://b/out/.x.png.checkpoint.npz"
    options = {"size": 64, "iterations": 300}
    key = checkpoints.key(job(output), options, "md5:w")
    assert key == checkpoints.key(job(output), dict(options), "md5:w")
    others = [
        checkpoints.key(job(output, content_sha="sha256:other"), options, "md5:w"),
        checkpoints.key(job(output), {**options, "iterations": 301}, "md5:w"),
        checkpoints.key(job(output), options, "md5:other-weights"),
        checkpoints.key(job(output + ".jpg"), options, "md5:w"),
    ]
    assert len({key, *others}) == 5

    saved = checkpoints.Saved(1, 140, adam_arrays(1))
    checkpoints.save(where, key, saved)
    found = checkpoints.load(where, key)
    assert (found.level, found.iteration) == (1, 140)
    for a, b in zip(found.arrays, saved.arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    assert checkpoints.load(where, others[0]) is None  # other inputs: ignored, not resumed
    (tmp_path / "sub" / ".junk.checkpoint.npz").write_bytes(b"not an npz")
    assert checkpoints.load(str(tmp_path / "sub" / ".junk.checkpoint.npz"), key) is None
    checkpoints.remove(where)
    assert checkpoints.load(where, key) is None and not os.path.exists(where)
    checkpoints.remove(where)  # nothing there is fine


def test_a_batch_splits_into_one_checkpoint_per_job_and_joins_back(tmp_path):
    arrays = adam_arrays(3)
    parts = checkpoints.split(arrays, 3)
    assert [p[0].shape for p in parts] == [(1, 4, 6, 3)] * 3 and parts[2][3] == np.float32(7)
    joined = checkpoints.join([checkpoints.Saved(0, 9, p) for p in parts])
    for a, b in zip(joined.arrays, arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    other_iteration = [checkpoints.Saved(0, 9, parts[0]), checkpoints.Saved(0, 10, parts[1])]
    assert checkpoints.join(other_iteration) is None
    other_count = checkpoints.split(adam_arrays(1, step=8.0), 1)[0]
    assert (
        checkpoints.join([checkpoints.Saved(0, 9, parts[0]), checkpoints.Saved(0, 9, other_count)])
        is None
    )

    jobs = [job(str(tmp_path / f"o{k}.png")) for k in range(3)]
    saver = checkpoints.Checkpointer(jobs, ["k0", "k1", "k2"], every=60)
    assert saver.resume() is None and not saver.due()
    assert saver.save(checkpoints.Saved(0, 9, arrays))
    resumed = saver.resume()
    assert (resumed.level, resumed.iteration) == (0, 9)
    np.testing.assert_array_equal(resumed.arrays[1], arrays[1])
    saver.remove(1)
    assert saver.resume() is None  # one job without its checkpoint: the batch starts afresh


def test_checkpoints_on_s3(s3_env):
    make_bucket(s3_env, "art")
    where = checkpoints.location("s3://art/out/x.png")
    saved = checkpoints.Saved(0, 5, adam_arrays(1))
    checkpoints.save(where, "k", saved)
    keys = [o["Key"] for o in s3_client(s3_env).list_objects_v2(Bucket="art")["Contents"]]
    assert keys == ["out/.x.png.checkpoint.npz"]
    assert checkpoints.load(where, "k").iteration == 5
    assert checkpoints.load(where, "another") is None
    checkpoints.remove(where)
    assert "Contents" not in s3_client(s3_env).list_objects_v2(Bucket="art")


# --- a pair killed at two thirds, through the real CLI -------------------------------------------


def run_until(process, stop_at: int, iterations: int, size: int) -> list[tuple[int, int, float]]:
    """Read the run's progress lines, (level, iteration, seconds), until the last level reaches
    `stop_at`; then SIGKILL its process group at once."""
    seen = []
    for line in process.stderr:
        match = PROGRESS.search(line)
        if not match:
            continue
        i, total, w, h, seconds = match.groups()
        assert int(total) == iterations
        level = 1 if max(int(w), int(h)) == size else 0
        seen.append((level, int(i), float(seconds)))
        if level == 1 and int(i) >= stop_at:
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait()
    return seen


def interval_iterations(seen: list[tuple[int, int, float]], every: float) -> int:
    """The most iterations one checkpoint interval held in the killed run: its fastest stretch
    between progress lines (their times are to 10 ms), times the interval, and the one step a
    save waits for."""
    rates = [
        (i1 - i0) / (t1 - t0)
        for (l0, i0, t0), (l1, i1, t1) in zip(seen, seen[1:], strict=False)
        if l0 == l1 and t1 > t0
    ]
    return math.ceil(max(rates) * every) + 1


def test_a_pair_killed_at_two_thirds_resumes_from_its_checkpoint(tmp_path, tiny_weights, capsys):
    iterations, size, every = 300, 64, 0.5  # two levels: 600 iterations, killed at about 420
    manifest, out = write_batch(tmp_path / "in", 1), tmp_path / "out"
    args = cli_args(manifest, out, tiny_weights, size=size, iterations=iterations)
    args += ["--levels", "2", "--optimizer", "adam", "--checkpoint-every", str(every)]
    args += ["--tolerance", "0"]  # every iteration runs: the counts below are exact
    env = child_env(PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="INFO")  # the progress lines
    first = stylebatch(args, env=env, start_new_session=True)
    seen = run_until(first, iterations // 3, iterations, size)
    assert seen and seen[-1][0] == 1, finish(first)
    killed_at = seen[-1][1]  # the killed run had done at least these iterations of level 1
    left = list(out.glob(".*.checkpoint.npz"))
    assert len(left) == 1 and not list(out.glob("*.png")), sorted(out.iterdir())

    started = time.monotonic()
    assert main(args) == 0, capsys.readouterr()
    seconds = time.monotonic() - started

    report = json.loads((out / "report.json").read_text())
    output = report["pairs"][0]["output"]
    sidecar = json.loads(Path(output).with_suffix(".json").read_text())
    resumed = sidecar["resumed"]
    assert resumed["level"] == 1, sidecar["notes"]
    assert f"resumed at level 1, iteration {resumed['iteration']}" in sidecar["notes"]
    history = sidecar["losses"]["history"]
    assert len(history) == iterations - resumed["iteration"]  # only what the rerun did
    done_again = len(history) - (iterations - killed_at)  # the iterations of level 1 redone
    assert 0 <= done_again <= interval_iterations(seen, every), (seen, resumed, seconds)
    assert iio.imread(output).shape[:2] == tuple(sidecar["size"])  # it decodes
    assert not list(out.glob(".*.checkpoint.npz"))  # published: the checkpoint is gone


# --- one pair through `stylebatch stylize`: Ctrl-C, then the same command again ----------------


def test_stylize_stopped_by_ctrl_c_resumes_where_it_stopped(tmp_path, tiny_weights, capsys):
    iterations = 600  # tiny weights at 32 px: a few ms each; the first checkpoint within 0.3 s
    write_batch(tmp_path / "in", 1)
    out = tmp_path / "out" / "c0 stylized.png"
    args = ["stylize", str(tmp_path / "in" / "c0.png"), str(tmp_path / "in" / "s.png")]
    args += ["-o", str(out), "--weights", str(tiny_weights), "--size", "32", "--quiet"]
    args += ["--iterations", str(iterations), "--optimizer", "adam", "--tolerance", "0"]
    args += ["--checkpoint-every", "0.3"]
    first = stylebatch(args)
    checkpoint = out.parent / f".{out.name}{checkpoints.SUFFIX}"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGINT)  # Ctrl-C: stop at the next iteration, checkpointed
    code, _, err = finish(first)
    ours = [line for line in err.splitlines() if line.startswith("stylebatch")]  # not TF's
    assert code == 130 and len(ours) == 1, err
    stopped = re.fullmatch(
        r"stylebatch: interrupted by SIGINT at level 0, iteration (\d+); checkpoint saved; "
        r"the same command resumes it",
        ours[0],
    )
    assert stopped, err
    assert not out.exists() and not out.with_suffix(".json").exists()  # nothing half-written
    with np.load(checkpoint) as saved:  # the checkpoint holds the stop's iteration
        assert json.loads(str(saved["meta"]))["iteration"] == int(stopped.group(1))

    assert main(args) == 0, capsys.readouterr()
    sidecar = json.loads(out.with_suffix(".json").read_text())
    iteration = int(stopped.group(1))
    assert sidecar["resumed"] == {"level": 0, "iteration": iteration}
    assert f"resumed at level 0, iteration {iteration}" in sidecar["notes"]
    assert len(sidecar["losses"]["history"]) == iterations - iteration  # nothing done twice
    assert iio.imread(out).shape[:2] == tuple(sidecar["size"])
    assert not checkpoint.exists()  # published: the checkpoint has served
