"""Real weights (vgg16-hed, natural-image VGG16) on real images: stylized, and still the content."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES
from skimage.metrics import structural_similarity

from stylecore import images
from stylecore.network import FeatureNet, extract
from stylecore.options import STYLE_LAYERS, StyleOptions
from stylecore.stylize import prepare_content, prepare_style, shared_weights, stylize


def gram(f: np.ndarray) -> np.ndarray:
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    return flat.T @ flat / f.size


def gram_distance(a: dict, b: dict) -> float:
    """Σ over the style layers of mean((G_a − G_b)²): the style loss without its weights."""
    return sum(float(np.mean((gram(a[n]) - gram(b[n])) ** 2)) for n in STYLE_LAYERS)


@pytest.mark.slow
def test_defaults_stylize_and_keep_the_content():
    options = StyleOptions(network="vgg16-hed", size=96, iterations=150, seed=0)
    content = images.read_path(EXAMPLES / "chelsea.png")
    style = images.read_path(EXAMPLES / "swirls.png")
    out = stylize(content, [style], options).rgb.astype(np.float32)

    net = FeatureNet(shared_weights("vgg16-hed"), [*STYLE_LAYERS, "relu4_2"])
    c = prepare_content(content, options)
    s = prepare_style(style, max(c.shape[:2]), options)
    fo, fc, fs = extract(net, out), extract(net, c), extract(net, s)
    assert gram_distance(fo, fs) <= 0.25 * gram_distance(fc, fs)  # moved toward the style
    relative = np.linalg.norm(fo["relu4_2"] - fc["relu4_2"]) / np.linalg.norm(fc["relu4_2"])
    assert relative <= 0.25  # kept the content's structure
    assert structural_similarity(c / 255, out / 255, channel_axis=2, data_range=1.0) >= 0.25
    assert np.abs(out - c).mean() > 10  # and visibly changed
