"""Checkpoints inside clip frames: a frame stopped or killed mid-way resumes from its checkpoint at
its iteration, with the same temporal inputs (the previous stylized frame warped by the same flow),
on local disk and S3, through the real CLI; a checkpoint made for another frame, another previous
frame or other options is ignored."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_checkpoints import job as still_job
from test_hardening_runtime import child_env, finish, stylebatch
from test_video import clip_frames, stripes, write_clip

from flows import clips, prepare, stops, storage
from flows.cli.main import main
from flows.model import Pair, StyleRef
from flows.storage import checkpoints, clipsource
from stylecore import clip, images
from stylecore.opticalflow import FramePair
from stylecore.options import StyleOptions
from stylecore.stylize import shared_weights

pytestmark = pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")
ITERATIONS = 200  # each frame's (frame_iterations the same): about 1 s a frame at 32 px here


def saved_iteration(data: bytes) -> int:
    """The iteration a checkpoint's bytes hold, whatever its key."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return int(json.loads(str(npz["meta"]))["iteration"])


def frame_sidecar(frames: Path, number: int) -> dict:
    return json.loads((frames / f"{number:06d}.json").read_text())


# --- the key -------------------------------------------------------------------------------------


def test_a_frame_checkpoint_is_keyed_by_its_previous_frame_and_flow():
    rng = np.random.default_rng(0)
    stylized = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
    pair = FramePair(rng.normal(size=(12, 16, 2)).astype(np.float32), np.ones((12, 16), np.float32))
    just_made = clip.Previous(np.zeros((12, 16, 3)), stylized.astype(np.float32))
    read_back = clip.Previous(
        np.zeros((12, 16, 3)), images.decode(images.encode_png(stylized), "p").rgb
    )
    digest = clip.temporal_digest(just_made, pair)
    assert digest == clip.temporal_digest(read_back, pair)  # the same after a restart
    one_level = stylized.astype(np.float32)
    one_level[5, 7, 1] += 1 if one_level[5, 7, 1] < 255 else -1
    moved = FramePair(pair.backward + np.float32(0.01), pair.reliability)
    others = {
        clip.temporal_digest(clip.Previous(just_made.content, one_level), pair),
        clip.temporal_digest(just_made, moved),
        clip.temporal_digest(just_made, FramePair(pair.backward, pair.reliability * 0)),
    }
    assert len(others | {digest}) == 4
    assert clip.temporal_digest(None, None) == ""  # a shot's first frame: keyed like a still

    still = checkpoints.key(still_job("a.png"), {"size": 32}, "md5:w")
    assert still == checkpoints.key(
        still_job("a.png"), {"size": 32}, "md5:w", ""
    )  # stills unchanged
    assert checkpoints.key(still_job("a.png"), {"size": 32}, "md5:w", digest) != still


# --- a graceful stop inside a frame, resumed in the same process ---------------------------------


def make_job(content: str, style: str, out: str, weights: Path, **options):
    o = StyleOptions(weights=str(weights), **options)
    probes = prepare.probe_all([content, style])
    pair = Pair(1, content, (StyleRef(style, None),), "clip.mp4", o, {}, {})
    return prepare.make_job(pair, probes, out, shared_weights(str(weights)).checksum)


def stop_when_saved(where: str, look: Callable[[], object]) -> threading.Thread:
    """A thread that asks for a graceful stop once a checkpoint is at `where`, after calling
    `look` (what the store holds then)."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not storage.exists(where) and time.monotonic() < deadline:
            time.sleep(0.02)
        look()
        stops.request(signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_frame_stopped_mid_way_on_s3_resumes_at_its_iteration_as_if_never_stopped(
    s3_env, tmp_path, tiny_weights
):
    from s3server import make_bucket, s3_client

    frames = {
        f"seq/f{i}.png": images.encode_png(f) for i, f in enumerate(clip_frames(3, 24, 32), 1)
    }
    frames["style.png"] = images.encode_png(stripes().rgb)
    for name, data in frames.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    make_bucket(s3_env, "art", {f"in/{name}": data for name, data in frames.items()})
    options = dict(size=32, iterations=ITERATIONS, frame_iterations=ITERATIONS, tolerance=0)
    options |= dict(optimizer="adam", checkpoint_every=0.2)
    cache = str(tmp_path / "cache")
    reference = make_job(
        str(tmp_path / "seq"), str(tmp_path / "style.png"), str(tmp_path / "ref"), tiny_weights,
        **options,
    )  # fmt: skip
    clips.run_shot(reference, 0, 3, cache)  # never stopped (its frames save checkpoints too)
    job = make_job(
        "s3://art/in/seq/", "s3://art/in/style.png", "s3://art/out", tiny_weights, **options
    )
    client = s3_client(s3_env)

    def keys() -> list[str]:
        found = client.list_objects_v2(Bucket="art", Prefix="out/")
        return sorted(o["Key"] for o in found.get("Contents", []))

    where, seen = checkpoints.location(clips.frame_uri(job, 1)), []
    watcher = stop_when_saved(where, lambda: seen.append(keys()))
    try:
        with pytest.raises(stops.Interrupted) as caught:
            clips.run_shot(job, 0, 3, cache)
    finally:
        watcher.join()
        stops.reset()
    message = str(caught.value)
    assert message.startswith("interrupted by SIGTERM in frame 2 of 3 at level 0, iteration ")
    assert message.endswith("; checkpoint saved"), message
    stopped = int(message.split("iteration ")[1].split(";")[0])
    assert 0 < stopped < ITERATIONS
    # one object beside the frame (a PUT: no temporary names), the frame before it finished
    assert seen == [["out/clip/.000002.png.checkpoint.npz", "out/clip/000001.json",
                     "out/clip/000001.png"]]  # fmt: skip
    assert saved_iteration(storage.read_bytes(where)) == stopped  # the stop's own save

    other = checkpoints.location(clips.frame_uri(job, 2))
    storage.write_bytes(other, storage.read_bytes(where))  # frame 2's, as if frame 3's: ignored
    assert clips.run_shot(job, 0, 3, cache) == 2  # frames 2 and 3
    assert not [k for k in keys() if k.endswith(checkpoints.SUFFIX)]  # published: removed
    second, third = (
        json.loads(client.get_object(Bucket="art", Key=f"out/clip/00000{n}.json")["Body"].read())
        for n in (2, 3)
    )
    assert second["linked"] and second["resumed"] == {"level": 0, "iteration": stopped}
    assert second["notes"] == [f"resumed at level 0, iteration {stopped}"]
    assert second["iterations"] == ITERATIONS - stopped  # not one iteration redone
    assert third["resumed"] is None and third["iterations"] == ITERATIONS
    # Adam's moments and step count came back, and the warped start and the temporal target are
    # the same: the resumed frame, and the one warped from it, are the uninterrupted run's.
    for n in (2, 3):
        ours = clipsource.decode(f"s3://art/out/clip/00000{n}.png").rgb
        theirs = images.read_path(tmp_path / "ref" / "clip" / f"00000{n}.png").rgb
        assert np.abs(ours - theirs).max() <= 2, n
    status, document = clips.finish(job, shared_weights(str(tiny_weights)), [], False, [(0, 3)])
    assert status == "done"
    assert f"frame 2: resumed at level 0, iteration {stopped}" in document["notes"]


# --- a clip killed inside a frame, through the real CLI ------------------------------------------


def test_a_clip_killed_inside_a_frame_resumes_that_frame_from_its_checkpoint(
    tmp_path, tiny_weights, capsys
):
    write_clip(tmp_path / "clip.mp4", clip_frames(2))  # killed at about two thirds of the clip
    (tmp_path / "style.png").write_bytes(images.encode_png(stripes().rgb))
    out = tmp_path / "out" / "clip.mp4"
    args = [
        "stylize", str(tmp_path / "clip.mp4"), str(tmp_path / "style.png"), "-o", str(out),
        "--weights", str(tiny_weights), "--size", "32", "--iterations", str(ITERATIONS), "--frame-iterations", str(ITERATIONS),
        "--optimizer", "adam", "--tolerance", "0", "--checkpoint-every", "0.2", "--quiet",
    ]  # fmt: skip
    killed = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        start_new_session=True,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    checkpoint = out.parent / "clip" / ".000002.png.checkpoint.npz"
    deadline, saves = time.monotonic() + 120, [0]  # the iterations of the checkpoints seen
    while saves[-1] < ITERATIONS // 3 and killed.poll() is None and time.monotonic() < deadline:
        if checkpoint.exists() and saved_iteration(checkpoint.read_bytes()) != saves[-1]:
            saves.append(saved_iteration(checkpoint.read_bytes()))
        time.sleep(0.01)
    os.killpg(killed.pid, signal.SIGKILL)  # at once: at most one more save can come first
    killed.wait()
    seen = saves[-1]
    assert seen >= ITERATIONS // 3, "frame 2 was not checkpointed at a third of its iterations"
    first = (out.parent / "clip" / "000001.png").read_bytes()
    assert not (out.parent / "clip" / "000002.json").exists() and not out.exists()

    assert main(args) == 0, capsys.readouterr()
    second = frame_sidecar(out.parent / "clip", 2)
    resumed = second["resumed"]["iteration"]  # the last checkpoint before the kill
    assert seen <= resumed < ITERATIONS and second["iterations"] == ITERATIONS - resumed
    assert second["linked"]  # warped from frame 1, read back from its PNG
    assert resumed - seen <= max(np.diff(saves[1:]), default=seen)  # an interval's at most
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert f"frame 2: resumed at level 0, iteration {resumed}" in sidecar["notes"]
    assert (out.parent / "clip" / "000001.png").read_bytes() == first  # never written again
    assert not list(out.parent.rglob(f"*{checkpoints.SUFFIX}"))
    assert len(sidecar["per_frame"]) == 2 and out.exists()


# --- a graceful stop through `stylebatch run`, finished by `rerun` -------------------------------


@pytest.mark.usefixtures("prefect_server")
def test_sigterm_inside_a_frame_interrupts_the_clip_and_rerun_resumes_the_frame(
    tmp_path, tiny_weights, capsys
):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    write_clip(inputs / "clip.mp4", clip_frames(2))
    (inputs / "style.png").write_bytes(images.encode_png(stripes().rgb))
    (inputs / "m.csv").write_text("content,style\nclip.mp4,style.png\n")
    args = [
        "run", str(inputs / "m.csv"), "-o", str(out), "--weights", str(tiny_weights),
        "--feature-cache", str(tmp_path / "features"), "--size", "32",
        "--iterations", str(ITERATIONS), "--frame-iterations", str(ITERATIONS),
        "--optimizer", "adam", "--tolerance", "0", "--checkpoint-every", "0.5", "--quiet",
    ]  # fmt: skip
    run = stylebatch(args, env=child_env())
    checkpoint, deadline = None, time.monotonic() + 180
    while checkpoint is None:  # frame 2's first timed checkpoint: it is half a second in
        assert run.poll() is None and time.monotonic() < deadline, finish(run)
        checkpoint = next(out.glob("*/.000002.png.checkpoint.npz"), None)
        time.sleep(0.01)
    timed = saved_iteration(checkpoint.read_bytes())
    run.send_signal(signal.SIGTERM)
    code, _, err = finish(run)

    assert code == 143, err
    (line,) = json.loads((out / "report.json").read_text())["pairs"]
    assert line["status"] == "interrupted" and line["frames"]["done"] == 1, line
    assert line["error"].startswith("interrupted by SIGTERM in frame 2 of 2 at level 0, iteration ")
    assert line["error"].endswith("; checkpoint saved"), line["error"]
    stopped = int(line["error"].split("iteration ")[1].split(";")[0])
    assert 0 < timed < stopped < ITERATIONS  # stopped at the next iteration, not where it saved
    assert list(out.rglob(f"*{checkpoints.SUFFIX}")) == [checkpoint]
    assert saved_iteration(checkpoint.read_bytes()) == stopped  # the stop's own save

    assert main(["rerun", str(out / "report.json"), "--quiet"]) == 0, capsys.readouterr()
    (line,) = json.loads((out / "report.json").read_text())["pairs"]
    assert line["status"] == "done"
    second = frame_sidecar(Path(line["output"]).with_suffix(""), 2)
    assert second["resumed"] == {"level": 0, "iteration": stopped}  # not one iteration redone
    assert second["iterations"] == ITERATIONS - stopped
    assert f"frame 2: resumed at level 0, iteration {stopped}" in line["notes"]
    assert not list(out.rglob(f"*{checkpoints.SUFFIX}"))
