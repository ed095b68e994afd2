"""A connected device's clock, once per connection: read Current Time (0x2A2B), set it when off.

The coincident timestamp of the PHD IG: the driver reads the device's Current Time when it has
the characteristic and, when the clock is off by more than ``SYNC_TOLERANCE`` and the
characteristic is writable (Write is optional in CTS), sets it to the gateway's local time and
reads it again. Only when needed: every write starts a new clock epoch for the readings the
device stores afterwards. The resulting ``ClockSync`` (drivers/ble/clock_sync.py, pure) tells per
reading which clock stamped it. Without Current Time the offset is unknown and device timestamps
are kept and flagged UNSYNCED - never silently replaced by the reception time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from bleak import BleakClient
from bleak.exc import BleakError

from drivers.ble.clock_sync import ClockSync
from drivers.ble.gatt_time import CURRENT_TIME_UUID, AdjustReason, CurrentTime
from drivers.ble.measure import SYNC_TOLERANCE, clock_offset_from
from drivers.ble.uuids import uuid128
from gateway.errors import GatewayError
from gateway.model import DeviceId

log = structlog.get_logger("drivers.ble.current_time")


async def read_clock(client: BleakClient, device: DeviceId) -> timedelta | None:
    """Device clock minus ours, from Current Time; None when it has no date (unset)."""
    try:
        value = CurrentTime.decode(bytes(await client.read_gatt_char(
            uuid128(CURRENT_TIME_UUID))))
    except (BleakError, GatewayError) as exc:
        log.info("ble.current_time_unavailable", device=str(device),
                 error=type(exc).__name__)
        return None
    if value.local_time is None:
        return None  # the device's clock is not set
    return clock_offset_from(value.local_time, datetime.now(UTC))


async def sync_clock(client: BleakClient, device: DeviceId, *, set_clock: bool) -> ClockSync:
    """The coincident timestamp; set the device clock when it is off, ``set_clock`` allows it
    and the device lets us (see the module docstring)."""
    char = client.services.get_characteristic(uuid128(CURRENT_TIME_UUID))
    if char is None:
        return ClockSync(None)
    before = await read_clock(client, device)
    local = datetime.now(UTC).astimezone()  # the gateway's zone is the patient's home zone
    zone = local.utcoffset() or timedelta(0)
    in_step = before is not None and abs(before - zone) <= SYNC_TOLERANCE
    if in_step or not set_clock or "write" not in char.properties:
        sync = ClockSync(before)
    else:
        try:
            now = datetime.now(UTC)
            value = CurrentTime.from_datetime(
                now.astimezone().replace(tzinfo=None),
                AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE)
            await client.write_gatt_char(uuid128(CURRENT_TIME_UUID), value.encode(),
                                         response=True)
        except BleakError as exc:
            log.info("ble.current_time_write_failed", device=str(device),
                     error=type(exc).__name__)
            sync = ClockSync(before)
        else:
            sync = ClockSync(before, now, await read_clock(client, device))
    log.info("ble.clock", device=str(device), **sync.summary())
    return sync
