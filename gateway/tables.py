"""Plain text tables for people (``gatewayctl`` without ``--json``).

No colours, no box drawing: what a technician reads to support over the phone, or pastes into a
ticket, must look the same everywhere. Columns are left-aligned, separated by two spaces, a
missing value is ``-``; the header row names each column in upper case.
"""

from __future__ import annotations

from collections.abc import Sequence


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    texts = [[h.upper() for h in headers], *([cell(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in texts) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in texts
    )


def key_values(pairs: Sequence[tuple[str, object]]) -> str:
    """Two columns, name and value, for one thing (an outbox, a status summary)."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k:<{width}}  {cell(v)}".rstrip() for k, v in pairs)
