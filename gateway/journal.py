"""The daemon's recent journal lines, redacted (``gatewayctl logs`` and the support bundle).

Our log lines are JSON (structlog under systemd) and never carry a clinical value; redaction is a
second line of defence: any field named like a value or a key is blanked, and a line that is not
our JSON (a traceback, a line from another program) is replaced by its length, unread.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.logs import FORBIDDEN_KEYS

UNIT = "gatewayd.service"
# Where journald keeps its files (persistent, volatile): with neither, there is nothing to read and
# journalctl just prints nothing, which must not look like "the daemon logged nothing".
JOURNAL_DIRS = (Path("/var/log/journal"), Path("/run/log/journal"))
NO_JOURNAL_HINT = (
    "the daemon logs to the systemd journal; on a system without it, read the daemon's stderr "
    "(or run it under systemd to get `gatewayctl logs`)"
)


class JournalUnavailableError(GatewayError):
    """journalctl is missing, failed, or the system keeps no journal."""

    hint = NO_JOURNAL_HINT


@dataclass(frozen=True, slots=True)
class JournalQuery:
    unit: str = UNIT
    lines: int = 200
    since: str | None = None  # anything journalctl --since accepts: "10 min ago", "2026-11-23"

    def __post_init__(self) -> None:
        if self.lines < 1:
            raise ValueError("lines must be at least 1")

    def argv(self, journalctl: str) -> list[str]:
        argv = [journalctl, "-u", self.unit, "-n", str(self.lines), "-o", "cat", "--no-pager"]
        if self.since:
            argv += ["--since", self.since]
        return argv


def redact_line(line: str) -> dict[str, Any]:
    """Our log lines are JSON; anything else is kept only as a length, unread."""
    try:
        event = json.loads(line)
    except ValueError:
        return {"unparsed_line_chars": len(line)}
    if not isinstance(event, dict):
        return {"unparsed_line_chars": len(line)}
    return {k: ("[redacted]" if k in FORBIDDEN_KEYS else v) for k, v in event.items()}


def recent(query: JournalQuery, *, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """The unit's last ``query.lines`` lines (since ``query.since``), each one redacted."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise JournalUnavailableError("journalctl is not installed: no journal to read")
    try:
        proc = subprocess.run(  # noqa: S603 - fixed tool, arguments passed as a list
            query.argv(journalctl),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JournalUnavailableError(f"journalctl failed: {exc}") from None
    problem = proc.stderr.strip().splitlines()[:1]
    if proc.returncode != 0:
        raise JournalUnavailableError(
            "journalctl failed: " + (problem[0][:200] if problem else f"exit {proc.returncode}")
        )
    no_files = bool(problem) and "no journal files were found" in problem[0].lower()
    if no_files or (not proc.stdout.strip() and not any(d.is_dir() for d in JOURNAL_DIRS)):
        raise JournalUnavailableError("this system keeps no journal (no journal files found)")
    return [redact_line(line) for line in proc.stdout.splitlines() if line.strip()]


def columns(event: dict[str, Any]) -> tuple[str, str, str, str]:
    """Time, level, event name, and the other fields as key=value (a table row of ``render``)."""
    if "unparsed_line_chars" in event:
        note = f"[a line that is not a gatewayd log event, {event['unparsed_line_chars']} chars]"
        return "-", "-", "-", note
    time_, level, name = (str(event.get(k, "-")) for k in ("timestamp", "level", "event"))
    rest = [
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
        for k, v in event.items()
        if k not in ("timestamp", "level", "event")
    ]
    return time_, level, name, " ".join(rest)


def render(event: dict[str, Any]) -> str:
    """One readable line: time, level, event name, then the other fields as key=value."""
    if "unparsed_line_chars" in event:
        return columns(event)[3]
    *head, rest = columns(event)
    return "  ".join(head) + ("  " + rest if rest else "")
