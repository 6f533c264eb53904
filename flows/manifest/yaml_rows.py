"""Reading a YAML manifest into entries: a list of rows, or `defaults`, `pairs` and `cross` blocks.

A cross block's globs expand here, each content × each style an entry of its own, up to the
manifest's MAX_ROWS. Aliases are counted on the composed document before anything is built: one
whose aliases would expand past MAX_ALIAS_NODES nodes ("billion laughs") or hold themselves is
refused, since merge keys and our own walks (rows, cross blocks, a value in a message) expand
what safe_load shares.
"""

from __future__ import annotations

import glob as globbing
from collections.abc import Callable
from typing import Any

import yaml

from flows.manifest.read import (
    MAX_ROWS,
    Entry,
    ManifestError,
    RowInvalid,
    bad,
    kind_of,
    mapping_entry,
    one_line,
    too_large,
    too_many,
    value_problem,
)
from flows.uri import resolve, short
from stylecore.options import suggest

Glob = Callable[[str], list[str]]  # a pattern to its matches, sorted
# Nodes that aliases may add to a document: a real manifest needs few (rows repeat through
# `defaults:` instead), and a million is a second of PyYAML's merging; 1 kB of nested aliases
# would otherwise be 10^9.
MAX_ALIAS_NODES = 1_000_000
_KEYS = ("defaults", "pairs", "cross", "contents", "styles")


def entries(text: str, source: str, base: str, glob: Glob) -> tuple[list[Entry], dict[str, Any]]:
    """The rows of a YAML manifest's text (its BOM removed) as entries, and its `defaults:`."""
    doc = _document(text, source)
    if not isinstance(doc, dict):
        return _list_entries(doc or [], source, "rows"), {}
    defaults = _defaults(doc, source)
    found = _list_entries(doc.get("pairs") or [], source, "pairs")
    blocks = doc.get("cross") or []
    blocks = [blocks] if isinstance(blocks, dict) else blocks
    if not isinstance(blocks, list):
        raise ManifestError(f"{source}: cross: expected a list of blocks")
    names = [f"cross block {n}" for n in range(1, len(blocks) + 1)]
    if "contents" in doc or "styles" in doc:
        blocks = [*blocks, {"contents": doc.get("contents"), "styles": doc.get("styles")}]
        names.append("the top-level contents × styles")
    for block, name in zip(blocks, names, strict=True):
        found += _cross_entries(block, name, len(found) + 1, (source, base, glob))
        if len(found) > MAX_ROWS:
            raise too_many(source)
    return found, defaults


def _document(text: str, source: str) -> Any:
    """The document as Python values: lists, mappings and scalars, its aliases bounded."""
    loader = yaml.SafeLoader(text)  # safe: a manifest never builds Python objects
    try:
        node = loader.get_single_node()
        _check_aliases(node, source)
        doc = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        cause = getattr(exc, "problem", None) or exc
        raise ManifestError(f"{source}: not valid YAML{where}: {one_line(cause)}") from exc
    except (ValueError, RecursionError) as exc:  # a 5000-digit int, a 13th month, [[[… too deep
        raise ManifestError(f"{source}: not valid YAML: {value_problem(exc)}") from exc
    finally:
        loader.dispose()
    if doc is not None and not isinstance(doc, list | dict):
        raise ManifestError(f"{source}: expected a list of rows or a mapping, got {kind_of(doc)}")
    return doc


def _check_aliases(root: yaml.Node | None, source: str) -> None:
    """Refuse a composed document whose aliases expand past MAX_ALIAS_NODES or hold themselves.

    Counts the expansion on the node graph, where an alias is the aliased node itself: each node
    once (memoized), iteratively, so the count costs what the text does.
    """
    sizes: dict[int, int] = {}  # id(node) → nodes in its expansion
    holding: set[int] = set()  # nodes whose expansion is being counted: an ancestor of the next
    stack: list[tuple[yaml.Node, bool]] = [] if root is None else [(root, False)]
    while stack:
        node, counted = stack.pop()
        if counted:
            holding.discard(id(node))
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[id(node)] = min(total, 2**62)  # exact below it, so the sums stay small ints
        elif id(node) in holding:
            raise ManifestError(f"{source}: a YAML alias refers to the value that holds it")
        elif id(node) not in sizes:
            holding.add(id(node))
            stack += [(node, True), *((child, False) for child in _children(node))]
    if root is not None and sizes[id(root)] - len(sizes) > MAX_ALIAS_NODES:
        raise ManifestError(f"{source}: YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def _defaults(doc: dict[Any, Any], source: str) -> dict[str, Any]:
    for key in doc:
        if key not in _KEYS:
            hint = suggest(str(key), _KEYS)
            raise ManifestError(f"{source}: unknown top-level key '{short(str(key))}'{hint}")
    values = doc.get("defaults") or {}
    if not isinstance(values, dict):
        raise ManifestError(f"{source}: defaults: expected a mapping of options")
    for key, value in values.items():
        if why := too_large(value):
            raise ManifestError(f"{source}: defaults: {short(str(key))}: {why}")
    return {str(k): v for k, v in values.items()}


def _list_entries(items: Any, source: str, name: str) -> list[Entry]:
    if not isinstance(items, list):
        raise ManifestError(f"{source}: {name}: expected a list of rows, got {kind_of(items)}")
    if len(items) > MAX_ROWS:
        raise too_many(source)
    return [mapping_entry(n, item, "a mapping of fields") for n, item in enumerate(items, 1)]


def _cross_entries(block: Any, name: str, first: int, where: tuple[str, str, Glob]) -> list[Entry]:
    """The pairs of one cross block (each content × each style), or its problems as entries."""
    source, base, glob = where
    if not isinstance(block, dict):
        raise ManifestError(
            f"{source}: cross: each block is a mapping of contents, styles, options"
        )
    if "output" in block:
        raise ManifestError(
            f"{source}: cross: a block cannot set 'output' (each pair needs its own)"
        )
    options = {str(k): v for k, v in block.items() if k not in ("contents", "styles")}
    for key, value in options.items():
        if why := too_large(value):  # checked once here, not in each of the block's pairs
            return [Entry(first, {}, bad(key, f"in {name}: {why}"))]
    found: dict[str, list[str]] = {}
    problems: list[RowInvalid] = []
    for key in ("contents", "styles"):
        try:
            found[key] = _expand(block.get(key), key, base, glob)
        except RowInvalid as exc:
            problems.append(exc)
    if problems:  # each failed pattern takes a row number so its message can name one
        return [Entry(first + i, {}, p) for i, p in enumerate(problems)]
    contents, styles = len(found["contents"]), len(found["styles"])
    left = MAX_ROWS - first + 1
    if contents * styles > left:
        of = "" if left == MAX_ROWS else f" left of the {MAX_ROWS:,}"
        text = (
            f"{name}: {contents:,} contents × {styles:,} style{'s' * (styles > 1)} make "
            f"{contents * styles:,} pairs, more than the {left:,} rows{of} a manifest may have"
        )
        return [Entry(first, {}, RowInvalid(None, text))]
    rows = [
        {"content": c, "style": s, **options} for c in found["contents"] for s in found["styles"]
    ]
    return [Entry(first + i, raw) for i, raw in enumerate(rows)]


def _expand(patterns: Any, key: str, base: str, glob: Glob) -> list[str]:
    """Paths and glob matches (resolved against `base`), without repeats; a dud glob is an error."""
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(patterns, list) or not patterns or any(type(p) is not str for p in patterns):
        raise bad(key, "expected a list of paths or globs")
    found: dict[str, None] = {}  # ordered, and a glob's 100,000 matches dedupe in linear time
    for pattern in patterns:
        try:
            resolved = resolve(pattern, base)
        except ValueError as exc:
            raise bad(key, str(exc)) from exc
        matches = glob(resolved) if globbing.has_magic(pattern) else [resolved]
        if not matches:
            raise bad(key, f"{pattern!r} matches nothing")
        found.update(dict.fromkeys(matches))  # overlapping globs are not duplicates
    return list(found)
