"""Plain text tables for people (``gatewayctl`` without ``--json``).

No colours, no box drawing: what a technician reads to support over the phone, or pastes into a
ticket, must look the same everywhere. Columns are left-aligned, separated by two spaces, a
missing value is ``-``; the header row names each column in upper case. This is the form for
pipes, files and tests; on a terminal gateway/cli/output.py draws the same cells with rich.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def cell(value: object) -> str:
    """A value as a person reads it: never a Python repr (True, None, ['a'], {'k': 1})."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(cell(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {cell(v)}" for k, v in value.items())
    return str(value)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, header: bool = True
) -> str:
    """``header=False`` leaves out the header row (the PASS / FAIL lines of the checks)."""
    texts = [[h.upper() for h in headers]] if header else []
    texts += [[cell(v) for v in row] for row in rows]
    widths = [max((len(r[i]) for r in texts), default=0) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in texts
    )


@dataclass(frozen=True, slots=True)
class Table:
    """A table's content, for a renderer to draw (gateway/cli/output.py); ``text()`` is its plain
    form, exactly what ``table`` prints."""

    headers: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]

    @classmethod
    def of(cls, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
        return cls(tuple(headers), tuple(tuple(r) for r in rows))

    def text(self) -> str:
        return table(self.headers, self.rows)


def key_values(pairs: Sequence[tuple[str, object]]) -> str:
    """Two columns, name and value, for one thing (an outbox, a status summary)."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k:<{width}}  {cell(v)}".rstrip() for k, v in pairs)
