"""Each stylization option changes a result as it says: known answers on a miniature VGG.

Options whose effect is checked elsewhere: iterations, size, optimizer (losses fall) and seed in
test_stylize.py (test_loss_decreases, test_same_seed_same_image), levels
(test_coarse_to_fine_ends_at_the_requested_size), normalize_losses
(test_normalized_losses_are_relative_errors), xla (test_xla_steps_match_plain_ones).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import noise_image
from test_optimizers import adam_reference

from stylecore import images
from stylecore.network import FeatureNet, extract
from stylecore.options import StyleOptions
from stylecore.stylize import (
    Stylizer,
    prepare_style,
    shared_stylizer,
    shared_weights,
    stylize,
    stylize_with,
)

pytestmark = pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")

H, W = 24, 32  # every content's working shape at size 32: one trace per optimizer choice
CHROMA = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])  # BT.601 Cb, Cr
LUMA = np.array([0.299, 0.587, 0.114])


def tinted(seed: int, tint, shape=(H, W)) -> np.ndarray:
    """Smooth noise over 40% of the range, around a colour: nothing near 0 or 255 to clip."""
    return noise_image(*shape, seed=seed) * 0.4 + np.asarray(tint, np.float32)


def tv(rgb: np.ndarray) -> float:
    """mean(Δy²) + mean(Δx²) of one image."""
    rgb = rgb.astype(np.float64)
    return float(np.mean(np.diff(rgb, axis=0) ** 2) + np.mean(np.diff(rgb, axis=1) ** 2))


def pic(rgb: np.ndarray) -> images.Picture:
    return images.Picture(rgb.astype(np.float32), None)


def np_gram(f: np.ndarray) -> np.ndarray:
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    return flat.T @ flat / f.size


@pytest.fixture(scope="module")
def base(tiny_weights) -> StyleOptions:
    # These tests check each option against float32 formulas and exact step counts: pin float32
    # (the default, auto, is bf16 on hosts that do it natively) and tolerance 0 (every iteration).
    return StyleOptions(
        weights=str(tiny_weights), size=32, iterations=4, precision="float32", tolerance=0.0
    )


@pytest.fixture(scope="module")
def stylizer(tiny_weights, base) -> Stylizer:
    # relu2_2 too, so that one network serves the tests of several content layers.
    options = base.replace(content_layers=("relu2_2", "relu4_2"))
    return Stylizer(shared_weights(str(tiny_weights)), options)


def iterates(stylizer, content, style, o, init=None) -> list:
    """Every step of one content towards the Grams of `style` at its own size."""
    grams = [stylizer.grams(style, o)]
    return list(stylizer.steps(content[None], lambda longest: grams, o, init))


def test_preserve_colors_keeps_the_contents_chroma_and_the_styled_luminance(base, stylizer):
    content, style = tinted(1, (40, 70, 130)), tinted(2, (150, 90, 20), (48, 48))
    o = base.replace(iterations=20)
    plain = stylize(pic(content), [pic(style)], o, stylizer).rgb.astype(np.float64)
    kept = stylize(pic(content), [pic(style)], o.replace(preserve_colors=True), stylizer).rgb
    kept = kept.astype(np.float64)
    # The conversion back clips to 0…255: compare where it did not (most pixels, for these tints).
    inside = ((kept > 0) & (kept < 255)).all(axis=-1)
    assert inside.mean() > 0.9
    # Rounding to uint8 moves each channel by ≤ 0.5: chroma by ≤ 0.5, luma by ≤ 0.5 in each run.
    assert np.abs(kept @ CHROMA.T - content @ CHROMA.T)[inside].max() <= 0.51
    assert np.abs(kept @ LUMA - plain @ LUMA)[inside].max() <= 1.01
    # Without it the colours move towards the style's.
    target = (style @ CHROMA.T).mean((0, 1))
    before = np.linalg.norm((content @ CHROMA.T).mean((0, 1)) - target)
    after = np.linalg.norm((plain @ CHROMA.T).mean((0, 1)) - target)
    assert after < 0.7 * before


def test_avg_pooling_averages_2x2_blocks_and_changes_the_result(base):
    x = noise_image(H, W, seed=3)
    pooled = {}
    for method in ("max", "avg"):
        o = base.replace(pooling=method, content_layers=("relu1_2",), style_layers=("pool1",))
        pooled[method] = extract(shared_stylizer(o).net, x)
    below = pooled["avg"]["relu1_2"].reshape(H // 2, 2, W // 2, 2, -1)
    np.testing.assert_allclose(pooled["avg"]["pool1"], below.mean((1, 3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled["max"]["pool1"], below.max((1, 3)), rtol=1e-5, atol=1e-5)
    assert np.abs(below.mean((1, 3)) - below.max((1, 3))).mean() > 0.1
    # End to end (stylize builds its own Stylizer from the options): another image.
    content, style = pic(noise_image(H, W, seed=4)), pic(noise_image(48, 48, seed=5))
    out = {p: stylize(content, [style], base.replace(pooling=p)).rgb for p in ("max", "avg")}
    assert np.abs(out["max"].astype(float) - out["avg"]).mean() > 1.0


@pytest.mark.parametrize(("scale", "shape"), [(0.75, (16, 24)), (2.0, (43, 64))])
def test_style_scale_is_the_size_the_style_grams_are_taken_at(base, stylizer, scale, shape):
    content, style = pic(noise_image(H, W, seed=6)), noise_image(40, 60, seed=7)
    o = base.replace(style_scale=scale, iterations=2)
    assert prepare_style(pic(style), 32, o).shape == (*shape, 3)  # longest side 32 × scale
    by_hand = [stylizer.grams(images.resize(style, shape), o)]
    scaled = stylize(content, [pic(style)], o, stylizer)
    expected = stylize_with(content, lambda longest: by_hand, o, stylizer)
    assert scaled.history == expected.history and np.array_equal(scaled.rgb, expected.rgb)
    unscaled = stylize(content, [pic(style)], o.replace(style_scale=1.0), stylizer)
    assert unscaled.history[0]["style"] != pytest.approx(scaled.history[0]["style"], rel=0.01)


def test_an_init_image_is_where_the_optimization_starts(base, stylizer):
    content, style = pic(noise_image(H, W, seed=8)), pic(noise_image(48, 48, seed=9))
    start = np.rint(noise_image(H, W, seed=10))
    # Adam's step is at most its learning rate per pixel: 1e-3 leaves the start, once rounded.
    still = base.replace(init="start.png", optimizer="adam", learning_rate=1e-3, iterations=1)
    assert np.array_equal(stylize(content, [style], still, stylizer, init=start).rgb, start)
    small = noise_image(12, 16, seed=10)  # resized to the content's working shape
    out = stylize(content, [style], still, stylizer, init=small).rgb
    assert np.abs(out - images.resize(small, (H, W))).max() <= 0.51
    o = base.replace(init="start.png", iterations=10)
    from_start = stylize(content, [style], o, stylizer, init=start).rgb.astype(np.float64)
    from_content = stylize(content, [style], o.replace(init="content"), stylizer).rgb
    assert np.abs(from_start - start).mean() < 0.5 * np.abs(from_content - start).mean()


def content_setup(stylizer, base):
    layers = ("relu2_2", "relu4_2")
    content, start = noise_image(H, W, seed=11), noise_image(H, W, seed=12)
    o = base.replace(content_layers=layers, content_weight=1.0, style_weight=0.0, tv_weight=0.0)
    return layers, content, start, o.replace(init="start.png")


def test_content_loss_is_the_weighted_sum_of_each_layers_own(base, stylizer):
    layers, content, start, o = content_setup(stylizer, base)
    net = FeatureNet(stylizer.weights, layers)  # a separate forward pass
    fc, fs = extract(net, content), extract(net, start)
    own = [np.mean(np.square(fs[n].astype(np.float64) - fc[n])) for n in layers]
    o = o.replace(content_layer_weights=(3.0, 1.0), iterations=1)
    (step,) = iterates(stylizer, content, noise_image(48, 48, seed=13), o, init=start)
    assert float(step.losses["content"][0]) == pytest.approx(0.75 * own[0] + 0.25 * own[1], 1e-4)


def test_content_layer_weights_choose_whose_error_falls(base, stylizer):
    layers, content, start, o = content_setup(stylizer, base)
    net = FeatureNet(stylizer.weights, layers)
    fc = extract(net, content)
    style = noise_image(48, 48, seed=13)

    def error(rgb: np.ndarray) -> list[float]:
        f = extract(net, rgb)
        return [np.linalg.norm(f[n] - fc[n]) / np.linalg.norm(fc[n]) for n in layers]

    def errors(weights: tuple[float, float]) -> list[float]:
        o_w = o.replace(content_layer_weights=weights, iterations=8)
        *_, last = iterates(stylizer, content, style, o_w, init=start)
        return error(stylizer.net.deprocess(last.image)[0])

    before, shallow, deep = error(start), errors((1.0, 0.0)), errors((0.0, 1.0))
    assert shallow[0] < 0.5 * before[0]
    # relu4_2 alone leaves relu2_2 free: its error falls, relu2_2's does not.
    assert deep[1] < 0.5 * before[1] and deep[0] > 0.9 * before[0]


@pytest.mark.parametrize("exponent", [1.0, 4.0])
def test_style_loss_is_over_the_style_layers_weighted_by_exponent(base, stylizer, exponent):
    layers = ("relu1_1", "relu3_1")
    o = base.replace(style_layers=layers, style_layer_weight_exp=exponent, iterations=1)
    o = o.replace(content_weight=0.0, style_weight=1.0, tv_weight=0.0)
    content, style = noise_image(H, W, seed=14), noise_image(48, 48, seed=15)
    assert set(stylizer.grams(style, o)) == set(layers)
    (step,) = iterates(stylizer, content, style, o)
    net = FeatureNet(stylizer.weights, layers)
    fc, fs = extract(net, content), extract(net, style)
    own = [np.mean(np.square(np_gram(fc[n]) - np_gram(fs[n]))) for n in layers]
    expected = (own[0] + exponent * own[1]) / (1 + exponent)
    assert float(step.losses["style"][0]) == pytest.approx(expected, rel=1e-4)


def test_loss_weights_scale_their_terms_and_pull_the_result_their_way(base, stylizer):
    content, style = pic(noise_image(H, W, seed=16)), pic(noise_image(48, 48, seed=17))
    o = base.replace(init="noise", iterations=10, content_weight=1.0, style_weight=1.0)
    unit = stylize(content, [style], o.replace(tv_weight=1.0), stylizer)
    scaled = o.replace(content_weight=2.0, style_weight=3.0, tv_weight=5.0)
    first = stylize(content, [style], scaled, stylizer).history[0]
    for term, factor in (("content", 2), ("style", 3), ("tv", 5)):
        assert first[term] == pytest.approx(factor * unit.history[0][term], rel=1e-5)
    assert first["total"] == pytest.approx(first["content"] + first["style"] + first["tv"], 1e-5)
    more = {
        name: stylize(content, [style], o.replace(**{name: 1000.0}), stylizer)
        for name in ("content_weight", "style_weight", "tv_weight")
    }
    assert more["content_weight"].quality["content_error"] < unit.quality["content_error"]
    assert more["style_weight"].quality["style_ratio"] < unit.quality["style_ratio"]
    assert tv(more["tv_weight"].rgb) < 0.5 * tv(unit.rgb)


def test_style_blend_weighs_each_styles_grams(base, stylizer):
    content = pic(noise_image(H, W, seed=18))
    a, b = pic(noise_image(48, 48, seed=19)), pic(noise_image(48, 48, seed=20))
    o = base.replace(iterations=3)
    alone = {name: stylize(content, [s], o, stylizer).rgb for name, s in (("a", a), ("b", b))}
    for weights, name in (((1.0, 0.0), "a"), ((0.0, 2.0), "b")):
        blended = stylize(content, [a, b], o.replace(style_blend=weights), stylizer).rgb
        assert np.array_equal(blended, alone[name])
    even = stylize(content, [a, b], o, stylizer).rgb
    assert not np.array_equal(even, alone["a"]) and not np.array_equal(even, alone["b"])


@pytest.mark.parametrize("std", [0.0, 30.0])
def test_init_noise_is_the_starting_noises_std(base, stylizer, std):
    o = base.replace(init="noise", init_noise=std, optimizer="adam", learning_rate=1e-3)
    o = o.replace(iterations=1)
    (step,) = iterates(stylizer, noise_image(H, W, seed=21), noise_image(48, 48, seed=22), o)
    x = step.image.numpy()  # mean-subtracted, at most 1e-3 from where it started
    assert x.std() == pytest.approx(std, rel=0.05, abs=2e-3)
    assert np.abs(x.mean()) < 0.1 * std + 2e-3


def test_first_steps_adam_moves_each_pixel_by_the_rate_lbfgs_by_ten_times_it_rms(base, stylizer):
    content, style = tinted(23, (70, 70, 70)), noise_image(48, 48, seed=24)
    x0 = stylizer.net.preprocess(content).numpy()
    adam = base.replace(optimizer="adam", learning_rate=4.0, iterations=1)
    (step,) = iterates(stylizer, content, style, adam)
    moved = np.abs(step.image.numpy() - x0)
    assert moved.max() <= 4.0 + 1e-3 and np.median(moved) == pytest.approx(4.0, rel=1e-3)
    lbfgs = base.replace(learning_rate=0.5, iterations=1)  # L-BFGS's first step: 10 px RMS × rate
    (step,) = iterates(stylizer, content, style, lbfgs)
    moved = step.image.numpy() - x0
    assert np.sqrt(np.mean(np.square(moved))) == pytest.approx(5.0, rel=1e-4)
    assert np.abs(moved).std() > 0.5  # a gradient step, not a sign step


@pytest.mark.parametrize("change", ["none", "beta1", "beta2", "epsilon"])
def test_adam_steps_follow_the_formula_with_its_betas_and_epsilon(base, stylizer, change):
    content, style = tinted(23, (70, 70, 70)), noise_image(48, 48, seed=24)
    o = base.replace(optimizer="adam", learning_rate=4.0, iterations=3)
    x0 = stylizer.net.preprocess(content)
    targets = stylizer._targets(x0, [stylizer.grams(style, o)], o).as_args()

    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(stylizer._objective(o)(x, *targets)["total"])
        return tape.gradient(total, x).numpy().astype(np.float64)

    g0 = gradient(x0)
    changes = {"none": {}, "beta1": {"beta1": 0.5}, "beta2": {"beta2": 0.9}}
    # An epsilon as large as a typical sqrt(v̂) halves a typical step.
    changes["epsilon"] = {"epsilon": float(np.median(np.abs(g0)) * np.sqrt(1 - 0.999))}
    changed = o.replace(**changes[change])
    xs = [x0, *(s.image for s in iterates(stylizer, content, style, changed))]
    grads = [g0, *(gradient(x) for x in xs[1:-1])]
    bounds = (-stylizer.net.mean.numpy(), 255 - stylizer.net.mean.numpy())
    ours = np.stack([x.numpy() for x in xs[1:]])
    inputs = [x.numpy().astype(np.float64) for x in xs[:-1]]
    np.testing.assert_allclose(ours, adam_reference(inputs, grads, changed, bounds), atol=2e-3)
    if change != "none":  # and the option made a difference the check can see
        assert np.abs(ours - adam_reference(inputs, grads, o, bounds)).max() > 0.1


def test_lbfgs_memory_is_how_many_steps_it_remembers(base, stylizer):
    content, style = noise_image(H, W, seed=25), noise_image(48, 48, seed=26)
    o = base.replace(iterations=5)
    two, twenty = (
        np.stack([s.image.numpy() for s in iterates(stylizer, content, style, o.replace(**m))])
        for m in ({"lbfgs_memory": 2}, {"lbfgs_memory": 20})
    )
    # Step k has k − 1 curvature pairs: two pairs are all there are up to step 3.
    np.testing.assert_allclose(two[:3], twenty[:3], atol=1e-4)
    assert np.abs(two[3] - twenty[3]).max() > 0.01


def test_bfloat16_precision_reaches_the_network_a_stylization_uses(base):
    rgb = noise_image(32, 32, seed=27)
    f32 = shared_stylizer(base.replace(precision="float32")).grams(rgb, base)
    bf16 = shared_stylizer(base.replace(precision="bfloat16")).grams(rgb, base)
    for name in base.style_layers:
        error = np.linalg.norm(bf16[name] - f32[name]) / np.linalg.norm(f32[name])
        assert 0 < error < 0.05, name


def test_weights_path_wins_over_the_network_name_which_else_picks_the_net(base):
    rgb = noise_image(32, 32, seed=28)
    tiny = shared_stylizer(base.replace(network="vgg16-hed"))
    hed = shared_stylizer(base.replace(network="vgg16-hed", weights=None))
    assert tiny.grams(rgb, base)["relu1_1"].shape == (4, 4)  # tiny_vgg's 4 channels
    assert hed.grams(rgb, base)["relu1_1"].shape == (64, 64)  # VGG16's 64
