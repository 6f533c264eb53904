"""Where things are: local paths and s3:// URIs, parsed, resolved, joined and shown, one copy each.

Pure text: nothing here touches a disk or the network. A location is either a local path (a str)
or an `S3Location`; `file://` URIs are local paths. Output names (`safe_output_name`) and the
manifest's style cell (`a.png:0.7;b.png:0.3`) are parsed and written here too, since both are
locations with a little grammar around them.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stylecore.errors import StyleError

Uri = str | os.PathLike[str]
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
MAX_COMPONENT_BYTES = 255  # NAME_MAX on ext4, xfs, apfs
MAX_OUTPUT_BYTES = 1024  # S3 allows 1024-byte keys; PATH_MAX leaves room for the root
MAX_STEM = 60  # characters of each input's stem in an automatic output name
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JOINERS = "\u200c\u200d"  # ZWNJ, ZWJ: inside Persian and Indic words and emoji sequences
_EMOJI_TAGS = range(0xE0020, 0xE0080)  # the tags of subdivision flags (England, Scotland, Wales)


class UriError(StyleError):
    """A URI that names no usable location: an unknown scheme, another host, no bucket."""


@dataclass(frozen=True)
class S3Location:
    """An object (or a prefix) in a bucket."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return show(f"s3://{self.bucket}/{self.key}")


Location = S3Location | str  # a str is a local path


def scheme(text: str) -> str | None:
    """The URI scheme of `text`, lower-case ('s3', 'file', …), or None for a plain path."""
    match = _SCHEME.match(text)
    return match[1].lower() if match else None


def locate(uri: Uri) -> Location:
    """The S3 location or the local path that `uri` names; UriError when it names neither."""
    text = os.fspath(uri)
    kind = scheme(text)
    if kind is None:
        return text
    if kind == "s3":
        bucket, _, key = text[_SCHEME.match(text).end() :].partition("/")
        if not bucket:
            raise UriError(f"{show(text)}: names no bucket")
        return S3Location(bucket, key)
    if kind == "file":
        try:
            return _file_path(text)
        except ValueError:
            raise UriError(f"{show(text)}: file:// URIs must name a local path") from None
    raise UriError(
        f"{show(text)}: unsupported URI scheme '{_SCHEME.match(text)[1]}' (use a path or s3://)"
    )


def is_s3(uri: Uri) -> bool:
    """Whether `uri` is an s3:// URI."""
    return scheme(os.fspath(uri)) == "s3"


def join(base: Uri, *parts: str) -> str:
    """`base` with `parts` appended; parts are relative even when they start with '/'."""
    where = locate(base)
    relative = [p.lstrip("/") for p in parts if p.lstrip("/")]
    if isinstance(where, str):
        return os.path.join(where, *relative)
    return "/".join([f"s3://{where.bucket}", *filter(None, [where.key.strip("/")]), *relative])


def parent(uri: Uri) -> str:
    """The folder or prefix holding `uri` (no trailing '/'; a bucket's root is s3://bucket)."""
    where = locate(uri)
    if isinstance(where, str):
        return os.path.dirname(where.rstrip("/") or "/")
    head = where.key.rstrip("/").rpartition("/")[0]
    return f"s3://{where.bucket}/{head}" if head else f"s3://{where.bucket}"


def name(uri: Uri) -> str:
    """The last component of `uri` (a bucket's root: the bucket); any scheme, as it is only text."""
    try:
        where = locate(uri)
    except UriError:  # e.g. ftp:// in a manifest row that failed: still a name to show
        return os.fspath(uri).rstrip("/").rpartition("/")[2]
    if isinstance(where, str):
        return os.path.basename(where.rstrip("/"))
    return where.key.rstrip("/").rpartition("/")[2] or where.bucket


def stem(uri: str) -> str:
    """A file name's stem, made safe and short for use in another file name."""
    base = posixpath.splitext(posixpath.basename(uri.rstrip("/")))[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip(".-")
    return safe[:MAX_STEM] or "image"


def sidecar_of(output: str) -> str:
    """OUT.png → OUT.json, beside it (also for s3:// URIs): where an output's sidecar is."""
    return posixpath.splitext(output)[0] + ".json"


def absolute(uri: str) -> str:
    """Local paths made absolute (a flow may run elsewhere); URIs as they are."""
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def show(text: Uri, limit: int = 300) -> str:
    """`text` on one line and of bounded length, for messages: a long one keeps its end (the file's
    name) and loses its middle."""
    text = os.fspath(text)
    if len(text) > limit:
        text = text[: limit // 2] + "…" + text[-(limit // 2) :]
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def short(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters, for quoting a user's value in a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- references in a manifest ----------------------------------------------------------------


def resolve(ref: str, base: str) -> str:
    """`ref` as an absolute local path or s3:// URI, relative ones taken from `base`;
    ValueError naming what is wrong with it."""
    if _CONTROL.search(ref):
        raise ValueError(f"{short(ref)!r} contains a control character")
    kind = scheme(ref)
    if kind == "s3":
        return _s3_uri(ref[_SCHEME.match(ref).end() :])
    if kind == "file":
        return os.path.normpath(_file_path(ref))
    if kind:
        raise ValueError(
            f"unsupported URI scheme '{_SCHEME.match(ref)[1]}' in {short(ref)!r} "
            "(use a path or s3://)"
        )
    local = os.path.expanduser(ref)
    if scheme(base) and not os.path.isabs(local):  # a pure string operation, no listing
        bucket, _, prefix = resolve(base, "/").removeprefix("s3://").partition("/")
        return _s3_uri(bucket + posixpath.normpath(posixpath.join("/", prefix, ref)))
    return os.path.normpath(os.path.join(base, local))


def base_of(source: str) -> str:
    """The directory or s3:// prefix that a manifest's relative paths resolve against."""
    where = resolve(source, os.getcwd())
    if where.startswith("s3://"):
        return where.rsplit("/", 1)[0] + "/"
    return os.path.dirname(where)


def _s3_uri(rest: str) -> str:
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ValueError(f"'s3://{short(rest)}' needs a bucket and a key")
    return f"s3://{bucket}/{key}"


def _file_path(ref: str) -> str:
    parts = urllib.parse.urlsplit(ref)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{short(ref)!r} names another host; file:// URIs must be local")
    return urllib.parse.unquote(parts.path)


# --- output names ----------------------------------------------------------------------------


def safe_output_name(text: str) -> str:
    """`text` as a relative path inside the output root ('/' separated); ValueError if it leaves."""
    shown = short(text)
    hidden = _hidden(text)
    if hidden and unicodedata.category(hidden) != "Cf":
        raise ValueError(f"{shown!r} contains a control character")
    if hidden:
        what = f"U+{ord(hidden):04X} {unicodedata.name(hidden, 'FORMAT CHARACTER')}"
        raise ValueError(f"{shown!r} contains {what}, invisible: it would look like another name")
    if scheme(text):
        raise ValueError(f"{shown!r} is a URI; outputs are paths relative to the output root")
    path = text.replace("\\", "/")  # a backslash is a separator to Windows and to S3 consoles
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        raise ValueError(f"{shown!r} is absolute; outputs are relative to the output root")
    if path.startswith("~"):
        raise ValueError(f"{shown!r} starts with '~'; outputs are relative to the output root")
    parts = [p for p in path.split("/") if p != "."]
    if ".." in parts:
        raise ValueError(f"{shown!r} has a '..' component; outputs stay inside the output root")
    if not parts or "" in parts:
        raise ValueError(f"{shown!r} has an empty component")
    return _with_suffix("/".join(parts), shown)


def _hidden(text: str) -> str | None:
    """The first character of `text` that shows as nothing or breaks a line, or None: controls
    (C0, DEL, C1), line and paragraph separators, format characters (bidi marks and overrides,
    zero-width spaces, BOMs, soft hyphens), except a joiner between two non-ASCII characters and
    the tags of emoji flags."""
    for i, c in enumerate(text):
        kind = unicodedata.category(c)
        if kind in ("Cc", "Zl", "Zp"):
            return c
        if kind == "Cf" and ord(c) not in _EMOJI_TAGS and not _joins(text, i):
            return c
    return None


def _joins(text: str, i: int) -> bool:
    """Whether text[i] is a joiner between two non-ASCII characters (a Persian word, an emoji)."""
    inside = 0 < i < len(text) - 1
    return text[i] in _JOINERS and inside and not (text[i - 1].isascii() or text[i + 1].isascii())


def _with_suffix(path: str, shown: str) -> str:
    suffix = PurePosixPath(path).suffix
    if not suffix:
        path += ".png"
    elif suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"{shown!r} has suffix '{suffix}'; use {', '.join(OUTPUT_SUFFIXES)}")
    longest = max(len(p.encode()) for p in path.split("/"))
    if longest > MAX_COMPONENT_BYTES:
        raise ValueError(f"{shown!r} has a {longest}-byte component; at most {MAX_COMPONENT_BYTES}")
    if len(path.encode()) > MAX_OUTPUT_BYTES:
        raise ValueError(f"{shown!r} is {len(path.encode())} bytes; at most {MAX_OUTPUT_BYTES}")
    return path


# --- the style cell: a.png:0.7;b.png:0.3 ----------------------------------------------------


def split_weight(item: str) -> tuple[str, str | None]:
    """'a.png:0.7' → ('a.png', '0.7'); 'a.png' → ('a.png', None). A weight is a number after
    the last colon (s3:// has a colon too)."""
    head, colon, tail = item.strip().rpartition(":")
    if colon and head and _NUMBER.fullmatch(tail.strip()):
        return head.strip(), tail.strip()
    return item.strip(), None


def is_number(text: str) -> bool:
    """Whether `text` is written as a plain decimal number (a blend weight)."""
    return bool(_NUMBER.fullmatch(text))


def style_cell(styles: list[tuple[str, float | None]]) -> str:
    """Styles as one manifest cell: a.jpg;b.jpg or a.jpg:0.7;b.jpg:0.3 (weights exact)."""
    return ";".join(uri if weight is None else f"{uri}:{weight!r}" for uri, weight in styles)
