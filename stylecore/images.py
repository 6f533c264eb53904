"""Image bytes in and out: decode, orientation, channels, resizing, encode.

The only place in the core that decodes or encodes image bytes. Pillow reads the header first
(format, size, frames) so the pixel limit is enforced before a single pixel is decoded; imageio's
pillow plugin then decodes the first frame. TIFFs deeper than 8 bits, which Pillow truncates to
8 bits or cannot open at all, go through tifffile. EXIF orientation is applied here, not by
imageio: its `rotate=True` flips palette images along the channel axis for the mirrored
orientations (2, 4, 5, 7). The messages for refused files are worded in stylecore.imagefaults.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import skimage.transform
import tifffile
from PIL import Image

from stylecore import imagefaults
from stylecore.errors import ImageError

DEFAULT_MAX_PIXELS = 100_000_000  # a 100-megapixel photo is generous; classic bombs are 10⁹+
WHITE = (255.0, 255.0, 255.0)

# Only these decoders ever see user bytes: Pillow knows dozens, some of which (EPS) run Ghostscript.
# Pillow's JPEG opener also returns MPO, a phone JPEG carrying extra images.
_PILLOW_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP")
_LABELS = {"MPO": "JPEG", "WEBP": "WebP"}
# Stored orientation → upright, on (H, W, …) arrays; the EXIF 2.3 table, checked against
# PIL.ImageOps.exif_transpose in the tests.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 1)[:, ::-1],
    8: lambda a: np.rot90(a, 1),
}
_TURNS = {2: "mirrored", 3: "rotated 180°", 4: "flipped upside down", 5: "transposed"}
_TURNS |= {6: "rotated 90° clockwise", 7: "transversed", 8: "rotated 90° counter-clockwise"}
_WRITERS = {".png": {}, ".jpg": {"quality": 95}, ".jpeg": {"quality": 95}}
_WRITERS |= {".webp": {"quality": 95}}
_WRITERS |= dict.fromkeys((".tif", ".tiff"), {"compression": "tiff_deflate"})


@dataclass(frozen=True)
class Picture:
    """A decoded image: what the optimization needs, plus what the user should be told."""

    rgb: np.ndarray  # (H, W, 3) float32 in 0…255, upright
    alpha: np.ndarray | None  # (H, W) float32 in 0…1; None when fully opaque
    notes: tuple[str, ...] = ()  # e.g. "animated GIF: used the first of 12 frames"


@dataclass(frozen=True)
class _Header:
    """What Pillow's header parse tells, before any pixel is decoded."""

    format: str  # Pillow's name: PNG, JPEG, MPO, GIF, WEBP, TIFF, BMP
    mode: str
    frames: int
    transparent: bool  # a tRNS chunk or GIF transparency index
    bits: int  # per sample, as stored


@dataclass(frozen=True)
class _Frame:
    """The first frame as decoded, in the file's own dtype, with what the file said about it."""

    pixels: np.ndarray  # (H, W) or (H, W, C): uint8, uint16, int32 or float
    label: str  # PNG, JPEG, GIF, WebP, TIFF, BMP
    frames: int
    orientation: object  # the EXIF value as found (1…8 when valid), None if unreadable
    bits: int  # per sample in the file; Pillow keeps only the top 8 of 16-bit RGB
    notes: tuple[str, ...] = ()


def decode(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """An image file's first frame, upright, as RGB 0…255 plus alpha; `name` is for messages."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    frame = _read(data, name, max_pixels)
    values, notes = _to_unit_range(frame)
    rgb, alpha, channel_notes = _split_channels(values)
    notes = frame.notes + notes + channel_notes + _frame_notes(frame)
    return Picture(_upright(rgb, frame), None if alpha is None else _upright(alpha, frame), notes)


def read_path(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode a local image file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode(data, str(path), max_pixels=max_pixels)


def check_min_side(shape: tuple[int, ...], min_side: int, name: str) -> None:
    """Refuse an image whose (H, W, …) working shape is below `min_side` on either side."""
    height, width = shape[:2]
    if min(height, width) < min_side:
        raise ImageError(
            f"{name}: {width}×{height} pixels is too small for the network "
            f"(needs at least {min_side} px on each side at the working size)"
        )


def composite(picture: Picture, background: tuple[float, float, float] | str = WHITE) -> np.ndarray:
    """RGB over a background colour (0…255) or "mean", the alpha-weighted mean colour."""
    if picture.alpha is None:
        return picture.rgb
    alpha = picture.alpha[..., None]
    if isinstance(background, str):
        if background != "mean":
            raise ValueError(f"background must be an RGB triple or 'mean', not {background!r}")
        # A fully transparent image has no visible colour; its plain mean is as good as any.
        weights = alpha if alpha.sum() > 0 else np.ones_like(alpha)
        color = (picture.rgb * weights).sum((0, 1)) / weights.sum()
    else:
        color = np.asarray(background, dtype=np.float32)
    return (picture.rgb * alpha + color * (1 - alpha)).astype(np.float32)


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    """PNG bytes of RGB 0…255 (clipped, rounded to 8 bits), RGBA when `alpha` is given."""
    return encode(rgb, alpha, ".png")


def encode(rgb: np.ndarray, alpha: np.ndarray | None, ext: str) -> bytes:
    """Bytes in the format an extension names (.png .jpg .jpeg .webp .tif); JPEG drops alpha."""
    ext = ext.lower() if ext.startswith(".") else f".{ext.lower()}"
    if ext not in _WRITERS:
        raise ImageError(f"cannot write '{ext}' images; use .png, .jpg, .webp or .tif")
    pixels = _to_uint8(rgb, None if ext in (".jpg", ".jpeg") else alpha)
    return iio.imwrite("<bytes>", pixels, extension=ext, plugin="pillow", **_WRITERS[ext])


def fit_shape(shape: tuple[int, int], longest: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is `longest`, aspect kept, each side ≥ 1."""
    height, width = shape[:2]
    if longest < 1 or height < 1 or width < 1:
        raise ValueError(f"cannot fit shape {shape} to a longest side of {longest}")
    scale = longest / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) or (H, W) resized to (height, width), anti-aliased when shrinking; float32."""
    height, width = image.shape[:2]
    if (height, width) == tuple(shape):
        return image.astype(np.float32)
    shrinking = shape[0] < height or shape[1] < width
    # float32 in keeps skimage in float32; order 1 never overshoots the input's range.
    resized = skimage.transform.resize(
        image.astype(np.float32, copy=False),
        tuple(shape) + image.shape[2:],
        order=1,
        preserve_range=True,
        anti_aliasing=shrinking,
    )
    return resized.astype(np.float32, copy=False)


# ---- reading ----------------------------------------------------------------------------------


def _read(data: bytes, name: str, max_pixels: int) -> _Frame:
    """The first frame, refusing oversized images from the header before decoding."""
    try:
        with _quiet_bomb_warnings(), Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as im:
            imagefaults.check_pixels(name, im.width, im.height, max_pixels)
            frames = getattr(im, "n_frames", 1)
            header = _Header(im.format, im.mode, frames, "transparency" in im.info, _bits(im, data))
    except Image.DecompressionBombError:
        raise ImageError(
            imagefaults.bomb_message(name, data, max_pixels, _PILLOW_FORMATS)
        ) from None
    except ImageError:
        raise
    except Exception as exc:  # UnidentifiedImageError, or a header Pillow cannot parse
        if imagefaults.sniff(data) == "TIFF":
            return _read_tiff(data, name, max_pixels)
        raise ImageError(imagefaults.unreadable(name, data)) from exc
    if header.format == "TIFF" and header.bits > 8:
        # Pillow keeps 8 of 16 bits and garbles planar 16-bit RGB; tifffile reads them exactly.
        return _read_tiff(data, name, max_pixels)
    return _decode_pillow(data, name, header)


def _decode_pillow(data: bytes, name: str, header: _Header) -> _Frame:
    label = _LABELS.get(header.format, header.format)
    try:
        with _quiet_bomb_warnings(), iio.imopen(data, "r", plugin="pillow") as file:
            pixels = file.read(index=0, mode=_read_mode(header))
            orientation = _orientation(file)
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this {label}") from None
    except Exception as exc:
        raise ImageError(imagefaults.corrupt(name, label, exc)) from exc
    cmyk = header.mode == "CMYK"
    notes = ("CMYK converted to RGB (no colour profile applied)",) if cmyk else ()
    return _Frame(pixels, label, header.frames, orientation, header.bits, notes)


def _read_tiff(data: bytes, name: str, max_pixels: int) -> _Frame:
    """A gray or RGB TIFF deeper than 8 bits (or one Pillow cannot open), through tifffile."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            imagefaults.check_pixels(name, page.imagewidth, page.imagelength, max_pixels)
            _check_tiff_layout(name, page)
            pixels = page.asarray()
            if page.axes.startswith("S"):  # planar: one plane per sample
                pixels = np.moveaxis(pixels, 0, -1)
            orientation = int(page.tags.valueof(274, 1))
            frame = _Frame(pixels, "TIFF", len(tif.pages), orientation, page.bitspersample)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(imagefaults.corrupt(name, "TIFF", exc)) from exc
    return frame


def _check_tiff_layout(name: str, page: tifffile.TiffPage) -> None:
    photometric = tifffile.PHOTOMETRIC
    if page.photometric not in (photometric.MINISBLACK, photometric.RGB) or not (
        1 <= page.samplesperpixel <= 4
    ):
        raise ImageError(
            f"{name}: unsupported TIFF ({page.photometric.name}, {page.samplesperpixel} samples "
            f"of {page.bitspersample} bits); save it as 8-bit or as gray/RGB"
        )


@contextlib.contextmanager
def _quiet_bomb_warnings() -> Iterator[None]:
    # Our own limit is checked from the header; Pillow's warning would only be noise (or, under
    # -W error, an exception in the middle of a decode).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _bits(im: Image.Image, data: bytes) -> int:
    """Bits per sample as the file stores them (Pillow reduces 16-bit RGB to 8 on decode)."""
    if im.format == "PNG":
        return data[24]  # IHDR's bit depth; IHDR is always the first chunk
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, 8)
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _read_mode(header: _Header) -> str | None:
    """The Pillow mode to decode into; None keeps the file's own (8/16-bit, float, alpha)."""
    mode = header.mode
    # Palette and tRNS transparency become a real alpha channel; an all-opaque one is dropped later.
    if mode in ("P", "PA", "La", "RGBa") or (mode in ("L", "RGB") and header.transparent):
        return "RGBA"
    if mode == "1":
        return "L"
    if mode in ("L", "LA", "RGB", "RGBA", "F") or mode.startswith("I"):
        return None
    return "RGB"  # CMYK, YCbCr, LAB, HSV


def _orientation(file: Any) -> object:
    """The EXIF orientation of frame 0 (1 when absent), or None when the EXIF cannot be read."""
    # Read after the pixels: for PNG, Pillow's getexif() decodes the image to find a late eXIf.
    with contextlib.suppress(Exception):
        return file.metadata(index=0, exclude_applied=False).get("Orientation", 1)
    return None


# ---- converting -------------------------------------------------------------------------------


def _to_unit_range(frame: _Frame) -> tuple[np.ndarray, tuple[str, ...]]:
    """Pixels as float32 in 0…255, whatever their dtype, and a note when the depth changed."""
    pixels = frame.pixels
    if pixels.dtype == np.uint8 or pixels.dtype == bool:
        note = (f"{frame.bits}-bit {frame.label} reduced to 8-bit",) if frame.bits > 8 else ()
        return pixels.astype(np.float32) * (255 if pixels.dtype == bool else 1), note
    if np.issubdtype(pixels.dtype, np.floating):
        values = np.nan_to_num(pixels.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        # Float images are 0…1 by convention; one with values past 1 is taken as 0…255.
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        note = f"floating-point {frame.label} read as 0…{top:g}"
        return np.clip(values, 0, top) * np.float32(255 / top), (note,)
    bits = frame.bits if frame.bits > 8 else 16  # 12-bit TIFFs come as uint16 scaled to 4095
    top = min(2**bits - 1, np.iinfo(pixels.dtype).max)
    values = np.clip(pixels, 0, top).astype(np.float32) * np.float32(255 / top)
    return values, (f"{bits}-bit {frame.label} reduced to 8-bit",)


def _split_channels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """(H, W, 3) RGB and (H, W) alpha in 0…1 (None if opaque) from 1 to 4 channels."""
    if values.ndim == 2:
        values = values[..., None]
    channels = values.shape[2]
    rgb = values[..., :3] if channels >= 3 else np.repeat(values[..., :1], 3, axis=2)
    alpha = values[..., -1] / 255 if channels in (2, 4) else None
    if alpha is not None and alpha.min() >= 1:
        alpha = None
    notes = ("grayscale converted to RGB",) if channels < 3 else ()
    return rgb, alpha, notes


def _frame_notes(frame: _Frame) -> tuple[str, ...]:
    notes = []
    if frame.frames > 1:
        kind, unit = ("multi-page", "pages") if frame.label == "TIFF" else ("animated", "frames")
        if frame.label == "JPEG":
            kind, unit = "multi-picture", "images"
        notes.append(f"{kind} {frame.label}: used the first of {frame.frames} {unit}")
    if frame.orientation in _TURNS:
        notes.append(f"EXIF orientation {frame.orientation} applied ({_TURNS[frame.orientation]})")
    elif frame.orientation is None:
        notes.append("EXIF data unreadable: orientation not applied")
    elif frame.orientation != 1:
        notes.append(f"EXIF orientation {frame.orientation!r} ignored (not 1…8)")
    return tuple(notes)


def _upright(array: np.ndarray, frame: _Frame) -> np.ndarray:
    turn = _ORIENT.get(frame.orientation)
    return np.ascontiguousarray(turn(array) if turn else array, dtype=np.float32)


def _to_uint8(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) or (H, W, 4) uint8 from RGB 0…255 and alpha 0…1."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha shape {alpha.shape} does not match RGB shape {rgb.shape}")
    if not np.isfinite(rgb).all():
        raise ValueError("the RGB array holds NaN or infinite values")
    channels = [rgb] if alpha is None else [rgb, alpha[..., None] * 255]
    return np.clip(np.rint(np.concatenate(channels, axis=-1)), 0, 255).astype(np.uint8)


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "WHITE",
    "Picture",
    "check_min_side",
    "composite",
    "decode",
    "encode",
    "encode_png",
    "fit_shape",
    "read_path",
    "resize",
]
