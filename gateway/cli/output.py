"""Where gatewayctl's output goes and how it looks: the one place that asks "is this a terminal?".

- stdout a terminal (and TERM is not ``dumb``): tables drawn with rich, problem cells (FAIL,
  SILENT, pairing-failed, NOT synchronised, ...) highlighted; NO_COLOR keeps the tables and the
  bold but drops the colours (https://no-color.org).
- anything else (a pipe, a file, a ticket, a test): the plain text of gateway/cli/tables.py, stable
  columns, no escape codes.
- progress goes to stderr: a rich live display on a terminal, one line per task otherwise, and
  nothing at all with ``--json`` (stdout is then one JSON document and stderr stays quiet).

rich is imported only in the terminal cases (gateway/cli/output_rich.py): it costs about a tenth of
a second, which every scripted ``gatewayctl ... --json`` would otherwise pay.
Commands get a ``Screen`` from ``screen()`` and a ``Progress`` from ``progress()``; they never
test isatty themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol, TextIO

from gateway.cli import tables
from gateway.progress import LineProgress, NoProgress, Progress


def use_terminal(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Draw for a person: the stream is a terminal that can move the cursor and draw lines."""
    if env.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream (tests, a detached process)
        return False


class Screen(Protocol):
    """What a command shows on stdout."""

    def table(self, table: tables.Table, *, plain: str | None = None) -> None:
        """``plain``: what a pipe gets instead of the aligned table, when that differs (the
        journal's lines keep their grep-able one-line shape)."""
        ...

    def checks(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """(verdict, name, detail) rows: PASS / FAIL / SKIP per check."""
        ...

    def key_values(self, pairs: Sequence[tuple[str, object]]) -> None: ...

    def text(
        self, text: str, *, embedded: Sequence[tables.Table] = (), heading: bool = False
    ) -> None:
        """Prose lines. Where the plain form of one of ``embedded`` appears in ``text`` (at any
        indent) a terminal draws that table instead; ``heading``: the first line is a title."""
        ...


class PlainScreen:
    """Plain text (gateway/cli/tables.py) to ``stream``, or to the current ``sys.stdout``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def _print(self, text: str) -> None:
        print(text, file=self._stream or sys.stdout)

    def table(self, table: tables.Table, *, plain: str | None = None) -> None:
        self._print(table.text() if plain is None else plain)

    def checks(self, rows: Sequence[tuple[str, str, str]]) -> None:
        self._print(tables.table(["result", "check", "detail"], rows, header=False))

    def key_values(self, pairs: Sequence[tuple[str, object]]) -> None:
        self._print(tables.key_values(pairs))

    def text(
        self, text: str, *, embedded: Sequence[tables.Table] = (), heading: bool = False
    ) -> None:
        self._print(text)


def screen(stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> Screen:
    """The Screen for ``stream`` (default stdout), rich only on a terminal."""
    out = stream or sys.stdout
    environ = os.environ if env is None else env
    if not use_terminal(out, environ):
        return PlainScreen(stream)
    from gateway.cli.output_rich import RichScreen, console_for  # noqa: PLC0415 - see the docstring

    return RichScreen(console_for(out, environ))


@contextmanager
def progress(
    as_json: bool, stream: TextIO | None = None, env: Mapping[str, str] | None = None
) -> Iterator[Progress]:
    """The Progress for a long command: nothing with ``--json``, a live display when ``stream``
    (default stderr) is a terminal, plain lines otherwise. The display ends with the block."""
    err = stream or sys.stderr
    environ = os.environ if env is None else env
    if as_json:
        yield NoProgress()
    elif not use_terminal(err, environ):
        yield LineProgress(stream)
    else:
        from gateway.cli.output_rich import RichProgress, console_for  # noqa: PLC0415

        with RichProgress(console_for(err, environ)) as live:
            yield live
