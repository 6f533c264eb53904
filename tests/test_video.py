"""Clips: decoding and encoding, optical flow on known shifts, temporal consistency, bad clips."""

from __future__ import annotations

import json
import pathlib
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
from conftest import noise_image

from flows.cli.main import main
from stylecore import clip, images, opticalflow, video
from stylecore.errors import ImageError, StyleError
from stylecore.options import StyleOptions
from stylecore.stylize import Stylizer, prepare_style, shared_weights

SHIFT = (2, 1)  # the square's motion per frame, (dx, dy) pixels


def scene(h: int, w: int, t: int, shift: tuple[int, int] = SHIFT, seed: int = 0) -> np.ndarray:
    """Frame t of a test clip: a still texture and a two-colour square moving by `shift` a frame."""
    frame = noise_image(h, w, seed=seed)
    side = h // 3
    y, x = h // 4 + shift[1] * t, w // 5 + shift[0] * t
    frame[y : y + side, x : x + side] = (230, 40, 40)
    inner = slice(y + side // 3, y + 2 * side // 3), slice(x + side // 3, x + 2 * side // 3)
    frame[inner] = (40, 40, 230)
    return frame


def clip_frames(count: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    return [scene(h, w, t) for t in range(count)]


def write_clip(path, frames, fps: float = 12.0) -> None:
    video.encode((np.rint(f).astype(np.uint8) for f in frames), path, fps)


def test_flow_recovers_the_known_shift_and_the_texture_stays():
    a, b = scene(48, 64, 0), scene(48, 64, 1)
    backward = opticalflow.flow(b, a)  # frame 1 back to frame 0: −shift inside the square
    y, x, side = 48 // 4 + SHIFT[1], 64 // 5 + SHIFT[0], 48 // 3
    inside = backward[y + 4 : y + side - 4, x + 4 : x + side - 4]
    assert np.allclose(inside.mean(axis=(0, 1)), (-SHIFT[0], -SHIFT[1]), atol=0.3)
    still = backward[40:, :]  # rows below the square: the texture does not move
    assert np.abs(still).mean() < 0.2


def test_reliability_zeroes_the_uncovered_strip_and_keeps_the_still_texture():
    pair = opticalflow.frame_pair(scene(48, 64, 0), scene(48, 64, 1))
    y, x, side = 48 // 4 + SHIFT[1], 64 // 5 + SHIFT[0], 48 // 3
    uncovered = pair.reliability[y + 2 : y + side - 2, x - SHIFT[0] : x]  # behind the square
    assert uncovered.max() == 0.0
    assert pair.reliability[40:, :].mean() > 0.95
    assert pair.reliability.mean() > 0.8


def test_warp_moves_pixels_by_the_flow():
    image = noise_image(32, 32, seed=3)
    shifted = np.roll(image, 3, axis=1)  # content moved right by 3
    backward = np.zeros((32, 32, 2), np.float32)
    backward[..., 0] = -3.0
    warped = opticalflow.warp(image, backward)
    assert np.allclose(warped[:, 3:], shifted[:, 3:], atol=1e-3)


def test_a_clip_round_trips_through_mp4_with_its_rate_size_and_frames(tmp_path):
    frames = clip_frames(7)
    path = tmp_path / "clip.mp4"
    write_clip(path, frames, fps=12)
    info = video.probe(path)
    assert (info.frames, info.fps, info.shape, info.audio, info.notes) == (
        7,
        12.0,
        (48, 64),
        False,
        (),
    )
    decoded = list(video.read_frames(path))
    assert len(decoded) == 7 and decoded[0].shape == (48, 64, 3)
    luma = [opticalflow.grey(f).astype(np.float32) for f in (decoded[3], frames[3])]
    assert np.abs(luma[0] - luma[1]).mean() < 3  # H.264 at CRF 18: close (colour at half size)
    assert not list(tmp_path.glob(".encoding-*"))


def test_audio_is_copied_into_the_encoded_clip(tmp_path):
    source = tmp_path / "with-audio.mp4"
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=12:duration=1",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-shortest", "-pix_fmt", "yuv420p",
         "-c:v", "libx264", "-c:a", "aac", str(source)],
        check=True,
    )  # fmt: skip
    assert video.probe(source).audio
    out = tmp_path / "out.mp4"
    video.encode(
        (f.astype(np.uint8) for f in video.read_frames(source)), out, 12.0, audio_from=source
    )
    info = video.probe(out)
    assert info.audio and info.frames == 12


def test_a_frame_folder_reads_in_natural_order(tmp_path):
    frames = clip_frames(11)
    for i, frame in enumerate(frames, 1):
        (tmp_path / f"f{i}.png").write_bytes(images.encode_png(frame))
    paths = sorted((str(p) for p in tmp_path.glob("*.png")), key=video.natural_key)
    assert [p.rsplit("/", 1)[1] for p in paths[:3]] == ["f1.png", "f2.png", "f3.png"]
    assert video.probe_sequence(paths).frames == 11
    decoded = list(video.read_sequence(paths))
    assert np.abs(decoded[9] - np.rint(frames[9])).max() <= 0.5


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d[: len(d) // 2], "truncated or corrupt"),
        (lambda d: b"not a video at all" * 10, "truncated or corrupt"),
    ],
)
def test_undecodable_and_truncated_clips_are_one_line_errors(tmp_path, make, expected):
    good = tmp_path / "good.mp4"
    write_clip(good, clip_frames(6))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(make(good.read_bytes()))
    with pytest.raises(ImageError, match=expected) as caught:
        video.probe(bad)
    assert "\n" not in str(caught.value) and "bad.mp4" in str(caught.value)


def test_too_many_frames_a_size_change_and_no_frames_are_refused(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path, clip_frames(6))
    with pytest.raises(ImageError, match=r"6 frames.*, more than max_frames \(5\)"):
        video.probe(path, max_frames=5)
    long = tmp_path / "long.mp4"  # 10 s at 30 fps: refused from its header, before decoding
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=size=16x16:rate=30:duration=10",
        "-pix_fmt",
        "yuv420p",
        str(long),
    )
    with pytest.raises(
        ImageError, match=r"about 300 frames by its header, more than max_frames \(100\)"
    ):
        video.probe(long, max_frames=100)
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, frame in enumerate([*clip_frames(2), noise_image(40, 64)], 1):
        (folder / f"{i:03d}.png").write_bytes(images.encode_png(frame))
    paths = sorted(str(p) for p in folder.glob("*.png"))
    with pytest.raises(ImageError, match=r"frame size changes mid-clip \(frame 3"):
        video.probe_sequence(paths)
    with pytest.raises(ImageError, match="no frames"):
        video.probe_sequence([], name="empty/")


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def test_a_size_change_in_a_stream_is_refused_and_a_variable_rate_noted(tmp_path):
    for name, size in (("a.ts", "64x48"), ("b.ts", "80x48")):
        source = f"testsrc=size={size}:rate=12:duration=0.5"
        ffmpeg("-f", "lavfi", "-i", source, "-pix_fmt", "yuv420p", str(tmp_path / name))
    joined = tmp_path / "joined.ts"  # MPEG-TS streams concatenate byte by byte
    joined.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    with pytest.raises(
        ImageError, match=r"size changes mid-clip \(frame [67] is 80×48, the first 64×48"
    ):
        video.probe(joined)
    gappy = tmp_path / "vfr.mp4"  # frames 4–6 dropped, the others keep their times
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=12:duration=1", "-vf",
           "select='not(between(n,3,5))'", "-fps_mode", "vfr", "-pix_fmt", "yuv420p", str(gappy))  # fmt: skip
    info = video.probe(gappy)
    assert info.frames == 9 and info.notes[0].startswith("variable frame rate: the output plays at")


def test_scene_cuts_split_a_clip_into_shots():
    frames = clip_frames(4) + [noise_image(48, 64, seed=9) for _ in range(1)] + clip_frames(3)
    assert clip.shots(frames) == [0, 4, 5]


@pytest.fixture(scope="module")
def tiny_stylizer(tiny_weights):
    options = StyleOptions(weights=str(tiny_weights), size=64, iterations=40, seed=0)
    return options, Stylizer(shared_weights(str(tiny_weights)), options)


def stripes() -> images.Picture:
    xx = np.mgrid[0:64, 0:64][1]
    wave = np.sin(xx / 3.0)[..., None] * np.array([1.0, -1.0, 0.5])
    return images.Picture((127 + 120 * wave).astype(np.float32), None)


def run_clip(frames, options, stylizer):
    """(mean temporal error over frames 2…n, mean style ratio) of a clip stylized with `options`."""
    style = stripes()

    def grams_for(longest):
        return [stylizer.grams(prepare_style(style, longest, options), options)]

    results = [r for r, _ in clip.stylize_shot(frames, grams_for, options, stylizer)]
    contents = [clip.prepare_content(images.Picture(f, None), options) for f in frames]
    errors = [
        opticalflow.temporal_error(
            results[i].rgb,
            results[i - 1].rgb,
            opticalflow.frame_pair(contents[i - 1], contents[i]),
        )
        for i in range(1, len(frames))
    ]
    return float(np.mean(errors)), float(np.mean([r.quality["style_ratio"] for r in results]))


def test_linked_frames_flicker_at_most_half_as_much_with_the_style_kept(tiny_stylizer):
    options, stylizer = tiny_stylizer
    frames = clip_frames(5)
    independent = run_clip(frames, options.replace(temporal_weight=0.0), stylizer)
    linked = run_clip(frames, options.replace(temporal_weight=1.0, frame_iterations=20), stylizer)
    assert linked[0] <= 0.5 * independent[0]
    assert linked[1] <= 1.1 * independent[1]  # the style distance is no more than 10% worse


# --- clips in the batch flow and the CLI ------------------------------------------------------


def cut_clip(count: int, cut: int) -> list[np.ndarray]:
    """A clip with a scene cut at frame `cut`: another texture, the square moving on."""
    return [scene(48, 64, t, seed=0 if t < cut else 5) for t in range(count)]


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")
def test_clip_rows_in_a_batch_shots_outputs_and_bad_clips(tmp_path, tiny_weights):
    from flows.batch import stylize_batch

    inputs = tmp_path / "in"
    (inputs / "seq").mkdir(parents=True)
    write_clip(inputs / "cut.mp4", cut_clip(8, 5))
    for i, frame in enumerate(clip_frames(4), 1):
        (inputs / "seq" / f"f{i}.png").write_bytes(images.encode_png(frame))
    good = (inputs / "cut.mp4").read_bytes()
    (inputs / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (inputs / "still.png").write_bytes(images.encode_png(noise_image(40, 56, seed=4)))
    (inputs / "style.png").write_bytes(images.encode_png(stripes().rgb))
    manifest = inputs / "manifest.csv"
    manifest.write_text(
        "content,style,output,max_frames\n"
        "cut.mp4,style.png,cut.mp4,\n"
        "seq/,style.png,,\n"
        "truncated.mp4,style.png,,\n"
        "still.png,style.png,,\n"
        "cut.mp4,style.png,long.mp4,5\n"
    )
    out = tmp_path / "out"
    state = stylize_batch(
        manifest=str(manifest), output=str(out), feature_cache=str(tmp_path / "features"),
        weights=str(tiny_weights), size=48, iterations=8, frame_iterations=4, return_state=True,
    )  # fmt: skip
    pairs = {p["row"]: p for p in json.loads((out / "report.json").read_text())["pairs"]}
    assert [pairs[r]["status"] for r in (2, 3, 4, 5, 6)] == [
        "done", "done", "failed", "done", "failed"
    ]  # fmt: skip
    assert pairs[2]["frames"] == {"done": 8, "total": 8}
    assert [pathlib.Path(f).name for f in pairs[2]["strip"]] == [
        "000001.png",
        "000005.png",
        "000008.png",
    ]
    assert (out / "contact-sheet.png").exists()
    assert pairs[3]["frames"] == {"done": 4, "total": 4}
    assert 0 < pairs[2]["quality"]["style_ratio"] < 1  # the frames' mean score
    assert "truncated or corrupt" in pairs[4]["error"] and "truncated.mp4" in pairs[4]["error"]
    assert "8 frames, more than max_frames (5)" in pairs[6]["error"]
    assert all("\n" not in p["error"] for p in pairs.values() if p["error"])
    sidecar = json.loads((out / "cut.json").read_text())
    assert sidecar["shots"] == [[1, 5], [6, 8]]  # split at the cut
    assert (sidecar["frames"], sidecar["fps"], sidecar["flow"]) == (8, 12.0, opticalflow.METHOD)
    assert [r["linked"] for r in sidecar["per_frame"]] == [False, *[True] * 4, False, True, True]
    assert all("temporal" in r["losses"] for r in sidecar["per_frame"] if r["linked"])
    assert sorted(p.name for p in (out / "cut").glob("*.png"))[:2] == ["000001.png", "000002.png"]
    assert len(list(video.read_frames(out / "cut.mp4"))) == 8
    assert video.probe(out / "cut.mp4").shape == (48, 64)  # the source's size (frames: 48 px)
    assert images.read_path(out / "cut" / "000001.png").rgb.shape == (36, 48, 3)
    assert video.probe(out / pathlib.Path(pairs[3]["output"]).name).frames == 4
    assert not list(out.glob("*truncated*")) and not list(out.glob("long*"))  # nothing half-written
    artifacts = flow_run_artifacts(state.state_details.flow_run_id)
    clip_progress = [a for a in artifacts if a.type == "progress" and "-clip-cut-mp4-" in a.key]
    assert len(clip_progress) == 1 and float(clip_progress[0].data) == 100.0
    (link,) = [a for a in artifacts if a.key and "-clip-link-cut-mp4-" in a.key]
    assert f"({out / 'cut.mp4'})" in link.data and "8 frames" in link.data


def flow_run_artifacts(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


@pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")
def test_a_failed_frame_fails_its_clip_in_one_line_and_the_other_shot_finishes(
    tmp_path, tiny_weights
):
    from flows import clips, prepare
    from flows.model import Pair, StyleRef

    seq = tmp_path / "seq"
    seq.mkdir()
    for i, frame in enumerate(cut_clip(6, 3), 1):
        (seq / f"f{i}.png").write_bytes(images.encode_png(frame))
    style = tmp_path / "style.png"
    style.write_bytes(images.encode_png(stripes().rgb))
    options = StyleOptions(weights=str(tiny_weights), size=48, iterations=4)
    probes = prepare.probe_all([str(seq), str(style)])
    pair = Pair(1, str(seq), (StyleRef(str(style), None),), None, options, {}, {})
    weights = shared_weights(str(tiny_weights))
    job = prepare.make_job(pair, probes, str(tmp_path / "out"), weights.checksum)
    shots = clips.plan_shots(job)
    assert shots == [(0, 3), (3, 6)]
    (seq / "f2.png").write_bytes(b"broken after probing")
    cache = str(tmp_path / "features")
    with pytest.raises(ImageError) as caught:
        clips.run_shot(job, *shots[0], cache)
    assert str(caught.value).startswith("frame 2: ") and "\n" not in str(caught.value)
    assert clips.run_shot(job, *shots[1], cache) == 3  # the other shot still finishes
    assert [clips.frame_done(job, i) for i in range(6)] == [True, False, False, True, True, True]
    with pytest.raises(StyleError, match="frame 2 of 6 is not finished"):
        clips.finish(job, weights, [], False, shots)
    assert not pathlib.Path(job.output).exists() and not pathlib.Path(job.sidecar).exists()


@pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")
def test_a_clip_and_a_frame_folder_on_s3(s3_env, tiny_weights, tmp_path):
    from s3server import make_bucket, s3_client

    write_clip(tmp_path / "c.mp4", clip_frames(4))
    files = {"in/c.mp4": (tmp_path / "c.mp4").read_bytes()}
    files |= {f"in/seq/f{i}.png": images.encode_png(f) for i, f in enumerate(clip_frames(3), 1)}
    files["in/style.png"] = images.encode_png(stripes().rgb)
    make_bucket(s3_env, "art", files)
    flags = ["--weights", str(tiny_weights), "--size", "32", "--iterations", "3", "--quiet"]
    for content, out in (("c.mp4", "c.mp4"), ("seq/", "seq.mp4")):
        command = ["stylize", f"s3://art/in/{content}", "s3://art/in/style.png"]
        assert main([*command, "-o", f"s3://art/out/{out}", *flags]) == 0
    client = s3_client(s3_env)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="art", Prefix="out/")["Contents"]}
    assert {
        "out/c.mp4",
        "out/c.json",
        "out/c/000004.png",
        "out/seq.mp4",
        "out/seq/000003.json",
    } <= keys
    for key, count in (("out/c.mp4", 4), ("out/seq.mp4", 3)):
        (tmp_path / "back.mp4").write_bytes(client.get_object(Bucket="art", Key=key)["Body"].read())
        assert len(list(video.read_frames(tmp_path / "back.mp4"))) == count
