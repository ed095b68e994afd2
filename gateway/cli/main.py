"""gatewayctl: the technician and logistics command line (thin: parse, call, render).

Output never contains a clinical value: the outbox holds only sealed records, and the commands
here report counts, ages and states. ``--json`` gives the same facts for scripts.
Exit codes: 0 fine, 1 a problem was found or an operation failed, 2 bad configuration or usage,
3 the daemon could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from structlog.testing import LogCapture

from buffer.outbox import inspect
from drivers.ble.decode import decode_characteristic
from drivers.serial.decode import decode_capture
from gateway import __version__
from gateway.cli import diagnosis, diagnostics, output, tables
from gateway.cli import logs as cli_logs
from gateway.cli import provisioning as cli_provisioning
from gateway.cli import scan as cli_scan
from gateway.cli import support_bundle as bundle
from gateway.config.settings import DEFAULT_CONFIG_PATH, load
from gateway.control import ControlError, ask
from gateway.errors import ConfigError, DecodeError, GatewayError, UsageError

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3


def _render(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, sort_keys=True))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key.replace('_', ' '):<{width}}  {tables.cell(value)}")


def _render_table(data: dict[str, Any], as_json: bool) -> None:
    """Like _render, but for people a two-column table with units spelled out."""
    if as_json:
        print(json.dumps(data, sort_keys=True))
        return
    output.screen().key_values([(k.replace("_", " "), v) for k, v in data.items()])


def cmd_version(args: argparse.Namespace) -> int:
    _render({"gatewayctl": __version__}, args.json)
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    facts = {
        "config": str(cfg.path),
        "valid": True,
        "gateway_id": cfg.gateway_id,
        "broker": f"{cfg.broker_host}:{cfg.broker_port}",
        "suite": str(cfg.suite),
        "ble_devices": len(cfg.ble_devices),
        "serial_devices": len(cfg.serial_devices),
        "simulated_devices": len(cfg.sim_devices),
    }
    if args.json:
        _render(facts, True)
        return EXIT_OK
    serial_kinds = ", ".join(sorted({d.kind for d in cfg.serial_devices}))
    _render(
        {
            "config": f"{cfg.path}: valid",
            "gateway_id": cfg.gateway_id,
            "broker": facts["broker"],
            "suite": facts["suite"],
            # Each entry becomes one driver: the daemon runs as many as these three add up to.
            "devices": f"{len(cfg.ble_devices)} BLE, {len(cfg.serial_devices)} serial"
            + (f" ({serial_kinds})" if serial_kinds else "")
            + f", {len(cfg.sim_devices)} simulated",
        },
        False,
    )
    return EXIT_OK


def cmd_outbox(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    stats = inspect(cfg.outbox_path)
    age = stats.oldest_age_s(time.time_ns() // 1_000_000)
    _render_table(
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


def _age(iso: str | None) -> str:
    if not iso:
        return "never"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def render_status(s: dict[str, Any]) -> str:
    """One screen for a technician on a support call (no clinical values exist in it)."""
    ob, up, clock, cert = s["outbox"], s["uplink"], s["clock"], s["certificate"]
    oldest = "-" if ob["oldest_age_s"] is None else f"{float(ob['oldest_age_s']):.0f} s"
    quota = _size(int(ob["quota_bytes"])) if ob.get("quota_bytes") else "none"
    synced = "synchronised" if clock.get("synchronised") else "NOT synchronised"
    clock_text = f"{clock.get('source')}, {synced}" + (
        f", offset {clock['offset_ms']} ms" if "offset_ms" in clock else ""
    )
    lines = [
        f"homecare-gateway {s['software_version']}  gateway {s['gateway_id']}  "
        f"episode {s['episode']}  up {float(s['uptime_s']):.0f} s",
        diagnosis.render_findings(diagnosis.diagnose(s)),
        f"uplink       {up['state']}, {up['delivered_records']} records delivered"
        + (f"; last error: {up['last_error']}" if up["last_error"] else ""),
        f"outbox       {ob['depth']} records waiting ({_size(int(ob['bytes']))}), oldest {oldest}, "
        f"last seq {ob['last_seq']} (epoch {ob['epoch']}), quota {quota}",
        f"ingest       {s['ingest']['committed_readings']} readings stored"
        + (f"; last error: {s['ingest']['last_error']}" if s["ingest"]["last_error"] else ""),
        f"clock        {clock_text}",
        f"certificate  expires {cert['not_after'] or 'unknown'}"
        + (f" ({cert['days_left']} days)" if cert["days_left"] is not None else ""),
        "devices" + ("" if s["devices"] else "      none bound"),
    ]
    if s["devices"]:
        lines += ["  " + row for row in devices_table(s["devices"]).splitlines()]
    for name, link in s.get("links", {}).items():
        # A modem and the VPN report a state; the WAN under the tunnel reports what kind it is.
        head = link.get("state") or link.get("kind") or "unknown"
        details = ", ".join(
            f"{k.replace('_', ' ')} {tables.cell(v)}"
            for k, v in link.items()
            if v is not None and k not in ("state", "kind")
        )
        lines.append(f"link {name:<7} {head}" + (f": {details}" if details else ""))
    lines.append(f"power        {power_text(s.get('power'))}")
    lines.append(f"alarms       {', '.join(s['alarms']) if s['alarms'] else 'none'}")
    return "\n".join(lines)


_POWER_WORDS = {
    "mains": "on mains",
    "battery": "ON BATTERY (mains lost)",
    "battery-low": "BATTERY LOW (stopping cleanly, then powering off)",
    "unreachable": "UPS NOT READABLE",
    "unchecked": "not checked yet",
    "unknown": "unknown",
}


def power_text(power: Any) -> str:
    """The power line of ``gatewayctl status``: the supply in plain words, then the details."""
    if not isinstance(power, dict):
        return "unknown (this gateway does not report its power)"
    state = str(power.get("state"))
    head = _POWER_WORDS.get(state, state)
    if power.get("reason"):
        head += f" ({power['reason']})"
    parts = []
    if power.get("charge_pct") is not None:
        parts.append(f"charge {float(power['charge_pct']):.0f} %")
    if power.get("runtime_s") is not None:
        parts.append(f"runtime {float(power['runtime_s']) / 60:.0f} min")
    if power.get("outage_since"):
        parts.append(f"outage since {power['outage_since']}")
    if power.get("self_test") and power["self_test"] != "none":
        parts.append(f"self-test {power['self_test']}")
    if state == "unreachable" and power.get("error"):
        parts.append(str(power["error"]))
    previous = power.get("previous_stop")
    if isinstance(previous, dict):
        parts.append(f"last stop: power-cut shutdown at {previous.get('at')}")
    if power.get("ups"):
        parts.append(f"UPS {power['ups']}")
    return head + (f"; {', '.join(parts)}" if parts else "")


def devices_table(devices: list[dict[str, Any]]) -> str:
    return devices_grid(devices).text()


def devices_grid(devices: list[dict[str, Any]]) -> tables.Table:
    rows = [
        [
            d["device"],
            d["driver"],
            d["state"],
            _age(d["last_seen"]),
            f"{d['battery_pct']}%" if d["battery_pct"] is not None else None,
            d.get("rssi_dbm"),
            "SILENT" if d["silent"] else "ok",
        ]
        for d in devices
    ]
    return tables.Table.of(
        ["device", "driver", "state", "last seen", "battery", "rssi dBm", "alive"], rows
    )


def cmd_status(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    status = ask(cfg.control_socket, "status")
    findings = diagnosis.diagnose(status)
    if args.json:
        status["findings"] = [f.as_json() for f in findings]
        print(json.dumps(status, sort_keys=True, default=str))
    else:
        # render_status is the plain screen; a terminal draws its devices block as a table.
        output.screen().text(
            render_status(status),
            embedded=[devices_grid(status["devices"])] if status["devices"] else [],
            heading=True,
        )
    return EXIT_PROBLEM if diagnosis.has_problem(findings) else EXIT_OK


def _captured_bytes(args: argparse.Namespace) -> bytes:
    if args.hex is not None:
        text = "".join(args.hex.split())
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise DecodeError(f"--hex is not hexadecimal: {args.hex[:40]!r}") from None
    return sys.stdin.buffer.read()


DECODE_HINT = "`gatewayctl decode --help` shows both forms with an example"


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode captured device bytes; the output is JSON (this command exists to show values)."""
    if (args.uuid is None) == (args.protocol is None):
        raise UsageError(
            "give either --uuid (a BLE characteristic) or --protocol (serial)", hint=DECODE_HINT
        )
    data = _captured_bytes(args)
    if args.uuid is not None:
        try:
            uuid16 = int(args.uuid.lower().removeprefix("0x"), 16)
        except ValueError:
            raise UsageError(
                f"--uuid wants a 16-bit hex UUID such as 2a35, got {args.uuid!r}", hint=DECODE_HINT
            ) from None
        print(json.dumps(decode_characteristic(uuid16, data)))
        return EXIT_OK
    result = decode_capture(args.protocol, data)
    print(json.dumps(result))
    return EXIT_PROBLEM if result["errors"] else EXIT_OK


def _render_checks(checks: list[diagnostics.Check], as_json: bool) -> int:
    if as_json:
        print(json.dumps(diagnostics.as_json(checks)))
    else:
        output.screen().checks([(c.verdict, c.name, c.detail) for c in checks])
    return EXIT_OK if all(c.ok for c in checks) else EXIT_PROBLEM


def cmd_uplink_test(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    with output.progress(args.json) as progress:
        checks = diagnostics.uplink_test(cfg, progress=progress)
    return _render_checks(checks, args.json)


def cmd_selftest(args: argparse.Namespace) -> int:
    return _render_checks(diagnostics.selftest(load(args.config)), args.json)


def cmd_devices(args: argparse.Namespace) -> int:
    status = ask(load(args.config).control_socket, "status")
    devices = status["devices"]
    if args.json:
        print(json.dumps(devices, sort_keys=True))
    elif devices:
        output.screen().table(devices_grid(devices))
    else:
        print("no devices bound")
    return EXIT_PROBLEM if any(d["silent"] for d in devices) else EXIT_OK


def cmd_support_bundle(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    with output.progress(args.json) as progress:
        path = bundle.build(cfg, Path(args.out), progress=progress)
    if args.json:
        print(json.dumps({"bundle": str(path)}))
    else:
        print(f"support bundle written to {path} (no keys, no clinical values)")
    return EXIT_OK


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {
    "version": (cmd_version, "print the software version", "gatewayctl version"),
    "devices": (
        cmd_devices,
        "each bound device: state, last seen, battery (exit 1 if one is silent)",
        "gatewayctl devices",
    ),
    "uplink-test": (
        cmd_uplink_test,
        "check the route through the VPN, TLS and an MQTT connection to the broker",
        "gatewayctl uplink-test",
    ),
    "selftest": (
        cmd_selftest,
        "check keys, TLS files, outbox, daemon and clock (PASS / FAIL table)",
        "gatewayctl selftest --json",
    ),
    "support-bundle": (
        cmd_support_bundle,
        "write one archive for support: status, self-test, versions, config, redacted logs",
        "gatewayctl support-bundle --out /tmp",
    ),
    "decode": (
        cmd_decode,
        "decode captured device bytes to JSON (BLE characteristic or serial protocol)",
        "gatewayctl decode --uuid 2a1c --hex 004c0e00fe; "
        "gatewayctl decode --protocol astm < capture.bin",
    ),
    "status": (
        cmd_status,
        "one screen: what is wrong and what to do, then uplink, outbox, devices, clock, "
        "certificate, alarms (exit 1 if a problem is found)",
        "gatewayctl status",
    ),
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
    "logs": (cli_logs.cmd_logs, cli_logs.HELP, cli_logs.EXAMPLE),
    "scan": (cli_scan.cmd_scan, cli_scan.HELP, cli_scan.EXAMPLE),
    **cli_provisioning.COMMANDS,
}
# Commands with options of their own, defined next to the command.
ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "logs": cli_logs.add_arguments,
    "scan": cli_scan.add_arguments,
}


CONFIG_ENV = "HOMECARE_GATEWAY_CONFIG"


def _global_options(p: argparse.ArgumentParser) -> None:
    """Options accepted before and after the command (SUPPRESS: the one given wins)."""
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"configuration file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH}; "
        "the demo's: --config .demo/gateway.toml)",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="also print the log lines the command writes (stderr)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatewayctl",
        description="homecare-gateway technician and logistics commands.",
        epilog="examples: gatewayctl status (reads /etc/homecare-gateway/gateway.toml); "
        "gatewayctl --config .demo/gateway.toml status (the running demo); "
        f"export {CONFIG_ENV}=.demo/gateway.toml",
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, example) in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, epilog=f"example: {example}"
        )
        _global_options(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name in ARGUMENTS:
            ARGUMENTS[name](p)
        if name == "support-bundle":
            p.add_argument(
                "--out",
                "--output",
                dest="out",
                default=".",
                help="folder to write the archive to (default: the current folder)",
            )
        if name == "decode":
            p.add_argument("--uuid", help="16-bit GATT characteristic UUID in hex, e.g. 2a35")
            p.add_argument("--protocol", help="serial protocol: astm, nonin or cms50")
            p.add_argument("--hex", help="the captured bytes in hex (default: read stdin)")
        cli_provisioning.add_arguments(name, p)
    return parser


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def _quiet(_logger: Any, _method: str, event_dict: Any) -> Any:
    """Without --verbose a command's log lines stay out of what the operator reads: the
    command's own output says what happened (and errors come as one ``gatewayctl:`` line)."""
    raise structlog.DropEvent


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "config" not in args:
        args.config = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    verbose = bool(getattr(args, "verbose", False))
    # Log lines go to stderr: stdout is the command's answer (``--json`` is parsed by scripts).
    # Only the sink and the first processor change; the sink is looked up at each call (never a
    # stale stream of an earlier caller), and loggers are not cached, so tests' capture_logs()
    # (which replaces the processors) still sees every event.
    processors = [p for p in structlog.get_config()["processors"] if p is not _quiet]
    if not verbose and not any(isinstance(p, LogCapture) for p in processors):
        processors = [_quiet, *processors]  # a test's capture_logs() keeps seeing everything
    structlog.configure(logger_factory=_stderr_logger, processors=processors)
    handler = COMMANDS[args.command][0]
    try:
        return handler(args)
    except (ConfigError, UsageError) as exc:
        print(f"gatewayctl: {exc.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except ControlError as exc:
        print(f"gatewayctl: {exc.one_line()}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except GatewayError as exc:
        print(f"gatewayctl: {exc.one_line()}", file=sys.stderr)
        return EXIT_PROBLEM


if __name__ == "__main__":
    raise SystemExit(main())
