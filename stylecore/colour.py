"""Colour preservation: the styled image's luminance with the content's chroma (BT.601 YCbCr)."""

from __future__ import annotations

import numpy as np

# BT.601 full-range YCbCr with chroma centred on 0: rows give Y, Cb, Cr from RGB.
_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float64,
)


def preserve_colors(content_rgb: np.ndarray, styled_rgb: np.ndarray) -> np.ndarray:
    """The styled image's luminance with the content's chroma (BT.601 YCbCr), clipped to 0…255."""
    if content_rgb.shape != styled_rgb.shape:
        raise ValueError(
            f"preserve_colors needs equal shapes, got {content_rgb.shape} and {styled_rgb.shape}"
        )
    luma = styled_rgb.astype(np.float64) @ _YCBCR[0]
    chroma = content_rgb.astype(np.float64) @ _YCBCR[1:].T
    ycbcr = np.concatenate([luma[..., None], chroma], axis=-1)
    return np.clip(ycbcr @ np.linalg.inv(_YCBCR).T, 0, 255).astype(np.float32)
