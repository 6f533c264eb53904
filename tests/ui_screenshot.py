"""The README's docs/ui-summary.png: `prefect server start` with its UI (as tests/test_ui.py
starts it), `make demo` against it, then headless Chromium screenshots the summary artifact once
every image in it has decoded.

    .venv/bin/python tests/ui_screenshot.py docs/ui-summary.png   # from the checkout's root
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from prefectserver import ROOT, prefect_server, until
from test_ui import chromium

from flows.artifacts import artifact_key


def main(target: Path) -> int:
    home = Path(tempfile.mkdtemp(prefix="ui-home-"))
    with prefect_server(home, ui=True) as server:
        done = subprocess.run(["make", "-C", str(ROOT), "demo"], env=server.env)
        if done.returncode:
            return done.returncode
        key = artifact_key("summary", str((ROOT / "stylebatch-demo").resolve()))
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        with server.client() as client:
            found = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            (artifact,) = client.read_artifacts(artifact_filter=found, limit=1)
        shot = home / "shot.png"
        screenshot(f"{server.url.removesuffix('/api')}/artifacts/artifact/{artifact.id}", shot)
    image = Image.open(shot).convert("RGB")  # a palette PNG: a third of the size, same look
    image.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    shutil.rmtree(home, ignore_errors=True)
    print(f"wrote {target}")
    return 0


def screenshot(url: str, path: Path) -> None:
    driver = chromium(1100, 760)
    try:
        driver.get(url)
        script = """return [...document.querySelectorAll('img[alt^="row "]')]
            .map(i => i.complete && i.naturalWidth > 0)"""
        until(lambda: (seen := driver.execute_script(script)) and all(seen), 90, "the images")
        time.sleep(1)
        driver.save_screenshot(str(path))
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(Path(sys.argv[1]).resolve()))
