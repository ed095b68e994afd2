"""From a parsed characteristic to ``Measurement``s: the one place applying the device-time policy.

Each profile's parsed value offers ``readings()``: what it measured, in our vocabulary (MDC code,
Decimal with the transmitted precision, UCUM unit, device status), with the device's own timestamp
as the device sent it. ``to_measurements`` adds who measured it, when the bytes arrived and how far
the device's clock can be trusted.

Device-time policy (PHD IG coincident timestamp). ``clock_offset`` is the device's wall clock minus
the gateway's UTC clock at the same instant, measured by the session (Current Time 0x2A2B, or a live
reading's timestamp against its reception time; see ``clock_offset_from``). Then:

- no device timestamp -> ``device_time=None``, quality ABSENT (the pipeline uses reception time);
- a naive device timestamp keeps its wall-clock digits; its UTC offset is ``clock_offset`` rounded
  to the nearest 15 minutes (how time zones are cut), and it is SYNCED only when the rest - the
  drift - is within ``tolerance`` and the device did not flag its own clock as unset / faulty;
- an aware device timestamp (the device told its zone, e.g. CGM session start) keeps its offset;
  SYNCED under the same drift rule;
- offset unknown (None) or absurd (more than 14 h, a clock never set) -> UNSYNCED, and the wall
  clock digits are labelled UTC only because the model needs a zone: UNSYNCED tells every reader
  that the instant is not to be trusted. The digits are never replaced by reception time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import ClassVar, Protocol

from drivers.ble.ieee11073 import Numeric
from gateway.errors import ModelError
from gateway.model import (
    AbsentReason,
    Component,
    DeviceId,
    Measurement,
    MeasurementStatus,
    TimeQuality,
)

SYNC_TOLERANCE = timedelta(seconds=60)
_QUARTER = timedelta(minutes=15)
_MAX_ZONE = timedelta(hours=14)  # UTC+14 (Kiribati) is the widest offset in use


def split(number: Numeric) -> tuple[Decimal | None, AbsentReason | None]:
    """A decoded 11073 number as the model's (value, absent_reason) pair."""
    if isinstance(number, AbsentReason):
        return None, number
    return number, None


def component(mdc_code: int, number: Numeric, unit: str) -> Component:
    value, absent = split(number)
    return Component(mdc_code, value, unit, absent_reason=absent)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value a profile decoded, before device identity and clock policy are applied."""

    mdc_code: int
    value: Decimal | None
    unit: str
    absent_reason: AbsentReason | None = None
    device_time: datetime | None = None  # naive: device wall clock; aware: device gave its zone
    clock_set: bool = True  # False when the device itself flags its clock as unset or faulty
    status: MeasurementStatus = MeasurementStatus.NONE
    components: tuple[Component, ...] = ()
    record_id: int | None = None
    supplemental: str = ""
    samples: tuple[Decimal, ...] = ()  # a sample array (see gateway.model.Measurement)
    sample_period_ms: Decimal | None = None
    text: str | None = None  # a text observation
    value_code: int | None = None  # a coded result (an MDC code)

    @classmethod
    def of(
        cls,
        mdc_code: int,
        number: Numeric,
        unit: str,
        *,
        device_time: datetime | None = None,
        clock_set: bool = True,
        status: MeasurementStatus = MeasurementStatus.NONE,
        record_id: int | None = None,
        supplemental: str = "",
    ) -> Reading:
        value, absent = split(number)
        return cls(
            mdc_code, value, unit, absent, device_time, clock_set, status, (), record_id,
            supplemental,
        )


class Readable(Protocol):
    """A parsed characteristic that carries readings (every profile's measurement type)."""

    SOURCE: ClassVar[str]

    def readings(self) -> tuple[Reading, ...]: ...


def clock_offset_from(device_now: datetime, gateway_now: datetime) -> timedelta:
    """Coincident timestamp: the device's wall clock minus the gateway's UTC clock.

    ``device_now`` is the device's clock reading (naive; for an aware one its wall-clock digits
    are used), ``gateway_now`` the gateway's timezone-aware clock at the same moment.
    """
    if gateway_now.tzinfo is None:
        raise ModelError("gateway_now must be timezone-aware")
    return device_now.replace(tzinfo=None) - gateway_now.astimezone(UTC).replace(tzinfo=None)


def _nearest_zone(offset: timedelta) -> timedelta | None:
    zone = round(offset / _QUARTER) * _QUARTER
    return zone if abs(zone) <= _MAX_ZONE else None


def place_device_time(
    device_time: datetime | None,
    clock_offset: timedelta | None,
    *,
    clock_set: bool = True,
    tolerance: timedelta = SYNC_TOLERANCE,
) -> tuple[datetime | None, TimeQuality]:
    """The device timestamp as the model stores it, and how far to trust it (module docstring)."""
    if device_time is None:
        return None, TimeQuality.ABSENT
    if device_time.tzinfo is None:
        zone = None if clock_offset is None else _nearest_zone(clock_offset)
        if zone is None:
            return device_time.replace(tzinfo=UTC), TimeQuality.UNSYNCED
        placed = device_time.replace(tzinfo=timezone(zone))
    else:
        placed = device_time
        zone = device_time.utcoffset()
    if clock_offset is None or zone is None:
        return placed, TimeQuality.UNSYNCED
    synced = clock_set and abs(clock_offset - zone) <= tolerance
    return placed, TimeQuality.SYNCED if synced else TimeQuality.UNSYNCED


def to_measurements(
    parsed: Readable,
    device: DeviceId,
    received_at: datetime,
    clock_offset: timedelta | None,
    *,
    raw: bytes = b"",
    tolerance: timedelta = SYNC_TOLERANCE,
) -> tuple[Measurement, ...]:
    """Every reading of ``parsed`` as a ``Measurement`` of ``device``.

    ``raw`` is the characteristic value the readings were decoded from (kept on each Measurement
    so the provider can re-decode it); ``clock_offset`` as in the module docstring.
    """
    out = []
    for reading in parsed.readings():
        device_time, quality = place_device_time(
            reading.device_time, clock_offset, clock_set=reading.clock_set, tolerance=tolerance
        )
        out.append(
            Measurement(
                device=device,
                mdc_code=reading.mdc_code,
                value=reading.value,
                unit=reading.unit,
                received_at=received_at,
                source=parsed.SOURCE,
                raw=raw,
                absent_reason=reading.absent_reason,
                device_time=device_time,
                time_quality=quality,
                status=reading.status,
                components=reading.components,
                device_record_id=reading.record_id,
                supplemental=reading.supplemental,
                samples=reading.samples,
                sample_period_ms=reading.sample_period_ms,
                text=reading.text,
                value_code=reading.value_code,
            )
        )
    return tuple(out)
