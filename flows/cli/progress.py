"""Progress bars for the terminal (rich, on stderr); silent when asked or not a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from stylecore.stylize import Iteration


def _console(quiet: bool) -> Console:
    return Console(file=sys.stderr, quiet=quiet)


@contextlib.contextmanager
def iteration_bar(
    total: int, quiet: bool = False, done: int = 0
) -> Iterator[Callable[[Iteration], None]]:
    """A bar over optimizer iterations showing the loss and the time left; `done` of them were
    done before (a resumed run)."""
    columns = (
        TextColumn("stylizing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}{task.fields[tiles]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(quiet), transient=False) as progress:
        task = progress.add_task("stylize", total=total, completed=done, loss="…", tiles="")

        def advance(step: Iteration) -> None:
            tiles = f", {len(step.tiles.tiles)} tiles" if step.tiles else ""
            loss = f"{float(step.losses['total'].sum()):.4g}"
            progress.update(task, advance=1, loss=loss, tiles=tiles)

        yield advance


@contextlib.contextmanager
def download_bar(url: str) -> Iterator[Callable[[int, int | None], None]]:
    """A byte-count bar for a download that may resume part-way."""
    columns = (
        TextColumn(f"downloading {url}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(False)) as progress:
        task = progress.add_task("download", total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@contextlib.contextmanager
def pair_bar(total: int, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A bar over the pairs of a batch; each call names the pair that just finished."""
    columns = (
        TextColumn("pairs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(quiet)) as progress:
        task = progress.add_task("pairs", total=total, last="")

        def advance(label: str) -> None:
            progress.update(task, advance=1, last=label)

        yield advance
