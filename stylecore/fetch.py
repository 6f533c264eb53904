"""Download a weights file with resume, progress and an MD5 check."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from stylecore.errors import WeightsError
from stylecore.paths import cache_dir

log = logging.getLogger("stylecore.fetch")

VGG19_FILENAME = "imagenet-vgg-verydeep-19.mat"
# MatConvNet's current VGG19 (meta.normalization layout). Its own checksum table lists this MD5 for
# models/imagenet-vgg-verydeep-19.mat; the older models/beta16/ copy (top-level normalization)
# loads too, and stylecore.weights.cache.KNOWN_RELEASES names both.
VGG19_URL = "http://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat"
VGG19_MD5 = "106118b7cf60435e6d8e04f6a6dc3657"

CHUNK = 1 << 16
TIMEOUT_S = 60
Progress = Callable[[int, "int | None"], None]


def default_vgg19_path() -> Path:
    """Where `stylebatch weights fetch` puts VGG19 and where the name "vgg19" looks for it."""
    return cache_dir() / VGG19_FILENAME


def fetch(url: str, dest: Path, md5: str | None, progress: Progress | None = None) -> Path:
    """Download `url` to `dest`, resuming a `.part` left by an earlier try; check the MD5."""
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(url, part, progress or (lambda done, total: None))
    except urllib.error.HTTPError as exc:
        if exc.code != 416:  # 416: the .part already holds every byte (an earlier try stopped late)
            raise WeightsError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        cause = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"downloading {url} failed: {cause}; run the command again to resume "
            f"({_size(part)} bytes kept in {part})"
        ) from exc
    _check_md5(url, part, md5)
    os.replace(part, dest)
    return dest


def _download(url: str, part: Path, progress: Progress) -> None:
    done = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        start, total = _resume_point(response, done)
        if start != done:
            log.info("%s ignored the range request; downloading from the start", url)
        done = start
        progress(done, total)
        with open(part, "r+b" if done else "wb") as out:
            out.seek(done)
            out.truncate()
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                progress(done, total)
    if total is not None and done < total:
        raise http.client.IncompleteRead(b"", total - done)


def _resume_point(response, done: int) -> tuple[int, int | None]:
    """Where the body starts in the file and the full size, from a 200 or a 206 answer."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == done:
            size = match.group(2)
            return done, int(size) if size != "*" else None
        if match is None and length is not None:
            return done, done + int(length)
    # A plain 200 (the server ignored Range) or a range we did not ask for: start again.
    if response.status == 206:
        raise WeightsError(f"{response.url}: the server answered an unexpected byte range")
    return 0, int(length) if length is not None else None


def _check_md5(url: str, part: Path, md5: str | None) -> None:
    if md5 is None:
        return
    digest = hashlib.md5(usedforsecurity=False)
    with open(part, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    if digest.hexdigest() != md5.lower():
        size = _size(part)
        part.unlink()  # a wrong file never resumes into a right one: the next try starts clean
        raise WeightsError(
            f"downloading {url}: MD5 {digest.hexdigest()} of the {size} bytes received is not the "
            f"expected {md5} (an error page or a changed file?); nothing was saved"
        )


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
