"""Tiled steps (stylecore/tiling.py): the same loss and gradient as a whole step, the same finished
image, no seams, chosen when memory is short, and the out-of-memory retry that keeps the size."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from conftest import noise_image

from flows.cli.main import main
from stylecore import images, tiling
from stylecore.options import StyleOptions
from stylecore.stylize import prepare_content, prepare_style, shared_stylizer, stylize

EXAMPLES = "examples"


def _picture(name: str) -> images.Picture:
    with open(f"{EXAMPLES}/{name}", "rb") as file:
        return images.decode(file.read(), name)


def _relative(a, b) -> float:
    return float(tf.norm(tf.convert_to_tensor(a) - b) / tf.norm(b))


def test_the_layout_partitions_the_image_on_the_pooling_grid():
    shape, align = (300, 517), 16
    tiles = tiling.layout(shape, 128, 48, align)
    owned = np.zeros(shape, int)
    for t in tiles:
        y0, y1, x0, x1 = t.centre
        owned[y0:y1, x0:x1] += 1
        assert y1 - y0 <= 128 + align and x1 - x0 <= 128 + align
        assert all(v % align == 0 or v in shape for v in t.centre)  # on the grid or the edge
        wy0, wy1, wx0, wx1 = t.window
        assert (wy0, wx0) == (max(0, y0 - 48), max(0, x0 - 48))
        assert (wy1, wx1) == (min(300, y1 + 48), min(517, x1 + 48))
    assert (owned == 1).all()  # every pixel owned by exactly one tile
    assert len(tiles) == 3 * 5


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_tiled_loss_and_gradient_match_a_whole_step_on_real_weights(precision):
    """vgg16-hed at 256 px, tiles of 96 with the default halo: in float32 within 1e-3 relative
    (measured ~2e-6); a halo of 0 is far off, so the comparison can fail. In bfloat16 the backward
    pass rounds each tile's partial gradients on their own (rounding is not linear), so a tiled
    gradient differs from a whole one by bfloat16's own error: no more than bfloat16's whole
    gradient differs from float32's."""
    o = StyleOptions(network="vgg16-hed", size=256, tile="0", precision=precision)
    stylizer = shared_stylizer(o)
    content = prepare_content(_picture("chelsea.png"), o).astype(np.float32)
    grams = [stylizer.grams(prepare_style(_picture("swirls.png"), 256, o), o)]
    cx = stylizer.net.preprocess(content[None])
    x = cx + tf.constant(np.random.default_rng(0).normal(0, 30, cx.shape).astype(np.float32))
    losses, gradient = stylizer._optimizer(o).value_and_grad(x, stylizer._targets(cx, grams, o))
    shape = content.shape[:2]

    def tiled(halo):
        plan = tiling.Plan(shape, 96, halo, tiling.layout(shape, 96, halo, 16))
        return tiling.TiledObjective(stylizer, plan, cx, grams, o)(x)

    assert stylizer.halo == 48  # 0.7 of vgg16's relu5_1 reach (66 px), on the 16-px grid
    ours, grad = tiled(stylizer.halo)
    for term in ("content", "style", "tv", "total"):
        assert float(ours[term][0]) == pytest.approx(float(losses[term][0]), rel=1e-3), term
    _, far = tiled(0)
    assert _relative(far, gradient) > 2e-2
    if precision == "float32":
        assert _relative(grad, gradient) < 1e-3
    else:
        f32 = o.replace(precision="float32")
        exact = shared_stylizer(f32)
        _, reference = exact._optimizer(f32).value_and_grad(x, exact._targets(cx, grams, f32))
        assert _relative(grad, gradient) <= _relative(gradient, reference)


def test_a_tiled_stylization_finishes_like_a_whole_one_without_seams(tiny_weights):
    """Same options and seed, tiles of 64 against none: scores within a few percent, and the
    tiled image's gradient energy along its tile borders like anywhere else."""
    content = images.Picture(noise_image(160, 224, seed=3), None)
    style = images.Picture(noise_image(96, 96, seed=4), None)
    base = StyleOptions(weights=str(tiny_weights), size=224, iterations=12, optimizer="adam")
    whole = stylize(content, [style], base.replace(tile="0"))
    tiled = stylize(content, [style], base.replace(tile="64"))
    (record,) = tiled.tiling
    assert record["tile"] == 64 and record["halo"] == 64 and record["tiles"] == 12
    assert record["peak_rss_bytes"] > 0 and whole.tiling == []
    for score in ("style_ratio", "content_error"):
        assert tiled.quality[score] == pytest.approx(whole.quality[score], rel=0.03), score
    assert tiled.history[-1]["total"] == pytest.approx(whole.history[-1]["total"], rel=0.03)
    assert tiling.seam_ratio(tiled.rgb, tiling.borders(tiled.rgb.shape[:2], 64)) < 1.25


def test_the_seam_measure_sees_a_seam():
    rgb = noise_image(128, 128, seed=1)
    rgb[:, 64:] = np.clip(rgb[:, 64:] + 40, 0, 255)  # stitched halves that do not agree
    assert tiling.seam_ratio(rgb, ([], [64])) > 3


def test_auto_tiles_only_when_the_step_does_not_fit(tiny_weights):
    stylizer = shared_stylizer(StyleOptions(weights=str(tiny_weights)))
    geo = stylizer.geometry
    need = tiling.step_bytes(geo, 1024 * 768, 1)
    assert tiling.choose((768, 1024), 1, None, geo, 64, free=int(2 * need)) is None
    plan = tiling.choose((768, 1024), 1, None, geo, 64, free=int(need / 2))
    window = (plan.tile + 2 * 64) ** 2
    assert plan.tile % geo.align == 0 and len(plan.tiles) > 1
    assert tiling.step_bytes(geo, window, 1) <= tiling.MEMORY_SHARE * need / 2
    reserved = tiling.choose((768, 1024), 1, None, geo, 64, free=int(2 * need), reserved=int(need))
    assert reserved is not None  # the optimizer's state counts against the free memory
    starved = tiling.choose((768, 1024), 1, None, geo, 64, free=1)
    assert starved.tile == tiling.MIN_AUTO_TILE  # not tiles of 16 px that would crawl
    assert tiling.choose((768, 1024), 1, 0, geo, 64, free=1) is None  # --tile 0: never
    assert tiling.choose((768, 1024), 1, 2048, geo, 64, free=1) is None  # larger than the image
    assert tiling.choose((768, 1024), 1, 500, geo, 64, free=None).tile == 496


def test_stylize_records_the_tiling_in_the_sidecar(tiny_weights, tmp_path):
    content, style, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "o.png"
    content.write_bytes(images.encode_png(noise_image(96, 128, seed=1)))
    style.write_bytes(images.encode_png(noise_image(64, 64, seed=2)))
    args = ["--weights", str(tiny_weights), "--size", "128", "--iterations", "2", "--quiet"]
    assert main(["stylize", str(content), str(style), "-o", str(out), *args, "--tile", "64"]) == 0
    assert iio.imread(out).shape == (96, 128, 3)  # the size asked for
    sidecar = json.loads(out.with_suffix(".json").read_text())
    (level,) = sidecar["tiling"]
    assert level["tile"] == 64 and level["tiles"] == 4 and level["shape"] == [96, 128]
    assert sidecar["options"]["tile"] == "64"
    assert sidecar["stops"] == [{"level": 0, "iteration": 2, "reason": "iterations"}]


@pytest.mark.usefixtures("prefect_server")
def test_a_batch_mixes_tiled_and_whole_pairs_and_shares_the_style_features(tiny_weights, tmp_path):
    """Pairs of different sizes in one run, one tiled by its row's `tile`, one whole: both at the
    size asked for, the sidecars say which; the style's Grams do not depend on tiling, so a row
    tiled at the same size reuses the features a whole row computed."""
    from test_hardening_runtime import cli_args, write_batch

    manifest = write_batch(tmp_path / "in", 3)
    rows = [
        "content,style,size,tile",
        "c0.png,s.png,128,64",
        "c1.png,s.png,96,0",
        "c2.png,s.png,128,",
    ]
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(cli_args(manifest, out, tiny_weights, size=64, iterations=2)) == 0
    report = json.loads((out / "report.json").read_text())
    assert [p["status"] for p in report["pairs"]] == ["done"] * 3
    shapes, tiled = [], []
    for pair in report["pairs"]:
        shapes.append(iio.imread(pair["output"]).shape[:2])
        tiled.append(
            len(json.loads(Path(pair["output"]).with_suffix(".json").read_text())["tiling"])
        )
    assert shapes == [(91, 128), (69, 96), (91, 128)] and tiled == [1, 0, 0]
    sizes = [entry["key"] for entry in report["style_features"]]
    assert len(sizes) == len(set(sizes)) == 2  # one per style size (128, 96), tiled or not


@pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")
def test_a_tiled_image_stopped_by_ctrl_c_resumes_as_if_never_stopped(tiny_weights, tmp_path):
    """Ctrl-C while tiled: the checkpoint (the whole image and Adam's moments, kept on the host)
    resumes to the very image an uninterrupted run makes."""
    import os
    import signal
    import time

    from test_hardening_runtime import finish, stylebatch

    from flows.storage import checkpoints

    content, style = tmp_path / "c.png", tmp_path / "s.png"
    content.write_bytes(images.encode_png(noise_image(96, 128, seed=1)))
    style.write_bytes(images.encode_png(noise_image(64, 64, seed=2)))
    args = ["--weights", str(tiny_weights), "--size", "128", "--tile", "64", "--iterations", "60"]
    args += ["--optimizer", "adam", "--tolerance", "0", "--precision", "float32", "--quiet"]
    stopped, whole = tmp_path / "stopped.png", tmp_path / "uninterrupted.png"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")  # stylize of a still needs no Prefect
    first = stylebatch(["stylize", str(content), str(style), "-o", str(stopped), *args, "--checkpoint-every", "0.2"], env)  # fmt: skip
    checkpoint = tmp_path / f".stopped.png{checkpoints.SUFFIX}"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGINT)
    code, _, err = finish(first)
    assert code == 130 and checkpoint.exists() and not stopped.exists(), err

    assert main(["stylize", str(content), str(style), "-o", str(stopped), *args]) == 0
    assert main(["stylize", str(content), str(style), "-o", str(whole), *args]) == 0
    sidecar = json.loads(stopped.with_suffix(".json").read_text())
    resumed = sidecar["resumed"]["iteration"]
    assert 0 < resumed < 60 and len(sidecar["losses"]["history"]) == 60 - resumed
    assert sidecar["tiling"][0]["tiles"] == 4
    a, b = iio.imread(stopped).astype(int), iio.imread(whole).astype(int)
    assert np.abs(a - b).max() <= 1  # the same image, resumed or not
    assert not checkpoint.exists()
