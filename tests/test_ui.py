"""The Prefect UI as a person sees it: `prefect server start` with its UI, a batch run against it
by the CLI, and headless Chromium loading the summary artifact's page: every output image there
must decode (naturalWidth > 0), for local outputs (embedded thumbnails) and S3 ones (presigned
links to a moto server). Set STYLEBATCH_UI_SCREENSHOT=PATH to keep the local run's screenshot
(tests/ui_screenshot.py makes the README's docs/ui-summary.png the same way)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import noise_image
from prefectserver import prefect_server, until
from s3server import make_bucket

from flows.artifacts import artifact_key
from stylecore import images

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    assert CHROMIUM and DRIVER, "the UI tests need Debian's chromium and chromium-driver"
    with prefect_server(tmp_path_factory.mktemp("ui-home"), ui=True) as server:
        yield server


def chromium(width: int = 1280, height: int = 1400):
    """Debian's headless chromium driven through its chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def write_inputs(folder: Path) -> dict[str, bytes]:
    """Three contents and a style, as PNG bytes by name."""
    files = {f"c{i}.png": images.encode_png(noise_image(40, 56, seed=i)) for i in range(3)}
    files["style.png"] = images.encode_png(noise_image(48, 48, seed=9))
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def run_cli(server, manifest: str, output: str, weights: Path) -> dict:
    """`stylebatch run … --json` against the server; its JSON summary."""
    command = [sys.executable, "-m", "flows.cli", "run", manifest, "-o", output]
    command += ["--weights", str(weights), "--size", "48", "--iterations", "20", "--json"]
    done = subprocess.run(command, env=server.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def summary_images(server, browser, output: str, screenshot: Path) -> list[list]:
    """Open the summary artifact's page; [complete, naturalWidth, src prefix] of each output."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = artifact_key("summary", output)
    with server.client() as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1
        )
    browser.get(f"{server.url.removesuffix('/api')}/artifacts/artifact/{artifact.id}")
    script = """return [...document.querySelectorAll('img[alt^="row "]')]
        .map(i => [i.complete, i.naturalWidth, i.src.slice(0, 30)])"""
    found = until(
        lambda: (shots := browser.execute_script(script)) and all(s[0] for s in shots) and shots,
        90,
        "the summary's images to load",
    )
    time.sleep(1)  # let the page settle before the picture
    browser.save_screenshot(str(screenshot))
    return found


def test_local_outputs_show_as_images_in_the_ui(ui_server, browser, tmp_path, tiny_weights):
    write_inputs(tmp_path / "in")
    rows = "".join(f"c{i}.png,style.png\n" for i in range(3))
    (tmp_path / "in" / "m.csv").write_text("content,style\n" + rows)
    output = str(tmp_path / "out")
    assert run_cli(ui_server, str(tmp_path / "in" / "m.csv"), output, tiny_weights)["summary"] == {
        "done": 3,
        "skipped": 0,
        "failed": 0,
    }
    shot = Path(os.environ.get("STYLEBATCH_UI_SCREENSHOT") or tmp_path / "summary.png")
    found = summary_images(ui_server, browser, output, shot)
    assert len(found) == 3
    assert all(width > 0 and src.startswith("data:image/jpeg") for _, width, src in found)
    assert shot.stat().st_size > 10_000


def test_s3_outputs_show_as_images_in_the_ui(
    ui_server, browser, tmp_path, tiny_weights, s3_env, monkeypatch
):
    files = write_inputs(tmp_path / "in")
    manifest = "content,style\n" + "".join(f"c{i}.png,style.png\n" for i in range(3))
    make_bucket(s3_env, "art", {**{f"in/{k}": v for k, v in files.items()}, "in/m.csv": manifest})
    summary = run_cli(ui_server, "s3://art/in/m.csv", "s3://art/out", tiny_weights)
    assert summary["summary"]["done"] == 3
    found = summary_images(ui_server, browser, "s3://art/out", tmp_path / "s3-summary.png")
    assert len(found) == 3
    assert all(width > 0 and src.startswith(s3_env) for _, width, src in found), found
