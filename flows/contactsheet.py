"""The contact sheet: content, style and output thumbnails, a row per pair (a clip: a strip of
its stylized frames)."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from flows import storage, uri
from stylecore import images

THUMB = 128  # pixels, the longest side of each thumbnail
MAX_ROWS = 100  # a sheet of thousands of rows helps nobody; the report lists every pair
LABEL = 18  # pixels of text under each row
GREY = (64, 64, 64)


def contact_sheet(pairs: list[dict]) -> bytes | None:
    """A PNG of the first MAX_ROWS pairs, or None when there are none."""
    rows = [_row(p) for p in pairs[:MAX_ROWS]]
    if not rows:
        return None
    sheet = Image.new("RGB", (3 * THUMB, len(rows) * (THUMB + LABEL)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (thumbs, label) in enumerate(rows):
        top = i * (THUMB + LABEL)
        for j, thumb in enumerate(thumbs):
            sheet.paste(thumb, (j * THUMB + (THUMB - thumb.width) // 2, top))
        draw.text((4, top + THUMB + 2), label, fill=(0, 0, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _row(pair: dict) -> tuple[list[Image.Image], str]:
    styles = [uri.split_weight(s)[0] for s in pair.get("style", "").split(";") if s]
    output = pair["output"] if pair["status"] in ("done", "skipped") else None
    thumbs = [_thumb(pair["content"]), _thumb(styles[0] if styles else None), _thumb(output)]
    if pair.get("strip"):  # a clip: a strip of its stylized frames (first, middle, last)
        thumbs = [_thumb(frame) for frame in pair["strip"][:3]]
        thumbs += [_thumb(None)] * (3 - len(thumbs))
    # ASCII separators: Pillow's default font has no glyph for × or — (they drew as boxes).
    names = " + ".join(uri.name(s) for s in styles[:2]) + (" + ..." if len(styles) > 2 else "")
    label = f"row {pair['row']}: {uri.name(pair['content'])} x {names} - {pair['status']}"
    if pair.get("quality"):
        label += (
            f" (style {pair['quality']['style_ratio']:.3f}{', WEAK' if pair.get('weak') else ''})"
        )
    if pair.get("frames"):
        label += f" ({pair['frames']['done']}/{pair['frames']['total']} frames)"
    if pair.get("error"):
        label += f": {pair['error'][:40]}"
    return thumbs, label


def _thumb(where: str | None) -> Image.Image:
    """A thumbnail of an image, or a grey square when it is missing or unreadable."""
    try:
        if not where:
            raise ValueError(where)
        rgb = images.composite(images.decode(storage.read_bytes(where), where))
    except Exception:
        return Image.new("RGB", (THUMB, THUMB), GREY)
    small = images.resize(rgb, images.fit_shape(rgb.shape[:2], THUMB))
    return Image.fromarray(small.clip(0, 255).round().astype("uint8"))
