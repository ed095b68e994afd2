"""``BleDeviceDriver``: one allow-listed GATT health device, kept connected with bleak.

The driver connects only to the address it was bound to (``BleakClient(address)``; a neighbour's
device of the same kind is never touched), subscribes to the profile's measurement
characteristic, and turns every payload into ``Measurement``s with the project's decoders and
``to_measurements``. A device that is absent or out of range is the normal case at home: the
driver waits (classified, jittered exponential backoff) and tries again, forever, without a busy
loop. Every (re)connection resubscribes.

Glucose meters keep their readings behind a Record Access Control Point. After every connection
the driver asks for "stored records >= N + 1", N being the last sequence number the pipeline
confirmed as durable (``committed()``); N lives in a small JSON state file, written atomically and
fsynced only from ``committed()``. Records already handed to the pipeline during this run are not
handed over twice (``refused()`` re-opens them).

Continuous characteristics (PLX Continuous 0x2A5F, Heart Rate 0x2A37, CGM 0x2AA7, Intermediate
Temperature 0x2A1E) are subscribed like the rest, again after every reconnect; ``streamed(m)``
tells the daemon which readings go to the stream lane. CGM records are stored records too (RACP
keyed by time offset); live ones that arrive during a transfer wait for its end, in order.

Device time: once per connection the driver reads Current Time (0x2A2B) when the device has it
(the coincident timestamp) and, when the clock is off by more than the sync tolerance and the
characteristic is writable, sets it to the gateway's local time and reads it again.
``ClockSync`` (drivers/ble/clock_sync.py) then tells per reading which clock stamped it. Without
Current Time the offset is unknown and device timestamps are kept and flagged UNSYNCED - never
silently replaced by the reception time.

Devices that replay their backlog on every subscription (no RACP) are de-duplicated by the PHD IG
identifier against a bounded seen-set in the state directory (drivers/ble/seen.py), written
only from ``committed()``.

Discovery is ours (``_find``): it notes the device's RSSI for the health report and tallies
neighbours' health devices (``AdvertiserTally``); each attempt starts a fresh discovery, so there
is no long-lived scanner to watch.

Logs carry identifiers, characteristic UUIDs and error reasons, never clinical values.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import structlog
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)

from drivers.ble import racp
from drivers.ble.blood_pressure import BP_MEASUREMENT_UUID, BloodPressureMeasurement
from drivers.ble.cgm import (
    CGM_MEASUREMENT_UUID,
    CGM_SESSION_START_TIME_UUID,
    CgmMeasurement,
    CgmSessionStartTime,
)
from drivers.ble.clock_sync import ClockSync
from drivers.ble.device_info import BATTERY_LEVEL_UUID
from drivers.ble.errors import PairingError
from drivers.ble.gatt_time import CURRENT_TIME_UUID, AdjustReason, CurrentTime
from drivers.ble.glucose import (
    GLUCOSE_MEASUREMENT_UUID,
    GlucoseJoiner,
    GlucoseMeasurement,
    GlucoseRecord,
)
from drivers.ble.glucose_context import GLUCOSE_CONTEXT_UUID, GlucoseContext
from drivers.ble.heart_rate import HEART_RATE_MEASUREMENT_UUID, HeartRateMeasurement
from drivers.ble.measure import SYNC_TOLERANCE, Readable, clock_offset_from, to_measurements
from drivers.ble.profiles import (
    HEALTH_SERVICES,
    PROFILES,
)
from drivers.ble.pulse_oximeter import (
    CONTINUOUS_UUID,
    SPOT_CHECK_UUID,
    ContinuousMeasurement,
    SpotCheckMeasurement,
)
from drivers.ble.racp import RACP_UUID, RacpRequest
from drivers.ble.seen import SeenSet
from drivers.ble.thermometer import (
    INTERMEDIATE_TEMPERATURE_UUID,
    TEMPERATURE_MEASUREMENT_UUID,
    TemperatureMeasurement,
)
from drivers.ble.weight_scale import WEIGHT_MEASUREMENT_UUID, WeightMeasurement
from gateway.atomicfile import atomic_write
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.fhir import observation_identifier
from gateway.health import DeviceHealth
from gateway.model import DeviceId, DeviceIdKind, Measurement

log = structlog.get_logger("drivers.ble.session")

_BASE_UUID = "-0000-1000-8000-00805f9b34fb"


_DECODERS: dict[int, Callable[[bytes], Readable]] = {
    TEMPERATURE_MEASUREMENT_UUID: TemperatureMeasurement.decode,
    INTERMEDIATE_TEMPERATURE_UUID: lambda p: TemperatureMeasurement.decode(p, intermediate=True),
    BP_MEASUREMENT_UUID: BloodPressureMeasurement.decode,
    SPOT_CHECK_UUID: SpotCheckMeasurement.decode,
    CONTINUOUS_UUID: ContinuousMeasurement.decode,
    WEIGHT_MEASUREMENT_UUID: WeightMeasurement.decode,
    HEART_RATE_MEASUREMENT_UUID: HeartRateMeasurement.decode,
}


def uuid128(uuid16: int) -> str:
    return f"0000{uuid16:04x}{_BASE_UUID}"


def uuid16_of(uuid: str) -> int | None:
    text = uuid.lower()
    if len(text) == 36 and text.endswith(_BASE_UUID) and text.startswith("0000"):
        return int(text[4:8], 16)
    return None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between connection attempts: full-jitter exponential, capped."""

    initial_s: float = 1.0
    max_s: float = 60.0
    stable_s: float = 30.0  # a connection that lasted this long was not a flap

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(attempt, 30))
        return max(self.initial_s, random.uniform(0, ceiling))  # noqa: S311 - jitter, not crypto


class RacpState:
    """The last durably committed RACP sequence number of one device, in a JSON file."""

    def __init__(self, path: Path, initial: int = 0) -> None:
        """``initial``: the cursor before anything was stored (glucose sequence numbers start
        at 1, so 0; CGM time offsets start at 0, so -1)."""
        self.path = path
        try:
            data = json.loads(path.read_text())
            self.last_sequence = int(data["last_sequence"])
        except FileNotFoundError:
            self.last_sequence = initial
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError("ble state file", f"unreadable ({type(exc).__name__})",
                              path=str(path)) from exc

    def save(self, last_sequence: int) -> None:
        try:
            data = json.dumps({"last_sequence": last_sequence}).encode()
            atomic_write(self.path, data, mode=0o644)
        except OSError as exc:
            raise StoreError(f"cannot write the BLE state file: {exc.strerror}",
                             path=str(self.path)) from exc
        self.last_sequence = last_sequence


_AUTH_ERRORS = {
    "org.bluez.Error.AuthenticationFailed": "authentication failed (wrong passkey?)",
    "org.bluez.Error.AuthenticationRejected": "the device or our agent rejected pairing",
    "org.bluez.Error.AuthenticationCanceled": "pairing was cancelled",
    "org.bluez.Error.AuthenticationTimeout": "nobody answered the pairing request in time",
    "org.bluez.Error.ConnectionAttemptFailed": "the device refused the pairing request",
}


def pairing_failure(exc: BaseException, device: str) -> PairingError | None:
    """The typed error for a failed bonding, or None when ``exc`` is some other failure."""
    if isinstance(exc, BleakDBusError) and exc.dbus_error in _AUTH_ERRORS:
        return PairingError(device, _AUTH_ERRORS[exc.dbus_error])
    return None


# D-Bus errors that mean nobody owns org.bluez (bluetoothd stopped) or the adapter is not usable.
_BLUEZ_GONE = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.bluez.Error.NotReady",
})


def classify(exc: BaseException) -> str:
    """The health state a failed connection attempt leaves the device in."""
    if isinstance(exc, BleakBluetoothNotAvailableError) or (
        isinstance(exc, BleakDBusError) and exc.dbus_error in _BLUEZ_GONE
    ):
        return "bluez-unavailable"  # bluetoothd is not running, or no adapter / powered off
    if isinstance(exc, BleakDeviceNotFoundError | TimeoutError):
        return "out-of-range"
    if isinstance(exc, BleakError) and "not found" in str(exc).lower():
        return "out-of-range"  # BlueZ forgot the device object: not advertising
    return "failing"


_Item = tuple[int, bytes, datetime] | None  # None: the link is gone


def _on_disconnect(queue: asyncio.Queue[_Item]) -> Callable[[BleakClient], None]:
    def dropped(_client: BleakClient) -> None:
        queue.put_nowait(None)

    return dropped


class AdvertiserTally:
    """Advertisers of a health service that are not bound to this episode, shared by the BLE
    drivers of one daemon: the neighbour's device is ignored, and counted (health report)."""

    def __init__(self, bound: Iterable[str]) -> None:
        self.bound = frozenset(a.upper() for a in bound)
        self.ignored: set[str] = set()  # addresses; identifiers, not clinical data

    def saw(self, address: str, service_uuids: Iterable[str]) -> None:
        address = address.upper()
        if address in self.bound or address in self.ignored:
            return
        if any(uuid16_of(u) in HEALTH_SERVICES for u in service_uuids):
            self.ignored.add(address)
            log.info("ble.neighbour_ignored", device=f"btmac:{address}",
                     ignored=len(self.ignored))

    def snapshot(self) -> dict[str, object]:
        """For the health report's links: how many foreign health devices are in the air."""
        return {"ignored_advertisers": len(self.ignored)}


@dataclass(slots=True)
class _Link:
    """What one connection knows: the device clock, glucose records being joined, CGM state."""

    clock: ClockSync
    joiner: GlucoseJoiner = field(default_factory=GlucoseJoiner)
    raws: dict[int, bytes] = field(default_factory=dict)  # sequence -> the measurement's bytes
    cgm_start: CgmSessionStartTime | None = None
    racp_busy: bool = False  # a RACP transfer runs: live CGM records wait for its end
    held: list[tuple[bytes, datetime]] = field(default_factory=list)


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
        self.measurement_uuid = self.spec.measurement
        self.racp = self.spec.racp
        if self.racp and state_file is None:
            raise ConfigError("ble state file", f"a {profile} device needs a state file")
        initial = -1 if self.measurement_uuid == CGM_MEASUREMENT_UUID else 0
        self._state = RacpState(state_file, initial) if state_file is not None else None
        self._handed: set[int] = set()  # record ids with the pipeline, above the cursor
        self._seen = SeenSet(seen_file) if seen_file is not None else None
        self._pending_ids: set[str] = set()  # backlog identifiers handed over, not yet durable
        self.state = "waiting"
        self.last_seen: datetime | None = None
        self.last_error: str | None = None
        self.pairing_error: PairingError | None = None  # the last failed bonding, until one works
        self.readings = 0
        self.malformed = 0
        self.duplicates = 0  # backlog readings recognised as already stored, not handed over
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
        return _stream_uuid(m) in self.spec.stream

    # -- Driver -------------------------------------------------------------------------------

    @property
    def last_committed_sequence(self) -> int:
        return self._state.last_sequence if self._state else 0

    async def _find(self) -> BLEDevice:
        """Discover our device (and only ours: others are tallied), noting its RSSI. bleak's
        ``BleakClient(address)`` scans the same way; scanning here gives us the advertisement.
        Discovery is started afresh on every attempt, so no long-lived scanner can go stale."""
        def ours(device: BLEDevice, adv: AdvertisementData) -> bool:
            if device.address.upper() == self.address:
                self.rssi_dbm = adv.rssi
                return True
            if self.tally is not None:
                self.tally.saw(device.address, adv.service_uuids)
            return False

        found = await BleakScanner.find_device_by_filter(
            ours, timeout=self.connect_timeout_s,
            bluez={"adapter": self.adapter} if self.adapter else {})
        if found is None:
            raise BleakDeviceNotFoundError(self.address, f"{self.device} is not advertising")
        return found

    async def measurements(self) -> AsyncIterator[Measurement]:  # noqa: PLR0915 - one loop
        attempt = 0
        while True:
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
            await asyncio.sleep(delay)

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        mine = self._mine(measurements)
        if self._seen is not None:
            keys = [k for k in (self._backlog_key(m) for m in mine) if k is not None]
            if keys:
                await asyncio.to_thread(self._seen.add, keys)
                self._pending_ids.difference_update(keys)
        if self._state is None:
            return
        sequences = [m.device_record_id for m in mine if m.device_record_id is not None]
        if sequences and max(sequences) > self._state.last_sequence:
            await asyncio.to_thread(self._state.save, max(sequences))
            cursor = self._state.last_sequence
            self._handed = {s for s in self._handed if s > cursor}

    async def refused(self, measurements: Sequence[Measurement]) -> None:
        """The pipeline could not store these: ask the device for them again next time."""
        mine = self._mine(measurements)
        self._pending_ids.difference_update(
            k for k in (self._backlog_key(m) for m in mine) if k is not None)
        sequences = [m.device_record_id for m in mine if m.device_record_id is not None]
        if sequences:
            first = min(sequences)
            self._handed = {s for s in self._handed if s < first}

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
        )]

    # -- one connection -----------------------------------------------------------------------

    def _mine(self, measurements: Sequence[Measurement]) -> list[Measurement]:
        return [m for m in measurements if m.device == self.device]

    def _backlog_key(self, m: Measurement) -> str | None:
        """The PHD IG identifier of a backlog reading, over the device's own wall-clock digits
        (stable whatever offset a connection placed them with); None when it cannot be
        recognised again (no device timestamp, a continuous reading, a RACP record)."""
        if (self._seen is None or m.device_time is None or self.streamed(m)
                or m.device_record_id is not None):
            return None
        digits = m.device_time.replace(tzinfo=UTC)
        return observation_identifier(dataclasses.replace(m, device_time=digits), "")

    async def _session(self, client: BleakClient, queue: asyncio.Queue[_Item]
                       ) -> AsyncGenerator[Measurement, None]:
        def on_value(char: BleakGATTCharacteristic, data: bytearray) -> None:
            uuid16 = uuid16_of(char.uuid)
            if uuid16 is not None:
                queue.put_nowait((uuid16, bytes(data), datetime.now(UTC)))

        link = _Link(await self._sync_clock(client))
        self.clock = link.clock
        await self._read_battery(client)
        if self.measurement_uuid == CGM_MEASUREMENT_UUID:
            link.cgm_start = await self._read_session_start(client)
        await client.start_notify(uuid128(self.measurement_uuid), on_value)
        for optional in self.spec.optional:  # resubscribed on every connection
            if client.services.get_characteristic(uuid128(optional)) is not None:
                await client.start_notify(uuid128(optional), on_value)
        if self.racp:
            await client.start_notify(uuid128(RACP_UUID), on_value)
            start = min(self.last_committed_sequence + 1, 0xFFFF)  # wrap-around: not handled
            self.racp_requests.append(start)
            log.info("ble.racp_request", device=str(self.device), from_key=start)
            link.racp_busy = True
            await client.write_gatt_char(uuid128(RACP_UUID),
                                         RacpRequest.report_from(start).encode(), response=True)
        while True:
            try:
                async with asyncio.timeout(self.liveness_s):
                    item = await queue.get()
            except TimeoutError:
                await self._probe(client)
                continue
            if item is None:
                # Live CGM records held back during a transfer stay on the sensor: the next
                # connection's RACP request asks for them.
                for record in link.joiner.flush():
                    for m in self._glucose(link, record, datetime.now(UTC)):
                        yield m
                return
            uuid16, payload, received_at = item
            self.last_seen = received_at
            for m in self._handle(link, uuid16, payload, received_at):
                yield m

    def _handle(  # noqa: PLR0911 - one return per characteristic kind reads best
            self, link: _Link, uuid16: int, payload: bytes, received_at: datetime
    ) -> list[Measurement]:
        try:
            if uuid16 == GLUCOSE_MEASUREMENT_UUID:
                measurement = GlucoseMeasurement.decode(payload)
                link.raws[measurement.sequence_number] = payload
                records = link.joiner.add_measurement(measurement)
                return [m for r in records for m in self._glucose(link, r, received_at)]
            if uuid16 == GLUCOSE_CONTEXT_UUID:
                records = link.joiner.add_context(GlucoseContext.decode(payload))
                return [m for r in records for m in self._glucose(link, r, received_at)]
            if uuid16 == RACP_UUID:
                answer = racp.decode(payload)
                log.info("ble.racp_done", device=str(self.device), **answer.flag_summary())
                link.racp_busy = False
                records = link.joiner.flush()
                out = [m for r in records for m in self._glucose(link, r, received_at)]
                held, link.held = link.held, []
                for raw, at in held:
                    out.extend(self._handle(link, CGM_MEASUREMENT_UUID, raw, at))
                return out
            if uuid16 == CGM_MEASUREMENT_UUID:
                if link.racp_busy:  # after the stored records, in order (module docstring)
                    link.held.append((payload, received_at))
                    return []
                cgm = CgmMeasurement.decode(payload).in_session(link.cgm_start)
                return self._fresh(self._convert(link, cgm, payload, received_at))
            decode = _DECODERS.get(uuid16)
            if decode is None:
                return []
            out = self._convert(link, decode(payload), payload, received_at)
        except (GatewayError, ValueError) as exc:
            self.malformed += 1
            reason = exc.message if isinstance(exc, GatewayError) else type(exc).__name__
            log.warning("ble.malformed_payload", device=str(self.device),
                        uuid=f"{uuid16:04x}", length=len(payload), error=type(exc).__name__,
                        reason=reason)
            return []
        out = self._not_seen(out)
        self.readings += len(out)
        return out

    def _convert(self, link: _Link, parsed: Readable, payload: bytes, received_at: datetime
                 ) -> list[Measurement]:
        """``to_measurements`` with the offset of the clock that stamped the reading."""
        stamps = [r.device_time for r in parsed.readings() if r.device_time is not None]
        offset = link.clock.offset_for(stamps[0]) if stamps else link.clock.before
        return list(to_measurements(parsed, self.device, received_at, offset, raw=payload))

    def _not_seen(self, out: list[Measurement]) -> list[Measurement]:
        """Drop backlog readings already stored (or being stored) - a replayed memory."""
        if self._seen is None:
            return out
        fresh = []
        for m in out:
            key = self._backlog_key(m)
            if key is not None:
                if key in self._pending_ids or key in self._seen:
                    self.duplicates += 1
                    log.info("ble.backlog_duplicate", device=str(self.device),
                             duplicates=self.duplicates)
                    continue
                self._pending_ids.add(key)
            fresh.append(m)
        return fresh

    def _fresh(self, out: list[Measurement]) -> list[Measurement]:
        """Stored records (RACP key in ``device_record_id``) not yet with the pipeline."""
        fresh = []
        for m in out:
            key = m.device_record_id
            if key is not None:
                if key <= self.last_committed_sequence or key in self._handed:
                    continue  # already with the pipeline (delivered again after a reconnect)
                self._handed.add(key)
            fresh.append(m)
        self.readings += len(fresh)
        return fresh

    def _glucose(self, link: _Link, record: GlucoseRecord, received_at: datetime
                 ) -> list[Measurement]:
        raw = link.raws.pop(record.measurement.sequence_number, b"")
        return self._fresh(self._convert(link, record, raw, received_at))

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

    async def _read_clock(self, client: BleakClient) -> timedelta | None:
        """Device clock minus ours, from Current Time; None when it has no date (unset)."""
        try:
            value = CurrentTime.decode(bytes(await client.read_gatt_char(
                uuid128(CURRENT_TIME_UUID))))
        except (BleakError, GatewayError) as exc:
            log.info("ble.current_time_unavailable", device=str(self.device),
                     error=type(exc).__name__)
            return None
        if value.local_time is None:
            return None  # the device's clock is not set
        return clock_offset_from(value.local_time, datetime.now(UTC))

    async def _sync_clock(self, client: BleakClient) -> ClockSync:
        """The coincident timestamp; set the device clock when it is off and the device lets
        us (Current Time Write is optional). Only when needed: every write starts a new clock
        epoch for readings the device stores afterwards (see drivers/ble/clock_sync.py)."""
        char = client.services.get_characteristic(uuid128(CURRENT_TIME_UUID))
        if char is None:
            return ClockSync(None)
        before = await self._read_clock(client)
        local = datetime.now(UTC).astimezone()  # the gateway's zone is the patient's home zone
        zone = local.utcoffset() or timedelta(0)
        in_step = before is not None and abs(before - zone) <= SYNC_TOLERANCE
        if in_step or not self.set_clock or "write" not in char.properties:
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
                log.info("ble.current_time_write_failed", device=str(self.device),
                         error=type(exc).__name__)
                sync = ClockSync(before)
            else:
                sync = ClockSync(before, now, await self._read_clock(client))
        log.info("ble.clock", device=str(self.device), **sync.summary())
        return sync

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


_STREAM_SOURCES = {
    HeartRateMeasurement.SOURCE: HEART_RATE_MEASUREMENT_UUID,
    CgmMeasurement.SOURCE: CGM_MEASUREMENT_UUID,
    ContinuousMeasurement.SOURCE: CONTINUOUS_UUID,
}


def _stream_uuid(m: Measurement) -> int | None:
    """The continuous characteristic ``m`` was decoded from, if it was one."""
    if m.source == TemperatureMeasurement.SOURCE and m.supplemental == "intermediate":
        return INTERMEDIATE_TEMPERATURE_UUID
    return _STREAM_SOURCES.get(m.source)
