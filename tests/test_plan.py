"""Planning a pair's job: its output name, working shape and the notes its sidecar carries."""

from __future__ import annotations

from flows.manifest import parse_manifest
from flows.model import Probe
from flows.prepare import make_job
from stylecore.options import StyleOptions


def job_for(content_shape: tuple[int, int], size: int):
    manifest = parse_manifest("content,style\na.png,s.png\n", "/in/m.csv", StyleOptions(size=size))
    (pair,) = manifest.pairs
    probes = {
        "/in/a.png": Probe("a" * 64, content_shape),
        "/in/s.png": Probe("b" * 64, (40, 40), notes=("grayscale converted to RGB",)),
    }
    return make_job(pair, probes, "/out", "c" * 32)


def test_a_much_enlarged_content_is_noted_beside_the_styles_notes():
    job = job_for((8, 10), 48)
    assert job.shape == (38, 48)
    assert job.notes == (
        "content enlarged 4.8× (10×8 to 48×38 px): expect a soft result",
        "style '/in/s.png': grayscale converted to RGB",
    )
    assert job.output.startswith("/out/a__s__") and job.label == "a × s"


def test_modest_or_no_enlargement_is_not_noted():
    assert job_for((300, 400), 512).notes == ("style '/in/s.png': grayscale converted to RGB",)
    assert job_for((3000, 4000), 512).shape == (384, 512)
