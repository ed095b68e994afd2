"""What is in radio range and on the serial bus (``gatewayctl scan``), without clinical data.

BLE: a passive look at advertisements for a few seconds with bleak's BleakScanner. Only the
address, the advertised name, the RSSI and the advertised service UUIDs are kept; manufacturer
and service data are dropped at this edge, because some devices (thermometers, scales) broadcast
their last reading in them. Each address is marked bound (configured for this episode) or a
neighbour; the gateway never connects to a neighbour (DESIGN invariant 4). A bound device the
running daemon is connected to does not advertise (BLE peripherals stop once connected): it is
listed as connected, from what the daemon reports, instead of as not heard.

Serial: the stable names under /dev/serial/by-id (what udev gives every USB serial adapter) and
every configured serial device path, each marked configured or not, present or missing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.progress import NO_PROGRESS, Progress

SERIAL_BY_ID = Path("/dev/serial/by-id")

# Bluetooth SIG assigned 16-bit service UUIDs of the health profiles we read (GATT Specification
# Supplement / Assigned Numbers 3.4.2), to name what a device is without connecting to it.
HEALTH_SERVICES = {
    0x1808: "glucose",
    0x1809: "thermometer",
    0x180D: "heart-rate",
    0x1810: "blood-pressure",
    0x181D: "weight-scale",
    0x181F: "cgm",
    0x1822: "pulse-oximeter",
    0x1840: "generic-health-sensor",
}
_BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"


class ScanError(GatewayError):
    """The Bluetooth stack could not be asked (no adapter, BlueZ not running, powered off)."""

    hint = (
        "check `systemctl status bluetooth` and that the adapter is powered "
        "(`bluetoothctl show`); the gateway needs BlueZ on the system bus"
    )


@dataclass(frozen=True, slots=True)
class Advertiser:
    address: str
    name: str | None
    rssi_dbm: int | None
    services: tuple[str, ...]  # advertised health profiles by name, other UUIDs as given
    bound: bool
    connected: bool = False  # to gatewayd now (so not advertising; RSSI as the daemon saw it)

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "rssi_dbm": self.rssi_dbm,
            "services": list(self.services),
            "bound": self.bound,
            "connected": self.connected,
        }


@dataclass(frozen=True, slots=True)
class SerialPortSeen:
    path: str  # the stable name (by-id link or configured path)
    target: str | None  # what it points to now (/dev/ttyUSB0), None when missing
    configured_as: str | None  # the configured device name, None when not configured

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "present": self.target is not None,
            "target": self.target,
            "configured_as": self.configured_as,
        }


def service_name(uuid: str) -> str:
    text = uuid.lower()
    if text.endswith(_BASE_UUID_SUFFIX) and text.startswith("0000"):
        short = int(text[4:8], 16)
        return HEALTH_SERVICES.get(short, f"0x{short:04x}")
    return text


def advertisers(
    seen: Iterable[tuple[str, str | None, int | None, Sequence[str]]], bound: Collection[str]
) -> list[Advertiser]:
    """Our own type from (address, name, rssi, service UUIDs); bound ones first, then by RSSI."""
    wanted = {a.upper() for a in bound}
    found = [
        Advertiser(
            address=address.upper(),
            name=name,
            rssi_dbm=rssi,
            services=tuple(service_name(u) for u in services),
            bound=address.upper() in wanted,
        )
        for address, name, rssi, services in seen
    ]
    return _ordered(found)


def _ordered(found: Iterable[Advertiser]) -> list[Advertiser]:
    return sorted(found, key=lambda a: (not a.bound, -(a.rssi_dbm or -999), a.address))


def with_connected(
    heard: Sequence[Advertiser], connected: Mapping[str, int | None]
) -> list[Advertiser]:
    """``heard`` plus each bound device the daemon is connected to (address -> RSSI), which
    does not advertise while connected; one heard anyway is only marked connected."""
    held = {a.upper(): rssi for a, rssi in connected.items()}
    found = [replace(a, connected=a.address in held) for a in heard]
    seen = {a.address for a in heard}
    found += [
        Advertiser(address, None, rssi, (), bound=True, connected=True)
        for address, rssi in held.items()
        if address not in seen
    ]
    return _ordered(found)


async def scan_ble(
    duration_s: float,
    bound: Collection[str],
    progress: Progress = NO_PROGRESS,
    tick_s: float = 0.25,
) -> list[Advertiser]:
    """Listen to advertisements for ``duration_s`` seconds (bleak, BlueZ over D-Bus); the
    window's elapsed seconds go to ``progress`` every ``tick_s``."""
    # Imported here: the other commands should not pay for bleak + dbus-fast at start-up.
    from bleak import BleakScanner  # noqa: PLC0415
    from bleak.exc import BleakError  # noqa: PLC0415
    from dbus_fast.errors import DBusError  # noqa: PLC0415

    task = progress.begin("listening for BLE advertisements", total=duration_s, unit="s")
    began = time.monotonic()
    listening = asyncio.ensure_future(
        BleakScanner.discover(timeout=duration_s, return_adv=True)
    )
    try:
        # Ends with the scan: bleak stops listening after duration_s (plus its start-up).
        while not listening.done():
            await asyncio.wait({listening}, timeout=tick_s)
            progress.update(task, min(time.monotonic() - began, duration_s))
        found = listening.result()
    except (BleakError, DBusError, OSError) as exc:
        progress.end(task, "failed")
        raise ScanError(f"Bluetooth scan failed: {str(exc)[:200]}") from None
    finally:
        listening.cancel()  # a no-op once it is done; stops it if we were cancelled
    progress.end(task, f"{len(found)} heard")
    return advertisers(
        (
            (device.address, adv.local_name, adv.rssi, tuple(adv.service_uuids))
            for device, adv in found.values()
        ),
        bound,
    )


def serial_ports(
    configured: Sequence[tuple[str, str]], by_id: Path = SERIAL_BY_ID
) -> list[SerialPortSeen]:
    """Stable serial names present now, plus every configured ``(name, path)`` (maybe missing)."""
    names = {path: name for name, path in configured}
    paths = sorted(str(p) for p in by_id.iterdir()) if by_id.is_dir() else []
    paths += [p for _, p in configured if p not in paths]
    seen = []
    for path in paths:
        p = Path(path)
        target = str(p.resolve()) if p.exists() else None
        seen.append(SerialPortSeen(path, target, names.get(path)))
    return seen
