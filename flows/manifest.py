"""Manifests: CSV, JSON Lines or YAML rows of content/style pairs, every row validated up front.

A row has ``content``, ``style`` (alias ``styles``), an optional ``output`` (relative to the output
root; ``.png`` is added when it has no suffix) and any option of ``StyleOptions`` by name. In CSV
several styles are ``a.jpg;b.jpg`` and blend weights ``a.jpg:0.7;b.jpg:0.3``; in JSON and YAML
``style`` may also be a list of such strings or of ``{path: a.jpg, weight: 0.7}``. Blank cells and
nulls mean "not set". Relative paths resolve against the manifest's own directory or s3:// prefix.

A YAML manifest is a list of rows, or a mapping of ``defaults``, ``pairs`` and ``cross`` blocks::

    defaults: {iterations: 200, size: 384}    # options for every row
    pairs:                                    # rows 1 and 2
      - {content: cat.jpg, style: [starry.jpg:0.7, wave.jpg:0.3], output: cat.png}
      - {content: dog.jpg, style: wave.jpg, style_weight: 1000}
    cross:                                    # rows 3…: each content × each style, one style a pair
      - contents: [photos/*.jpg]
        styles: [styles/*.jpg, extra/scream.png]
        tv_weight: 10                         # options for this block's pairs

Top-level ``contents:`` and ``styles:`` are shorthand for one more ``cross`` block.
"""

from __future__ import annotations

import csv
import glob as globbing
import io
import json
import os
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from stylecore.errors import OptionsError, StyleError
from stylecore.options import StyleOptions, option_names, suggest

OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
ROW_FIELDS = ("content", "style", "styles", "output")
KNOWN_FIELDS = ROW_FIELDS + option_names()
PATH_OPTIONS = ("weights", "init")  # options that may name a file, relative to the manifest
_INIT_WORDS = ("content", "noise")  # `init` values that are not files
MAX_COMPONENT_BYTES = 255  # NAME_MAX on ext4, xfs, apfs
MAX_OUTPUT_BYTES = 1024  # S3 allows 1024-byte keys; PATH_MAX leaves room for the root
_FORMATS = {
    "csv": "csv",
    "tsv": "tsv",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "yaml": "yaml",
    "yml": "yaml",
}
_YAML_KEYS = ("defaults", "pairs", "cross", "contents", "styles")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_OPTION_MESSAGE = re.compile(r"option ((?:'\w+'/?)+): (.*)")
Glob = Callable[[str], list[str]]  # a pattern to its matches, sorted


@dataclass(frozen=True)
class StyleRef:
    """One style image of a pair and its blend weight."""

    uri: str  # absolute local path or s3://bucket/key
    weight: float | None  # None: equal weights


@dataclass(frozen=True)
class Pair:
    """One valid row: what to stylize with what, and how."""

    row: int  # CSV/JSONL: line number (CSV header = 1); YAML: 1-based entry, cross pairs after
    content: str
    styles: tuple[StyleRef, ...]
    output: str | None  # relative to the output root; None: an automatic name
    options: StyleOptions  # run defaults ← YAML defaults ← the row's own values
    overrides: dict[str, Any]  # YAML defaults and the row's own option values, as written
    raw: dict[str, Any]  # the row as written


@dataclass(frozen=True)
class RowError:
    """One invalid row; `message` is one line starting with 'row N: '."""

    row: int
    field: str | None
    message: str
    raw: dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """Every row of a manifest, valid ones as pairs and the rest as errors."""

    source: str
    pairs: tuple[Pair, ...]
    errors: tuple[RowError, ...]
    base: str = ""  # the directory or s3:// prefix relative paths resolve against
    defaults: dict[str, Any] = field(default_factory=dict)  # YAML `defaults:`, as written


class ManifestError(StyleError):
    """The whole manifest is unusable: unreadable, malformed, or without rows."""


class _RowInvalid(Exception):
    """A row's problem: the field it concerns and the text after 'row N: '."""

    def __init__(self, field: str | None, text: str) -> None:
        super().__init__(text)
        self.field, self.text = field, text


def _bad(name: str, cause: str) -> _RowInvalid:
    return _RowInvalid(name, f"{name}: {cause}")


@dataclass(frozen=True)
class _Entry:
    """A row as read, before validation; `problem` is set when reading it already failed."""

    row: int
    raw: dict[str, Any]
    problem: _RowInvalid | None = None


@dataclass(frozen=True)
class _Context:
    base: str
    defaults: dict[str, Any]  # YAML defaults, as written
    options: StyleOptions  # run defaults ← YAML defaults


# --- locations -------------------------------------------------------------------------------


def local_glob(pattern: str) -> list[str]:
    """Files matching a local pattern (`**` recurses), sorted."""
    return sorted(p for p in globbing.glob(pattern, recursive=True) if os.path.isfile(p))


def local_read_text(source: str) -> str:
    """The UTF-8 text of a local file."""
    return Path(source).read_text(encoding="utf-8")


def resolve(ref: str, base: str) -> str:
    """`ref` as an absolute local path or s3:// URI, relative ones taken from `base`."""
    if any(ord(c) < 32 or ord(c) == 127 for c in ref):
        raise ValueError(f"{_short(ref)!r} contains a control character")
    scheme = _SCHEME.match(ref)
    if scheme and scheme[1].lower() == "s3":
        return _s3_uri(ref[len(scheme[0]) :])
    if scheme and scheme[1].lower() == "file":
        return _file_path(ref)
    if scheme:
        raise ValueError(
            f"unsupported URI scheme '{scheme[1]}' in {_short(ref)!r} (use a path or s3://)"
        )
    local = os.path.expanduser(ref)
    if _SCHEME.match(base) and not os.path.isabs(local):  # a pure string operation, no listing
        bucket, _, prefix = resolve(base, "/").removeprefix("s3://").partition("/")
        return _s3_uri(bucket + posixpath.normpath(posixpath.join("/", prefix, ref)))
    return os.path.normpath(os.path.join(base, local))


def _s3_uri(rest: str) -> str:
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ValueError(f"'s3://{_short(rest)}' needs a bucket and a key")
    return f"s3://{bucket}/{key}"


def _file_path(ref: str) -> str:
    parts = urllib.parse.urlsplit(ref)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{_short(ref)!r} names another host; file:// URIs must be local")
    return os.path.normpath(urllib.parse.unquote(parts.path))


def manifest_base(source: str) -> str:
    """The directory or s3:// prefix that a manifest's relative paths resolve against."""
    uri = resolve(source, os.getcwd())
    if uri.startswith("s3://"):
        return uri.rsplit("/", 1)[0] + "/"
    return os.path.dirname(uri)


def safe_output_name(name: str) -> str:
    """`name` as a relative path inside the output root ('/' separated); ValueError if it leaves."""
    shown = _short(name)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"{shown!r} contains a control character")
    if _SCHEME.match(name):
        raise ValueError(f"{shown!r} is a URI; outputs are paths relative to the output root")
    path = name.replace("\\", "/")  # a backslash is a separator to Windows and to S3 consoles
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


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- reading ---------------------------------------------------------------------------------


def load_manifest(
    source: str,
    defaults: StyleOptions,
    read_text: Callable[[str], str] = local_read_text,
    glob: Glob = local_glob,
    *,
    fmt: str | None = None,
) -> Manifest:
    """Read and parse the manifest at `source`; ManifestError when it cannot be read."""
    where = source
    try:
        where = resolve(source, os.getcwd())
        text = read_text(where)
    except (OSError, ValueError, StyleError) as exc:  # UnicodeDecodeError is a ValueError
        cause = _one_line(exc).removeprefix(f"{where}: ").removeprefix(f"{source}: ")
        raise ManifestError(f"{source}: cannot read the manifest: {cause}") from exc
    return parse_manifest(text, source, defaults, fmt=fmt, glob=glob)


def parse_manifest(
    text: str,
    source: str,
    defaults: StyleOptions,
    *,
    fmt: str | None = None,
    glob: Glob = local_glob,
) -> Manifest:
    """Every row of a manifest's text, validated; ManifestError when the whole is unusable."""
    kind = _format(source, fmt)
    try:
        base = manifest_base(source)
    except ValueError as exc:
        raise ManifestError(f"{source}: {exc}") from exc
    text = text.removeprefix("\ufeff")  # Excel and Notepad write a BOM
    yaml_defaults: dict[str, Any] = {}
    if kind == "yaml":
        entries, yaml_defaults = _yaml_entries(_yaml_document(text, source), source, base, glob)
    elif kind == "jsonl":
        entries = _jsonl_entries(text)
    else:
        entries = _csv_entries(text, "\t" if kind == "tsv" else _sniff(text), source)
    yaml_defaults = _option_paths(yaml_defaults, base)
    ctx = _Context(base, yaml_defaults, _defaults_options(yaml_defaults, defaults, source))
    if not entries:
        raise ManifestError(f"{source}: the manifest has no rows")
    pairs, errors = _validate(entries, ctx)
    return Manifest(source, tuple(pairs), tuple(errors), base, yaml_defaults)


def _format(source: str, fmt: str | None) -> str:
    name = (fmt or posixpath.splitext(source.lower())[1]).lstrip(".").lower()
    if name not in _FORMATS:
        known = ", ".join(f".{k}" for k in _FORMATS)
        raise ManifestError(f"{source}: unknown manifest format '{name}' (use {known})")
    return _FORMATS[name]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _defaults_options(values: dict[str, Any], run: StyleOptions, source: str) -> StyleOptions:
    for name in values:
        if name not in option_names():
            hint = suggest(name, option_names())
            raise ManifestError(f"{source}: defaults: unknown option '{name}'{hint}")
    try:
        return StyleOptions.from_dict(_set(values), run)
    except OptionsError as exc:
        raise ManifestError(f"{source}: defaults: {_options_problem(exc).text}") from exc


def _option_paths(values: dict[str, Any], base: str) -> dict[str, Any]:
    """Options naming files (`weights`, an `init` image) made absolute like content and style.

    Only for a local manifest: weights and init images are files on the worker, so in an s3://
    manifest they stay as written (absolute, or relative to the worker's directory).
    """
    if base.startswith("s3://"):
        return values
    resolved = dict(values)
    for name in PATH_OPTIONS:
        if name in values and str(values[name]).strip() not in _INIT_WORDS:
            resolved[name] = _absolute(values[name], base)  # an unresolvable one stays as written
    return resolved


def _set(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not _blank(v)}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# --- CSV -------------------------------------------------------------------------------------


def _sniff(text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _csv_entries(text: str, delimiter: str, source: str) -> list[_Entry]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        columns = _csv_header(reader, source)
        entries, start = [], reader.line_num + 1
        for cells in reader:
            row, start = start, reader.line_num + 1  # a quoted cell may span lines
            if any(c.strip() for c in cells):
                entries.append(_csv_entry(row, columns, cells))
    except csv.Error as exc:
        raise ManifestError(f"{source}: line {reader.line_num}: {exc}") from exc
    return entries


def _csv_header(reader: Iterable[list[str]], source: str) -> list[str]:
    header = next((cells for cells in reader if any(c.strip() for c in cells)), [])
    columns = [c.strip() for c in header]
    while columns and not columns[-1]:  # spreadsheets add trailing empty columns
        columns.pop()
    _check_header(columns, source)
    return columns


def _check_header(columns: list[str], source: str) -> None:
    if columns and not set(columns) & set(KNOWN_FIELDS):
        raise ManifestError(
            f"{source}: the first line must name the columns (content, style, output, options…); "
            f"got {_short(','.join(columns))!r}"
        )
    for number, name in enumerate(columns, 1):
        if not name:
            raise ManifestError(f"{source}: column {number} of the header has no name")
        if name not in KNOWN_FIELDS:
            hint = suggest(name, KNOWN_FIELDS)
            raise ManifestError(f"{source}: unknown column '{_short(name)}'{hint}")
        if columns.index(name) != number - 1:
            raise ManifestError(f"{source}: column '{name}' appears twice in the header")
    if columns and "content" not in columns:
        raise ManifestError(f"{source}: the header has no 'content' column")
    if columns and not {"style", "styles"} & set(columns):
        raise ManifestError(f"{source}: the header has no 'style' column")


def _csv_entry(row: int, columns: list[str], cells: list[str]) -> _Entry:
    raw = dict(zip(columns, (c.strip() for c in cells), strict=False))
    if any(c.strip() for c in cells[len(columns) :]):
        text = f"{len(cells)} cells but the header has {len(columns)} columns"
        return _Entry(row, raw, _RowInvalid(None, text))
    return _Entry(row, raw)


# --- JSON Lines and YAML ---------------------------------------------------------------------


def _jsonl_entries(text: str) -> list[_Entry]:
    entries = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is valid JSON
        if line.strip():
            entries.append(_json_entry(number, line))
    return entries


def _json_entry(row: int, line: str) -> _Entry:
    try:
        value = json.loads(line, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        return _Entry(
            row, {}, _RowInvalid(None, f"not valid JSON: {exc.msg} at column {exc.colno}")
        )
    except _RowInvalid as exc:
        return _Entry(row, {}, exc)
    return _mapping_entry(row, value, "a JSON object")


def _unique_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in items:
        if key in seen:
            raise _bad(key, "given twice")
        seen[key] = value
    return seen


def _mapping_entry(row: int, value: Any, expected: str) -> _Entry:
    if not isinstance(value, dict):
        return _Entry(row, {}, _RowInvalid(None, f"expected {expected}, got {_kind(value)}"))
    return _Entry(row, {str(k): v for k, v in value.items()})


def _kind(value: Any) -> str:
    names = {list: "a list", dict: "a mapping", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _yaml_document(text: str, source: str) -> Any:
    try:
        doc = yaml.safe_load(text)  # safe_load: a manifest never builds Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        cause = getattr(exc, "problem", None) or exc
        raise ManifestError(f"{source}: not valid YAML{where}: {_one_line(cause)}") from exc
    if doc is not None and not isinstance(doc, list | dict):
        raise ManifestError(f"{source}: expected a list of rows or a mapping, got {_kind(doc)}")
    return doc


def _yaml_defaults(doc: dict[Any, Any], source: str) -> dict[str, Any]:
    for key in doc:
        if key not in _YAML_KEYS:
            hint = suggest(str(key), _YAML_KEYS)
            raise ManifestError(f"{source}: unknown top-level key '{key}'{hint}")
    values = doc.get("defaults") or {}
    if not isinstance(values, dict):
        raise ManifestError(f"{source}: defaults: expected a mapping of options")
    return {str(k): v for k, v in values.items()}


def _yaml_entries(doc: Any, source: str, base: str, glob: Glob) -> tuple[list[_Entry], dict]:
    """The rows of a YAML document, and its `defaults:`."""
    if not isinstance(doc, dict):
        return _list_entries(doc or [], source, "rows"), {}
    defaults = _yaml_defaults(doc, source)
    entries = _list_entries(doc.get("pairs") or [], source, "pairs")
    blocks = doc.get("cross") or []
    blocks = [blocks] if isinstance(blocks, dict) else blocks
    if not isinstance(blocks, list):
        raise ManifestError(f"{source}: cross: expected a list of blocks")
    if "contents" in doc or "styles" in doc:
        blocks = [*blocks, {"contents": doc.get("contents"), "styles": doc.get("styles")}]
    for block in blocks:
        entries += _cross_entries(block, len(entries) + 1, source, base, glob)
    return entries, defaults


def _list_entries(items: Any, source: str, name: str) -> list[_Entry]:
    if not isinstance(items, list):
        raise ManifestError(f"{source}: {name}: expected a list of rows, got {_kind(items)}")
    return [_mapping_entry(n, item, "a mapping of fields") for n, item in enumerate(items, 1)]


def _cross_entries(block: Any, first: int, source: str, base: str, glob: Glob) -> list[_Entry]:
    if not isinstance(block, dict):
        raise ManifestError(
            f"{source}: cross: each block is a mapping of contents, styles, options"
        )
    if "output" in block:
        raise ManifestError(
            f"{source}: cross: a block cannot set 'output' (each pair needs its own)"
        )
    options = {str(k): v for k, v in block.items() if k not in ("contents", "styles")}
    found: dict[str, list[str]] = {}
    problems: list[_RowInvalid] = []
    for key in ("contents", "styles"):
        try:
            found[key] = _expand(block.get(key), key, base, glob)
        except _RowInvalid as exc:
            problems.append(exc)
    if problems:  # each failed pattern takes a row number so its message can name one
        return [_Entry(first + i, {}, p) for i, p in enumerate(problems)]
    rows = [
        {"content": c, "style": s, **options} for c in found["contents"] for s in found["styles"]
    ]
    return [_Entry(first + i, raw) for i, raw in enumerate(rows)]


def _expand(patterns: Any, key: str, base: str, glob: Glob) -> list[str]:
    """Paths and glob matches (resolved against `base`), without repeats; a dud glob is an error."""
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(patterns, list) or not patterns or any(type(p) is not str for p in patterns):
        raise _bad(key, "expected a list of paths or globs")
    found: list[str] = []
    for pattern in patterns:
        try:
            resolved = resolve(pattern, base)
        except ValueError as exc:
            raise _bad(key, str(exc)) from exc
        matches = glob(resolved) if globbing.has_magic(pattern) else [resolved]
        if not matches:
            raise _bad(key, f"{pattern!r} matches nothing")
        found += [m for m in matches if m not in found]  # overlapping globs are not duplicates
    return found


# --- validation ------------------------------------------------------------------------------


def _validate(entries: list[_Entry], ctx: _Context) -> tuple[list[Pair], list[RowError]]:
    pairs, errors = [], []
    seen: dict[tuple[Any, ...], int] = {}
    outputs: dict[str, int] = {}
    for entry in entries:
        try:
            if entry.problem:
                raise entry.problem
            pair = _pair(entry, ctx)
            _check_unique(pair, seen, outputs)
        except _RowInvalid as exc:
            message = f"row {entry.row}: {exc.text}"
            errors.append(RowError(entry.row, exc.field, message, entry.raw))
        else:
            pairs.append(pair)
    return pairs, errors


def _pair(entry: _Entry, ctx: _Context) -> Pair:
    raw = entry.raw
    for name in raw:
        if name not in KNOWN_FIELDS:
            raise _RowInvalid(name, f"unknown field '{_short(name)}'{suggest(name, KNOWN_FIELDS)}")
    content = _content(raw.get("content"), ctx.base)
    styles = _styles(*_style_field(raw), ctx.base)
    output = _output(raw.get("output"))
    own = _option_paths(_set({k: v for k, v in raw.items() if k not in ROW_FIELDS}), ctx.base)
    options = _options(own, styles, ctx.options)
    overrides = {**_set(ctx.defaults), **own}
    return Pair(entry.row, content, styles, output, options, overrides, raw)


def _content(value: Any, base: str) -> str:
    if _blank(value):
        raise _bad("content", "missing")
    if not isinstance(value, str):
        raise _bad("content", f"expected a path, got {_kind(value)}")
    try:
        return resolve(value.strip(), base)
    except ValueError as exc:
        raise _bad("content", str(exc)) from exc


def _style_field(raw: dict[str, Any]) -> tuple[str, Any]:
    if not _blank(raw.get("style")) and not _blank(raw.get("styles")):
        raise _bad("styles", "give 'style' or 'styles', not both")
    name = "styles" if _blank(raw.get("style")) and "styles" in raw else "style"
    return name, raw.get(name)


def _styles(name: str, value: Any, base: str) -> tuple[StyleRef, ...]:
    refs = []
    for path, weight in _style_items(name, value):
        try:
            refs.append(StyleRef(resolve(path, base), weight))
        except ValueError as exc:
            raise _bad(name, str(exc)) from exc
    if not refs:
        raise _bad(name, "no style given")
    weights = [r.weight for r in refs if r.weight is not None]
    if weights and len(weights) != len(refs):
        raise _bad(name, "give a blend weight for every style or for none")
    if weights and sum(weights) <= 0:
        raise _bad(name, "the blend weights sum to zero")
    return tuple(refs)


def _style_items(name: str, value: Any) -> list[tuple[str, float | None]]:
    """(path, weight) of each style in a cell 'a.jpg:0.7;b.jpg', a list, or {path, weight}."""
    if _blank(value):
        return []
    items = value.split(";") if isinstance(value, str) else value
    items = [items] if isinstance(items, dict) else items
    if not isinstance(items, list):
        raise _bad(name, f"expected a path or a list of paths, got {_kind(value)}")
    return [_style_item(name, item) for item in items if not _blank(item)]


def _style_item(name: str, item: Any) -> tuple[str, float | None]:
    if isinstance(item, str):
        head, colon, tail = item.strip().rpartition(":")  # the last colon: s3:// has one too
        if colon and head and _NUMBER.fullmatch(tail.strip()):
            return head.strip(), _weight(name, tail)
        return item.strip(), None
    if not isinstance(item, dict):
        raise _bad(name, f"expected a path or {{path, weight}}, got {_kind(item)}")
    for key in item:
        if key not in ("path", "weight"):
            raise _bad(name, f"unknown key '{key}'{suggest(str(key), ('path', 'weight'))}")
    path = item.get("path")
    if _blank(path) or not isinstance(path, str):
        raise _bad(name, "each {path, weight} needs a path")
    weight = None if _blank(item.get("weight")) else _weight(name, item["weight"])
    return path.strip(), weight


def _weight(name: str, value: Any) -> float:
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise _bad(name, f"blend weight must be a number, got {_kind(value)}")
    if isinstance(text, str) and not _NUMBER.fullmatch(text):
        raise _bad(name, f"blend weight must be a number, got {text!r}")
    weight = float(text)
    if not weight >= 0:  # also NaN
        raise _bad(name, f"blend weight must be ≥ 0, got {weight}")
    return weight


def _output(value: Any) -> str | None:
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise _bad("output", f"expected a relative path, got {_kind(value)}")
    try:
        return safe_output_name(value.strip())
    except ValueError as exc:
        raise _bad("output", str(exc)) from exc


def _options(own: dict[str, Any], styles: tuple[StyleRef, ...], base: StyleOptions) -> StyleOptions:
    values = dict(own)
    if styles[0].weight is not None:
        if "style_blend" in own:
            raise _bad("style_blend", "blend weights are already given in 'style'")
        values["style_blend"] = tuple(s.weight for s in styles)
    try:
        options = StyleOptions.from_dict(values, base)
    except OptionsError as exc:
        raise _options_problem(exc) from exc
    if options.style_blend and len(options.style_blend) != len(styles):
        n, m = len(options.style_blend), len(styles)
        raise _bad("style_blend", f"{n} weights for {m} style{'s' * (m > 1)}")
    return options


def _options_problem(exc: OptionsError) -> _RowInvalid:
    """An OptionsError as 'name: cause', naming the option as a field."""
    match = _OPTION_MESSAGE.fullmatch(str(exc))
    if not match:
        return _RowInvalid(None, str(exc))
    names = re.findall(r"'(\w+)'", match[1])
    return _RowInvalid(names[0], f"{'/'.join(names)}: {match[2]}")


def _check_unique(pair: Pair, seen: dict[tuple[Any, ...], int], outputs: dict[str, int]) -> None:
    key = (pair.content, pair.styles, pair.output, pair.options)
    if key in seen:
        raise _RowInvalid(None, f"duplicate of row {seen[key]}")
    if pair.output in outputs:
        raise _bad(
            "output", f"'{_short(pair.output)}' is already the output of row {outputs[pair.output]}"
        )
    seen[key] = pair.row
    if pair.output:
        outputs[pair.output] = pair.row


# --- writing back ----------------------------------------------------------------------------


def pair_row(pair: Pair) -> dict[str, Any]:
    """A valid pair as a manifest row with absolute URIs, for failed_rows_csv."""
    style = ";".join(_weighted(s.uri, s.weight) for s in pair.styles)
    return {"content": pair.content, "style": style, "output": pair.output, **pair.overrides}


def error_row(error: RowError, manifest: Manifest) -> dict[str, Any]:
    """An invalid row as written, its paths made absolute where they can be, for failed_rows_csv."""
    raw = error.raw
    own = _option_paths({k: v for k, v in raw.items() if k not in ROW_FIELDS}, manifest.base)
    row = {**_set(manifest.defaults), **own}
    row["content"] = _absolute(raw.get("content"), manifest.base)
    row["output"] = raw.get("output")
    value = raw.get("styles") if _blank(raw.get("style")) else raw.get("style")
    row["style"] = _style_text(value, manifest.base)
    return row


def _style_text(value: Any, base: str | None = None) -> Any:
    """A style value as one CSV cell 'a.jpg:0.7;b.jpg', its paths made absolute against `base`."""
    try:
        items = _style_items("style", value)
    except _RowInvalid:
        return value  # unreadable as written; kept for the user to fix
    return ";".join(_weighted(_absolute(p, base) if base else p, w) for p, w in items)


def _absolute(value: Any, base: str) -> Any:
    try:
        return resolve(value.strip(), base) if isinstance(value, str) and value.strip() else value
    except ValueError:
        return value


def _weighted(uri: str, weight: float | None) -> str:
    return uri if weight is None else f"{uri}:{weight!r}"


def failed_rows_csv(rows: list[dict[str, Any]]) -> str:
    """A CSV manifest of `rows` (from pair_row / error_row) that can be run as it is."""
    columns = ["content", "style", "output"]
    rows = [_with_style_cell(row) for row in rows]
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(row.get(k)) for k in columns] for row in rows)
    return out.getvalue()


def _with_style_cell(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its style (or `styles` alias) as one `style` cell."""
    if "styles" in row and _blank(row.get("style")):
        row = {k: v for k, v in row.items() if k != "style"}
        row["style"] = row.pop("styles")
    return {**row, "style": _style_text(row.get("style"))}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    return str(value)
