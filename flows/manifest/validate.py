"""Validating a manifest's entries: each becomes a `Pair` or a `RowError` naming the row and cause.

Paths resolve against the manifest's folder or s3:// prefix (`weights` and `init` files too, in a
local manifest); options resolve as run defaults ← YAML defaults ← the row's own values. A field
over MAX_FIELD_CHARS or holding a NUL is refused before anything quotes or resolves it, and two
outputs that one file system would take for one file (case, Unicode form) are refused too.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from flows.manifest.read import (
    KNOWN_FIELDS,
    MAX_FIELD_CHARS,
    ROW_FIELDS,
    Entry,
    ManifestError,
    RowInvalid,
    bad,
    blank,
    kind_of,
)
from flows.model import Pair, RowError, StyleRef
from flows.uri import is_number, resolve, safe_output_name, short, split_weight
from stylecore.errors import OptionsError
from stylecore.options import StyleOptions, option_names, suggest

PATH_OPTIONS = ("weights", "init")  # options that may name a file, relative to the manifest
_INIT_WORDS = ("content", "noise")  # `init` values that are not files
_OPTION_MESSAGE = re.compile(r"option ((?:'\w+'/?)+): (.*)")
MAX_MESSAGE_CHARS = 500  # a row error is one readable line, however long the value it quotes


@dataclass(frozen=True)
class Context:
    """What every row of one manifest shares."""

    base: str
    defaults: dict[str, Any]  # YAML defaults, as written
    options: StyleOptions  # run defaults ← YAML defaults


def context(base: str, yaml_defaults: dict[str, Any], run: StyleOptions, source: str) -> Context:
    """The shared context; ManifestError when the YAML defaults are unusable."""
    values = option_paths(yaml_defaults, base)
    for name in values:
        if name not in option_names():
            hint = suggest(name, option_names())
            raise ManifestError(f"{source}: defaults: unknown option '{name}'{hint}")
    try:
        options = StyleOptions.from_dict(set_values(values), run)
    except OptionsError as exc:
        raise ManifestError(f"{source}: defaults: {_options_problem(exc).text}") from exc
    return Context(base, values, options)


def option_paths(values: dict[str, Any], base: str) -> dict[str, Any]:
    """Options naming files (`weights`, an `init` image) made absolute like content and style.

    Only for a local manifest: weights and init images are files on the worker, so in an s3://
    manifest they stay as written (absolute, or relative to the worker's directory).
    """
    if base.startswith("s3://"):
        return values
    resolved = dict(values)
    for name in PATH_OPTIONS:
        if name in values and str(values[name]).strip() not in _INIT_WORDS:
            resolved[name] = absolute(values[name], base)  # an unresolvable one stays as written
    return resolved


def absolute(value: Any, base: str) -> Any:
    """A path value resolved against `base`; as it is when it is not a usable path."""
    try:
        return resolve(value.strip(), base) if isinstance(value, str) and value.strip() else value
    except ValueError:
        return value


def set_values(values: dict[str, Any]) -> dict[str, Any]:
    """The values that are set (not blank)."""
    return {k: v for k, v in values.items() if not blank(v)}


def validate(entries: list[Entry], ctx: Context) -> tuple[list[Pair], list[RowError]]:
    """Each entry as a pair, or as a row error naming its row, field and cause."""
    pairs, errors = [], []
    seen: dict[tuple[Any, ...], int] = {}
    outputs: dict[str, tuple[int, str]] = {}
    options: dict[Any, StyleOptions] = {}  # a cross block's 100,000 pairs share one
    for entry in entries:
        try:
            if entry.problem:
                raise entry.problem
            pair = _pair(entry, ctx, options)
            _check_unique(pair, seen, outputs)
        except RowInvalid as exc:
            message = _bounded(f"row {entry.row}: {exc.text}")
            errors.append(RowError(entry.row, exc.field, message, entry.raw))
        else:
            pairs.append(pair)
    return pairs, errors


def _bounded(message: str) -> str:
    """`message` cut in the middle to MAX_MESSAGE_CHARS: it keeps the row and the cause's end."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    half = MAX_MESSAGE_CHARS // 2
    return f"{message[:half]}…{message[-half:]}"


def _pair(entry: Entry, ctx: Context, cache: dict[Any, StyleOptions]) -> Pair:
    raw = entry.raw
    for name, value in raw.items():
        if name not in KNOWN_FIELDS:
            raise RowInvalid(name, f"unknown field '{short(name)}'{suggest(name, KNOWN_FIELDS)}")
        _check_text(name, value)
    content = _content(raw.get("content"), ctx.base)
    styles = _styles(*_style_field(raw), ctx.base)
    output = _output(raw.get("output"))
    own = option_paths(set_values({k: v for k, v in raw.items() if k not in ROW_FIELDS}), ctx.base)
    options = _cached_options(own, styles, ctx.options, cache)
    overrides = {**set_values(ctx.defaults), **own}
    return Pair(entry.row, content, styles, output, options, overrides, raw)


def _check_text(name: str, value: Any) -> None:
    """Refuse text longer than MAX_FIELD_CHARS or with a NUL (lists: read.mapping_entry)."""
    if not isinstance(value, str):
        return
    if len(value) > MAX_FIELD_CHARS:
        raise bad(name, f"text of {len(value):,} characters, more than {MAX_FIELD_CHARS:,}")
    if "\0" in value:
        raise bad(name, "contains a NUL character (\\x00); is the file text?")


def _content(value: Any, base: str) -> str:
    if blank(value):
        raise bad("content", "missing")
    if not isinstance(value, str):
        raise bad("content", f"expected a path, got {kind_of(value)}")
    try:
        return resolve(value.strip(), base)
    except ValueError as exc:
        raise bad("content", str(exc)) from exc


def _style_field(raw: dict[str, Any]) -> tuple[str, Any]:
    if not blank(raw.get("style")) and not blank(raw.get("styles")):
        raise bad("styles", "give 'style' or 'styles', not both")
    name = "styles" if blank(raw.get("style")) and "styles" in raw else "style"
    return name, raw.get(name)


def _styles(name: str, value: Any, base: str) -> tuple[StyleRef, ...]:
    refs = []
    for path, weight in style_items(name, value):
        try:
            refs.append(StyleRef(resolve(path, base), weight))
        except ValueError as exc:
            raise bad(name, str(exc)) from exc
    if not refs:
        raise bad(name, "no style given")
    weights = [r.weight for r in refs if r.weight is not None]
    if weights and len(weights) != len(refs):
        raise bad(name, "give a blend weight for every style or for none")
    if weights and sum(weights) <= 0:
        raise bad(name, "the blend weights sum to zero")
    return tuple(refs)


def style_items(name: str, value: Any) -> list[tuple[str, float | None]]:
    """(path, weight) of each style in a cell 'a.jpg:0.7;b.jpg', a list, or {path, weight}."""
    if blank(value):
        return []
    items = value.split(";") if isinstance(value, str) else value
    items = [items] if isinstance(items, dict) else items
    if not isinstance(items, list):
        raise bad(name, f"expected a path or a list of paths, got {kind_of(value)}")
    return [_style_item(name, item) for item in items if not blank(item)]


def _style_item(name: str, item: Any) -> tuple[str, float | None]:
    if isinstance(item, str):
        path, weight = split_weight(item)
        return path, None if weight is None else _weight(name, weight)
    if not isinstance(item, dict):
        raise bad(name, f"expected a path or {{path, weight}}, got {kind_of(item)}")
    for key in item:
        if key not in ("path", "weight"):
            raise bad(name, f"unknown key '{key}'{suggest(str(key), ('path', 'weight'))}")
    path = item.get("path")
    if blank(path) or not isinstance(path, str):
        raise bad(name, "each {path, weight} needs a path")
    weight = None if blank(item.get("weight")) else _weight(name, item["weight"])
    return path.strip(), weight


def _weight(name: str, value: Any) -> float:
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise bad(name, f"blend weight must be a number, got {kind_of(value)}")
    if isinstance(text, str) and not is_number(text):
        raise bad(name, f"blend weight must be a number, got {text!r}")
    weight = float(text)
    if not weight >= 0:  # also NaN
        raise bad(name, f"blend weight must be ≥ 0, got {weight}")
    return weight


CLIP_OUTPUTS = (".mp4",)  # a clip row's output may name its encoded video (frames go beside it)


def _output(value: Any) -> str | None:
    if blank(value):
        return None
    if not isinstance(value, str):
        raise bad("output", f"expected a relative path, got {kind_of(value)}")
    text = value.strip()
    stem, dot, suffix = text.rpartition(".")
    video = dot and f".{suffix.lower()}" in CLIP_OUTPUTS and "/" not in suffix
    try:
        if video:  # a clip's encoded output: checked like an image's name, its suffix kept
            return safe_output_name(f"{stem}.png")[: -len(".png")] + f".{suffix}"
        return safe_output_name(text)
    except ValueError as exc:
        raise bad("output", str(exc)) from exc


def _cached_options(
    own: dict[str, Any],
    styles: tuple[StyleRef, ...],
    base: StyleOptions,
    cache: dict[Any, StyleOptions],
) -> StyleOptions:
    """_options, built once for each distinct set of values (when they can be a key; True and 1
    are equal keys, so each value's type is part of it)."""
    key = (tuple((k, type(v), v) for k, v in own.items()), tuple(s.weight for s in styles))
    try:
        return cache[key]
    except TypeError:  # a list value: not a key
        return _options(own, styles, base)
    except KeyError:
        cache[key] = _options(own, styles, base)
        return cache[key]


def _options(own: dict[str, Any], styles: tuple[StyleRef, ...], base: StyleOptions) -> StyleOptions:
    values = dict(own)
    if styles[0].weight is not None:
        if "style_blend" in own:
            raise bad("style_blend", "blend weights are already given in 'style'")
        values["style_blend"] = tuple(s.weight for s in styles)
    try:
        options = StyleOptions.from_dict(values, base)
    except OptionsError as exc:
        raise _options_problem(exc) from exc
    if options.style_blend and len(options.style_blend) != len(styles):
        n, m = len(options.style_blend), len(styles)
        raise bad("style_blend", f"{n} weights for {m} style{'s' * (m > 1)}")
    return options


def _options_problem(exc: OptionsError) -> RowInvalid:
    """An OptionsError as 'name: cause', naming the option as a field."""
    match = _OPTION_MESSAGE.fullmatch(str(exc))
    if not match:
        return RowInvalid(None, str(exc))
    names = re.findall(r"'(\w+)'", match[1])
    return RowInvalid(names[0], f"{'/'.join(names)}: {match[2]}")


def _check_unique(
    pair: Pair, seen: dict[tuple[Any, ...], int], outputs: dict[str, tuple[int, str]]
) -> None:
    key = (pair.content, pair.styles, pair.output, pair.options)
    if key in seen:
        raise RowInvalid(None, f"duplicate of row {seen[key]}")
    same = _one_file(pair.output) if pair.output else None
    if same in outputs:
        row, other = outputs[same]
        why = "" if other == pair.output else f" as '{short(other)}' (one file on macOS, Windows)"
        raise bad("output", f"'{short(pair.output)}' is already the output of row {row}{why}")
    seen[key] = pair.row
    if same:
        outputs[same] = (pair.row, pair.output)


def _one_file(output: str) -> str:
    """The name's file on a case- and normalization-insensitive file system (APFS, NTFS)."""
    return unicodedata.normalize("NFC", output).casefold()
