"""A simulated Generic Health Sensor (GHS 0x1840): a spirometer-like device.

What it offers (facts and their sources: drivers/ble/ghs*.py and drivers/ble/elapsed_time.py):

- GHS service 0x1840 with Health Sensor Features 0x2BF3 (read: the observation types it
  measures), Live Health Observations 0x2B8B (notify), Stored Health Observations 0x2BDD
  (notify), the Record Access Control Point 0x2A52 (write, indicate; uint32 record numbers)
  and the GHS Control Point 0x2BF4 (write, indicate: 0x01 start / 0x02 stop sending live
  observations, answered 0x80 by indication);
- Elapsed Time Service 0x183F with Current Elapsed Time 0x2BF2 (read): the device clock in UTC
  with its TZ/DST offset, or a tick counter when the clock was never set. No Current Time
  Service: a GHS device's clock is the Elapsed Time.

``measure`` takes one manoeuvre: FEV1 and FVC (L), PEF (L/min) and a volume-time curve (a
sample array in L). They travel as one observation bundle built with ``drivers.ble.ghs_encode``
and cut into segments with ``segment_body``, so reassembly is exercised. While a collector has
started live observations (control point) and subscribed to 0x2B8B, the bundle goes out live;
otherwise it is stored under the next uint32 record number and fetched through the RACP. The
live state ends with the connection (the collector starts it again after each connect; assumed:
the GHSS text was not at hand).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from drivers.ble.elapsed_time import (
    CURRENT_ELAPSED_TIME_UUID,
    EPOCH,
    FLAG_CURRENT_TIMELINE,
    FLAG_TICK_COUNTER,
    FLAG_TZ_DST_USED,
    FLAG_UTC,
    ElapsedTime,
    write_elapsed_time,
)
from drivers.ble.ghs import (
    ELAPSED_TIME_SERVICE_UUID,
    GHS_SERVICE_UUID,
    LIVE_HEALTH_OBSERVATIONS_UUID,
    STORED_HEALTH_OBSERVATIONS_UUID,
    HealthObservation,
)
from drivers.ble.ghs_features import (
    GHS_CONTROL_POINT_UUID,
    HEALTH_SENSOR_FEATURES_UUID,
    ControlOpCode,
    ControlPoint,
    HealthSensorFeatures,
)
from drivers.ble.ghs_segment import segment_body
from drivers.ble.ghs_values import (
    FLAG_TIME_STAMP,
    FLAG_TYPE,
    AnyObservation,
    Bundle,
    NumericValue,
    Observation,
    ObservationHeader,
    SampleArrayValue,
)
from drivers.ble.wire import Writer
from gateway.errors import GatewayError
from gateway.fhir.codes import (
    MDC_FLOW_AWAY_EXP_FORCED_PEAK,
    MDC_VOL_AWAY,
    MDC_VOL_AWAY_EXP_FORCED_1S,
    MDC_VOL_AWAY_EXP_FORCED_CAPACITY,
)
from rig.ble.errors import AttError, LinkLostError
from rig.ble.gatt import ATT_CCCD_IMPROPERLY_CONFIGURED, Characteristic, Service
from rig.ble.racp_server import RecordStore, StoredRecord
from rig.ble.standard import CURRENT_TIME_SERVICE_UUID
from rig.ble.stored import StoredRecordsDevice

UNIT_L = 1600  # MDC_DIM_X_L
UNIT_L_PER_MIN = 3072  # MDC_DIM_X_L_PER_MIN
# An ATT_MTU of 23 leaves 20 octets per notification; one is the segmentation header.
DEFAULT_PIECE_OCTETS = 19
CURVE_SCALE_L = Decimal("0.01")  # a sample is centilitres
CURVE_PERIOD_S = Decimal("0.1")
MAX_CURVE_SAMPLES = 600  # a minute at 10 Hz: bounds what a scenario can ask for
SUCCESS = ControlPoint(ControlOpCode.SUCCESS).encode()


def default_curve(fvc_l: Decimal, samples: int = 30) -> tuple[Decimal, ...]:
    """A plausible volume-time curve rising to ``fvc_l`` (L), in centilitre steps."""
    out = []
    for i in range(1, samples + 1):
        fraction = Decimal(1) - (Decimal(1) - Decimal(i) / samples) ** 3
        out.append((fvc_l * fraction).quantize(CURVE_SCALE_L))
    return tuple(out)


class Spirometer(StoredRecordsDevice):
    kind = "spirometer"
    default_name = "Spirometer"
    record_uuid = STORED_HEALTH_OBSERVATIONS_UUID

    def __init__(self, address: str, *, first_record: int = 1,
                 piece_octets: int = DEFAULT_PIECE_OCTETS, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.store = RecordStore(key_octets=4)
        self.next_record = first_record
        self.piece_octets = piece_octets
        self.live_enabled = False
        self._counters = {LIVE_HEALTH_OBSERVATIONS_UUID: 0, STORED_HEALTH_OBSERVATIONS_UUID: 0}
        self._live_lock: asyncio.Lock | None = None

    # -- GATT table ---------------------------------------------------------------------------

    def profile_services(self) -> tuple[Service, ...]:
        secure = self.requires_bond
        features = HealthSensorFeatures(0, (MDC_VOL_AWAY_EXP_FORCED_1S,
                                            MDC_VOL_AWAY_EXP_FORCED_CAPACITY,
                                            MDC_FLOW_AWAY_EXP_FORCED_PEAK, MDC_VOL_AWAY))
        return (
            Service(GHS_SERVICE_UUID, (
                Characteristic(HEALTH_SENSOR_FEATURES_UUID, ("read",), read=features.encode),
                Characteristic(LIVE_HEALTH_OBSERVATIONS_UUID, ("notify",), secure=secure),
                Characteristic(STORED_HEALTH_OBSERVATIONS_UUID, ("notify",), secure=secure),
                self.racp_characteristic(),
                Characteristic(GHS_CONTROL_POINT_UUID, ("write", "indicate"),
                               write=self._control_write, secure=secure),
            )),
            Service(ELAPSED_TIME_SERVICE_UUID, (
                Characteristic(CURRENT_ELAPSED_TIME_UUID, ("read",),
                               read=lambda: write_elapsed_time(Writer(), self.elapsed_now())
                               .getvalue()),
            )),
        )

    def services(self) -> tuple[Service, ...]:
        # A GHS device keeps its clock in the Elapsed Time Service, not in Current Time.
        return tuple(s for s in super().services() if s.uuid16 != CURRENT_TIME_SERVICE_UUID)

    def advertised_uuids(self) -> tuple[int, ...]:
        return (GHS_SERVICE_UUID,)

    # -- clock ----------------------------------------------------------------------------------

    def elapsed_now(self, wall: datetime | None = None) -> ElapsedTime:
        """The device clock as Elapsed Time: UTC seconds since 2000 with the zone, or a tick
        counter (seconds since the clock started) when it was never set."""
        wall = wall or self.clock.now()
        if wall is None:
            ticks = int(self.clock.monotonic())
            return ElapsedTime(FLAG_TICK_COUNTER, ticks)
        utc = wall.replace(tzinfo=None) - self.clock.zone
        quarters = self.clock.zone // timedelta(minutes=15)
        return ElapsedTime(FLAG_UTC | FLAG_TZ_DST_USED | FLAG_CURRENT_TIMELINE,
                           int((utc - EPOCH).total_seconds()), 0, quarters)

    # -- control point --------------------------------------------------------------------------

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self.live_enabled = False

    def _control_write(self, value: bytes, _with_response: bool) -> None:
        if self.link is None or not self.link.subscribed(GHS_CONTROL_POINT_UUID):
            raise AttError(ATT_CCCD_IMPROPERLY_CONFIGURED, "control point indications not enabled")
        try:
            request = ControlPoint.decode(value)
        except GatewayError:
            return  # an empty write: nothing to answer
        if request.op_code == ControlOpCode.START_SEND_LIVE_OBSERVATIONS:
            self.live_enabled = True
        elif request.op_code == ControlOpCode.STOP_SEND_LIVE_OBSERVATIONS:
            self.live_enabled = False
        else:
            return  # not an op code a client writes; no answer
        self.spawn(self._answer_control(), link_scoped=True, name="ghs-control")

    async def _answer_control(self) -> None:
        with contextlib.suppress(LinkLostError):
            await self.send_record(GHS_CONTROL_POINT_UUID, SUCCESS, counts=False)

    # -- observations ---------------------------------------------------------------------------

    def _segments(self, uuid16: int, body: bytes) -> tuple[tuple[int, bytes], ...]:
        first = self._counters[uuid16]
        values = segment_body(body, self.piece_octets, first)
        self._counters[uuid16] = (first + len(values)) % 64
        return tuple((uuid16, v) for v in values)

    def manoeuvre(self, fev1_l: Decimal, fvc_l: Decimal, pef_l_min: Decimal,
                  curve_l: tuple[Decimal, ...], when: ElapsedTime) -> Bundle:
        """One manoeuvre as a bundle: the members inherit the bundle's time stamp."""
        def numeric(code: int, unit: int, value: Decimal) -> Observation:
            return Observation(ObservationHeader(FLAG_TYPE, code), NumericValue(unit, value))

        samples = tuple(int(v / CURVE_SCALE_L) for v in curve_l)
        curve = SampleArrayValue(UNIT_L, CURVE_SCALE_L, Decimal(0), CURVE_PERIOD_S, 1, 2, samples)
        return Bundle(ObservationHeader(FLAG_TIME_STAMP, time_stamp=when), (
            numeric(MDC_VOL_AWAY_EXP_FORCED_1S, UNIT_L, fev1_l),
            numeric(MDC_VOL_AWAY_EXP_FORCED_CAPACITY, UNIT_L, fvc_l),
            numeric(MDC_FLOW_AWAY_EXP_FORCED_PEAK, UNIT_L_PER_MIN, pef_l_min),
            Observation(ObservationHeader(FLAG_TYPE, MDC_VOL_AWAY), curve),
        ))

    def measure(self, fev1_l: Decimal | str = "3.10", fvc_l: Decimal | str = "4.05",
                pef_l_min: Decimal | str | int = "480", *,
                curve_l: tuple[Decimal | str, ...] | None = None,
                when: datetime | None = None) -> HealthObservation:
        """One manoeuvre: live to a collector that started live observations, else stored."""
        fvc = Decimal(str(fvc_l))
        curve = tuple(Decimal(str(v)) for v in curve_l) if curve_l is not None \
            else default_curve(fvc)
        if len(curve) > MAX_CURVE_SAMPLES:
            raise ValueError(f"a curve has at most {MAX_CURVE_SAMPLES} samples")
        bundle = self.manoeuvre(Decimal(str(fev1_l)), fvc, Decimal(str(pef_l_min)), curve,
                                self.elapsed_now(when))
        return self.observe(bundle)

    def observe(self, observation: AnyObservation) -> HealthObservation:
        """Send ``observation`` live when the collector started live observations and
        subscribed, else store it under the next record number (a test's foreign observation)."""
        live = (self.live_enabled and self.link is not None and self.link.up
                and self.link.subscribed(LIVE_HEALTH_OBSERVATIONS_UUID))
        if live:
            value = HealthObservation(observation)
            segments = self._segments(LIVE_HEALTH_OBSERVATIONS_UUID, value.encode_body())
            self.spawn(self._send_live(segments), link_scoped=True, name="ghs-live")
            return value
        value = HealthObservation(observation, self.next_record)
        self.next_record = (self.next_record + 1) & 0xFFFF_FFFF
        body = self._maybe_malformed(value.encode_body())
        self.store.add(StoredRecord(value.record_number or 0,
                                    self._segments(STORED_HEALTH_OBSERVATIONS_UUID, body)))
        return value

    async def _send_live(self, segments: tuple[tuple[int, bytes], ...]) -> None:
        # One body at a time: the segments of two bodies must not interleave.
        if self._live_lock is None:
            self._live_lock = asyncio.Lock()
        async with self._live_lock:
            with contextlib.suppress(LinkLostError):
                for uuid16, payload in segments:
                    await self.send_record(uuid16, payload, counts=False)

    def fill(self, count: int) -> list[HealthObservation]:
        """Store ``count`` manoeuvres (a test's or scenario's backlog)."""
        return [self.measure(f"{3 + i / 100:.2f}", "4.05", 480 + i) for i in range(count)]
