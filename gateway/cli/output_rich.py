"""The terminal side of gateway/cli/output.py: rich tables and a rich live progress display.

Imported only when a person is looking (stdout or stderr is a terminal). Every string goes in
as a ``Text``, never as rich markup: a redacted log field reads ``[redacted]``, and markup would
swallow it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from rich import box
from rich.console import Console, RenderableType
from rich.padding import Padding
from rich.progress import (
    BarColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as Live
from rich.table import Table
from rich.text import Text

from gateway.cli import tables
from gateway.cli.marks import find_block, mark, text_spans
from gateway.progress import count_text

STYLES = {
    "problem": "bold red",
    "warn": "yellow",
    "good": "green",
    "muted": "dim",
    "label": "bold",
    "header": "bold",
}


def console_for(stream: TextIO, env: Mapping[str, str]) -> Console:
    """A Console on ``stream``; gateway/cli/output.py has decided it is a terminal already."""
    return Console(
        file=stream,
        force_terminal=True,
        no_color=env.get("NO_COLOR", "") != "",
        markup=False,
        emoji=False,
        highlight=False,
    )


def cell(value: object) -> Text:
    text = tables.cell(value)
    kind = mark(text)
    return Text(text, style=STYLES[kind] if kind else "")


def prose(text: str) -> Text:
    styled = Text(text)
    for start, end, kind in text_spans(text):
        styled.stylize(STYLES[kind], start, end)
    return styled


def _grid(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    """On a narrow terminal cells fold onto a second line: an identifier is never cut short
    with an ellipsis, and no column is dropped."""
    drawn = Table(
        box=box.SIMPLE_HEAD,
        header_style=STYLES["header"],
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    for h in headers:
        drawn.add_column(Text(h.upper()), overflow="fold")
    for row in rows:
        drawn.add_row(*(cell(v) for v in row))
    return drawn


class RichScreen:
    def __init__(self, console: Console) -> None:
        self.console = console

    def table(self, table: tables.Table, *, plain: str | None = None) -> None:
        self.console.print(_grid(table.headers, table.rows))

    def checks(self, rows: Sequence[tuple[str, str, str]]) -> None:
        self.console.print(_grid(["result", "check", "detail"], rows))

    def key_values(self, pairs: Sequence[tuple[str, object]]) -> None:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style=STYLES["label"])
        grid.add_column()
        for key, value in pairs:
            grid.add_row(Text(key), cell(value))
        self.console.print(grid)

    def text(
        self, text: str, *, embedded: Sequence[tables.Table] = (), heading: bool = False
    ) -> None:
        lines = text.splitlines()
        parts: list[tuple[int, int, RenderableType]] = []  # (first line, line count, drawing)
        for table in embedded:
            block = table.text().splitlines()
            found = find_block(lines, block)
            if found is not None:
                first, indent = found
                grid = Padding(
                    _grid(table.headers, table.rows), (0, 0, 0, len(indent)), expand=False
                )
                parts.append((first, len(block), grid))
        at = 0
        for first, count, drawn in sorted(parts, key=lambda p: p[0]):
            self._prose(lines, at, first, heading)
            self.console.print(drawn)
            at = max(at, first + count)
        self._prose(lines, at, len(lines), heading)

    def _prose(self, lines: list[str], start: int, stop: int, heading: bool) -> None:
        if stop <= start:
            return
        chunk = prose("\n".join(lines[start:stop]))
        if heading and start == 0:
            chunk.stylize(STYLES["header"], 0, len(lines[0]))
        self.console.print(chunk)


@dataclass(slots=True)
class _Shown:
    id: TaskID
    unit: str
    total: float | None
    label: str


class RichProgress:
    """A live display on stderr; transient, so the answer on stdout is what stays on screen.

    stdout is left alone (it carries the answer); writes to stderr (log lines) scroll above the
    bars instead of tearing them.
    """

    def __init__(self, console: Console) -> None:
        self._live = Live(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[count]}", markup=False),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=True,
        )
        self._tasks: dict[int, _Shown] = {}

    def __enter__(self) -> RichProgress:
        self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.stop()

    def begin(self, label: str, total: float | None = None, *, unit: str = "") -> int:
        count = count_text(0, total, unit) if unit else ""
        tid = self._live.add_task(label, total=total, count=count)
        self._tasks[len(self._tasks) + 1] = _Shown(tid, unit, total, label)
        return len(self._tasks)

    def update(
        self, task: int, done: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        shown = self._tasks[task]
        shown.total = shown.total if total is None else total
        shown.label = shown.label if label is None else label
        self._live.update(
            shown.id,
            completed=done,
            total=total,
            description=label,
            count=count_text(done, shown.total, shown.unit) if shown.unit else "",
        )

    def end(self, task: int, outcome: str = "done") -> None:
        shown = self._tasks[task]
        if shown.total is None:  # stop the pulsing of an open-ended task
            self._live.update(shown.id, total=1, completed=1)
        self._live.update(shown.id, description=f"{shown.label}: {outcome}")
        self._live.stop_task(shown.id)
