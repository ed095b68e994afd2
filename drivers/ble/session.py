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

Device time: once per connection the driver reads Current Time (0x2A2B) when the device has it,
which gives the coincident timestamp (``clock_offset_from``). Without it, a live reading's own
timestamp against its reception time serves; stored (RACP) records then get no offset and are
flagged UNSYNCED by ``to_measurements`` - never silently replaced by the reception time.

Logs carry identifiers, characteristic UUIDs and error reasons, never clinical values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import structlog
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakDBusError, BleakDeviceNotFoundError, BleakError

from drivers.ble import racp
from drivers.ble.blood_pressure import BP_MEASUREMENT_UUID, BloodPressureMeasurement
from drivers.ble.device_info import BATTERY_LEVEL_UUID
from drivers.ble.errors import PairingError
from drivers.ble.gatt_time import CURRENT_TIME_UUID, CurrentTime
from drivers.ble.glucose import (
    GLUCOSE_MEASUREMENT_UUID,
    GlucoseJoiner,
    GlucoseMeasurement,
    GlucoseRecord,
)
from drivers.ble.glucose_context import GLUCOSE_CONTEXT_UUID, GlucoseContext
from drivers.ble.measure import Readable, clock_offset_from, to_measurements
from drivers.ble.pulse_oximeter import SPOT_CHECK_UUID, SpotCheckMeasurement
from drivers.ble.racp import RACP_UUID, RacpRequest
from drivers.ble.thermometer import TEMPERATURE_MEASUREMENT_UUID, TemperatureMeasurement
from drivers.ble.weight_scale import WEIGHT_MEASUREMENT_UUID, WeightMeasurement
from gateway.errors import ConfigError, GatewayError, StoreError
from gateway.health import DeviceHealth
from gateway.model import DeviceId, DeviceIdKind, Measurement

log = structlog.get_logger("drivers.ble.session")

_BASE_UUID = "-0000-1000-8000-00805f9b34fb"

PROFILES: dict[str, int] = {
    "thermometer": TEMPERATURE_MEASUREMENT_UUID,
    "blood-pressure": BP_MEASUREMENT_UUID,
    "pulse-oximeter": SPOT_CHECK_UUID,
    "weight-scale": WEIGHT_MEASUREMENT_UUID,
    "glucose": GLUCOSE_MEASUREMENT_UUID,
}
RACP_PROFILES = frozenset({"glucose"})  # stored records behind a Record Access Control Point
# Continuous profiles (0x2A5F, heart rate, CGM) upload on the stream lane; none is wired yet.
STREAM_PROFILES: frozenset[str] = frozenset()

_DECODERS: dict[int, Callable[[bytes], Readable]] = {
    TEMPERATURE_MEASUREMENT_UUID: TemperatureMeasurement.decode,
    BP_MEASUREMENT_UUID: BloodPressureMeasurement.decode,
    SPOT_CHECK_UUID: SpotCheckMeasurement.decode,
    WEIGHT_MEASUREMENT_UUID: WeightMeasurement.decode,
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

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            data = json.loads(path.read_text())
            self.last_sequence = int(data["last_sequence"])
        except FileNotFoundError:
            self.last_sequence = 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError("ble state file", f"unreadable ({type(exc).__name__})",
                              path=str(path)) from exc

    def save(self, last_sequence: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with tmp.open("w") as f:
                json.dump({"last_sequence": last_sequence}, f)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
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


def classify(exc: BaseException) -> str:
    """The health state a failed connection attempt leaves the device in."""
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


@dataclass(slots=True)
class _Link:
    """What one connection knows: the device clock offset, glucose records being joined."""

    offset: timedelta | None
    joiner: GlucoseJoiner = field(default_factory=GlucoseJoiner)
    raws: dict[int, bytes] = field(default_factory=dict)  # sequence -> the measurement's bytes


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
        backoff: Backoff | None = None,
        connect_timeout_s: float = 20.0,
        liveness_s: float = 30.0,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError("ble profile", f"unknown profile {profile!r}")
        self.device = DeviceId(DeviceIdKind.BTMAC, address)
        self.address = self.device.value
        self.profile = profile
        self.name = f"ble.{name or profile}"
        self.expected_interval_s = expected_interval_s
        self.passkey = passkey  # typed by our org.bluez.Agent1 (drivers/ble/agent.py)
        self.bond = passkey is not None if bond is None else bond  # bleak pair=True on connect
        self.adapter = adapter
        self.backoff = backoff or Backoff()
        self.connect_timeout_s = connect_timeout_s
        self.liveness_s = liveness_s
        self.measurement_uuid = PROFILES[profile]
        self.racp = profile == "glucose"
        if self.racp and state_file is None:
            raise ConfigError("ble state file", "a glucose meter needs a state file")
        self._state = RacpState(state_file) if state_file is not None else None
        self._handed_up_to = self._state.last_sequence if self._state else 0
        self.state = "waiting"
        self.last_seen: datetime | None = None
        self.last_error: str | None = None
        self.pairing_error: PairingError | None = None  # the last failed bonding, until one works
        self.readings = 0
        self.malformed = 0
        self.connections = 0
        self.attempts = 0  # connection attempts, successful or not
        self.battery_pct: int | None = None
        self._queue: asyncio.Queue[_Item] | None = None  # the current connection's items
        self.racp_requests: list[int] = []  # the ">= N" of each RACP request, for the record

    def bluez_lost(self) -> None:
        """bluetoothd went away (the ``org.bluez`` owner changed): end this connection now and
        reconnect, rather than wait for the liveness probe - bleak does not notice by itself."""
        if self._queue is not None and self.state == "connected":
            self._queue.put_nowait(None)

    # -- Driver -------------------------------------------------------------------------------

    @property
    def last_committed_sequence(self) -> int:
        return self._state.last_sequence if self._state else 0

    async def measurements(self) -> AsyncIterator[Measurement]:
        attempt = 0
        while True:
            self.state = "connecting"
            queue: asyncio.Queue[_Item] = asyncio.Queue()
            self._queue = queue
            client = BleakClient(self.address, disconnected_callback=_on_disconnect(queue),
                                 timeout=self.connect_timeout_s, pair=self.bond,
                                 bluez={"adapter": self.adapter} if self.adapter else {})
            try:
                self.attempts += 1
                await client.connect()
            except (BleakError, TimeoutError, OSError, EOFError) as exc:
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
            log.info("ble.connected", device=str(self.device), profile=self.profile)
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
        if self._state is None:
            return
        sequences = [m.device_record_id for m in self._mine(measurements)
                     if m.device_record_id is not None]
        if sequences and max(sequences) > self._state.last_sequence:
            await asyncio.to_thread(self._state.save, max(sequences))

    async def refused(self, measurements: Sequence[Measurement]) -> None:
        """The pipeline could not store these: ask the device for them again next time."""
        sequences = [m.device_record_id for m in self._mine(measurements)
                     if m.device_record_id is not None]
        if sequences:
            self._handed_up_to = max(self.last_committed_sequence,
                                     min(self._handed_up_to, min(sequences) - 1))

    def health(self) -> list[DeviceHealth]:
        return [DeviceHealth(
            device=str(self.device),
            driver=self.name,
            state=self.state,
            last_seen=self.last_seen,
            expected_interval_s=self.expected_interval_s,
            readings=self.readings,
            battery_pct=self.battery_pct,
        )]

    # -- one connection -----------------------------------------------------------------------

    def _mine(self, measurements: Sequence[Measurement]) -> list[Measurement]:
        return [m for m in measurements if m.device == self.device]

    async def _session(self, client: BleakClient, queue: asyncio.Queue[_Item]
                       ) -> AsyncGenerator[Measurement, None]:
        def on_value(char: BleakGATTCharacteristic, data: bytearray) -> None:
            uuid16 = uuid16_of(char.uuid)
            if uuid16 is not None:
                queue.put_nowait((uuid16, bytes(data), datetime.now(UTC)))

        link = _Link(await self._coincident_offset(client))
        await self._read_battery(client)
        await client.start_notify(uuid128(self.measurement_uuid), on_value)
        if self.racp:
            if client.services.get_characteristic(uuid128(GLUCOSE_CONTEXT_UUID)) is not None:
                await client.start_notify(uuid128(GLUCOSE_CONTEXT_UUID), on_value)
            await client.start_notify(uuid128(RACP_UUID), on_value)
            start = min(self.last_committed_sequence + 1, 0xFFFF)  # wrap-around: not handled
            self.racp_requests.append(start)
            log.info("ble.racp_request", device=str(self.device), from_sequence=start)
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
                for record in link.joiner.flush():
                    for m in self._glucose(link, record, datetime.now(UTC)):
                        yield m
                return
            uuid16, payload, received_at = item
            self.last_seen = received_at
            for m in self._handle(link, uuid16, payload, received_at):
                yield m

    def _handle(self, link: _Link, uuid16: int, payload: bytes, received_at: datetime
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
                records = link.joiner.flush()
                return [m for r in records for m in self._glucose(link, r, received_at)]
            decode = _DECODERS.get(uuid16)
            if decode is None:
                return []
            parsed = decode(payload)
            live_offset = link.offset
            if live_offset is None:
                stamps = [r.device_time for r in parsed.readings() if r.device_time is not None]
                if stamps:  # the reading's own timestamp against its reception time
                    live_offset = clock_offset_from(stamps[0], received_at)
            out = list(to_measurements(parsed, self.device, received_at, live_offset,
                                       raw=payload))
        except (GatewayError, ValueError) as exc:
            self.malformed += 1
            reason = exc.message if isinstance(exc, GatewayError) else type(exc).__name__
            log.warning("ble.malformed_payload", device=str(self.device),
                        uuid=f"{uuid16:04x}", length=len(payload), error=type(exc).__name__,
                        reason=reason)
            return []
        self.readings += len(out)
        return out

    def _glucose(self, link: _Link, record: GlucoseRecord, received_at: datetime
                 ) -> list[Measurement]:
        raw = link.raws.pop(record.measurement.sequence_number, b"")
        out = []
        for m in to_measurements(record, self.device, received_at, link.offset, raw=raw):
            sequence = m.device_record_id
            if sequence is not None:
                if sequence <= self._handed_up_to:
                    continue  # already with the pipeline (delivered again after a reconnect)
                self._handed_up_to = sequence
            out.append(m)
        self.readings += len(out)
        return out

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

    async def _coincident_offset(self, client: BleakClient) -> timedelta | None:
        if client.services.get_characteristic(uuid128(CURRENT_TIME_UUID)) is None:
            return None
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

    async def _read_battery(self, client: BleakClient) -> None:
        if client.services.get_characteristic(uuid128(BATTERY_LEVEL_UUID)) is None:
            return
        with contextlib.suppress(BleakError):
            data = await client.read_gatt_char(uuid128(BATTERY_LEVEL_UUID))
            if len(data) == 1 and data[0] <= 100:
                self.battery_pct = data[0]
