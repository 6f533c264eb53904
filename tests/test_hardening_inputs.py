"""Hardening, inputs: broken and hostile files, manifests, names and weights through `stylebatch run`.

One batch run holds the whole catalogue of input files and hostile output names: every good row is
done, every bad one fails alone with one line naming the input and the cause, and nothing is
written outside the output root. Files are written here, by the tests, with Pillow and by hand.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import subprocess
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import noise_image
from PIL import Image

import flows.batch  # noqa: F401  (Prefect's console log handler takes sys.stderr at import: not capsys's)
from flows import storage
from flows.cli.main import main
from flows.featurecache import FeatureCache
from flows.outputs import sha256

pytestmark = [
    pytest.mark.filterwarnings("ignore::stylecore.weights.UnknownReleaseWarning"),
    pytest.mark.usefixtures("prefect_server"),
]
SIZE, ITERATIONS = 32, 2
ROOT = Path(__file__).resolve().parent.parent


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return noise_image(h, w, seed).round().astype(np.uint8)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png() -> bytes:
    """A valid 50000×50000 1-bit PNG of zeros: 2.5 gigapixels in 1.4 MB."""
    side = 50_000
    rows, packer = bytes((1 + side // 8) * 1000), zlib.compressobj(1)
    idat = b"".join([packer.compress(rows) for _ in range(side // 1000)] + [packer.flush()])
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write_inputs(folder: Path) -> None:
    """Every kind of input file a batch of users' photos holds."""
    folder.mkdir()
    Image.fromarray(rgb(40, 56, 1)).save(folder / "good.png")
    Image.fromarray(rgb(40, 56, 2)).save(folder / "good.jpg", quality=90)
    Image.fromarray(rgb(48, 48, 3)).save(folder / "style.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("hello, I am not an image\n")
    png, jpg = (folder / "good.png").read_bytes(), (folder / "good.jpg").read_bytes()
    (folder / "trunc.png").write_bytes(png[: len(png) // 2])
    (folder / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    idat = png.index(b"IDAT") + 4  # deflate data zeroed, CRC left: a corrupt, not short, PNG
    (folder / "corrupt.png").write_bytes(png[:idat] + bytes(40) + png[idat + 40 :])
    (folder / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    frames = [Image.fromarray(rgb(40, 56, s)) for s in (4, 5, 6)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(rgb(40, 56, 7)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb(40, 56, 8)[..., 0].astype(np.uint16) * 257).save(folder / "gray16.png")
    Image.fromarray(rgb(40, 56, 9)).convert("L").save(folder / "gray.png")
    ramp = np.tile(np.linspace(0, 255, 56).round().astype(np.uint8), (40, 1))  # clear → opaque
    Image.fromarray(np.dstack([rgb(40, 56, 10), ramp]), "RGBA").save(folder / "alpha.png")
    turned = Image.fromarray(rgb(40, 56, 11))  # stored 56 wide, 40 high; upright it is 40 × 56
    exif = turned.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    turned.save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(rgb(8, 8, 12)).save(folder / "tiny.png")
    Image.fromarray(rgb(20, 400, 13)).save(folder / "pano.png")
    (folder / "bomb.png").write_bytes(bomb_png())


def manifest(rows: list[dict], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([columns, *([row.get(c, "") for c in columns] for row in rows)])
    return out.getvalue()


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def run(manifest_path: Path, output: Path, weights: Path, capsys, *more: str):
    code = main(
        [
            "run",
            str(manifest_path),
            "-o",
            str(output),
            "--weights",
            str(weights),
            "--size",
            str(SIZE),
            "--iterations",
            str(ITERATIONS),
            "--feature-cache",
            str(output.parent / "features"),
            "--quiet",
            *more,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def test_a_catalogue_of_broken_and_hostile_inputs_in_one_batch(tmp_path, tiny_weights, capsys):
    inputs, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    write_inputs(inputs)
    (out / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere)  # leads out of the output root
    (out / "inner").symlink_to(out / "sub")  # stays inside it
    i = str(inputs)
    fails = {  # content → the whole error, after "content '<uri>': "
        "missing.png": "not found",
        "empty.png": "empty file (0 bytes)",
        "text.png": "not an image (starts with 'hello, I am not an image')",
        "trunc.png": "truncated PNG (the file ends before its image data does)",
        "trunc.jpg": "truncated JPEG (the file ends before its image data does)",
        "corrupt.png": re.compile(r"corrupt PNG \(.+\)"),
        "photo.heic": "unsupported format (HEIC); use PNG, JPEG, WebP, TIFF, GIF or BMP",
        "pano.png": "400×20 pixels shrink to 32×2 at the working size (32 px), too small for the "
        "network, which needs at least 16 px on each side; crop it or raise --size",
        "bomb.png": "50000×50000 pixels is over the limit of 100 megapixels (a decompression bomb?)",
    }
    goods = ["good.png", "good.jpg", "anim.gif", "cmyk.jpg", "gray16.png", "gray.png"]
    goods += ["alpha.png", "rotated.jpg", "tiny.png"]
    rows = [{"content": c, "style": "style.png"} for c in [*goods, *fails]]
    hostile = {  # output → the error, or None where it is fine
        "../escape.png": "'../escape.png' has a '..' component; outputs stay inside the output root",
        "sub/../../escape.png": "'sub/../../escape.png' has a '..' component",
        f"{tmp_path}/abs.png": "is absolute; outputs are relative to the output root",
        "~/home.png": "starts with '~'",
        "ftp://host/x.png": "is a URI; outputs are paths relative to the output root",
        "x" * 300 + ".png": "has a 304-byte component; at most 255",
        "link/x.png": f"{out}/link/x.png: a symbolic link leads it out of the output root {out} "
        f"(to {elsewhere}); refused",
        "L" * 251 + ".png": "L.json: file name too long (256 bytes; 255 here)",  # the sidecar
        "inner/y.png": None,
        "L" * 250 + ".png": None,  # its sidecar's name is 255 bytes, NAME_MAX: fine
    }
    rows += [{"content": "good.png", "style": "style.png", "output": o} for o in hostile]
    rows += [
        {"content": "good.png", "style": "anim.gif"},  # a style's note reaches the sidecar too
        {"content": "good.png", "style": "pano.png"},  # a style too small at its working size
        {"content": "good.png", "style": ""},
        {"content": "good.png", "style": "ftp://host/s.png"},
        {"content": "good.jpg", "style": "style.png", "iterations": "-3"},
        # diverges: the loss overflows at the first step; a failure, never a black image
        {"content": "good.jpg", "style": "style.png", "optimizer": "adam", "style_weight": "1e38"},
        {"content": "good.jpg", "style": "style.png", "style_layers": "relu1_1,relu9_1"},
    ]
    columns = ("content", "style", "output", "iterations", "optimizer", "style_weight")
    (inputs / "m.csv").write_text(manifest(rows, (*columns, "style_layers")))
    before = files_under(tmp_path)

    code, stdout, _ = run(inputs / "m.csv", out, tiny_weights, capsys)

    assert code == 1
    report = json.loads((out / "report.json").read_text())
    pairs = {p["row"]: p for p in report["pairs"]}
    assert len(pairs) == len(rows)
    by_row = dict(enumerate(rows, start=2))  # the header is line 1
    for row, spec in by_row.items():
        pair, error = pairs[row], pairs[row]["error"]
        assert error is None or ("\n" not in error and "Traceback" not in error), error
        content = spec["content"]
        if content in fails:
            uri = f"{i}/{content}"
            assert pair["status"] == "failed", pair
            assert error.startswith(f"content '{uri}': ") and error.count(uri) == 1, error
            expected = fails[content]
            cause = error.removeprefix(f"content '{uri}': ")
            assert (
                expected.fullmatch(cause)
                if isinstance(expected, re.Pattern)
                else (cause == expected)
            ), error
        elif content in goods and len(spec) == 2 and spec["style"] == "style.png":
            assert pair["status"] == "done", pair
    # hostile names
    for row, spec in by_row.items():
        if "output" in spec:
            expected, error = hostile[spec["output"]], pairs[row]["error"]
            if expected is None:
                assert pairs[row]["status"] == "done", pairs[row]
            else:
                assert pairs[row]["status"] == "failed" and expected in error, error
                assert error.startswith((f"row {row}: output: ", f"{out}/"))
    assert (out / "sub" / "y.png").exists() and (out / ("L" * 250 + ".json")).exists()
    assert list(elsewhere.iterdir()) == []
    after = files_under(tmp_path)
    new = {p for p in after if p not in before or after[p] != before[p]}
    assert all(p.startswith((f"{out}/", f"{tmp_path}/features/")) for p in new), sorted(new)

    # the other rows, in manifest order from the first after the hostile names
    extra = len(goods) + len(fails) + len(hostile) + 2
    errors = [pairs[row]["error"] for row in range(extra, extra + 7)]
    assert pairs[extra]["status"] == "done"
    anim = json.loads(Path(pairs[extra]["output"]).with_suffix(".json").read_text())
    assert f"style '{i}/anim.gif': animated GIF: used the first of 3 frames" in anim["notes"]
    assert errors[1] == f"style '{i}/pano.png': " + fails["pano.png"]
    assert errors[2] == f"row {extra + 2}: style: no style given"
    assert errors[3].startswith(f"row {extra + 3}: style: unsupported URI scheme 'ftp'")
    assert errors[4].startswith(f"row {extra + 4}: iterations: must be 1…")
    assert re.fullmatch(
        rf"content '{i}/good.jpg': the loss became \[(inf|nan)\] at iteration \d+; "
        r"lower the learning rate or the style/content weights",
        errors[5],
    ), errors[5]
    assert errors[6] == (
        f"weights '{tiny_weights}': network 'tiny-vgg19' has no layer relu9_1 "
        "(it has relu1_1 … relu5_4)"
    )

    # what the good inputs became
    done = {name: pairs[row] for row, name in enumerate(goods, start=2)}
    for name in goods:
        image = iio.imread(done[name]["output"])
        sidecar = json.loads(Path(done[name]["output"]).with_suffix(".json").read_text())
        assert sidecar["output_sha256"] == sha256(Path(done[name]["output"]).read_bytes())
        assert max(image.shape[:2]) == SIZE
        notes = sidecar["notes"]
        assert notes == done[name].get("notes", [])  # the same notes in the report
        if name == "anim.gif":
            assert notes == ["animated GIF: used the first of 3 frames"]
        if name == "cmyk.jpg":
            assert notes == ["CMYK converted to RGB (no colour profile applied)"]
        if name == "gray16.png":
            assert notes == ["16-bit PNG reduced to 8-bit", "grayscale converted to RGB"]
        if name == "rotated.jpg":
            assert image.shape[:2] == (32, 23)  # upright: taller than wide
            assert notes == ["EXIF orientation 6 applied (rotated 90° clockwise)"]
        if name == "alpha.png":
            assert image.shape[2] == 4  # the alpha is put back on PNG output
            alpha = image[..., 3].astype(float).mean(axis=0)
            assert alpha[0] < 20 and alpha[-1] > 235 and np.all(np.diff(alpha) >= -1)
        if name == "tiny.png":
            assert image.shape[:2] == (32, 32)  # small originals are enlarged to the size
    assert f"{len(goods) + 3} done, 0 skipped" in stdout


def test_invalid_rows_fail_alone_with_their_row_numbers(tmp_path, tiny_weights, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for k, name in enumerate(["a", "b", "s"]):
        Image.fromarray(rgb(40, 56, k)).save(inputs / f"{name}.png")
    lines = [
        {"content": "a.png", "style": "s.png"},
        {"content": "b.png", "style": "s.png", "stlye_weight": 5},
        {"content": "b.png", "style": "s.png", "iterations": "many"},
        {"content": "b.png", "style": "s.png", "size": 99999},
        {"content": "b.png", "style": "s.png", "tv_weight": -1},
        {"content": "a.png", "style": "s.png"},
        {"content": "b.png"},
        {"content": "b.png", "style": "gs://bucket/s.png"},
        {"content": "b.png", "style": "s.png"},
    ]
    text = "\ufeff" + "\n".join(json.dumps(line) for line in lines) + "\n"  # a BOM, as Notepad
    (inputs / "m.jsonl").write_text(text, encoding="utf-8")

    code, stdout, _ = run(inputs / "m.jsonl", out, tiny_weights, capsys)

    assert code == 1
    pairs = {p["row"]: p for p in json.loads((out / "report.json").read_text())["pairs"]}
    assert {r for r, p in pairs.items() if p["status"] == "done"} == {1, 9}
    errors = {r: p["error"] for r, p in pairs.items() if p["status"] == "failed"}
    assert errors[2] == "row 2: unknown field 'stlye_weight' (did you mean 'style_weight'?)"
    assert errors[3].startswith("row 3: iterations: cannot read 'many' as an integer")
    assert errors[4].startswith("row 4: size: must be 16…")
    assert errors[5].startswith("row 5: tv_weight: must be ≥ 0")
    assert errors[6] == "row 6: duplicate of row 1"
    assert errors[7] == "row 7: style: no style given"
    assert errors[8].startswith("row 8: style: unsupported URI scheme 'gs'")
    assert all("\n" not in e for e in errors.values())

    # a semicolon-separated CSV runs the same way
    (inputs / "semi.csv").write_text("content;style;iterations\na.png;s.png;\nb.png;s.png;0\n")
    code, _, _ = run(inputs / "semi.csv", tmp_path / "semi", tiny_weights, capsys)
    semi = json.loads((tmp_path / "semi" / "report.json").read_text())["pairs"]
    assert code == 1 and [p["status"] for p in semi] == ["done", "failed"]
    assert semi[1]["error"].startswith("row 3: iterations: must be 1…")


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.csv", b"", "the manifest has no rows"),
        ("header.csv", b"content,style\n", "the manifest has no rows"),
        ("binary.csv", b"\xff\xfe\x00\x01bin", "cannot read the manifest: not UTF-8 text (byte 0)"),
        ("missing.csv", None, "cannot read the manifest: not found"),
        ("notes.txt", b"content,style\na.png,b.png\n", "unknown manifest format 'txt'"),
        ("bad.yaml", b"pairs: [\n", "not valid YAML"),
    ],
)
def test_an_unusable_manifest_exits_2_with_one_line(
    tmp_path, tiny_weights, capsys, name, data, expected
):
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    code, stdout, stderr = run(path, tmp_path / "out", tiny_weights, capsys)
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"stylebatch: error: {path}: ") and expected in line, line
    assert line.count(str(path)) == 1
    assert not (tmp_path / "out").exists()


def weights_files(folder: Path, tiny_weights: Path) -> dict[str, tuple[Path, str]]:
    """Weights files that are not usable, and what the error should say."""
    folder.mkdir()
    data = tiny_weights.read_bytes()
    files = {
        "truncated": (data[: len(data) // 2], "it is truncated or damaged"),
        "image": (b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image, not a MATLAB .mat"),
        "empty": (b"", "the file is empty"),
        "html": (b"<!DOCTYPE html><html>404</html>", "an HTML page"),
    }
    for name, (content, _) in files.items():
        (folder / f"{name}.mat").write_bytes(content)
    return {name: (folder / f"{name}.mat", text) for name, (_, text) in files.items()}


@pytest.mark.parametrize("kind", ["truncated", "image", "empty", "html", "missing"])
def test_unusable_weights_exit_2_with_one_line(tmp_path, tiny_weights, capsys, kind):
    files = weights_files(tmp_path / "w", tiny_weights)
    files["missing"] = (tmp_path / "w" / "nowhere.mat", "not found")
    path, expected = files[kind]
    Image.fromarray(rgb(40, 56, 1)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("content,style\na.png,a.png\n")
    code, _, stderr = run(tmp_path / "m.csv", tmp_path / "out", path, capsys)
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith("stylebatch: error: ") and str(path) in line and expected in line, line


def test_a_network_without_the_requested_layers_exits_2(tmp_path, tiny_weights, capsys):
    Image.fromarray(rgb(40, 56, 1)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("content,style\na.png,a.png\n")
    more = ("--style-layers", "relu1_1,relu9_1")
    code, _, stderr = run(tmp_path / "m.csv", tmp_path / "out", tiny_weights, capsys, *more)
    assert code == 2
    assert "has no layer relu9_1" in stderr and len(stderr.strip().splitlines()) == 1


def test_a_row_naming_a_bad_weights_file_fails_alone(tmp_path, tiny_weights, capsys):
    files = weights_files(tmp_path / "w", tiny_weights)
    Image.fromarray(rgb(40, 56, 1)).save(tmp_path / "a.png")
    Image.fromarray(rgb(40, 56, 2)).save(tmp_path / "b.png")
    bad = files["truncated"][0]
    (tmp_path / "m.csv").write_text(f"content,style,weights\na.png,b.png,\nb.png,a.png,{bad}\n")
    code, _, _ = run(tmp_path / "m.csv", tmp_path / "out", tiny_weights, capsys)
    assert code == 1
    pairs = json.loads((tmp_path / "out" / "report.json").read_text())["pairs"]
    assert [p["status"] for p in pairs] == ["done", "failed"]
    assert pairs[1]["error"].startswith(f"weights '{bad}': ") and "truncated" in pairs[1]["error"]


def test_np_load_never_unpickles():
    """Every np.load of ours refuses pickles, and a cache file holding one is refused, not run."""
    found = subprocess.run(
        ["grep", "-rn", "np.load(", "flows", "stylecore"], cwd=ROOT, capture_output=True, text=True
    ).stdout.splitlines()
    assert found and all("allow_pickle=False" in line for line in found), found


def test_a_pickle_in_the_feature_cache_is_refused(tmp_path):
    cache = FeatureCache(str(tmp_path))
    buffer = io.BytesIO()
    np.savez(buffer, relu1_1=np.array([{"a": 1}], dtype=object))  # an object array: a pickle
    storage.write_bytes(tmp_path / "k.npz", buffer.getvalue())
    with pytest.raises(ValueError, match="allow_pickle"):
        cache.get("k")
