"""Reading a manifest's text into entries: CSV (or TSV), JSON Lines or YAML, before validation.

An entry is a row as written (`raw`), or the problem that kept it from being read; validate.py
turns entries into pairs or row errors. YAML's `cross:` blocks expand their globs here, so each
pair of a cross block is an entry of its own.
"""

from __future__ import annotations

import csv
import glob as globbing
import io
import json
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from flows.uri import resolve, short
from stylecore.errors import StyleError
from stylecore.options import option_names, suggest

ROW_FIELDS = ("content", "style", "styles", "output")
KNOWN_FIELDS = ROW_FIELDS + option_names()
_FORMATS = {
    "csv": "csv",
    "tsv": "tsv",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "yaml": "yaml",
    "yml": "yaml",
}
_YAML_KEYS = ("defaults", "pairs", "cross", "contents", "styles")
Glob = Callable[[str], list[str]]  # a pattern to its matches, sorted


class ManifestError(StyleError):
    """The whole manifest is unusable: unreadable, malformed, or without rows."""


class RowInvalid(Exception):
    """A row's problem: the field it concerns and the text after 'row N: '."""

    def __init__(self, field: str | None, text: str) -> None:
        super().__init__(text)
        self.field, self.text = field, text


def bad(name: str, cause: str) -> RowInvalid:
    """A problem with field `name`: 'name: cause'."""
    return RowInvalid(name, f"{name}: {cause}")


@dataclass(frozen=True)
class Entry:
    """A row as read, before validation; `problem` is set when reading it already failed."""

    row: int
    raw: dict[str, Any]
    problem: RowInvalid | None = None


def format_of(source: str, fmt: str | None) -> str:
    """'csv', 'tsv', 'jsonl' or 'yaml', from `fmt` or the source's suffix."""
    name = (fmt or posixpath.splitext(source.lower())[1]).lstrip(".").lower()
    if name not in _FORMATS:
        known = ", ".join(f".{k}" for k in _FORMATS)
        raise ManifestError(f"{source}: unknown manifest format '{name}' (use {known})")
    return _FORMATS[name]


def entries(
    text: str, kind: str, source: str, base: str, glob: Glob
) -> tuple[list[Entry], dict[str, Any]]:
    """The rows of a manifest's text as entries, and its YAML `defaults:` as written."""
    text = text.removeprefix("\ufeff")  # Excel and Notepad write a BOM
    if kind == "yaml":
        return _yaml_entries(_yaml_document(text, source), source, base, glob)
    if kind == "jsonl":
        return _jsonl_entries(text), {}
    return _csv_entries(text, "\t" if kind == "tsv" else _sniff(text), source), {}


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def blank(value: Any) -> bool:
    """Whether a cell or value means "not set": None, or only white space."""
    return value is None or (isinstance(value, str) and not value.strip())


def kind_of(value: Any) -> str:
    """What a value is, in a user's words ("a list", "text")."""
    names = {list: "a list", dict: "a mapping", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


# --- CSV -------------------------------------------------------------------------------------


def _sniff(text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _csv_entries(text: str, delimiter: str, source: str) -> list[Entry]:
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
            f"got {short(','.join(columns))!r}"
        )
    for number, name in enumerate(columns, 1):
        if not name:
            raise ManifestError(f"{source}: column {number} of the header has no name")
        if name not in KNOWN_FIELDS:
            hint = suggest(name, KNOWN_FIELDS)
            raise ManifestError(f"{source}: unknown column '{short(name)}'{hint}")
        if columns.index(name) != number - 1:
            raise ManifestError(f"{source}: column '{name}' appears twice in the header")
    if columns and "content" not in columns:
        raise ManifestError(f"{source}: the header has no 'content' column")
    if columns and not {"style", "styles"} & set(columns):
        raise ManifestError(f"{source}: the header has no 'style' column")


def _csv_entry(row: int, columns: list[str], cells: list[str]) -> Entry:
    raw = dict(zip(columns, (c.strip() for c in cells), strict=False))
    if any(c.strip() for c in cells[len(columns) :]):
        text = f"{len(cells)} cells but the header has {len(columns)} columns"
        return Entry(row, raw, RowInvalid(None, text))
    return Entry(row, raw)


# --- JSON Lines and YAML ---------------------------------------------------------------------


def _jsonl_entries(text: str) -> list[Entry]:
    entries = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is valid JSON
        if line.strip():
            entries.append(_json_entry(number, line))
    return entries


def _json_entry(row: int, line: str) -> Entry:
    try:
        value = json.loads(line, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        return Entry(row, {}, RowInvalid(None, f"not valid JSON: {exc.msg} at column {exc.colno}"))
    except RowInvalid as exc:
        return Entry(row, {}, exc)
    return _mapping_entry(row, value, "a JSON object")


def _unique_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in items:
        if key in seen:
            raise bad(key, "given twice")
        seen[key] = value
    return seen


def _mapping_entry(row: int, value: Any, expected: str) -> Entry:
    if not isinstance(value, dict):
        return Entry(row, {}, RowInvalid(None, f"expected {expected}, got {kind_of(value)}"))
    return Entry(row, {str(k): v for k, v in value.items()})


def _yaml_document(text: str, source: str) -> Any:
    try:
        doc = yaml.safe_load(text)  # safe_load: a manifest never builds Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        cause = getattr(exc, "problem", None) or exc
        raise ManifestError(f"{source}: not valid YAML{where}: {one_line(cause)}") from exc
    if doc is not None and not isinstance(doc, list | dict):
        raise ManifestError(f"{source}: expected a list of rows or a mapping, got {kind_of(doc)}")
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


def _yaml_entries(doc: Any, source: str, base: str, glob: Glob) -> tuple[list[Entry], dict]:
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


def _list_entries(items: Any, source: str, name: str) -> list[Entry]:
    if not isinstance(items, list):
        raise ManifestError(f"{source}: {name}: expected a list of rows, got {kind_of(items)}")
    return [_mapping_entry(n, item, "a mapping of fields") for n, item in enumerate(items, 1)]


def _cross_entries(block: Any, first: int, source: str, base: str, glob: Glob) -> list[Entry]:
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
    problems: list[RowInvalid] = []
    for key in ("contents", "styles"):
        try:
            found[key] = _expand(block.get(key), key, base, glob)
        except RowInvalid as exc:
            problems.append(exc)
    if problems:  # each failed pattern takes a row number so its message can name one
        return [Entry(first + i, {}, p) for i, p in enumerate(problems)]
    rows = [
        {"content": c, "style": s, **options} for c in found["contents"] for s in found["styles"]
    ]
    return [Entry(first + i, raw) for i, raw in enumerate(rows)]


def _expand(patterns: Any, key: str, base: str, glob: Glob) -> list[str]:
    """Paths and glob matches (resolved against `base`), without repeats; a dud glob is an error."""
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(patterns, list) or not patterns or any(type(p) is not str for p in patterns):
        raise bad(key, "expected a list of paths or globs")
    found: list[str] = []
    for pattern in patterns:
        try:
            resolved = resolve(pattern, base)
        except ValueError as exc:
            raise bad(key, str(exc)) from exc
        matches = glob(resolved) if globbing.has_magic(pattern) else [resolved]
        if not matches:
            raise bad(key, f"{pattern!r} matches nothing")
        found += [m for m in matches if m not in found]  # overlapping globs are not duplicates
    return found
