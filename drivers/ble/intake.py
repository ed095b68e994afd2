"""From notified payloads to ``Measurement``s, each reading handed to the pipeline once.

The BLE driver (drivers/ble/session.py) pumps every notification / indication into
``Intake.handle``; this module decodes it with the profile's decoder and ``to_measurements``
(placing the device timestamp with the offset of the clock that stamped it, see
drivers/ble/clock_sync.py) and decides what goes to the pipeline. No bleak, no D-Bus: the state
files are written from ``committed()`` in a thread.

Stored records (RACP): glucose meters and CGM sensors keep their readings behind a Record Access
Control Point. After every connection the driver asks for "stored records >= N + 1", N being the
last record key the pipeline confirmed as durable (``committed()``): the glucose sequence number,
or the CGM time offset. N lives in a small JSON state file (``RacpState``), written atomically and
fsynced only from ``committed()``. Records already handed to the pipeline during this run are not
handed over twice; ``refused()`` re-opens them. Glucose measurements are joined with their
optional context (``GlucoseJoiner``); live CGM records that arrive during a transfer wait for its
end, in order.

Backlog replays: devices that push their whole memory on every subscription (no RACP) are
de-duplicated by the PHD IG identifier against a bounded seen-set in the state directory
(drivers/ble/seen.py), written only from ``committed()``.

``streamed(m)`` tells which readings come from a continuous characteristic (PLX Continuous
0x2A5F, Heart Rate 0x2A37, CGM 0x2AA7, Intermediate Temperature 0x2A1E, Intermediate Cuff
Pressure 0x2A36): the stream lane. The final reading of the same device keeps the spot lane.

Generic Health Sensor: Live (0x2B8B) and Stored (0x2BDD) Health Observations each go through an
``ObservationStream`` of the connection's ``LinkState`` (so a body half-received by the last
connection is never glued to the next). One stored record (uint32 record number, the RACP key) can
carry several readings (a bundle); the cursor advances past a record only once every reading of it
is durable. An observation part that has no place in the model, and a body that cannot be
decoded, is handed to the driver as an ``UnusableReading`` (``take_unusable``) for a gap record,
never dropped silently.

Logs carry identifiers, characteristic UUIDs and error reasons, never clinical values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from drivers.ble import racp
from drivers.ble.blood_pressure import (
    BP_MEASUREMENT_UUID,
    INTERMEDIATE_CUFF_PRESSURE_UUID,
    BloodPressureMeasurement,
)
from drivers.ble.cgm import CGM_MEASUREMENT_UUID, CgmMeasurement, CgmSessionStartTime
from drivers.ble.clock_sync import ClockSync
from drivers.ble.ghs import (
    LIVE_HEALTH_OBSERVATIONS_UUID,
    STORED_HEALTH_OBSERVATIONS_UUID,
    HealthObservation,
)
from drivers.ble.ghs_features import GHS_CONTROL_POINT_UUID, ControlPoint
from drivers.ble.ghs_stream import ObservationStream
from drivers.ble.glucose import (
    GLUCOSE_MEASUREMENT_UUID,
    GlucoseJoiner,
    GlucoseMeasurement,
    GlucoseRecord,
)
from drivers.ble.glucose_context import GLUCOSE_CONTEXT_UUID, GlucoseContext
from drivers.ble.heart_rate import HEART_RATE_MEASUREMENT_UUID, HeartRateMeasurement
from drivers.ble.measure import Readable, to_measurements
from drivers.ble.profiles import Profile
from drivers.ble.pulse_oximeter import (
    CONTINUOUS_UUID,
    SPOT_CHECK_UUID,
    ContinuousMeasurement,
    SpotCheckMeasurement,
)
from drivers.ble.racp import RACP_UUID
from drivers.ble.seen import SeenSet
from drivers.ble.thermometer import (
    INTERMEDIATE_TEMPERATURE_UUID,
    TEMPERATURE_MEASUREMENT_UUID,
    TemperatureMeasurement,
)
from drivers.ble.weight_scale import WEIGHT_MEASUREMENT_UUID, WeightMeasurement
from gateway.atomicfile import atomic_write
from gateway.errors import ConfigError, DecodeError, GatewayError, StoreError
from gateway.fhir.observation import observation_identifier
from gateway.gaps import UnusableReading
from gateway.model import DeviceId, Measurement

log = structlog.get_logger("drivers.ble.intake")

# Live CGM records held back while a RACP transfer runs, at most. At the cap the connection is
# ended (``LinkState.overflow``): dropping one would let a later record's commit move the cursor
# past it; ending the link leaves them all on the sensor, and the next connection's RACP request
# (from the durable cursor) asks for them again.
MAX_HELD = 512
LOGGED_REJECTIONS = 10  # refused payloads logged one by one; after that every 100th
MAX_PENDING_UNUSABLE = 300  # unusable readings waiting for the driver (a bundle has <= 255)
MAX_REASON_CHARS = 200

_DECODERS: dict[int, Callable[[bytes], Readable]] = {
    TEMPERATURE_MEASUREMENT_UUID: TemperatureMeasurement.decode,
    INTERMEDIATE_TEMPERATURE_UUID: lambda p: TemperatureMeasurement.decode(p, intermediate=True),
    BP_MEASUREMENT_UUID: BloodPressureMeasurement.decode,
    INTERMEDIATE_CUFF_PRESSURE_UUID:
        lambda p: BloodPressureMeasurement.decode(p, intermediate=True),
    SPOT_CHECK_UUID: SpotCheckMeasurement.decode,
    CONTINUOUS_UUID: ContinuousMeasurement.decode,
    WEIGHT_MEASUREMENT_UUID: WeightMeasurement.decode,
    HEART_RATE_MEASUREMENT_UUID: HeartRateMeasurement.decode,
}

_STREAM_SOURCES = {
    HeartRateMeasurement.SOURCE: HEART_RATE_MEASUREMENT_UUID,
    CgmMeasurement.SOURCE: CGM_MEASUREMENT_UUID,
    ContinuousMeasurement.SOURCE: CONTINUOUS_UUID,
}


def _stream_uuid(m: Measurement) -> int | None:
    """The continuous characteristic ``m`` was decoded from, if it was one."""
    if m.supplemental == "intermediate":
        if m.source == TemperatureMeasurement.SOURCE:
            return INTERMEDIATE_TEMPERATURE_UUID
        if m.source == BloodPressureMeasurement.SOURCE:
            return INTERMEDIATE_CUFF_PRESSURE_UUID
    return _STREAM_SOURCES.get(m.source)


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


@dataclass(slots=True)
class LinkState:
    """What one connection knows: the device clock, glucose records being joined, CGM state."""

    clock: ClockSync
    joiner: GlucoseJoiner = field(default_factory=GlucoseJoiner)
    raws: dict[int, bytes] = field(default_factory=dict)  # sequence -> the measurement's bytes
    cgm_start: CgmSessionStartTime | None = None
    racp_busy: bool = False  # a RACP transfer runs: live CGM records wait for its end
    held: list[tuple[bytes, datetime]] = field(default_factory=list)
    overflow: str | None = None  # why this connection must end now (a cap was reached)
    # GHS: one reassembler per observation characteristic, new with every connection
    ghs_live: ObservationStream = field(default_factory=lambda: ObservationStream(stored=False))
    ghs_stored: ObservationStream = field(default_factory=lambda: ObservationStream(stored=True))


class Intake:
    """Payloads of one bound device in, fresh ``Measurement``s out (see the module docstring)."""

    def __init__(self, device: DeviceId, spec: Profile, *, state: RacpState | None,
                 seen: SeenSet | None) -> None:
        self.device = device
        self.spec = spec
        self._state = state
        self._handed: set[int] = set()  # record ids with the pipeline, above the cursor
        self._seen = seen
        self._pending_ids: set[str] = set()  # backlog identifiers handed over, not yet durable
        self.readings = 0
        self.malformed = 0  # payloads refused (malformed, oversize, over a cap)
        self.last_rejected: datetime | None = None
        self.duplicates = 0  # backlog readings recognised as already stored, not handed over
        self.unusable_count = 0  # GHS observations (or parts) with no place in the model
        self._unusable: list[UnusableReading] = []  # for the driver to report, bounded
        self._parts: dict[int, int] = {}  # GHS record number -> its readings not yet durable
        self._gap_only: list[int] = []  # GHS records with nothing usable, gap not yet durable
        self._gap_done: set[int] = set()  # ... gap durable, the cursor not yet past them

    @property
    def last_committed_sequence(self) -> int:
        return self._state.last_sequence if self._state else 0

    def streamed(self, m: Measurement) -> bool:
        """Does ``m`` come from a continuous characteristic (lane STREAM)?"""
        return _stream_uuid(m) in self.spec.stream

    # -- the pipeline's answers ---------------------------------------------------------------

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
        if self._parts:
            sequences = self._whole_records(sequences)
        if sequences and max(sequences) > self._state.last_sequence:
            await asyncio.to_thread(self._state.save, max(sequences))
            cursor = self._state.last_sequence
            self._handed = {s for s in self._handed if s > cursor}
        await self._pass_gap_done()

    async def refused(self, measurements: Sequence[Measurement]) -> None:
        """The pipeline could not store these: ask the device for them again next time."""
        mine = self._mine(measurements)
        self._pending_ids.difference_update(
            k for k in (self._backlog_key(m) for m in mine) if k is not None)
        sequences = [m.device_record_id for m in mine if m.device_record_id is not None]
        if sequences:
            first = min(sequences)
            self._handed = {s for s in self._handed if s < first}
            self._parts = {r: n for r, n in self._parts.items() if r < first}

    def _whole_records(self, sequences: list[int]) -> list[int]:
        """The GHS records of a committed batch all of whose readings are now durable (the
        pipeline commits in order, so every earlier record is too). Untracked keys pass."""
        whole = []
        for record in sequences:
            left = self._parts.get(record)
            if left is None:
                whole.append(record)
                continue
            left -= 1
            if left > 0:
                self._parts[record] = left
            else:
                del self._parts[record]
                whole.append(record)
        return whole

    def take_unusable(self) -> list[UnusableReading]:
        """What could not be mapped since the last call, for the driver to report."""
        out, self._unusable = self._unusable, []
        return out

    # -- one connection's payloads ------------------------------------------------------------

    def handle(  # noqa: PLR0911 - one return per characteristic kind reads best
            self, link: LinkState, uuid16: int, payload: bytes, received_at: datetime
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
            if uuid16 in (LIVE_HEALTH_OBSERVATIONS_UUID, STORED_HEALTH_OBSERVATIONS_UUID):
                return self._ghs(link, uuid16, payload, received_at)
            if uuid16 == GHS_CONTROL_POINT_UUID:
                log.info("ble.ghs_control", device=str(self.device),
                         **ControlPoint.decode(payload).flag_summary())
                return []
            if uuid16 == RACP_UUID:
                answer = racp.decode(payload, octets=self.spec.racp_key_octets)
                log.info("ble.racp_done", device=str(self.device), **answer.flag_summary())
                link.racp_busy = False
                records = link.joiner.flush()
                out = [m for r in records for m in self._glucose(link, r, received_at)]
                held, link.held = link.held, []
                for raw, at in held:
                    out.extend(self.handle(link, CGM_MEASUREMENT_UUID, raw, at))
                return out
            if uuid16 == CGM_MEASUREMENT_UUID:
                if link.racp_busy:  # after the stored records, in order (module docstring)
                    if len(link.held) >= MAX_HELD:
                        self._reject("held-records-cap", uuid16, payload)
                        link.overflow = "held-records-cap"
                        return []
                    link.held.append((payload, received_at))
                    return []
                cgm = CgmMeasurement.decode(payload).in_session(link.cgm_start)
                return self._fresh(self._convert(link, cgm, payload, received_at))
            decode = _DECODERS.get(uuid16)
            if decode is None:
                return []
            out = self._convert(link, decode(payload), payload, received_at)
        except Exception as exc:  # noqa: BLE001 - the border: a payload's failure is the device's
            # Typed decode errors (DecodeError, ModelError) and a decoder's untyped slip alike:
            # the payload is refused and counted, the connection and the driver go on.
            self._reject(type(exc).__name__, uuid16, payload,
                         exc.message if isinstance(exc, GatewayError) else None)
            return []
        out = self._not_seen(out)
        self.readings += len(out)
        return out

    def _reject(self, error: str, uuid16: int, payload: bytes, reason: str | None = None) -> None:
        self.malformed += 1
        self.last_rejected = datetime.now(UTC)
        # Rate-bounded: the first few, then every 100th (a flood must not become a log flood).
        if self.malformed <= LOGGED_REJECTIONS or self.malformed % 100 == 0:
            log.warning("ble.malformed_payload", device=str(self.device),
                        uuid=f"{uuid16:04x}", length=len(payload), error=error,
                        reason=reason, malformed=self.malformed)

    def reject_oversize(self, uuid16: int, length: int) -> None:
        """A notification longer than any attribute value may be (session.py's cap)."""
        self._reject("oversize", uuid16, b"", f"{length} bytes")

    def reject_flood(self, uuid16: int) -> None:
        """Notifications arrive faster than they are decoded (session.py's queue cap)."""
        self._reject("flood", uuid16, b"", "notification queue full: connection ended")

    # -- Generic Health Sensor ----------------------------------------------------------------

    def _ghs(self, link: LinkState, uuid16: int, payload: bytes, received_at: datetime
             ) -> list[Measurement]:
        stream = link.ghs_stored if uuid16 == STORED_HEALTH_OBSERVATIONS_UUID else link.ghs_live
        out: list[Measurement] = []
        for item in stream.feed(payload):
            if isinstance(item, DecodeError):
                self._reject(type(item).__name__, uuid16, payload, item.message)
                self._unusable_reading(uuid16, type(item).__name__, item.message, payload,
                                       received_at=received_at)
                continue
            out.extend(self._ghs_observation(link, item, received_at))
        return out

    def _ghs_observation(self, link: LinkState, observation: HealthObservation,
                         received_at: datetime) -> list[Measurement]:
        record = observation.record_number
        if record is not None and (record <= self.last_committed_sequence
                                   or record in self._handed):
            return []  # already with the pipeline (fetched again after a reconnect)
        raw = observation.encode_body()
        for unusable in observation.unusable():
            self._unusable_reading(observation.uuid16, "UnusableObservation", unusable.reason,
                                   raw, received_at=received_at, fields=(
                                       ("class_type", str(unusable.class_type)),
                                       ("observation_type", str(unusable.observation_type))))
        out = self._convert(link, observation, raw, received_at)
        if record is not None:
            self._handed.add(record)
            if out:
                self._parts[record] = len(out)
            elif len(self._gap_only) < MAX_PENDING_UNUSABLE:
                self._gap_only.append(record)  # its gap records decide when the cursor passes
        self.readings += len(out)
        return out

    async def unusable_recorded(self, *, durable: bool) -> None:
        """The gap records of the last ``take_unusable`` are durable (or were refused). A stored
        record that carried nothing usable is then done: the cursor may pass it once no earlier
        record still waits for its readings. Refused: it is asked for again next connection."""
        records, self._gap_only = self._gap_only, []
        if not durable:
            self._handed.difference_update(records)
            return
        self._gap_done.update(records)
        await self._pass_gap_done()

    async def _pass_gap_done(self) -> None:
        """Move the cursor past the gapped-only records no earlier record holds back."""
        if self._state is None or not self._gap_done:
            return
        waiting = min(self._parts, default=None)
        done = {r for r in self._gap_done if waiting is None or r < waiting}
        self._gap_done -= done
        if done and max(done) > self._state.last_sequence:
            await asyncio.to_thread(self._state.save, max(done))

    def _unusable_reading(self, uuid16: int, error: str, reason: str, raw: bytes, *,
                          received_at: datetime, fields: tuple[tuple[str, str], ...] = ()
                          ) -> None:
        self.unusable_count += 1
        log.warning("ble.observation_unusable", device=str(self.device), uuid=f"{uuid16:04x}",
                    error=error, reason=reason[:MAX_REASON_CHARS])
        if len(self._unusable) < MAX_PENDING_UNUSABLE:
            self._unusable.append(UnusableReading(
                str(self.device), HealthObservation.SOURCE, f"{error}: {reason}"[:MAX_REASON_CHARS],
                received_at, raw, (("uuid", f"{uuid16:04x}"), *fields)))
        else:  # the driver drains this after every value; a flood is counted, not stored
            log.error("ble.unusable_overflow", device=str(self.device),
                      dropped_total=self.unusable_count)

    def link_lost(self, link: LinkState) -> Iterator[Measurement]:
        """The connection ended: glucose measurements still waiting for a context go out alone.
        Live CGM records held back during a transfer stay on the sensor: the next connection's
        RACP request asks for them."""
        for record in link.joiner.flush():
            yield from self._glucose(link, record, datetime.now(UTC))

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

    def _convert(self, link: LinkState, parsed: Readable, payload: bytes, received_at: datetime
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

    def _glucose(self, link: LinkState, record: GlucoseRecord, received_at: datetime
                 ) -> list[Measurement]:
        raw = link.raws.pop(record.measurement.sequence_number, b"")
        return self._fresh(self._convert(link, record, raw, received_at))
