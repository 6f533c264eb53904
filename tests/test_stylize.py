"""The optimization core on a miniature VGG: losses fall, runs repeat, batches are separate runs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import noise_image

from stylecore import images
from stylecore.errors import NumericalError, OptionsError
from stylecore.options import SEED, StyleOptions
from stylecore.stylize import Stylizer, blend, level_sizes, shared_weights, stylize

pytestmark = pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")


@pytest.fixture
def options(tiny_weights) -> StyleOptions:
    return StyleOptions(weights=str(tiny_weights), size=48, iterations=12)


@pytest.fixture
def stylizer(tiny_weights, options) -> Stylizer:
    return Stylizer(shared_weights(str(tiny_weights)), options)


@pytest.fixture
def float32_stylizer(tiny_weights, options) -> Stylizer:
    """For tests that check float32 arithmetic exactly: the default precision (auto) may be bf16."""
    return Stylizer(shared_weights(str(tiny_weights)), options.replace(precision="float32"))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_loss_decreases(picture, style_picture, options, stylizer, optimizer):
    o = options.replace(optimizer=optimizer, iterations=25)
    result = stylize(picture, [style_picture], o, stylizer)
    totals = [h["total"] for h in result.history]
    assert len(totals) == 25
    assert totals[-1] < 0.5 * totals[0]
    assert result.history[-1]["style"] < result.history[0]["style"]
    assert result.rgb.dtype == np.uint8 and result.rgb.shape == (34, 48, 3)


def test_same_seed_same_image(picture, style_picture, options, stylizer):
    o = options.replace(init="noise", seed=7)
    a = stylize(picture, [style_picture], o, stylizer).rgb
    b = stylize(picture, [style_picture], o, stylizer).rgb
    c = stylize(picture, [style_picture], o.replace(seed=8), stylizer).rgb
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_batch_is_exactly_separate_runs(options, stylizer, optimizer):
    o = options.replace(optimizer=optimizer, iterations=10)
    contents = np.stack([noise_image(32, 48, seed=s) for s in (3, 4)])
    grams = [stylizer.grams(noise_image(48, 48, seed=s), o) for s in (5, 6)]

    def final(batch, targets):
        *_, last = stylizer.steps(batch, lambda longest: targets, o)
        return stylizer.net.deprocess(last.image)

    together = final(contents, grams)
    for i in range(2):
        alone = final(contents[i : i + 1], grams[i : i + 1])[0]
        # Batched convolutions sum in another order: float noise, which L-BFGS amplifies a little.
        # Coupled step sizes or histories would move pixels by tens of levels, not fractions.
        difference = np.abs(together[i] - alone)
        assert difference.max() < 1.0 and difference.mean() < 0.02


def test_one_compiled_step_serves_every_pair_of_a_size(options, stylizer):
    o = options.replace(iterations=2)
    for seed in (1, 2, 3):
        content = noise_image(32, 48, seed=seed)
        grams = [stylizer.grams(noise_image(40, 40, seed=seed + 10), o)]
        list(stylizer.steps(content[None], lambda longest, g=grams: g, o.replace(tv_weight=seed)))
    (optimizer,) = stylizer._optimizers.values()
    assert optimizer._compiled.experimental_get_tracing_count() == 1


def test_coarse_to_fine_ends_at_the_requested_size(picture, style_picture, options, stylizer):
    o = options.replace(levels=2, size=64, iterations=3)
    assert level_sizes(o) == [32, 64]
    shapes = []
    result = stylize(
        picture, [style_picture], o, stylizer, on_step=lambda s: shapes.append(s.shape)
    )
    assert shapes[0] == (23, 32) and shapes[-1] == (46, 64)
    assert len(shapes) == 6 and result.rgb.shape == (46, 64, 3)


def test_diverging_loss_is_a_clear_error(picture, style_picture, options, stylizer):
    o = options.replace(style_weight=1e38, optimizer="adam")
    with pytest.raises(NumericalError, match="iteration 1"):
        stylize(picture, [style_picture], o, stylizer)


def test_blend_is_the_weighted_mean_of_grams():
    a = {"relu1_1": np.ones((2, 2), np.float32)}
    b = {"relu1_1": np.full((2, 2), 5.0, np.float32)}
    np.testing.assert_allclose(blend([a, b], (3.0, 1.0))["relu1_1"], np.full((2, 2), 2.0))
    np.testing.assert_allclose(blend([a, b], ())["relu1_1"], np.full((2, 2), 3.0))
    with pytest.raises(OptionsError, match="style_blend"):
        blend([a, b], (1.0,))


def test_alpha_comes_back_and_colours_can_be_preserved(style_picture, options, stylizer):
    rgb = noise_image(40, 56, seed=9)
    alpha = np.ones((40, 56), np.float32)
    alpha[:, :10] = 0.0
    content = images.Picture(rgb, alpha)
    result = stylize(content, [style_picture], options.replace(preserve_colors=True), stylizer)
    assert result.alpha.shape == result.rgb.shape[:2]
    assert result.alpha[:, 0].max() < 0.1 and result.alpha[:, -1].min() > 0.9


def test_seed_preset_is_the_recipe():
    assert SEED.optimizer == "adam" and SEED.step_size == 10.0 and SEED.init == "noise"
    assert (SEED.content_weight, SEED.style_weight, SEED.tv_weight) == (5.0, 500.0, 100.0)
    assert SEED.content_layers == ("relu4_2", "relu5_2") and SEED.iterations == 100
    assert StyleOptions().step_size == 1.0  # L-BFGS takes unit steps by default


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"iterations": 0}, "iterations"),
        ({"style_weight": -1.0}, "style_weight"),
        ({"tv_weight": float("nan")}, "tv_weight"),
        ({"size": 100_000}, "size"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"levels": 6, "size": 64}, "levels"),
    ],
)
def test_out_of_range_options_are_refused(change, message):
    with pytest.raises(OptionsError, match=message):
        StyleOptions(**change)


def test_options_from_loose_values():
    o = StyleOptions.from_dict(
        {"iterations": "5", "style_layers": "relu1_1, relu2_1", "preserve_colors": "yes"}
    )
    assert o.iterations == 5 and o.style_layers == ("relu1_1", "relu2_1") and o.preserve_colors
    with pytest.raises(OptionsError, match="did you mean 'style_weight'"):
        StyleOptions.from_dict({"styel_weight": "3"})
    with pytest.raises(OptionsError, match="iterations"):
        StyleOptions.from_dict({"iterations": "2.5"})


def test_normalized_losses_are_relative_errors(options, float32_stylizer):
    """Normalized, the content term of 1.5·P against P is (0.5)² whatever P's magnitude."""
    stylizer = float32_stylizer
    o = options.replace(normalize_losses=True, content_weight=1.0, style_weight=1.0, tv_weight=1.0)
    o = o.replace(precision="float32")
    content = noise_image(32, 48, seed=5)
    x = stylizer.net.preprocess(content[None])
    grams = [stylizer.grams(noise_image(40, 40, seed=6), o)]
    targets = stylizer._targets(x, grams, o)
    objective = stylizer._objective(o)
    at_content = objective(x, *targets.as_args())
    assert float(at_content["content"][0]) == 0.0
    # TV is relative to the content's own.
    assert float(at_content["tv"][0]) == pytest.approx(1.0, rel=1e-5)
    scaled = {n: 1.5 * f for n, f in targets.content.items()}
    doubled = type(targets)(scaled, targets.style, targets.scales, targets.norms, None)
    assert float(objective(x, *doubled.as_args())["content"][0]) == pytest.approx(0.25, rel=1e-4)


def test_every_option_is_a_flag_and_a_flow_parameter():
    """One name everywhere: CLI --style-weight, manifest style_weight, flow style_weight."""
    import inspect

    from flows.batch import stylize_batch
    from flows.cli.main import build_parser
    from stylecore.options import option_names

    parameters = set(inspect.signature(stylize_batch.fn).parameters)
    assert set(option_names()) <= parameters
    stylize_help = build_parser().parse_args(["stylize", "c", "s", "-o", "o"])
    assert set(option_names()) <= set(vars(stylize_help))


def test_bfloat16_features_stay_close_to_float32(tiny_weights):
    from stylecore.network import FeatureNet, extract

    weights = shared_weights(str(tiny_weights))
    rgb = noise_image(32, 48, seed=8)
    f32 = extract(FeatureNet(weights, ["relu3_1"]), rgb)["relu3_1"]
    bf16 = extract(FeatureNet(weights, ["relu3_1"], precision="bfloat16"), rgb)["relu3_1"]
    assert bf16.dtype == np.float32
    assert np.linalg.norm(bf16 - f32) / np.linalg.norm(f32) < 0.05
    assert not np.array_equal(bf16, f32)  # it did compute in bfloat16


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_xla_steps_match_plain_ones(options, float32_stylizer, optimizer):
    stylizer = float32_stylizer
    o = options.replace(optimizer=optimizer, iterations=8, precision="float32")
    content = noise_image(32, 48, seed=11)
    grams = [stylizer.grams(noise_image(48, 48, seed=12), o)]

    def run(xla: bool):
        steps = list(stylizer.steps(content[None], lambda longest: grams, o.replace(xla=xla)))
        return [float(s.losses["total"][0]) for s in steps], stylizer.net.deprocess(steps[-1].image)

    plain_losses, plain = run(False)
    xla_losses, compiled = run(True)
    assert len(stylizer._optimizers) == 2  # two compiled steps, not one reused
    assert xla_losses == pytest.approx(plain_losses, rel=1e-3)
    assert xla_losses[-1] < 0.7 * xla_losses[0]
    assert np.abs(compiled - plain).max() < 2.0  # fused float sums differ by noise, not levels


def test_xla_is_automatic_only_on_gpus_where_its_compile_pays(stylizer):
    assert StyleOptions().xla is None and StyleOptions().use_xla(gpu=True)  # 512 px, 300 it.
    assert not StyleOptions().use_xla(gpu=False)  # CPUs: no faster with it (README)
    assert not StyleOptions(size=128).use_xla(gpu=True)
    assert not StyleOptions(iterations=20).use_xla(gpu=True)
    assert not StyleOptions(xla=False).use_xla(gpu=True)
    assert StyleOptions(size=64, iterations=5, xla=True).use_xla(gpu=False)
    # TF places the network's constants on its first GPU when it has one, else on the CPU.
    assert stylizer.net.on_gpu == bool(tf.config.list_logical_devices("GPU"))
    assert StyleOptions.from_dict({"xla": "off"}).xla is False
    assert StyleOptions.from_dict({"xla": ""}).xla is None


def test_xla_flag_turns_it_on_off_or_leaves_it_automatic():
    from flows.cli.flags import options_from_args
    from flows.cli.main import build_parser

    def parsed(*flags: str) -> StyleOptions:
        args = build_parser().parse_args(["stylize", "c", "s", "-o", "o", *flags])
        return options_from_args(args)

    assert parsed().xla is None
    assert parsed("--xla").xla is True
    assert parsed("--no-xla").xla is False


def test_features_of_many_image_shapes_share_one_generic_trace(tiny_weights, options, stylizer):
    shapes = [(32, 48), (40, 40), (48, 36), (24, 48), (44, 30), (36, 36)]
    generic = [stylizer.grams(noise_image(h, w, seed=h + w), options) for h, w in shapes]
    assert stylizer._compiled_features.experimental_get_tracing_count() <= 2
    fresh = Stylizer(shared_weights(str(tiny_weights)), options)  # traced for the last shape only
    own = fresh.grams(noise_image(36, 36, seed=72), options)
    for name in options.style_layers:
        np.testing.assert_allclose(generic[-1][name], own[name], rtol=1e-5, atol=1e-6)


def test_converged_compares_the_loss_over_the_window():
    from stylecore.optimize import converged

    falling = [np.array([100.0 * 0.9**i]) for i in range(12)]
    assert not converged(falling, 0.5)  # 1 − 0.9¹⁰ ≈ 65% gained over the last 10: going on
    assert converged(falling, 0.7)
    assert not converged(falling[:10], 0.99)  # fewer iterations than the window: never
    assert not converged(falling, 0.0)  # tolerance 0: off
    mixed = [np.array([100.0 * 0.9**i, 100.0]) for i in range(12)]
    assert not converged(mixed, 0.5)  # the second image gains nothing, the first still does


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_tolerance_stops_a_level_early_and_says_where(picture, style_picture, options, optimizer):
    o = options.replace(iterations=40, tolerance=0.5, optimizer=optimizer, levels=2, size=64)
    result = stylize(picture, [style_picture], o)
    assert [s["reason"] for s in result.stops] == ["converged", "converged"]
    assert all(s["iteration"] < 40 for s in result.stops)
    assert len(result.history) == sum(s["iteration"] for s in result.stops)
    never = stylize(picture, [style_picture], o.replace(tolerance=0.0))
    assert never.stops == [
        {"level": 0, "iteration": 40, "reason": "iterations"},
        {"level": 1, "iteration": 40, "reason": "iterations"},
    ]


def test_a_resumed_adam_run_ends_where_the_uninterrupted_one_does(
    picture, style_picture, options, stylizer
):
    """Adam's image and moments saved at iteration 3 of 6 (level 1 of 2): continuing from them
    gives the same image as never stopping."""
    from stylecore.stylize import Resume, prepare_content, prepare_style

    o = options.replace(optimizer="adam", iterations=6, levels=2, size=64)
    content = prepare_content(picture, o)[None]

    def grams_for(longest):
        return [stylizer.grams(prepare_style(style_picture, longest, o), o)]

    steps = list(stylizer.steps(content, grams_for, o))
    saved = next(s for s in steps if s.level == 1 and s.iteration == 3)
    arrays = stylizer.checkpoint_arrays(o, saved)
    assert len(arrays) == 4  # image, m, v, t
    resumed = list(stylizer.steps(content, grams_for, o, resume=Resume(1, 3, arrays)))
    assert [(s.level, s.iteration) for s in resumed] == [(1, 4), (1, 5), (1, 6)]
    np.testing.assert_allclose(resumed[-1].image.numpy(), steps[-1].image.numpy(), atol=1e-3)
    lbfgs = o.replace(optimizer="lbfgs")
    only_image = stylizer.checkpoint_arrays(lbfgs, next(stylizer.steps(content, grams_for, lbfgs)))
    assert len(only_image) == 1  # L-BFGS keeps the image; its history restarts


def test_a_start_image_is_where_the_first_level_begins(picture, style_picture, options, stylizer):
    from stylecore.stylize import prepare_content, prepare_style

    o = options.replace(optimizer="adam", iterations=1, size=48, learning_rate=1e-6)
    content = prepare_content(picture, o)
    start = noise_image(*content.shape[:2], seed=9)
    grams = [stylizer.grams(prepare_style(style_picture, 48, o), o)]
    (step,) = stylizer.steps(content[None], lambda _: grams, o, start=start)
    np.testing.assert_allclose(stylizer.net.deprocess(step.image)[0], start, atol=1e-2)
