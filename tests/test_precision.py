"""Precision "auto": bfloat16 where the hardware does it natively, and what bf16 does to a result."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import EXAMPLES, noise_image

from stylecore import hardware, images
from stylecore.network import FeatureNet, extract
from stylecore.options import StyleOptions
from stylecore.stylize import Stylizer, prepare_content, prepare_style, shared_weights

EPYC_FLAGS = "fpu vme sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni"
OLD_XEON_FLAGS = "fpu vme sse2 avx2 avx512f avx512bw avx512_vnni"


def cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    body = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\nbugs\t\t: spectre_v1\n"
    path.write_text(body * 2)
    return str(path)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    flags = hardware.cpu_flags.__wrapped__(cpuinfo(tmp_path, EPYC_FLAGS))
    assert flags == frozenset(EPYC_FLAGS.split())
    assert hardware.cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        (EPYC_FLAGS, True),  # AVX-512 BF16 (Zen 4, Cooper Lake)
        (OLD_XEON_FLAGS, False),  # AVX-512 without BF16: oneDNN would emulate bf16
        ("sse2 avx2 amx_tile amx_bf16 amx_int8", True),  # AMX (Sapphire Rapids)
        ("sse2 avx2 amx_tile amx_int8", False),
        ("", False),
    ],
)
def test_native_bf16_on_the_cpu_follows_its_flags(flags, native):
    assert hardware.cpu_bf16(frozenset(flags.split())) is native


def test_an_explicit_precision_is_kept_and_auto_follows_the_device():
    cpu = "/job:localhost/replica:0/task:0/device:CPU:0"
    assert hardware.resolve_precision("float32", cpu) == "float32"
    assert hardware.resolve_precision("bfloat16", cpu) == "bfloat16"
    expected = "bfloat16" if hardware.cpu_bf16() else "float32"
    assert hardware.resolve_precision("auto", cpu) == expected
    assert not hardware.gpu_bf16(cpu)
    if not tf.config.list_physical_devices("GPU"):
        assert not hardware.gpu_bf16("/device:GPU:0")  # no such GPU: not native


def test_the_network_resolves_auto_and_hands_back_float32(tiny_weights):
    weights = shared_weights(str(tiny_weights))
    net = FeatureNet(weights, ["relu2_1"], precision="auto")
    assert net.precision == ("bfloat16" if hardware.cpu_bf16() else "float32")
    assert net.dtype == tf.dtypes.as_dtype(net.precision)
    assert extract(net, noise_image(24, 24))["relu2_1"].dtype == np.float32
    assert FeatureNet(weights, ["relu2_1"], precision="float32").precision == "float32"


@pytest.mark.slow
def test_bfloat16_results_score_within_five_percent_of_float32():
    """Real weights, a real pair: the finished images' style ratio and content error (scored by
    one float32 network) within 5% of float32's, as measured at 256 and 512 px in
    benchmarks/RESULTS.md."""
    options = StyleOptions(network="vgg16-hed", size=96, iterations=60, optimizer="lbfgs")
    weights = shared_weights("vgg16-hed")
    content = prepare_content(images.read_path(EXAMPLES / "chelsea.png"), options)
    style = prepare_style(images.read_path(EXAMPLES / "swirls.png"), max(content.shape), options)
    scorer = Stylizer(weights, options.replace(precision="float32"))
    targets = scorer.grams(style, options)
    scores, finished = {}, {}
    for precision in ("float32", "bfloat16"):
        o = options.replace(precision=precision)
        stylizer = Stylizer(weights, o)
        grams = stylizer.grams(style, o)
        *_, last = stylizer.steps(content[None], lambda _, g=grams: [g], o)
        finished[precision] = np.clip(np.rint(stylizer.net.deprocess(last.image)), 0, 255)
        scores[precision] = scorer.quality(finished[precision], content[None], [targets], o)[0]
    for key in ("style_ratio", "content_error"):
        assert scores["bfloat16"][key] == pytest.approx(scores["float32"][key], rel=0.05), key
    # L-BFGS takes another path in bf16 (strokes land elsewhere: 10 levels of 255 measured here,
    # 11–15 at 256 and 512 px) while the scores hold; 0 would mean bf16 never ran.
    difference = np.abs(finished["bfloat16"] - finished["float32"]).mean()
    assert 0 < difference < 20
