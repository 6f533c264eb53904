"""Generate examples/chelsea-pan.mp4: a 2-second, 12 fps camera pan across chelsea.png (CC0).

    .venv/bin/python examples/make_clip.py

Licence-free like its source; a short clip for `stylebatch stylize` and the README's Video section.
A crop window of 160×112 px drifts right and down by (3, 1) px a frame while the picture slowly
zooms in: the optical flow is known and smooth, with new content entering at one edge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stylecore import images, video

HERE = Path(__file__).resolve().parent
FRAMES, FPS, SIZE = 24, 12.0, (112, 160)  # (H, W)


def frames() -> list[np.ndarray]:
    """The pan's frames, uint8 (H, W, 3)."""
    still = images.composite(images.read_path(HERE / "chelsea.png"))
    out = []
    for t in range(FRAMES):
        zoom = 1.0 + 0.004 * t
        h, w = round(SIZE[0] / zoom), round(SIZE[1] / zoom)
        y, x = 20 + t, 10 + 3 * t
        crop = still[y : y + h, x : x + w]
        out.append(np.clip(np.rint(images.resize(crop, SIZE)), 0, 255).astype(np.uint8))
    return out


if __name__ == "__main__":
    target = HERE / "chelsea-pan.mp4"
    video.encode(frames(), target, FPS)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB, {FRAMES} frames at {FPS:g} fps)")
