"""Looking at a loaded network: its description, and its top ImageNet classes for a sample image."""

from __future__ import annotations

import textwrap

import numpy as np

from stylecore.errors import WeightsError
from stylecore.netspec import Layer, NetworkWeights
from stylecore.weights.cache import is_classifier, release_of

_KINDS = ("conv", "relu", "pool", "softmax", "dropout")  # every Layer.kind, as describe counts them


def describe(w: NetworkWeights) -> str:
    """Multi-line text for `stylebatch weights info`: provenance, mean, layers, classifier.

    Load with include_fc=True to see the fc layers: the cached load holds the conv part only.
    """
    body = [layer for layer in w.layers if not is_classifier(layer)]
    head = [layer for layer in w.layers if is_classifier(layer)]
    counts = {kind: sum(layer.kind == kind for layer in body) for kind in _KINDS}
    shapes = ", ".join(_short(layer) for layer in body if layer.kind in ("conv", "pool"))
    lines = [
        f"name:      {w.name}",
        f"layout:    {w.layout}",
        f"source:    {w.source}",
        f"checksum:  {w.checksum}",
        f"release:   {release_of(w.checksum) or 'matches no known release'}",
        "mean RGB:  " + " ".join(f"{v:.3f}" for v in w.mean_rgb),
        f"layers:    {len(body)} before the classifier, "
        + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n),
        textwrap.indent(textwrap.fill(shapes, 96), "  "),
        "fc layers: " + (", ".join(_short(x) for x in head) if head else "none loaded"),
        f"classes:   {len(w.classes)}" + (f", e.g. {w.classes[0]!r}" if w.classes else ""),
    ]
    return "\n".join(lines)


def _short(layer: Layer) -> str:
    if layer.kind == "conv":
        kh, kw, cin, cout = layer.kernel.shape
        return f"{layer.name} {kh}×{kw}×{cin}→{cout}"
    if layer.kind == "pool":
        return f"{layer.name} {layer.pool_method} {layer.pool_size[0]}×{layer.pool_size[1]}"
    return f"{layer.name} {layer.kind}"


def sample_image() -> np.ndarray:
    """scikit-image's chelsea (a tabby cat, CC0), float32 RGB in 0…255, shape (300, 451, 3)."""
    import skimage.data

    return skimage.data.chelsea().astype(np.float32)


def top_classes(w: NetworkWeights, rgb: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes of a 0…255 RGB image, for `stylebatch weights verify`."""
    from stylecore.network import FeatureNet  # TensorFlow: loaded only when verifying

    last = _classifier_output(w)
    net = FeatureNet(w, [last.name])
    scores = net(net.preprocess(_center_crop(rgb, 224)))[last.name].numpy()
    if scores.shape[1:3] != (1, 1):
        raise WeightsError(
            f"{w.source}: the classifier gives a {scores.shape[1]}×{scores.shape[2]} map "
            "for a 224×224 image, not one prediction"
        )
    probs = scores.reshape(-1).astype(np.float64)
    if last.kind != "softmax":  # fc8 gives logits
        probs = np.exp(probs - probs.max())
        probs /= probs.sum()
    top = np.argsort(-probs, kind="stable")[:k]
    names = w.classes
    return [(names[i] if i < len(names) else f"class {i}", float(probs[i])) for i in top]


def _classifier_output(w: NetworkWeights) -> Layer:
    if not any(is_classifier(layer) for layer in w.layers):
        raise WeightsError(
            f"{w.source}: network '{w.name}' has no fc layers; "
            "verify needs the full network (fc6–fc8)"
        )
    last = w.layers[-1]
    if last.kind not in ("softmax", "conv"):
        raise WeightsError(
            f"{w.source}: network '{w.name}' ends at '{last.name}', not a classifier"
        )
    return last


def _center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to `size` (anti-aliased), then the central size×size square."""
    from skimage.transform import resize

    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    shape = (max(size, round(h * scale)), max(size, round(w * scale)))
    image = resize(np.asarray(rgb, np.float32), shape, anti_aliasing=True, preserve_range=True)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return image[top : top + size, left : left + size].astype(np.float32)
