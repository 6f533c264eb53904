"""The one-shot commands as a user types them: stylize, features, weights fetch/info/verify."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import noise_image
from matconvnet import tiny_vgg, write_matconvnet
from test_fetch import MD5, PAYLOAD, server  # noqa: F401  (a pytest fixture)
from test_weights import reference

from flows.cli.main import main
from stylecore import images

pytestmark = pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning")


@pytest.fixture
def pair(tmp_path) -> tuple[str, str]:
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    content.write_bytes(images.encode_png(noise_image(40, 56, seed=1)))
    style.write_bytes(images.encode_png(noise_image(48, 48, seed=2)))
    return str(content), str(style)


def test_stylize_writes_the_image_and_its_sidecar(pair, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out" / "result.png"
    code = main(
        [
            "stylize",
            *pair,
            "-o",
            str(out),
            "--weights",
            str(tiny_weights),
            "--size",
            "48",
            "--iterations",
            "4",
            "--seed",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    assert iio.imread(out).shape == (34, 48, 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["content"]["uri"] == pair[0] and sidecar["content"]["sha256"].startswith(
        "sha256:"
    )
    assert sidecar["options"]["seed"] == 3 and sidecar["options"]["iterations"] == 4
    assert len(sidecar["losses"]["history"]) == 4 and sidecar["network"]["checksum"]
    assert {"tensorflow", "numpy", "python"} <= set(sidecar["versions"])
    assert "wrote" in capsys.readouterr().out


def test_stylize_errors_are_one_line_and_exit_2(pair, tiny_weights, tmp_path, capsys):
    common = ["-o", str(tmp_path / "o.png"), "--weights", str(tiny_weights), "--quiet"]
    assert main(["stylize", "/nowhere/c.png", pair[1], *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "content '/nowhere/c.png' not found" in err
    assert main(["stylize", *pair, *common, "--style-weight", "-1"]) == 2
    assert "style_weight" in capsys.readouterr().err
    assert main(["stylize", *pair, *common, "--style-layers", "relu9_9"]) == 2
    assert "relu9_9" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("layout", ["old", "beta16"])
def test_features_match_an_independent_implementation(tmp_path, layout):
    net = tiny_vgg("vgg19", channels=(4, 6, 8, 8, 8), fc=False, seed=4)
    weights = tmp_path / f"{layout}.mat"
    write_matconvnet(weights, net, layout)
    rgb = noise_image(37, 23, seed=5)  # non-square, odd sizes: floor pooling matters
    image = tmp_path / "image.png"
    image.write_bytes(images.encode_png(rgb))
    layers = ["relu1_1", "relu2_1", "relu3_2", "relu4_2", "relu5_1"]
    out = tmp_path / "features.npz"
    assert (
        main(
            [
                "features",
                str(image),
                "--weights",
                str(weights),
                "--layers",
                ",".join(layers),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    decoded = images.decode(image.read_bytes(), "image").rgb  # the same 8-bit pixels
    expected = reference(net, decoded, layers)
    with np.load(out, allow_pickle=False) as got:
        assert sorted(got.files) == sorted(layers)
        for name in layers:
            assert got[name].dtype == np.float32 and got[name].shape == expected[name].shape
            error = np.linalg.norm(got[name] - expected[name]) / np.linalg.norm(expected[name])
            assert error <= 1e-3, (name, error)


def test_features_at_a_size(tmp_path, tiny_weights):
    image = tmp_path / "image.png"
    image.write_bytes(images.encode_png(noise_image(40, 80, seed=6)))
    out = tmp_path / "f.npz"
    assert (
        main(
            [
                "features",
                str(image),
                "--weights",
                str(tiny_weights),
                "--layers",
                "relu1_1",
                "--size",
                "32",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    with np.load(out) as got:
        assert got["relu1_1"].shape[:2] == (16, 32)


def test_weights_info_and_verify(tmp_path, capsys):
    with_fc, without_fc = tmp_path / "fc.mat", tmp_path / "conv.mat"
    write_matconvnet(with_fc, tiny_vgg(fc=True), "old")
    write_matconvnet(without_fc, tiny_vgg(fc=False), "beta16")
    assert main(["weights", "info", str(with_fc)]) == 0
    info = capsys.readouterr().out
    assert "conv5_4" in info and "fc8" in info
    assert main(["weights", "verify", str(with_fc)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "%" in line]
    assert len(lines) == 5 and all("made-up class" in line for line in lines)
    assert main(["weights", "verify", str(without_fc)]) == 2
    assert "no fc layers" in capsys.readouterr().err


def test_weights_fetch_from_a_local_server(server, tmp_path, capsys):  # noqa: F811
    dest = tmp_path / "vgg.mat"
    assert main(["weights", "fetch", "--url", server.url, "--md5", MD5, "-o", str(dest)]) == 0
    assert dest.read_bytes() == PAYLOAD and "MD5 verified" in capsys.readouterr().out
    other = tmp_path / "bad.mat"
    assert main(["weights", "fetch", "--url", server.url, "--md5", "0" * 32, "-o", str(other)]) == 2
    assert "MD5" in capsys.readouterr().err and not other.exists()
