"""FLOPs of one iteration, counted analytically from the layer shapes (multiply-add = 2 FLOPs).

For a 3×3 convolution with output H×W×C_out and input channels C_in:

    forward            2 · H · W · k_h · k_w · C_in · C_out
    input gradient     the same again (a transposed convolution with the same multiply-adds);
                       no kernel gradients: the weights are constants.

so the floor (forward to relu5_1 + gradient w.r.t. the image) is 4 · Σ_conv H·W·k_h·k_w·C_in·C_out.
One iteration adds, per style layer with an H×W×C feature map, the Gram FᵀF (2·H·W·C²) and its
gradient 2·F·dG (2·H·W·C² more); ReLU, pooling, the losses and the optimizer update are O(H·W·C)
and left out. Same-padded 3×3 convs keep H×W; each 2×2 pool halves it (floor division).
"""

from __future__ import annotations

from stylecore.netspec import NetworkWeights


def _shapes(weights: NetworkWeights, height: int, width: int):
    """(layer, H, W, C_in) for every layer in order, with the map size at its output."""
    h, w, c = height, width, 3
    for layer in weights.layers:
        if layer.kind == "pool":
            h, w = h // 2, w // 2
        if layer.kind == "conv":
            c_in, c = c, layer.kernel.shape[3]
            yield layer, h, w, c_in
        else:
            yield layer, h, w, c


def floor_flops(weights: NetworkWeights, height: int, width: int, last: str = "relu5_1") -> float:
    """Forward to `last` and the input gradient, for one image."""
    total = 0.0
    for layer, h, w, c_in in _shapes(weights.truncated(last), height, width):
        if layer.kind == "conv":
            kh, kw, _, c_out = layer.kernel.shape
            total += 4.0 * h * w * kh * kw * c_in * c_out
    return total


def iteration_flops(
    weights: NetworkWeights, height: int, width: int, style_layers: tuple[str, ...]
) -> float:
    """The floor plus the style layers' Grams and their gradients, for one image."""
    deepest = max(style_layers, key=weights.layer_names.index)
    total = floor_flops(
        weights, height, width, max("relu5_1", deepest, key=weights.layer_names.index)
    )
    for layer, h, w, c in _shapes(weights, height, width):
        if layer.name in style_layers:
            total += 4.0 * h * w * c * c
    return total
