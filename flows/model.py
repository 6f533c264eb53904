"""The nouns of a batch, as plain frozen values without I/O: rows, pairs, jobs and outcomes.

A manifest's rows become `Pair`s (or `RowError`s); reading each input once gives a `Probe`; a pair
whose inputs can be used becomes a `Job`, everything a stylize task needs as URIs and keys; every
pair ends as an `Outcome`, its line in the report.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from flows import uri
from stylecore.options import StyleOptions


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

    def inputs(self) -> list[tuple[str, str]]:
        """(role, uri) of every input: the content, then each style."""
        return [("content", self.content)] + [("style", s.uri) for s in self.styles]

    def failed(self, error: str) -> Outcome:
        """This pair as a failed line of the report."""
        style = uri.style_cell([(s.uri, s.weight) for s in self.styles])
        return Outcome(self.row, self.content, style, "failed", error=error, worker=worker_id())


@dataclass(frozen=True)
class RowError:
    """One invalid row; `message` is one line starting with 'row N: '."""

    row: int
    field: str | None
    message: str
    raw: dict[str, Any]

    def failed(self) -> Outcome:
        """The refused row as a failed line of the report."""
        style = self.raw.get("style", self.raw.get("styles", ""))
        style = ";".join(map(str, style)) if isinstance(style, list) else style
        content = str(self.raw.get("content", ""))
        text = "" if style is None else str(style)
        return Outcome(self.row, content, text, "failed", error=self.message, worker=worker_id())


@dataclass(frozen=True)
class Manifest:
    """Every row of a manifest, valid ones as pairs and the rest as errors."""

    source: str
    pairs: tuple[Pair, ...]
    errors: tuple[RowError, ...]
    base: str = ""  # the directory or s3:// prefix relative paths resolve against
    defaults: dict[str, Any] = field(default_factory=dict)  # YAML `defaults:`, as written

    def rows(self) -> list[int]:
        """Every row number, valid or not, in order."""
        return sorted([p.row for p in self.pairs] + [e.row for e in self.errors])

    def only(self, rows: list[int] | None) -> Manifest:
        """The manifest cut down to some rows (a rerun of the failed ones, a shard)."""
        if rows is None:
            return self
        wanted = set(rows)
        pairs = tuple(p for p in self.pairs if p.row in wanted)
        errors = tuple(e for e in self.errors if e.row in wanted)
        return Manifest(self.source, pairs, errors, self.base, self.defaults)


@dataclass(frozen=True)
class StyleInput:
    """One style of a job: where it is, its bytes' hash, its blend weight."""

    uri: str
    sha256: str
    weight: float | None


@dataclass(frozen=True)
class Probe:
    """What reading an input once told: its bytes' hash and pixel shape, or why it is unusable."""

    sha256: str = ""
    shape: tuple[int, int] = (0, 0)  # (H, W), upright
    error: str | None = None
    notes: tuple[str, ...] = ()  # what decoding changed: "animated GIF: used the first of 3 frames"
    frames: int = 0  # a clip's frame count; 0: a still image
    fps: float = 0.0  # a clip's frame rate
    audio: bool = False  # a clip with an audio track (copied into the encoded output)


@dataclass(frozen=True)
class Job:
    """Everything a stylize task needs, as plain values: URIs and keys, never pixels."""

    row: int
    content: str
    content_sha: str
    styles: tuple[StyleInput, ...]
    output: str  # URI of the image
    options: dict[str, Any]  # StyleOptions.to_dict()
    feature_keys: dict[int, tuple[str, ...]]  # content longest side → one key per style
    label: str  # "chelsea × starry"
    shape: tuple[int, int]  # the content's working shape (H, W): jobs batch only when equal
    root: str = ""  # the output root: writes stay inside it
    notes: tuple[str, ...] = ()  # the styles' decoding notes, for the sidecar
    frames: int = 0  # a clip's frame count (output: the encoded video); 0: a still image
    fps: float = 0.0
    audio: bool = False
    source_shape: tuple[int, int] = (0, 0)  # a clip's own (H, W): its encoded output's size

    @property
    def sidecar(self) -> str:
        return uri.sidecar_of(self.output)

    def style_options(self) -> StyleOptions:
        return StyleOptions.from_dict(self.options)

    def outcome(self, status: str, error: str | None = None, **more: Any) -> Outcome:
        """This job's line in the report."""
        style = uri.style_cell([(s.uri, s.weight) for s in self.styles])
        return Outcome(
            self.row, self.content, style, status, self.output, error, worker=worker_id(), **more
        )


@dataclass
class Outcome:
    """One pair's line in the report."""

    row: int
    content: str
    style: str
    status: str  # done | skipped | failed
    output: str | None = None
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""
    losses: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(
        default_factory=list
    )  # e.g. a smaller size after running out of memory
    quality: dict[str, float] = field(default_factory=dict)  # style_ratio, content_error

    def to_dict(self) -> dict[str, Any]:
        """The report's line; notes and quality appear only when there are some."""
        line = dict(self.__dict__)
        for name in ("notes", "quality"):
            if not line[name]:
                del line[name]
        return line


def worker_id() -> str:
    """host:pid of this process, to say where a pair ran."""
    return f"{socket.gethostname()}:{os.getpid()}"
