"""Reading a manifest's text into entries: CSV (or TSV) and JSON Lines here, YAML in yaml_rows.py.

An entry is a row as written (`raw`), or the problem that kept it from being read; validate.py
turns entries into pairs or row errors. Hostile text is bounded while it is read: at most
MAX_ROWS entries; CSV fields up to CSV_FIELD_LIMIT are read, so that a long one is its own row's
error (validate.py) and not the manifest's; a JSON or YAML value too large or deep to be a field
is its row's error, kept as a short stand-in that is safe to print.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flows.uri import short
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
# Four PATH_MAX-long paths (a blended style cell); an option is far shorter. Longer is a pasted
# file or an attack, refused before it is resolved or quoted in a message.
MAX_FIELD_CHARS = 16_384
MAX_FIELD_DEPTH = 3  # a style list of {path, weight} is 2 deep
_CONTAINERS = (dict, list, tuple, set)  # YAML's !!omap and !!pairs are lists of tuples
# 100,000 pairs is weeks of GPU time at seconds a pair, yet validates in seconds; beyond it is
# a runaway glob or cross product, refused before its entries are built.
MAX_ROWS = 100_000
# csv's default field limit (128 KiB) fails the whole manifest; up to this, a long field is read
# and refused as its row's error (MAX_FIELD_CHARS). csv's limit is global: only ever raised.
CSV_FIELD_LIMIT = 16 * 2**20


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


def entries(text: str, kind: str, source: str) -> list[Entry]:
    """The rows of a CSV, TSV or JSON Lines manifest's text (its BOM removed) as entries."""
    if kind == "jsonl":
        return _jsonl_entries(text, source)
    return _csv_entries(text, "\t" if kind == "tsv" else _sniff(text), source)


def too_many(source: str) -> ManifestError:
    """The manifest's error for more than MAX_ROWS rows."""
    return ManifestError(f"{source}: more than {MAX_ROWS:,} rows; split it into several manifests")


def value_problem(exc: ValueError | RecursionError) -> str:
    """Why Python refused to build a value (a 5000-digit number, [[[… past the stack), briefly."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return one_line(exc).partition("; use sys.set_int_max_str_digits")[0]


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
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        columns = _csv_header(reader, source)
        entries, start = [], reader.line_num + 1
        for cells in reader:
            row, start = start, reader.line_num + 1  # a quoted cell may span lines
            if any(c.strip() for c in cells):
                entries.append(_csv_entry(row, columns, cells))
            if len(entries) > MAX_ROWS:
                raise too_many(source)
    except csv.Error as exc:  # e.g. "field larger than field limit (16777216)"
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
    if any("\0" in c for c in columns):  # UTF-16 read as UTF-8: a NUL after every letter
        raise ManifestError(
            f"{source}: the header contains NUL characters; is the file UTF-16? Save it as UTF-8"
        )
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


# --- JSON Lines, and rows shared with YAML ---------------------------------------------------------------------


def _jsonl_entries(text: str, source: str) -> list[Entry]:
    entries = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is valid JSON
        if line.strip():
            entries.append(_json_entry(number, line))
        if len(entries) > MAX_ROWS:
            raise too_many(source)
    return entries


def _json_entry(row: int, line: str) -> Entry:
    try:
        value = json.loads(line, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        return Entry(row, {}, RowInvalid(None, f"not valid JSON: {exc.msg} at column {exc.colno}"))
    except RowInvalid as exc:
        return Entry(row, {}, exc)
    except (ValueError, RecursionError) as exc:  # a 5000-digit number; [[[… nested past the stack
        return Entry(row, {}, RowInvalid(None, f"not valid JSON: {value_problem(exc)}"))
    return mapping_entry(row, value, "a JSON object")


def _unique_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in items:
        if key in seen:
            raise bad(key, "given twice")
        seen[key] = value
    return seen


def mapping_entry(row: int, value: Any, expected: str) -> Entry:
    """A JSON or YAML row: its fields, or the problem that it is not a mapping, or that a value
    is too large or deep to be a field (that value kept as a short stand-in, safe to print)."""
    if not isinstance(value, dict):
        return Entry(row, {}, RowInvalid(None, f"expected {expected}, got {kind_of(value)}"))
    raw, problem = {}, None
    for key, item in value.items():
        raw[str(key)] = item
        if why := too_large(item):
            raw[str(key)], problem = f"<{why}>", problem or bad(str(key), why)
    return Entry(row, raw, problem)


def too_large(value: Any) -> str | None:
    """What makes a list or mapping too large or deep to be a field, or None.

    Iterative and stopping early: the value may nest a thousand deep (repr would fail) or share
    aliased parts YAML expands to a million nodes.
    """
    size, todo = 0, [(value, 1)] if isinstance(value, _CONTAINERS) else []
    while todo:
        item, depth = todo.pop()
        if depth > MAX_FIELD_DEPTH:
            return f"{kind_of(value)} nested more than {MAX_FIELD_DEPTH} deep"
        parts = [*item, *item.values()] if isinstance(item, dict) else item
        size += len(parts) + sum(len(p) for p in parts if isinstance(p, str))
        if size > MAX_FIELD_CHARS:
            return f"{kind_of(value)} of more than {MAX_FIELD_CHARS:,} characters"
        todo += [(p, depth + 1) for p in parts if isinstance(p, _CONTAINERS)]
    return None
