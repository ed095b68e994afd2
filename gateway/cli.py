"""gatewayctl: the technician and logistics command line (thin: parse, call, render).

Output never contains a clinical value: the outbox holds only sealed records, and the commands
here report counts, ages and states. ``--json`` gives the same facts for scripts.
Exit codes: 0 fine, 1 a problem was found or an operation failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from buffer.outbox import inspect
from gateway import __version__
from gateway.config import DEFAULT_CONFIG_PATH, load
from gateway.errors import ConfigError, GatewayError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _render(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, sort_keys=True))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key.replace('_', ' '):<{width}}  {'-' if value is None else value}")


def cmd_version(args: argparse.Namespace) -> int:
    _render({"gatewayctl": __version__}, args.json)
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    _render(
        {
            "config": str(cfg.path),
            "valid": True,
            "gateway_id": cfg.gateway_id,
            "broker": f"{cfg.broker_host}:{cfg.broker_port}",
            "suite": str(cfg.suite),
            "simulated_devices": len(cfg.sim_devices),
        },
        args.json,
    )
    return EXIT_OK


def cmd_outbox(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    stats = inspect(cfg.outbox_path)
    age = stats.oldest_age_s(time.time_ns() // 1_000_000)
    _render(
        {
            "outbox": str(cfg.outbox_path),
            "undelivered_records": stats.depth,
            "undelivered_bytes": stats.bytes,
            "oldest_undelivered_age_s": None if age is None else round(age, 1),
            "last_sequence_number": stats.head_seq,
            "chain_epoch": stats.epoch,
        },
        args.json,
    )
    return EXIT_OK


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {
    "version": (cmd_version, "print the software version", "gatewayctl version"),
    "config-check": (
        cmd_config_check,
        "validate the configuration file and show what it sets up",
        "gatewayctl config-check --config /etc/homecare-gateway/gateway.toml",
    ),
    "outbox": (
        cmd_outbox,
        "show how much sealed data waits for the provider (no clinical values)",
        "gatewayctl outbox --json",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatewayctl",
        description="homecare-gateway technician and logistics commands.",
        epilog="example: gatewayctl outbox --config /etc/homecare-gateway/gateway.toml",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, example) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, epilog=f"example: {example}"
        )
        p.add_argument(
            "--config", type=Path, default=DEFAULT_CONFIG_PATH, help="configuration file"
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command][0]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"gatewayctl: {exc.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"gatewayctl: {exc.one_line()}", file=sys.stderr)
        return EXIT_PROBLEM


if __name__ == "__main__":
    raise SystemExit(main())
