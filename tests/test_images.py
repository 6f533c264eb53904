"""stylecore.images on real files the tests write themselves with Pillow, imageio and tifffile."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.color
import skimage.transform
import tifffile
from PIL import Image, ImageOps

from stylecore.colour import preserve_colors
from stylecore.errors import ImageError
from stylecore.images import (
    Picture,
    check_min_side,
    composite,
    decode,
    encode,
    encode_png,
    fit_shape,
    read_path,
    resize,
)


def pattern(height: int = 24, width: int = 40) -> np.ndarray:
    """An asymmetric uint8 RGB image: red grows left→right, green top→bottom, one blue corner."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.zeros_like(x)], -1)
    rgb[: height // 3, : width // 4, 2] = 255
    return rgb.astype(np.uint8)


def blocks() -> np.ndarray:
    """A 32×48 RGB image of four flat colours in 16-px blocks: exact through GIF, near for JPEG."""
    colours = np.array([[200, 30, 40], [20, 180, 60], [30, 40, 220], [240, 240, 20]], np.uint8)
    index = np.zeros((32, 48), int)
    index[:16, 16:32], index[16:, :24], index[16:, 24:] = 1, 2, 3
    return colours[index]


def save(image: Image.Image | np.ndarray, fmt: str, **params) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_file(width: int, height: int, depth: int, colour_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    ihdr, body, end = chunk(b"IHDR", header), chunk(b"IDAT", idat), chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + ihdr + body + end


# ---- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("PNG", {}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("GIF", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 90}, 8),  # lossy: chroma bleeds across the block edges
        ("JPEG", {"quality": 95}, 8),
    ],
)
def test_decode_each_format(fmt, params, tolerance):
    image = blocks()
    picture = decode(save(image, fmt, **params), f"x.{fmt.lower()}")
    assert picture.rgb.shape == (32, 48, 3) and picture.rgb.dtype == np.float32
    assert picture.alpha is None
    assert np.abs(picture.rgb - image).mean() <= tolerance


@pytest.mark.parametrize(
    ("ext", "tolerance"), [(".png", 0), (".tif", 0), ("webp", 3), (".jpg", 3), (".JPEG", 3)]
)
def test_encode_each_format_reads_back_with_pillow(ext, tolerance):
    rgb = pattern().astype(np.float32) + 0.3  # rounds back to the pattern
    back = np.asarray(Image.open(io.BytesIO(encode(rgb, None, ext))).convert("RGB"))
    assert np.abs(back.astype(float) - pattern()).mean() <= tolerance


def test_encode_refuses_unknown_extension():
    with pytest.raises(ImageError, match=r"cannot write '\.gif' images; use \.png"):
        encode(pattern().astype(np.float32), None, ".gif")


def test_round_trip_through_files(tmp_path):
    path = tmp_path / "p.png"
    path.write_bytes(encode_png(pattern().astype(np.float32)))
    assert np.array_equal(read_path(path).rgb, pattern())


# ---- channels ---------------------------------------------------------------------------------


def test_rgba_keeps_rgb_and_alpha_and_encode_png_puts_alpha_back():
    rgba = np.dstack([pattern(), np.tile(np.linspace(0, 255, 40).astype(np.uint8), (24, 1))])
    picture = decode(save(rgba, "PNG"), "a.png")
    assert np.array_equal(picture.rgb, rgba[..., :3])  # not premultiplied, not composited
    assert np.allclose(picture.alpha, rgba[..., 3] / 255)
    back = np.asarray(Image.open(io.BytesIO(encode_png(picture.rgb, picture.alpha))))
    assert back.shape == (24, 40, 4) and np.array_equal(back, rgba)


def test_opaque_alpha_is_dropped():
    rgba = np.dstack([pattern(), np.full((24, 40), 255, np.uint8)])
    assert decode(save(rgba, "PNG"), "a.png").alpha is None


def test_composite_over_white_and_over_the_mean():
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[0] = (200, 100, 0)
    alpha = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)
    picture = Picture(rgb=rgb, alpha=alpha)
    assert np.allclose(composite(picture)[1], 255)
    assert np.allclose(composite(picture)[0], (200, 100, 0))
    assert np.allclose(composite(picture, "mean")[1], (200, 100, 0))  # the visible pixels' mean
    assert np.allclose(composite(picture, (10, 20, 30))[1], (10, 20, 30))


def test_grayscale_becomes_three_equal_channels():
    gray = pattern()[..., 0]
    picture = decode(save(gray, "PNG"), "g.png")
    assert picture.rgb.shape == (24, 40, 3)
    assert all(np.array_equal(picture.rgb[..., c], gray) for c in range(3))
    assert "grayscale converted to RGB" in picture.notes


def test_grayscale_with_alpha():
    la = Image.fromarray(np.dstack([pattern()[..., 0], pattern()[..., 1]]), "LA")
    picture = decode(save(la, "PNG"), "la.png")
    assert np.array_equal(picture.rgb[..., 2], pattern()[..., 0])
    assert np.allclose(picture.alpha, pattern()[..., 1] / 255)


def test_palette_png_with_transparency():
    image = Image.fromarray(blocks()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    clear = image.getpixel((0, 0))  # block 0's palette index becomes transparent
    picture = decode(save(image, "PNG", transparency=clear), "p.png")
    assert np.array_equal(picture.rgb, blocks())
    assert picture.alpha[0, 0] == 0 and picture.alpha[-1, -1] == 1


def test_rgb_png_with_a_transparent_colour():
    picture = decode(save(blocks(), "PNG", transparency=(20, 180, 60)), "t.png")
    assert np.array_equal(picture.rgb, blocks())
    assert picture.alpha[0, 20] == 0 and picture.alpha[0, 0] == 1


def test_encode_keeps_alpha_in_webp_and_drops_it_in_jpeg():
    rgb, alpha = blocks().astype(np.float32), np.full((32, 48), 0.5, np.float32)
    assert Image.open(io.BytesIO(encode(rgb, alpha, ".webp"))).mode == "RGBA"
    assert Image.open(io.BytesIO(encode(rgb, alpha, ".jpg"))).mode == "RGB"


def test_encode_refuses_bad_arrays():
    with pytest.raises(ValueError, match="NaN"):
        encode_png(np.full((2, 2, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="alpha shape"):
        encode_png(np.zeros((2, 2, 3), np.float32), np.zeros((3, 2), np.float32))


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    picture = decode(save(cmyk, "JPEG", quality=95), "c.jpg")
    assert np.allclose(picture.rgb, (255, 0, 0), atol=3)
    assert any("CMYK" in note for note in picture.notes)


# ---- depth ------------------------------------------------------------------------------------


def test_16_bit_gray_png_is_scaled_to_0_255():
    values = np.array([[0, 32768, 65535, 257]], np.uint16)
    picture = decode(save(Image.fromarray(values), "PNG"), "d.png")
    assert np.allclose(picture.rgb[0, :, 0], [0, 32768 * 255 / 65535, 255, 1], atol=1e-3)
    assert "16-bit PNG reduced to 8-bit" in picture.notes


def test_16_bit_rgb_png_is_reduced_to_8_bit():
    rgb = np.zeros((2, 3, 3), np.uint16)
    rgb[0] = [[65535, 0, 0], [0, 32768, 0], [0, 0, 255]]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
    picture = decode(png_file(3, 2, 16, 2, zlib.compress(raw)), "d.png")
    assert np.allclose(picture.rgb[0], [[255, 0, 0], [0, 128, 0], [0, 0, 0]], atol=1)
    assert "16-bit PNG reduced to 8-bit" in picture.notes


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_16_bit_and_float_rgb_tiff(planar):
    # Pillow opens contiguous 16-bit RGB keeping the top 8 bits; the rest goes through tifffile.
    base = pattern().astype(np.float64) / 255
    for array, note in [
        (np.rint(base * 65535).astype(np.uint16), "16-bit TIFF reduced to 8-bit"),
        (base.astype(np.float32), "floating-point TIFF read as 0…1"),
    ]:
        out = io.BytesIO()
        planes = np.moveaxis(array, -1, 0) if planar == "separate" else array
        tifffile.imwrite(out, planes, photometric="rgb", planarconfig=planar)
        picture = decode(out.getvalue(), "t.tif")
        assert np.allclose(picture.rgb, base * 255, atol=1.0)
        assert note in picture.notes


def test_16_bit_gray_tiff_is_read_exactly():
    values = np.array([[0, 32768, 65535, 257]], np.uint16)
    picture = decode(save(Image.fromarray(values), "TIFF"), "g.tif")
    assert np.allclose(picture.rgb[0, :, 0], [0, 32768 * 255 / 65535, 255, 1], atol=1e-3)


def test_16_bit_cmyk_tiff_is_refused_clearly():
    out = io.BytesIO()
    tifffile.imwrite(out, np.zeros((8, 8, 4), np.uint16), photometric="separated")
    with pytest.raises(ImageError, match=r"^k\.tif: unsupported TIFF \(SEPARATED, 4 samples of 16"):
        decode(out.getvalue(), "k.tif")


def test_float_gray_tiff_in_0_1_is_scaled():
    values = np.array([[0.0, 0.5, 1.0]], np.float32)
    picture = decode(save(Image.fromarray(values, "F"), "TIFF"), "f.tif")
    assert np.allclose(picture.rgb[0, :, 1], [0, 127.5, 255])
    assert "floating-point TIFF read as 0…1" in picture.notes


# ---- orientation ------------------------------------------------------------------------------


def with_orientation(image: Image.Image, fmt: str, orientation: int, **params) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(image, fmt, exif=exif, **params)


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1)])
def test_exif_rotated_jpeg_is_turned_upright(orientation, turns):
    data = with_orientation(Image.fromarray(blocks()), "JPEG", orientation, quality=95)
    picture = decode(data, "r.jpg")
    expected = np.rot90(blocks(), turns)  # 6: the camera was turned; show it 90° clockwise
    assert picture.rgb.shape == (48, 32, 3)
    assert np.abs(picture.rgb - expected).mean() < 8  # JPEG noise; a wrong turn gives ~100
    assert f"EXIF orientation {orientation} applied" in " ".join(picture.notes)


@pytest.mark.parametrize("mode", ["RGB", "P", "L"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillows_exif_transpose(orientation, mode):
    # P covers imageio's rotate=True, which flips palette images along the channel axis.
    image = Image.fromarray(pattern()).convert(mode)
    data = with_orientation(image, "PNG", orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    picture = decode(data, "o.png")
    assert np.array_equal(picture.rgb, expected)
    assert (orientation == 1) == (not any("orientation" in note for note in picture.notes))


def test_an_invalid_orientation_is_ignored_and_said_so():
    picture = decode(with_orientation(Image.fromarray(blocks()), "PNG", 9), "o.png")
    assert np.array_equal(picture.rgb, blocks())
    assert "EXIF orientation 9 ignored (not 1…8)" in picture.notes


# ---- frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "label"), [("GIF", "GIF"), ("WEBP", "WebP"), ("PNG", "PNG")])
def test_animated_images_give_the_first_frame_and_say_so(fmt, label):
    frames = [Image.fromarray(np.roll(blocks(), 16 * i, axis=1)) for i in range(3)]
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **params)
    picture = decode(data, "anim")
    assert np.array_equal(picture.rgb, blocks())
    assert f"animated {label}: used the first of 3 frames" in picture.notes


def test_multi_page_tiff_gives_the_first_page():
    pages = [Image.fromarray(blocks()), Image.fromarray(pattern())]
    picture = decode(save(pages[0], "TIFF", save_all=True, append_images=pages[1:]), "m.tif")
    assert np.array_equal(picture.rgb, blocks())
    assert "multi-page TIFF: used the first of 2 pages" in picture.notes


def test_multi_picture_jpeg_from_a_phone_gives_the_main_image():
    images = [Image.fromarray(blocks()), Image.fromarray(blocks()[::-1])]
    picture = decode(save(images[0], "MPO", save_all=True, append_images=images[1:]), "m.jpg")
    assert np.abs(picture.rgb - blocks()).mean() < 8
    assert "multi-picture JPEG: used the first of 2 images" in picture.notes


# ---- bad input --------------------------------------------------------------------------------


def test_empty_file():
    with pytest.raises(ImageError, match=r"^e\.png: empty file \(0 bytes\)$"):
        decode(b"", "e.png")


def test_html_is_not_an_image():
    page = b"<html><head><title>404 Not Found</title></head></html>"
    with pytest.raises(ImageError, match=r"^s3://b/a\.jpg: not an image \(starts with '<html>"):
        decode(page, "s3://b/a.jpg")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x00\x18ftypheic" + bytes(40), r"unsupported format \(HEIC\); use PNG"),
        (b"%PDF-1.7\n" + bytes(40), r"unsupported format \(PDF\)"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', r"\(SVG\)"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n" + bytes(40), r"\(PostScript\)"),  # Ghostscript: never
        (png_file(0, 10, 8, 0, b""), r"corrupt or truncated PNG \(cannot open it\)"),
        (b"\x89PNG\r\n\x1a\n" + bytes(30), r"corrupt or truncated PNG \(cannot open it\)"),
    ],
)
def test_unsupported_and_unreadable_headers(data, message):
    with pytest.raises(ImageError, match=message) as caught:
        decode(data, "f")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("fmt", "label"), [("PNG", "PNG"), ("JPEG", "JPEG")])
@pytest.mark.parametrize("kept", [0.5, 0.99])
def test_truncated_files_are_errors_not_grey_halves(fmt, label, kept):
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    data = save(noise, fmt)  # noise: the cut lands inside the pixel data, not in a trailer
    with pytest.raises(ImageError, match=rf"^t: truncated {label} \(the file ends before"):
        decode(data[: int(len(data) * kept)], "t")


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "BMP", "TIFF"])
def test_other_truncated_formats_are_errors(fmt):
    data = save(pattern(240, 320), fmt)
    with pytest.raises(ImageError, match=r"^t: (corrupt or )?truncated "):
        decode(data[: len(data) // 2], "t")


def test_corrupt_png_data_is_an_error():
    data = bytearray(save(pattern(), "PNG"))
    data[60] ^= 0xFF  # inside IDAT: its CRC no longer matches
    with pytest.raises(ImageError, match=r"^c\.png: corrupt PNG \(") as caught:
        decode(bytes(data), "c.png")
    assert "\n" not in str(caught.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: file not found$"):
        read_path(tmp_path / "nope.png")
    with pytest.raises(ImageError, match=r"is a directory"):
        read_path(tmp_path)


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A real, valid 50000×50000 1-bit PNG of zeros: 2.5 gigapixels in about 1.4 MB."""
    width = height = 50_000
    rows = bytes((1 + width // 8) * 1000)  # 1000 rows: a filter byte then 6250 zero bytes each
    packer = zlib.compressobj(1)
    idat = b"".join([packer.compress(rows) for _ in range(height // 1000)] + [packer.flush()])
    return png_file(width, height, 1, 0, idat)


def test_pixel_bomb_is_refused_from_the_header(bomb_png):
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        decode(bomb_png, "bomb.png")
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(caught.value) == (
        "bomb.png: 50000×50000 pixels is over the limit of 100 megapixels (a decompression bomb?)"
    )
    assert peak < 50e6, f"allocated {peak / 1e6:.0f} MB"  # decoding would need 2.5 GB
    assert seconds < 5, f"took {seconds:.1f} s"  # lenient; decoding would take far longer


def test_pillows_own_limit_is_reported_the_same_way(bomb_png):
    with pytest.raises(ImageError, match=r"50000×50000 pixels is over the limit of 178\.957 meg"):
        decode(bomb_png, "bomb.png", max_pixels=10**10)


def test_our_limit_applies_below_pillows_and_without_its_warning():
    # 12000×10000 (120 MP) is past Pillow's warning (89 MP) but under its error (179 MP).
    data = png_file(12_000, 10_000, 1, 0, zlib.compress(bytes(1501 * 10_000), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match=r"12000×10000 pixels is over the limit of 100 meg"):
            decode(data, "w.png")
    with pytest.raises(ImageError, match=r"40×24 pixels is over the limit of 0\.0009 meg"):
        decode(save(pattern(), "PNG"), "small.png", max_pixels=900)


def test_too_small_for_the_network():
    check_min_side((16, 16, 3), 16, "ok.png")
    with pytest.raises(ImageError) as caught:
        check_min_side((9, 12, 3), 16, "tiny.png")
    assert str(caught.value) == (
        "tiny.png: 12×9 pixels is too small for the network "
        "(needs at least 16 px on each side at the working size)"
    )


# ---- resizing and colour ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "longest", "expected"),
    [
        ((300, 200), 150, (150, 100)),
        ((200, 300), 150, (100, 150)),
        ((300, 451), 256, (170, 256)),  # chelsea: 170.29 rounds down
        ((101, 100), 50, (50, 50)),  # 49.5 rounds half up
        ((10, 1000), 16, (1, 16)),  # never 0
        ((64, 64), 512, (512, 512)),
    ],
)
def test_fit_shape(shape, longest, expected):
    assert fit_shape(shape, longest) == expected


def test_resize_shrinks_without_aliasing():
    y, x = np.mgrid[0:96, 0:96]
    # A 1-px checkerboard: sampling every 4th pixel sees only white; its mean is mid-grey.
    checker = 255.0 * ((x + y) % 2 == 0)
    nearest = skimage.transform.resize(checker, (24, 24), order=0, anti_aliasing=False)
    assert nearest.mean() > 250  # the checks below can fail
    assert np.allclose(resize(checker, (24, 24)), 127.5, atol=1)
    # One bright pixel in three along each diagonal: bilinear sampling alone leaves stripes.
    image = np.repeat((255.0 * ((x + y) % 3 == 0))[..., None], 3, axis=2).astype(np.float32)
    plain = skimage.transform.resize(image, (24, 24, 3), preserve_range=True, anti_aliasing=False)
    small = resize(image, (24, 24))
    assert plain.std() > 20
    assert small.shape == (24, 24, 3) and small.dtype == np.float32
    assert abs(small.mean() - 85) < 1 and small.std() < 2


def test_resize_alpha_and_enlarging_keep_range():
    alpha = np.zeros((10, 20), np.float32)
    alpha[:, 10:] = 1
    big = resize(alpha, (40, 80))
    assert big.shape == (40, 80) and big.min() >= 0 and big.max() <= 1
    assert np.array_equal(resize(alpha, (10, 20)), alpha)


def test_preserve_colors_keeps_the_content_chroma_and_the_styled_luminance():
    content = np.empty((8, 8, 3), np.float32)
    content[:] = (180, 120, 90)  # a warm brown
    styled = np.repeat(np.linspace(80, 180, 64, dtype=np.float32).reshape(8, 8, 1), 3, axis=2)
    out = preserve_colors(content, styled)
    out_ycc, content_ycc, styled_ycc = (
        skimage.color.rgb2ycbcr(a / 255) for a in (out, content, styled)
    )
    assert np.allclose(out_ycc[..., 0], styled_ycc[..., 0], atol=0.05)  # grey's luminance
    assert np.allclose(out_ycc[..., 1:], content_ycc[..., 1:], atol=0.05)  # content's hue
    assert not np.allclose(out, styled, atol=5)


def test_preserve_colors_clips_and_checks_shapes():
    content = np.zeros((2, 2, 3), np.float32)
    content[..., 0] = 255  # saturated red
    out = preserve_colors(content, np.full((2, 2, 3), 255, np.float32))
    assert out.min() >= 0 and out.max() <= 255
    with pytest.raises(ValueError, match="equal shapes"):
        preserve_colors(content, np.zeros((3, 2, 3), np.float32))


# ---- the bundled examples ---------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_every_example_decodes_small_and_has_its_licence_written_down():
    readme = (EXAMPLES / "README.md").read_text()
    files = sorted(EXAMPLES.glob("*.png"))
    assert len(files) >= 6
    for path in files:
        picture = read_path(path)
        assert max(picture.rgb.shape[:2]) == 256 and picture.alpha is None
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{path.name}`"))
        assert "CC0" in row or "public domain" in row
