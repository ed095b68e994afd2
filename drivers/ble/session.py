"""``BleDeviceDriver``: one allow-listed GATT health device, kept connected with bleak.

The driver connects only to the address it was bound to (``BleakClient(address)``; a neighbour's
device of the same kind is never touched, only counted: drivers/ble/discovery.py), subscribes to
the profile's measurement characteristic and its optional ones, and pumps every payload into its
``Intake`` (drivers/ble/intake.py), which turns it into ``Measurement``s and hands each reading to
the pipeline once. A device that is absent or out of range is the normal case at home: the
driver waits (classified, jittered exponential backoff: drivers/ble/reconnect.py) and tries
again, forever, without a busy loop. Every (re)connection resubscribes.

Once per connection, in this order: the device clock (Current Time, set when off:
drivers/ble/current_time.py), the battery level, the CGM Session Start Time, the subscriptions
(continuous characteristics included - PLX Continuous, Heart Rate, CGM, Intermediate
Temperature), and for RACP devices (glucose, CGM) the request for the stored records above the
last durably committed one. A quiet link is probed with a GATT read, which notices a bluetoothd
that went away when bleak does not.

A Generic Health Sensor (profile ``generic-health-sensor``) has no Current Time: its clock is
read from Current Elapsed Time (0x2BF2) for the coincident timestamp, never set. The driver reads
its Health Sensor Features (0x2BF3, logged as a count of observation types), subscribes to Live
and Stored Health Observations, starts live observations through the GHS Control Point (0x2BF4)
and fetches stored observations through RACP with a uint32 record number. Observations that
cannot be used are reported as gap records (``report_unusable``) before anything else happens.

Each attempt starts a fresh discovery (``find_device``), so there is no long-lived scanner to
watch; it notes the device's RSSI for the health report.

Logs carry identifiers, characteristic UUIDs and error reasons, never clinical values.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import structlog
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakDBusError, BleakError

from drivers.ble.cgm import CGM_MEASUREMENT_UUID, CGM_SESSION_START_TIME_UUID, CgmSessionStartTime
from drivers.ble.clock_sync import ClockSync
from drivers.ble.current_time import sync_clock
from drivers.ble.device_info import BATTERY_LEVEL_UUID
from drivers.ble.discovery import AdvertiserTally, find_device
from drivers.ble.elapsed_time import CURRENT_ELAPSED_TIME_UUID, read_elapsed_time
from drivers.ble.errors import PairingError
from drivers.ble.ghs import LIVE_HEALTH_OBSERVATIONS_UUID
from drivers.ble.ghs_features import (
    GHS_CONTROL_POINT_UUID,
    HEALTH_SENSOR_FEATURES_UUID,
    ControlOpCode,
    ControlPoint,
    HealthSensorFeatures,
)
from drivers.ble.intake import Intake, LinkState, RacpState
from drivers.ble.measure import clock_offset_from
from drivers.ble.profiles import PROFILES
from drivers.ble.racp import RACP_UUID, RacpRequest
from drivers.ble.reconnect import Backoff, classify, pairing_failure
from drivers.ble.seen import SeenSet
from drivers.ble.uuids import uuid16_of, uuid128
from drivers.ble.wire import Reader
from gateway.errors import ConfigError, GatewayError
from gateway.gaps import UnusableReading
from gateway.model import DeviceId, DeviceIdKind, Measurement, ReceptionStamps
from gateway.pipeline.health import DeviceHealth
from gateway.pipeline.watchdog import LoopMark

log = structlog.get_logger("drivers.ble.session")


def _raise_if_cancelled() -> None:
    """Stop if this task was cancelled, even where the cancellation got swallowed on the way.

    A cancel that lands while bleak is inside a D-Bus call can come back as a BleakDBusError
    (seen: org.bluez.Error.Failed right after a bluetoothd restart); the loop then took it for
    a failed attempt and went on, and the daemon's shutdown waited for this task for ever.
    ``Task.cancelling()`` still counts the request, so the loop honours it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

_Item = tuple[int, bytes, datetime] | None  # None: the link is gone

# Notifications waiting to be decoded, per connection, at most. A device notifying faster than we
# decode (a flood) reaches it: the connection is ended (a None is queued past the cap, so the end
# always gets in) and later notifications of that connection are dropped. Dropping single ones
# could let a later stored record's commit move the RACP cursor past them; after the reconnect the
# device is asked again from the durable cursor, and a live-only device's flood is not readings.
MAX_QUEUED_NOTIFICATIONS = 1024
# An attribute value is at most 512 octets (Core 5.4 Vol 3 Part F 3.2.9): anything longer is not
# a GATT health measurement and is refused before it is copied or queued.
MAX_NOTIFICATION_BYTES = 512


def _on_disconnect(queue: asyncio.Queue[_Item]) -> Callable[[BleakClient], None]:
    def dropped(_client: BleakClient) -> None:
        queue.put_nowait(None)

    return dropped


class BleDeviceDriver:
    """A ``Driver`` for one bound BLE health device (see the module docstring)."""

    SOURCE_PREFIX: ClassVar[str] = "ble"

    def __init__(
        self,
        address: str,
        profile: str,
        *,
        expected_interval_s: float | None = None,
        passkey: int | None = None,
        bond: bool | None = None,
        name: str | None = None,
        adapter: str | None = None,
        state_file: Path | None = None,
        seen_file: Path | None = None,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 20.0,
        liveness_s: float = 30.0,
        set_clock: bool = True,
        tally: AdvertiserTally | None = None,
        report_unusable: Callable[[UnusableReading], Awaitable[bool]] | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError("ble profile", f"unknown profile {profile!r}")
        self.device = DeviceId(DeviceIdKind.BTMAC, address)
        self.address = self.device.value
        self.profile = profile
        self.spec = PROFILES[profile]
        self.name = f"ble.{name or profile}"
        self.expected_interval_s = expected_interval_s
        self.passkey = passkey  # typed by our org.bluez.Agent1 (drivers/ble/agent.py)
        self.bond = passkey is not None if bond is None else bond  # bleak pair=True on connect
        self.adapter = adapter
        self.backoff = backoff or Backoff()
        self.connect_timeout_s = connect_timeout_s
        self.liveness_s = liveness_s
        self.set_clock = set_clock and PROFILES[profile].sets_clock
        self.tally = tally
        self.report_unusable = report_unusable  # seals a gap record; None: logged and counted
        self.measurement_uuid = self.spec.measurement
        self.racp = self.spec.racp
        if self.racp and state_file is None:
            raise ConfigError("ble state file", f"a {profile} device needs a state file")
        # CGM time offsets and GHS record numbers may start at 0; glucose sequence numbers at 1.
        initial = -1 if self.measurement_uuid in (CGM_MEASUREMENT_UUID,
                                                  LIVE_HEALTH_OBSERVATIONS_UUID) else 0
        self._stamps = ReceptionStamps()  # identifiers of clockless readings stay apart
        self._intake = Intake(
            self.device, self.spec,
            state=RacpState(state_file, initial) if state_file is not None else None,
            seen=SeenSet(seen_file) if seen_file is not None else None)
        self.state = "waiting"
        self.progress = LoopMark()  # the watchdog's view of this device's loop
        self.last_seen: datetime | None = None
        self.last_error: str | None = None
        self.pairing_error: PairingError | None = None  # the last failed bonding, until one works
        self.connections = 0
        self.attempts = 0  # connection attempts, successful or not
        self.battery_pct: int | None = None
        self.rssi_dbm: int | None = None  # of the last advertisement seen before connecting
        self.clock: ClockSync | None = None  # the current / last connection's coincident time
        self._queue: asyncio.Queue[_Item] | None = None  # the current connection's items
        self.racp_requests: list[int] = []  # the ">= N" of each RACP request, for the record

    def bluez_lost(self) -> None:
        """bluetoothd went away (the ``org.bluez`` owner changed): end this connection now and
        reconnect, rather than wait for the liveness probe - bleak does not notice by itself."""
        if self._queue is not None and self.state == "connected":
            self._queue.put_nowait(None)

    def streamed(self, m: Measurement) -> bool:
        """Does ``m`` come from a continuous characteristic (lane STREAM)?"""
        return self._intake.streamed(m)

    @property
    def readings(self) -> int:
        return self._intake.readings

    @property
    def malformed(self) -> int:
        return self._intake.malformed

    @property
    def duplicates(self) -> int:
        """Backlog readings recognised as already stored, not handed over."""
        return self._intake.duplicates

    # -- Driver -------------------------------------------------------------------------------

    @property
    def last_committed_sequence(self) -> int:
        return self._intake.last_committed_sequence

    async def _find(self) -> BLEDevice:
        found, self.rssi_dbm = await find_device(
            self.device, timeout_s=self.connect_timeout_s, adapter=self.adapter,
            tally=self.tally)
        return found

    async def measurements(self) -> AsyncIterator[Measurement]:  # noqa: PLR0915 - one loop
        attempt = 0
        while True:
            _raise_if_cancelled()
            # Discovery and connect() each time out after connect_timeout_s; set-up reads too.
            self.progress.turn(within_s=3 * self.connect_timeout_s)
            if self.state == "waiting":
                # Only the first attempt says "connecting": a retry keeps the last failure or
                # end ("out-of-range", "pairing-failed", ...) on show, since a device that is away
                # spends most of each attempt in discovery and status would hide what is wrong.
                self.state = "connecting"
            queue: asyncio.Queue[_Item] = asyncio.Queue()
            self._queue = queue
            client: BleakClient | None = None
            try:
                self.attempts += 1
                client = BleakClient(await self._find(),
                                     disconnected_callback=_on_disconnect(queue),
                                     timeout=self.connect_timeout_s, pair=self.bond,
                                     bluez={"adapter": self.adapter} if self.adapter else {})
                await client.connect()
            except (BleakError, TimeoutError, OSError, EOFError) as exc:
                if client is not None:  # a failed connect() leaves bleak's bus connection open
                    with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
                        async with asyncio.timeout(5):
                            await client.disconnect()
                pairing = pairing_failure(exc, str(self.device))
                if pairing is not None:
                    # A wrong passkey does not get better by hammering: the device may lock us
                    # out. Wait the longest backoff and tell the technician what to fix.
                    self.state, self.last_error, self.pairing_error = (
                        "pairing-failed", type(pairing).__name__, pairing)
                    delay = self.backoff.max_s
                    log.error("ble.pairing_failed", device=str(self.device),  # noqa: TRY400 - expected, no traceback
                              reason=pairing.reason, hint=pairing.hint, retry_in_s=delay)
                else:
                    self.state = classify(exc)
                    self.last_error = type(exc).__name__
                    delay = self.backoff.delay(attempt)
                    log.info("ble.connect_failed", device=str(self.device), state=self.state,
                             error=type(exc).__name__, retry_in_s=round(delay, 2),
                             dbus_error=exc.dbus_error if isinstance(exc, BleakDBusError)
                             else None)
                attempt += 1
                self.progress.turn(within_s=delay)
                _raise_if_cancelled()
                await asyncio.sleep(delay)
                continue
            self.pairing_error = None
            started = time.monotonic()
            self.connections += 1
            self.state = "connected"
            self.last_error = None
            log.info("ble.connected", device=str(self.device), profile=self.profile,
                     rssi_dbm=self.rssi_dbm)
            ended = "out-of-range"  # the link dropped: the usual reason at home
            try:
                async with contextlib.aclosing(self._session(client, queue)) as session:
                    async for m in session:
                        yield m
            except (BleakError, TimeoutError, OSError, EOFError) as exc:
                ended, self.last_error = "failing", type(exc).__name__
                log.warning("ble.session_failed", device=str(self.device),
                            error=type(exc).__name__)
            finally:
                # Always, even when the device dropped the link: bleak 3.1 closes the
                # connection's own D-Bus connection only in disconnect(). Skipping it leaked
                # one socket per remote disconnect until dbus-daemon's per-user connection
                # limit (256) refused every new connection (found by tests/ble_session/test_soak).
                with contextlib.suppress(BleakError, TimeoutError, OSError, EOFError):
                    async with asyncio.timeout(5):
                        await client.disconnect()
            self.state = ended
            log.info("ble.disconnected", device=str(self.device), state=ended)
            if time.monotonic() - started >= self.backoff.stable_s:
                attempt = 0
            delay = self.backoff.delay(attempt)
            attempt += 1
            self.progress.turn(within_s=delay)
            _raise_if_cancelled()
            await asyncio.sleep(delay)

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        await self._intake.committed(measurements)

    async def refused(self, measurements: Sequence[Measurement]) -> None:
        """The pipeline could not store these: ask the device for them again next time."""
        await self._intake.refused(measurements)

    def health(self) -> list[DeviceHealth]:
        return [DeviceHealth(
            device=str(self.device),
            driver=self.name,
            state=self.state,
            last_seen=self.last_seen,
            expected_interval_s=self.expected_interval_s,
            readings=self.readings,
            battery_pct=self.battery_pct,
            rssi_dbm=self.rssi_dbm,
            duplicates=self.duplicates,
            rejected_input=self._intake.malformed,
            last_rejected=self._intake.last_rejected,
        )]

    # -- one connection -----------------------------------------------------------------------

    def _on_value(self, queue: asyncio.Queue[_Item]
                  ) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        """bleak's notification callback for one connection, with the caps of this module."""
        flooded = False

        def on_value(char: BleakGATTCharacteristic, data: bytearray) -> None:
            nonlocal flooded
            uuid16 = uuid16_of(char.uuid)
            if uuid16 is None or flooded:
                return
            if len(data) > MAX_NOTIFICATION_BYTES:
                self._intake.reject_oversize(uuid16, len(data))
                return
            if queue.qsize() >= MAX_QUEUED_NOTIFICATIONS:
                flooded = True
                self._intake.reject_flood(uuid16)
                queue.put_nowait(None)  # ends this connection; the device is asked again
                return
            queue.put_nowait((uuid16, bytes(data), self._stamps.stamp(datetime.now(UTC))))

        return on_value

    async def _session(self, client: BleakClient, queue: asyncio.Queue[_Item]
                       ) -> AsyncGenerator[Measurement, None]:
        on_value = self._on_value(queue)
        link = LinkState(await sync_clock(client, self.device, set_clock=self.set_clock))
        ghs = self.measurement_uuid == LIVE_HEALTH_OBSERVATIONS_UUID
        if ghs:
            link.clock = ClockSync(await self._read_elapsed_time(client))
            await self._read_features(client)
        self.clock = link.clock
        await self._read_battery(client)
        if self.measurement_uuid == CGM_MEASUREMENT_UUID:
            link.cgm_start = await self._read_session_start(client)
        await client.start_notify(uuid128(self.measurement_uuid), on_value)
        for optional in self.spec.optional:  # resubscribed on every connection
            if client.services.get_characteristic(uuid128(optional)) is not None:
                await client.start_notify(uuid128(optional), on_value)
        if ghs:
            await client.start_notify(uuid128(GHS_CONTROL_POINT_UUID), on_value)
            await client.write_gatt_char(
                uuid128(GHS_CONTROL_POINT_UUID),
                ControlPoint(ControlOpCode.START_SEND_LIVE_OBSERVATIONS).encode(), response=True)
        if self.racp:
            await client.start_notify(uuid128(RACP_UUID), on_value)
            octets = self.spec.racp_key_octets
            # wrap-around: not handled
            start = min(self.last_committed_sequence + 1, (1 << 8 * octets) - 1)
            self.racp_requests.append(start)
            log.info("ble.racp_request", device=str(self.device), from_key=start)
            link.racp_busy = True
            await client.write_gatt_char(uuid128(RACP_UUID),
                                         RacpRequest.report_from(start, octets=octets).encode(),
                                         response=True)
        while True:
            # A quiet link waits liveness_s, then a probe read bounded by connect_timeout_s.
            self.progress.turn(within_s=self.liveness_s + self.connect_timeout_s)
            try:
                async with asyncio.timeout(self.liveness_s):
                    item = await queue.get()
            except TimeoutError:
                await self._probe(client)
                continue
            if item is None:
                for m in self._intake.link_lost(link):
                    yield m
                return
            uuid16, payload, received_at = item
            self.last_seen = received_at
            out = self._intake.handle(link, uuid16, payload, received_at)
            await self._report_unusable()
            for m in out:
                yield m
            if link.overflow is not None:
                log.warning("ble.connection_ended_at_cap", device=str(self.device),
                            cap=link.overflow)
                return

    async def _report_unusable(self) -> None:
        """Seal a gap record for each observation that could not be used (a GHS part with no
        place in the model, a body that could not be decoded)."""
        durable = self.report_unusable is not None
        for reading in self._intake.take_unusable():
            if self.report_unusable is not None and not await self.report_unusable(reading):
                # even the gap reserve is full: the ingest writer logged it; the count stays
                log.error("ble.unusable_not_recorded", device=str(self.device))
                durable = False
        await self._intake.unusable_recorded(durable=durable)

    async def _read_elapsed_time(self, client: BleakClient) -> timedelta | None:
        """GHS: the coincident timestamp from Current Elapsed Time (0x2BF2); None when the
        device has none, or only a tick counter."""
        if client.services.get_characteristic(uuid128(CURRENT_ELAPSED_TIME_UUID)) is None:
            return None
        try:
            data = bytes(await client.read_gatt_char(uuid128(CURRENT_ELAPSED_TIME_UUID)))
            reader = Reader(data, CURRENT_ELAPSED_TIME_UUID)
            stamp = read_elapsed_time(reader, "current elapsed time")
            reader.done()
        except (BleakError, GatewayError) as exc:
            log.info("ble.elapsed_time_unavailable", device=str(self.device),
                     error=type(exc).__name__)
            return None
        device_now = stamp.device_time()
        offset = None if device_now is None else clock_offset_from(device_now, datetime.now(UTC))
        log.info("ble.clock", device=str(self.device), source="elapsed-time",
                 tick_counter=stamp.tick_counter,
                 offset_before_s=None if offset is None else round(offset.total_seconds()))
        return offset

    async def _read_features(self, client: BleakClient) -> None:
        if client.services.get_characteristic(uuid128(HEALTH_SENSOR_FEATURES_UUID)) is None:
            return
        try:
            features = HealthSensorFeatures.decode(bytes(await client.read_gatt_char(
                uuid128(HEALTH_SENSOR_FEATURES_UUID))))
        except (BleakError, GatewayError) as exc:
            log.info("ble.ghs_features_unavailable", device=str(self.device),
                     error=type(exc).__name__)
            return
        log.info("ble.ghs_features", device=str(self.device),
                 observation_types=len(features.observation_types))

    async def _probe(self, client: BleakClient) -> None:
        """A quiet link: is it still there? bleak does not notice bluetoothd going away
        (is_connected stays true), but a GATT read on the stale objects fails, which ends the
        session (the caller reconnects)."""
        probe = uuid128(BATTERY_LEVEL_UUID)
        if client.services.get_characteristic(probe) is None:
            probe = uuid128(self.measurement_uuid)
            char = client.services.get_characteristic(probe)
            if char is None or "read" not in char.properties:
                return
        async with asyncio.timeout(self.connect_timeout_s):
            data = await client.read_gatt_char(probe)
        if probe == uuid128(BATTERY_LEVEL_UUID) and len(data) == 1 and data[0] <= 100:
            self.battery_pct = data[0]

    async def _read_session_start(self, client: BleakClient) -> CgmSessionStartTime | None:
        if client.services.get_characteristic(uuid128(CGM_SESSION_START_TIME_UUID)) is None:
            return None
        try:
            return CgmSessionStartTime.decode(bytes(await client.read_gatt_char(
                uuid128(CGM_SESSION_START_TIME_UUID))))
        except (BleakError, GatewayError) as exc:
            log.info("ble.session_start_unavailable", device=str(self.device),
                     error=type(exc).__name__)
            return None

    async def _read_battery(self, client: BleakClient) -> None:
        if client.services.get_characteristic(uuid128(BATTERY_LEVEL_UUID)) is None:
            return
        with contextlib.suppress(BleakError):
            data = await client.read_gatt_char(uuid128(BATTERY_LEVEL_UUID))
            if len(data) == 1 and data[0] <= 100:
                self.battery_pct = data[0]
