"""``gatewayctl logs``: the daemon's recent journal lines, redacted."""

from __future__ import annotations

import argparse
import json

from gateway import journal, output, tables

HELP = "the daemon's recent log lines from the journal (redacted: no values, no keys)"
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", help="only lines since then, as journalctl reads it: '1 h ago', '2026-11-23'"
    )
    parser.add_argument(
        "--lines", type=positive_int, default=200, help="at most this many lines, newest last (200)"
    )
    parser.add_argument("--unit", default=journal.UNIT, help=argparse.SUPPRESS)


def cmd_logs(args: argparse.Namespace) -> int:
    """0 with the lines (maybe none); a missing journal raises (exit 1, with a hint)."""
    events = journal.recent(journal.JournalQuery(args.unit, args.lines, args.since))
    if args.json:
        print(json.dumps(events, sort_keys=True, default=str))
    elif not events:
        print(f"no log lines from {args.unit}" + (f" since {args.since}" if args.since else ""))
    else:
        # A terminal gets a table; a pipe gets journal.render's lines (grep-able, unchanged).
        output.screen().table(
            tables.Table.of(
                ["time", "level", "event", "fields"], [journal.columns(e) for e in events]
            ),
            plain="\n".join(journal.render(e) for e in events),
        )
    return 0
