"""Writing rows back as a manifest: failed.csv, runnable as it is, with absolute paths."""

from __future__ import annotations

import csv
import io
from typing import Any

from flows.manifest.read import ROW_FIELDS, RowInvalid, blank
from flows.manifest.validate import absolute, option_paths, set_values, style_items
from flows.model import Manifest, Pair, RowError
from flows.uri import style_cell


def pair_row(pair: Pair) -> dict[str, Any]:
    """A valid pair as a manifest row with absolute URIs, for failed_rows_csv."""
    style = style_cell([(s.uri, s.weight) for s in pair.styles])
    return {"content": pair.content, "style": style, "output": pair.output, **pair.overrides}


def error_row(error: RowError, manifest: Manifest) -> dict[str, Any]:
    """An invalid row as written, its paths made absolute where they can be, for failed_rows_csv."""
    raw = error.raw
    own = option_paths({k: v for k, v in raw.items() if k not in ROW_FIELDS}, manifest.base)
    row = {**set_values(manifest.defaults), **own}
    row["content"] = absolute(raw.get("content"), manifest.base)
    row["output"] = raw.get("output")
    value = raw.get("styles") if blank(raw.get("style")) else raw.get("style")
    row["style"] = _style_text(value, manifest.base)
    return row


def _style_text(value: Any, base: str | None = None) -> Any:
    """A style value as one CSV cell 'a.jpg:0.7;b.jpg', its paths made absolute against `base`."""
    try:
        items = style_items("style", value)
    except RowInvalid:
        return value  # unreadable as written; kept for the user to fix
    return style_cell([(absolute(p, base) if base else p, w) for p, w in items])


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
    if "styles" in row and blank(row.get("style")):
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
