"""Finding the one bound device before each connection, and tallying the neighbours' devices.

``find_device`` discovers the bound address only (a neighbour's device of the same kind is never
touched) and returns the RSSI of its advertisement for the health report. bleak's
``BleakClient(address)`` scans the same way; scanning here gives us the advertisement. Each
attempt starts a fresh discovery, so there is no long-lived scanner to go stale or to watch.

``AdvertiserTally`` counts advertisers of a health service that are not bound to this episode;
one tally is shared by the BLE drivers of a daemon. Addresses only: identifiers, no clinical data.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDeviceNotFoundError

from drivers.ble.profiles import HEALTH_SERVICES
from drivers.ble.uuids import uuid16_of
from gateway.model import DeviceId

log = structlog.get_logger("drivers.ble.discovery")

# Neighbours' addresses remembered at most (each a 17-character string). A street full of
# health devices, or one rotating random addresses, stops being remembered at the cap: later
# ones are counted as "more" only, so neither memory nor log lines grow with what is in the air.
MAX_NEIGHBOURS = 256


class AdvertiserTally:
    """Advertisers of a health service that are not bound to this episode, shared by the BLE
    drivers of one daemon: the neighbour's device is ignored, and counted (health report)."""

    def __init__(self, bound: Iterable[str]) -> None:
        self.bound = frozenset(a.upper() for a in bound)
        self.ignored: set[str] = set()  # addresses; identifiers, not clinical data
        self.beyond_cap = False  # more neighbours than MAX_NEIGHBOURS were seen

    def saw(self, address: str, service_uuids: Iterable[str]) -> None:
        address = address.upper()
        if address in self.bound or address in self.ignored:
            return
        if any(uuid16_of(u) in HEALTH_SERVICES for u in service_uuids):
            if len(self.ignored) >= MAX_NEIGHBOURS:
                if not self.beyond_cap:
                    log.warning("ble.neighbours_capped", cap=MAX_NEIGHBOURS)
                self.beyond_cap = True
                return
            self.ignored.add(address[:17])
            log.info("ble.neighbour_ignored", device=f"btmac:{address[:17]}",
                     ignored=len(self.ignored))

    def snapshot(self) -> dict[str, object]:
        """For the health report's links: how many foreign health devices are in the air."""
        return {"ignored_advertisers": len(self.ignored), "beyond_cap": self.beyond_cap}


async def find_device(device: DeviceId, *, timeout_s: float, adapter: str | None,
                      tally: AdvertiserTally | None) -> tuple[BLEDevice, int]:
    """Discover ``device`` (a BTMAC id) and only it, tallying the others; its advertisement's
    RSSI with it. Raises ``BleakDeviceNotFoundError`` when it does not advertise in time."""
    address = device.value
    rssi_dbm = 0

    def ours(found: BLEDevice, adv: AdvertisementData) -> bool:
        nonlocal rssi_dbm
        if found.address.upper() == address:
            rssi_dbm = adv.rssi
            return True
        if tally is not None:
            tally.saw(found.address, adv.service_uuids)
        return False

    found = await BleakScanner.find_device_by_filter(
        ours, timeout=timeout_s, bluez={"adapter": adapter} if adapter else {})
    if found is None:
        raise BleakDeviceNotFoundError(address, f"{device} is not advertising")
    return found, rssi_dbm
