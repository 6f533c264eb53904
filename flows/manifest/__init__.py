"""Manifests: CSV, JSON Lines or YAML rows of content/style pairs, read once, every row validated.

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
read.py (CSV, JSON Lines) and yaml_rows.py turn text into entries, validate.py entries into pairs
or row errors, write.py rows back into a manifest (failed.csv). Hostile manifests stay bounded:
at most MAX_ROWS rows (a cross block past it is that block's row error), YAML aliases expanding
past MAX_ALIAS_NODES refuse the manifest, and an overlong field or a NUL is its row's error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flows import storage
from flows.manifest import read, yaml_rows
from flows.manifest.read import MAX_ROWS, Entry, ManifestError, format_of, one_line
from flows.manifest.validate import context, validate
from flows.manifest.write import error_row, failed_rows_csv, pair_row
from flows.manifest.yaml_rows import MAX_ALIAS_NODES
from flows.manifest.yaml_rows import Glob as Glob
from flows.model import Manifest
from flows.uri import base_of, resolve
from stylecore.errors import StyleError
from stylecore.options import StyleOptions

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_ROWS",
    "Manifest",
    "ManifestError",
    "error_row",
    "failed_rows_csv",
    "load_manifest",
    "pair_row",
    "parse_manifest",
]


def load_manifest(
    source: str,
    defaults: StyleOptions,
    read_text: Callable[[str], str] = storage.read_text,
    glob: Glob = storage.glob,
    *,
    fmt: str | None = None,
) -> Manifest:
    """Read and parse the manifest at `source`; ManifestError when it cannot be read."""
    where = source
    try:
        where = resolve(source, os.getcwd())
        text = read_text(where)
    except (OSError, ValueError, StyleError) as exc:  # UnicodeDecodeError is a ValueError
        cause = one_line(exc).removeprefix(f"{where}: ").removeprefix(f"{source}: ")
        raise ManifestError(f"{source}: cannot read the manifest: {cause}") from exc
    return parse_manifest(text, source, defaults, fmt=fmt, glob=glob)


def parse_manifest(
    text: str,
    source: str,
    defaults: StyleOptions,
    *,
    fmt: str | None = None,
    glob: Glob = storage.glob,
) -> Manifest:
    """Every row of a manifest's text, validated; ManifestError when the whole is unusable."""
    kind = format_of(source, fmt)
    try:
        base = base_of(source)
    except ValueError as exc:
        raise ManifestError(f"{source}: {exc}") from exc
    text = text.removeprefix("\ufeff")  # Excel and Notepad write a BOM
    rows, yaml_defaults = _entries(text, kind, source, base, glob)
    ctx = context(base, yaml_defaults, defaults, source)
    if not rows:
        raise ManifestError(f"{source}: the manifest has no rows")
    pairs, errors = validate(rows, ctx)
    return Manifest(source, tuple(pairs), tuple(errors), base, ctx.defaults)


def _entries(
    text: str, kind: str, source: str, base: str, glob: Glob
) -> tuple[list[Entry], dict[str, Any]]:
    """The manifest's rows as entries, and its YAML `defaults:` as written."""
    if kind == "yaml":
        return yaml_rows.entries(text, source, base, glob)
    return read.entries(text, kind, source), {}
