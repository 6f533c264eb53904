"""Shared fixtures: a private cache directory, tiny MatConvNet weights files, small images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from matconvnet import tiny_vgg, write_matconvnet
from s3server import moto_endpoint, s3_env  # noqa: F401  (pytest fixtures)

from stylecore import images

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """No test reads or writes the user's real cache directory."""
    os.environ["STYLEBATCH_CACHE"] = str(tmp_path_factory.mktemp("stylebatch-cache"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A command's temporary server ends with it: none outlives its test (test_temporary_server
    # keeps one on purpose)
    os.environ.setdefault("STYLEBATCH_SERVER_KEEP", "0")


@pytest.fixture(scope="session")
def prefect_server():
    """One real temporary Prefect server (SQLite) for the whole session, started on first use."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A miniature VGG19 (few channels, random weights) as a MatConvNet beta16-layout .mat file."""
    path = tmp_path_factory.mktemp("weights") / "tiny-vgg19.mat"
    write_matconvnet(path, tiny_vgg("vgg19", channels=(4, 6, 8, 8, 8), fc=False), "beta16")
    return path


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image, 0…255, so the features are not all noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (h // 4 + 1, w // 4 + 1, 3))
    return images.resize(coarse.astype(np.float32), (h, w))


@pytest.fixture
def picture() -> images.Picture:
    return images.Picture(noise_image(40, 56, seed=1), None)


@pytest.fixture
def style_picture() -> images.Picture:
    return images.Picture(noise_image(48, 48, seed=2), None)
