"""The contact sheet's rows: thumbnails where images exist, grey where not, labels it can draw."""

from __future__ import annotations

import io

import imageio.v3 as iio
import numpy as np
from conftest import noise_image

from flows.contactsheet import GREY, THUMB, _row, contact_sheet


def test_rows_show_images_grey_for_missing_and_drawable_labels(tmp_path):
    content = tmp_path / "chelsea.png"
    iio.imwrite(content, noise_image(40, 60, seed=1).astype(np.uint8))
    pairs = [
        {"row": 2, "content": str(content), "style": f"{content}:0.7;{content}:0.3",
         "status": "failed", "output": None, "error": "style 'x.png': not found"},
    ]  # fmt: skip
    thumbs, label = _row(pairs[0])
    assert thumbs[0].width == THUMB and thumbs[0].height < THUMB  # the content, fitted
    assert thumbs[2].getpixel((0, 0)) == GREY  # no output: a grey square
    assert (
        label == "row 2: chelsea.png x chelsea.png + chelsea.png - failed: style 'x.png': not found"
    )
    assert label.isascii()  # Pillow's default font drew × and — as boxes
    sheet = iio.imread(io.BytesIO(contact_sheet(pairs)))
    assert sheet.shape[1] == 3 * THUMB and sheet.shape[0] > THUMB
