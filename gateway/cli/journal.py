"""The daemon's recent log lines, redacted (``gatewayctl logs`` and the support bundle).

Our log lines are JSON (structlog under systemd) and never carry a clinical value; redaction is a
second line of defence: any field named like a value or a key is blanked, and a line that is not
our JSON (a traceback, a line from another program) is replaced by its length, unread.

Under systemd the journal has them. Where it does not (no journald, as in a container or on the
simulated rig, or a daemon started by hand), the running daemon is asked over its control socket
for the events it keeps in memory (gateway.logs.RecentEvents): the same redacted events, though
only since it started.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.control import ControlError, ask
from gateway.errors import ConfigError, GatewayError, UsageError
from gateway.logs import FORBIDDEN_KEYS, bound_event

UNIT = "gatewayd.service"
# Where journald keeps its files (persistent, volatile): with neither, there is nothing to read and
# journalctl just prints nothing, which must not look like "the daemon logged nothing".
JOURNAL_DIRS = (Path("/var/log/journal"), Path("/run/log/journal"))
NO_JOURNAL_HINT = (
    "the daemon logs to the systemd journal; on a system without it, `gatewayctl logs` asks the "
    "running daemon for its recent events, so start gatewayd (or read its stderr)"
)
JOURNAL = "journal"
DAEMON_MEMORY = "gatewayd"


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


@dataclass(frozen=True, slots=True)
class LogLines:
    source: str  # JOURNAL or DAEMON_MEMORY
    events: list[dict[str, Any]]


def redact_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Redacted, and bounded and escaped like the daemon does it (gateway/logs.py): a journal
    line from elsewhere, or an older daemon, must not put an ESC sequence on this terminal."""
    redacted = {k: ("[redacted]" if k in FORBIDDEN_KEYS else v) for k, v in event.items()}
    return dict(bound_event(None, "", redacted))


def redact_line(line: str) -> dict[str, Any]:
    """Our log lines are JSON; anything else is kept only as a length, unread."""
    try:
        event = json.loads(line)
    except ValueError:
        return {"unparsed_line_chars": len(line)}
    if not isinstance(event, dict):
        return {"unparsed_line_chars": len(line)}
    return redact_event(event)


def _keeps_journal_files() -> bool:
    """Does journald keep any file here? (An empty /var/log/journal is what systemd's package
    leaves on a system where journald never ran.) Unreadable counts as yes: journalctl decides."""
    try:
        return any(any(d.rglob("*.journal")) for d in JOURNAL_DIRS if d.is_dir())
    except OSError:
        return True


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
    if no_files or (not proc.stdout.strip() and not _keeps_journal_files()):
        raise JournalUnavailableError("this system keeps no journal (no journal files found)")
    return [redact_line(line) for line in proc.stdout.splitlines() if line.strip()]


_AGO = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)\s+ago\s*$"
)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """The forms of journalctl's --since that the daemon's memory is asked with: '30 min ago',
    'today', 'yesterday', an ISO 8601 date or time (local time unless it names a zone)."""
    word = text.strip().lower()
    if match := _AGO.match(word):
        unit = "m" if match[2].startswith("min") else match[2][0]
        return now - timedelta(seconds=float(match[1]) * _UNIT_S[unit])
    local = now.astimezone()
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if word in ("today", "yesterday"):
        return midnight - timedelta(days=word == "yesterday")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r}: without a journal only '30 min ago', 'today', 'yesterday' or an "
            "ISO 8601 date or time are understood"
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


SocketPath = Callable[[], Path]  # the control socket, from the configuration (ConfigError if bad)


def from_daemon(
    query: JournalQuery, control_socket: SocketPath, now: datetime
) -> list[dict[str, Any]]:
    """The running daemon's recent events from memory, redacted here too (second line)."""
    since = None if query.since is None else parse_since(query.since, now).isoformat()
    answer = ask(control_socket(), "logs", lines=query.lines, since=since)
    if not isinstance(answer, list):
        raise ControlError("gatewayd answered `logs` with something that is not a list")
    return [redact_event(e) if isinstance(e, dict) else {"unparsed_line_chars": 0} for e in answer]


def read(query: JournalQuery, control_socket: SocketPath, now: datetime) -> LogLines:
    """The journal's lines for the unit; where it has none, the running daemon's memory."""
    try:
        events = recent(query)
    except JournalUnavailableError as no_journal:
        try:
            return LogLines(DAEMON_MEMORY, from_daemon(query, control_socket, now))
        except (ControlError, ConfigError) as exc:
            raise JournalUnavailableError(
                f"{no_journal.message}; nor could gatewayd be asked: {exc.message}"
            ) from None
    if events:
        return LogLines(JOURNAL, events)
    # Nothing in the journal for the unit: a daemon started by hand logs to its own stderr.
    try:
        events = from_daemon(query, control_socket, now)
    except (ControlError, ConfigError, UsageError):  # the journal's (empty) answer holds
        return LogLines(JOURNAL, [])
    return LogLines(DAEMON_MEMORY if events else JOURNAL, events)


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
