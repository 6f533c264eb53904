"""Why an image is refused, in one line: what its first bytes say it is, the pixel limit, damage.

stylecore.images calls these when a header announces too many pixels or no decoder succeeds.
"""

from __future__ import annotations

import contextlib
import io

from PIL import Image

from stylecore.errors import ImageError

_SUPPORTED = frozenset({"PNG", "JPEG", "GIF", "WebP", "TIFF", "BMP"})
_SIGNATURES = (  # (offset, magic, format): to name what a file is when no decoder accepts it
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF8", "GIF"),
    (8, b"WEBP", "WebP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (4, b"ftypavi", "AVIF"),
    (4, b"ftyphe", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"jP  ", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"),
    (4, b"JXL ", "JPEG XL"),
    (0, b"8BPS", "Photoshop"),
    (0, b"%!PS", "PostScript"),
    (0, b"%PDF", "PDF"),
)


def check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse a header's size before decoding: zero-sized, or over `max_pixels`."""
    if width * height == 0:
        raise ImageError(f"{name}: zero-sized image ({width}×{height} pixels)")
    if width * height > max_pixels:
        raise ImageError(_too_large(name, width, height, max_pixels))


def _too_large(name: str, width: int, height: int, limit: float) -> str:
    return (
        f"{name}: {width}×{height} pixels is over the limit of {limit / 1e6:g} megapixels "
        "(a decompression bomb?)"
    )


def bomb_message(name: str, data: bytes, max_pixels: int, formats: tuple[str, ...]) -> str:
    """The message for a file Image.open refused as over Pillow's own hard limit."""
    # Image.open checks the size inside its format loop; the format classes only parse the header,
    # so one of them can still tell us the size for the message.
    pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    for fmt in formats:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None or (accept is not None and not accept(data[:16])):
            continue
        with contextlib.suppress(Exception):
            width, height = factory(io.BytesIO(data), "").size
            return _too_large(name, width, height, min(max_pixels, pillow_limit))
    return f"{name}: over {pillow_limit / 1e6:g} megapixels (a decompression bomb?)"


def sniff(data: bytes) -> str | None:
    """The format a file's first bytes announce, or None."""
    for offset, magic, fmt in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return fmt
    return "SVG" if b"<svg" in data[:1024].lower() else None


def unreadable(name: str, data: bytes) -> str:
    """The message for bytes no decoder opened: not an image, a damaged one, or another format."""
    fmt = sniff(data)
    if fmt is None:
        text = data.lstrip()[:24].decode("latin-1")
        shown = "".join(c if c.isprintable() else "." for c in text)
        return f"{name}: not an image (starts with {shown!r})"
    if fmt in _SUPPORTED:
        return f"{name}: corrupt or truncated {fmt} (cannot open it)"
    return f"{name}: unsupported format ({fmt}); use PNG, JPEG, WebP, TIFF, GIF or BMP"


def corrupt(name: str, label: str, exc: BaseException) -> str:
    """The message for a file whose header opened but whose pixels did not decode."""
    if "truncated" in str(exc):
        return f"{name}: truncated {label} (the file ends before its image data does)"
    text = " ".join(str(exc).split())[:120]
    cause = text if sum(c.isalpha() for c in text) > 3 else "cannot decode it"  # not just "0"
    return f"{name}: corrupt {label} ({cause})"
