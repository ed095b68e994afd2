"""``gatewayctl logs``: the daemon's recent journal lines, redacted.

Without a journal (no journald; a daemon started by hand) the running daemon is asked for the
events it keeps in memory instead (gateway/cli/journal.py explains).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from gateway.cli import journal, output, tables
from gateway.config.settings import load

HELP = (
    "the daemon's recent log lines from the journal, or from the running daemon where there is "
    "no journal (redacted: no values, no keys)"
)
EXAMPLE = "gatewayctl logs --since '30 min ago' --lines 50"


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (argparse then exits 2 on anything else)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def stopped_daemon_log(config: Path) -> Path | None:
    """The log file a daemon started by hand keeps beside its configuration (``make demo``:
    .demo/gatewayd.log beside .demo/gateway.toml), if there is one."""
    candidate = config.absolute().parent / "gatewayd.log"
    return candidate if candidate.is_file() else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", help="only lines since then, as journalctl reads it: '1 h ago', '2026-11-23'"
    )
    parser.add_argument(
        "--lines", type=positive_int, default=200, help="at most this many lines, newest last (200)"
    )
    parser.add_argument("--unit", default=journal.UNIT, help=argparse.SUPPRESS)


def cmd_logs(args: argparse.Namespace) -> int:
    """0 with the lines (maybe none); neither a journal nor a daemon to ask raises (exit 1,
    with a hint)."""
    query = journal.JournalQuery(args.unit, args.lines, args.since)
    log_file = stopped_daemon_log(args.config)
    # The configuration is read only if the daemon must be asked (for its control socket).
    try:
        found = journal.read(query, lambda: load(args.config).control_socket, datetime.now(UTC))
    except journal.JournalUnavailableError as exc:
        if log_file is None:
            raise
        raise journal.JournalUnavailableError(
            exc.message,
            hint=f"a daemon started by hand (the demo) wrote its log to a file: less {log_file}",
        ) from None
    events = found.events
    if args.json:
        print(json.dumps(events, sort_keys=True, default=str))
        return 0
    if found.source == journal.DAEMON_MEMORY:
        print(
            "(no journal has gatewayd's lines here: these are the running daemon's latest "
            "events, kept in its memory since it started)"
        )
    if not events:
        print(f"no log lines from {args.unit}" + (f" since {args.since}" if args.since else ""))
        if log_file is not None:
            print(f"a daemon started by hand (the demo) wrote its log to {log_file}")
    else:
        # A terminal gets a table; a pipe gets journal.render's lines (grep-able, unchanged).
        output.screen().table(
            tables.Table.of(
                ["time", "level", "event", "fields"], [journal.columns(e) for e in events]
            ),
            plain="\n".join(journal.render(e) for e in events),
        )
    return 0
