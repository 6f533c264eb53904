"""Clips: probe, decode and encode video files (imageio-ffmpeg's own ffmpeg) and frame sequences.

A clip is either one video file (mp4, mov, webm, mkv, avi, animated GIF) or a sequence of image
files in natural order ("f2.png" before "f10.png"). Frames come out as (H, W, 3) float32 0…255.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from stylecore import images
from stylecore.errors import ImageError

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".ts", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
VFR_TOLERANCE = 0.02  # frame intervals further than this fraction from 1/fps: a variable rate
DEFAULT_FPS = 24.0  # a frame sequence's rate (it has none of its own)
_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*\S+\s+pts_time:(\S+).*?\bs:(\d+)x(\d+)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
HEADER_SLACK = 1.05  # a header's duration × rate may overshoot the decoded count a little
_FPS = re.compile(r"Video:.*?(\d+(?:\.\d+)?) fps")
_CUT = re.compile(r"moov atom not found|Invalid data|partial file|error", re.IGNORECASE)


@dataclass(frozen=True)
class ClipInfo:
    """What reading a clip once told: frame count, rate, shape, audio, and notes for the user."""

    frames: int
    fps: float
    shape: tuple[int, int]  # (H, W)
    audio: bool
    notes: tuple[str, ...] = ()


def is_video(name: str) -> bool:
    """Whether a name's suffix is a video container's (an animated GIF counts)."""
    return os.path.splitext(name.split("?")[0])[1].lower() in VIDEO_SUFFIXES


def natural_key(name: str) -> list:
    """Sort key putting 'f2.png' before 'f10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_frame(name: str) -> bool:
    """Whether a file in a frame folder is an image frame."""
    return os.path.splitext(name)[1].lower() in FRAME_SUFFIXES


def probe(path: str | Path, max_frames: int | None = None, name: str | None = None) -> ClipInfo:
    """Decode a video file once: its frames, rate, shape and audio, or a one-line ImageError
    (undecodable, truncated, no frames, a size change, more than max_frames)."""
    name = name or str(path)
    promised = estimate_frames(path)
    if max_frames is not None and promised and promised > max_frames * HEADER_SLACK:
        raise ImageError(  # refused from the header: a 4-hour clip is not decoded to say so
            f"{name}: about {promised} frames by its header, more than max_frames ({max_frames}): "
            "raise --max-frames or cut the clip"
        )
    lines = _ffmpeg(["-i", str(path), "-map", "0:v:0", "-vf", "showinfo", "-f", "null", "-"], name)
    frames = [m.groups() for m in map(_SHOWINFO.search, lines) if m]
    if not frames:
        raise ImageError(f"{name}: no video frames (an audio-only or empty file?)")
    _check_count(name, len(frames), max_frames, "clip")
    sizes = {(int(h), int(w)) for _, _, w, h in frames}
    if len(sizes) > 1:
        shapes = [(int(h), int(w)) for _, _, w, h in frames]
        n, other = next((n, s) for n, s in enumerate(shapes) if s != shapes[0])
        raise ImageError(
            f"{name}: the frame size changes mid-clip (frame {n + 1} is {other[1]}×{other[0]}, "
            f"the first {shapes[0][1]}×{shapes[0][0]}): re-encode it at one size"
        )
    header = "\n".join(lines[:60])
    fps = _fps(header, [float(t) for _, t, _, _ in frames])
    notes = _rate_notes([float(t) for _, t, _, _ in frames], fps)
    return ClipInfo(len(frames), fps, sizes.pop(), "Audio:" in header, notes)


def estimate_frames(path: str | Path) -> int | None:
    """The frames a video's header promises (duration × rate), without decoding; None when it
    gives no duration or rate."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    header = subprocess.run(command, capture_output=True, text=True, errors="replace").stderr
    duration, fps = _DURATION.search(header), _FPS.search(header)
    if not duration or not fps:
        return None
    hours, minutes, seconds = (float(x) for x in duration.groups())
    return round((3600 * hours + 60 * minutes + seconds) * float(fps.group(1)))


def _ffmpeg(args: list[str], name: str) -> list[str]:
    """ffmpeg's stderr lines for a decoding run; its errors as one ImageError line."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    done = subprocess.run(command, capture_output=True, text=True, errors="replace")
    lines = done.stderr.splitlines()
    errors = [x for x in lines if _CUT.search(x) and "showinfo" not in x.lower()]
    if done.returncode != 0 or errors:
        cause = (errors or lines or ["ffmpeg failed"])[0]
        cause = re.sub(r"^\[[^\]]*\]\s*", "", cause).strip()
        raise ImageError(f"{name}: cannot decode it as a video, truncated or corrupt ({cause})")
    return lines


def _fps(header: str, times: list[float]) -> float:
    """The stream's nominal rate, else the mean rate of its timestamps, else DEFAULT_FPS."""
    found = _FPS.search(header)
    if found and float(found.group(1)) > 0:
        return float(found.group(1))
    if len(times) > 1 and times[-1] > times[0]:
        return (len(times) - 1) / (times[-1] - times[0])
    return DEFAULT_FPS


def _rate_notes(times: list[float], fps: float) -> tuple[str, ...]:
    """A note when frame intervals vary: the output plays at a constant rate."""
    intervals = np.diff(np.asarray(times))
    if len(intervals) < 2:
        return ()
    if np.max(np.abs(intervals * fps - 1.0)) <= VFR_TOLERANCE + 1e-3:
        return ()
    return (f"variable frame rate: the output plays at a constant {fps:g} fps",)


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """A video file's frames, in order, each (H, W, 3) float32 0…255."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    try:
        for data in reader:
            frame = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            yield frame.astype(np.float32)
    finally:
        reader.close()


def probe_sequence(
    paths: Sequence[str],
    max_frames: int | None = None,
    name: str = "",
    read: Callable[[str], images.Picture] = images.read_path,
) -> ClipInfo:
    """A frame sequence's count and shape (every frame decoded once by `read`), or a one-line
    ImageError."""
    name = name or (os.path.dirname(paths[0]) if paths else "frames")
    if not paths:
        raise ImageError(f"{name}: no frames (no image files found)")
    _check_count(name, len(paths), max_frames, "sequence")
    first = None
    for index, path in enumerate(paths):
        shape = read(path).rgb.shape[:2]
        first = first or shape
        if shape != first:
            raise ImageError(
                f"{name}: the frame size changes mid-clip (frame {index + 1}, "
                f"{os.path.basename(path)}, is {shape[1]}×{shape[0]}, the first {first[1]}×{first[0]})"
            )
    return ClipInfo(len(paths), DEFAULT_FPS, first, False)


def read_sequence(
    paths: Sequence[str], read: Callable[[str], images.Picture] = images.read_path
) -> Iterator[np.ndarray]:
    """A frame sequence's frames, in the given order, each (H, W, 3) float32 0…255."""
    for path in paths:
        yield images.composite(read(path))


def encode(
    frames: Iterable[np.ndarray],
    path: str | Path,
    fps: float,
    audio_from: str | Path | None = None,
) -> None:
    """Frames (H, W, 3) uint8 as an H.264 video (or GIF, by the suffix), the audio track of
    `audio_from` copied when it has one. Written under a temporary name, then renamed."""
    path = Path(path)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ImageError(f"{path}: no frames to encode")
    height, width = first.shape[:2]
    fd, temporary = tempfile.mkstemp(suffix=path.suffix, dir=path.parent, prefix=".encoding-")
    os.close(fd)
    try:
        _encode_to(temporary, [first], frames, (width, height), fps, audio_from)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _encode_to(target: str, head, rest, size, fps: float, audio_from) -> None:
    gif = target.lower().endswith(".gif")
    params = [] if gif else ["-crf", "18", "-movflags", "+faststart"]
    audio = {}
    if audio_from is not None and not gif:
        audio = {"audio_path": str(audio_from), "audio_codec": "copy"}
    writer = imageio_ffmpeg.write_frames(
        target,
        size,
        fps=fps,
        codec="gif" if gif else "libx264",
        pix_fmt_out="rgb8" if gif else "yuv420p",
        quality=None,
        macro_block_size=1 if gif else 2,
        output_params=[*params, "-y"],
        **audio,
    )
    writer.send(None)
    for frame in (*head, *rest):
        writer.send(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    writer.close()


def _check_count(name: str, count: int, max_frames: int | None, what: str) -> None:
    """A one-line ImageError when a clip or sequence has more frames than max_frames."""
    if max_frames is not None and count > max_frames:
        raise ImageError(
            f"{name}: {count} frames, more than max_frames ({max_frames}): raise "
            f"--max-frames or cut the {what}"
        )
