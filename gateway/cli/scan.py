"""``gatewayctl scan``: BLE advertisers in range (bound or neighbour) and serial ports present."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from gateway.cli import ble_scan as scan
from gateway.cli import output, tables
from gateway.config.settings import Config, load
from gateway.control import ControlError, ask

HELP = "BLE devices in radio range (bound or neighbour) and serial ports present; no readings"
EXAMPLE = "gatewayctl scan --seconds 10"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="how long to listen for advertisements (8)"
    )
    parser.add_argument("--no-ble", action="store_true", help="only list serial ports")
    parser.add_argument("--serial-dir", default=str(scan.SERIAL_BY_ID), help=argparse.SUPPRESS)


def expected_in_range(cfg: Config) -> set[str]:
    """Real BLE devices bound to this episode: each should be heard advertising."""
    return {d.address.upper() for d in cfg.ble_devices}


def bound_addresses(cfg: Config) -> set[str]:
    """BLE addresses configured for this episode (everything else in range is a neighbour).

    The addresses of [[sim_devices]] count too (they stand for bound devices in the demo and on
    the simulated rig) but are not expected on the air: the in-process simulator does not
    advertise.
    """
    return expected_in_range(cfg) | {d.address.upper() for d in cfg.sim_devices}


def connected_to_daemon(cfg: Config) -> dict[str, int | None]:
    """Bound BLE devices the running daemon is connected to now (address -> RSSI); none when
    the daemon cannot be asked (then a bound device must be heard advertising)."""
    try:
        status = ask(cfg.control_socket, "status")
    except ControlError:
        return {}
    bound = expected_in_range(cfg)  # real BLE devices (a [[sim_devices]] one is not on the air)
    found = {}
    for d in status.get("devices", ()):
        address = str(d.get("device", "")).removeprefix("btmac:").upper()
        if address in bound and d.get("state") == "connected":
            found[address] = d.get("rssi_dbm")
    return found


def scan_all(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path  # noqa: PLC0415 - only this command needs it

    ports = scan.serial_ports(
        [(d.name, d.path) for d in cfg.serial_devices], by_id=Path(args.serial_dir)
    )
    ble: list[scan.Advertiser] | None = None
    if not args.no_ble:
        with output.progress(args.json) as progress:
            heard = asyncio.run(scan.scan_ble(args.seconds, bound_addresses(cfg), progress))
        ble = scan.with_connected(heard, connected_to_daemon(cfg))
    return {
        "ble": None if ble is None else [a.as_json() for a in ble],
        "serial": [p.as_json() for p in ports],
    }


def render(found: dict[str, Any]) -> list[tables.Table | str]:
    """The BLE table (or a sentence when nothing was heard), then the serial ports table."""
    parts: list[tables.Table | str] = []
    if found["ble"] is not None:
        rows = [
            [
                ("bound, connected" if a["connected"] else "bound") if a["bound"] else "neighbour",
                a["address"],
                a["name"],
                a["rssi_dbm"],
                ",".join(a["services"]) or None,
            ]
            for a in found["ble"]
        ]
        parts.append(
            tables.Table.of(["", "address", "name", "rssi dBm", "services"], rows)
            if rows
            else "no BLE advertisements heard"
        )
    rows = [
        [p["path"], p["target"] or "MISSING", p["configured_as"] or "not configured"]
        for p in found["serial"]
    ]
    parts.append(
        tables.Table.of(["serial port", "device", "configured as"], rows)
        if rows
        else "no serial ports"
    )
    return parts


def show(parts: list[tables.Table | str]) -> None:
    screen = output.screen()
    for i, part in enumerate(parts):
        if i:
            screen.text("")  # a blank line between the two answers
        if isinstance(part, str):
            screen.text(part)
        else:
            screen.table(part)


def cmd_scan(args: argparse.Namespace) -> int:
    """0, or 1 when a bound BLE device was not heard or a configured serial port is missing
    (2 bad configuration; a Bluetooth stack that cannot be asked is 1, with a hint)."""
    cfg = load(args.config)
    found = scan_all(cfg, args)
    if args.json:
        print(json.dumps(found, sort_keys=True))
    else:
        show(render(found))
    heard = {a["address"] for a in found["ble"] or () if a["bound"]}
    missing_ble = found["ble"] is not None and not expected_in_range(cfg) <= heard
    missing_port = any(p["configured_as"] and not p["present"] for p in found["serial"])
    return 1 if missing_ble or missing_port else 0
