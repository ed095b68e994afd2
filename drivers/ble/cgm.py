"""Continuous Glucose Monitoring Service 0x181F: CGM Measurement 0x2AA7, CGM Session Start Time
0x2AAA.

CGM Measurement: one or more records, each: uint8 size (of the record, size byte and E2E-CRC
included), uint8 flags (bit 0 Trend Information; bit 1 Quality; bits 2-4 RFU; bit 5
Warning-Octet; bit 6 Cal/Temp-Octet; bit 7 Status-Octet), SFLOAT glucose (mg/dL), uint16 time
offset (minutes since session start), the annunciation octets present in flag-bit order (Warning,
Cal/Temp, Status), [SFLOAT trend (mg/dL/min)], [SFLOAT quality (%)], [uint16 E2E-CRC]. The CRC
is present exactly when the size says so (the sensor's CGM Feature announces it); when present
it is verified.

Session Start Time: Date Time, sint8 time zone (15-minute units, -128 = unknown), uint8 DST offset
code, [uint16 E2E-CRC]. Record times are session start + time offset, joined by
``CgmMeasurement.in_session``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import ClassVar

from drivers.ble.gatt_time import read_date_time, write_date_time
from drivers.ble.ieee11073 import Numeric
from drivers.ble.measure import Reading
from drivers.ble.wire import OpenIntEnum, Reader, Writer, bit_names, crc16_mcrf4xx
from gateway.errors import ModelError
from gateway.fhir.codes import MDC_CONC_GLU_ISF
from gateway.model import MeasurementStatus

CGM_MEASUREMENT_UUID = 0x2AA7
CGM_SESSION_START_TIME_UUID = 0x2AAA

FLAG_TREND = 1 << 0
FLAG_QUALITY = 1 << 1
FLAG_WARNING = 1 << 5
FLAG_CAL_TEMP = 1 << 6
FLAG_STATUS = 1 << 7
KNOWN_FLAGS = FLAG_TREND | FLAG_QUALITY | FLAG_WARNING | FLAG_CAL_TEMP | FLAG_STATUS

# Sensor Status Annunciation as one 24-bit value: Status octet bits 0-7, Cal/Temp 8-15,
# Warning 16-23 (the CGM Status characteristic's layout).
ANNUNCIATION_NAMES = {
    0: "session_stopped", 1: "device_battery_low", 2: "sensor_type_incorrect",
    3: "sensor_malfunction", 4: "device_specific_alert", 5: "general_device_fault",
    8: "time_synchronization_required", 9: "calibration_not_allowed",
    10: "calibration_recommended", 11: "calibration_required", 12: "sensor_temperature_too_high",
    13: "sensor_temperature_too_low", 14: "calibration_pending",
    16: "result_below_patient_low", 17: "result_above_patient_high", 18: "result_below_hypo",
    19: "result_above_hyper", 20: "rate_of_decrease_exceeded", 21: "rate_of_increase_exceeded",
    22: "result_below_device_range", 23: "result_above_device_range",
}
_QUESTIONABLE = (1 << 2 | 1 << 3 | 1 << 5 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 22 | 1 << 23)
ANN_TIME_SYNC_REQUIRED = 1 << 8
ANN_CALIBRATION_PENDING = 1 << 14


def _octets(flags: int) -> list[tuple[int, str, int]]:
    """(flag bit, name, shift into the 24-bit annunciation) of the octets present, wire order."""
    order = [(FLAG_WARNING, "warning", 16), (FLAG_CAL_TEMP, "cal/temp", 8),
             (FLAG_STATUS, "status", 0)]
    return [octet for octet in order if flags & octet[0]]


@dataclass(frozen=True, slots=True)
class CgmRecord:
    """One CGM Measurement record; ``flags`` as sent. ``annunciation`` holds the present octets at
    their 24-bit positions (absent octets read as 0, see ``flags`` for which were sent)."""

    flags: int
    glucose_mg_dl: Numeric
    time_offset_min: int
    annunciation: int = 0
    trend_mg_dl_min: Numeric | None = None
    quality_pct: Numeric | None = None
    e2e_crc: bool = False  # a CRC was present (and matched)

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        present = sum(0xFF << shift for bit, _, shift in _octets(self.flags))
        if self.annunciation & ~present:
            raise ModelError("annunciation bits set in an octet the flags say is absent")
        if (self.trend_mg_dl_min is not None) != bool(self.flags & FLAG_TREND) or \
                (self.quality_pct is not None) != bool(self.flags & FLAG_QUALITY):
            raise ModelError("flags and optional fields disagree")

    @classmethod
    def read(cls, reader: Reader) -> CgmRecord:
        start = reader.position
        size = reader.u8("size")
        flags = reader.u8("flags")
        expected = 6 + len(_octets(flags)) + 2 * bin(flags & (FLAG_TREND | FLAG_QUALITY)).count("1")
        if size not in (expected, expected + 2):
            raise reader.error("record size does not match its flags")
        if reader.remaining < size - 2:
            raise reader.error("too short: record is cut off")
        body = reader.take(size - 2, "record")
        record = Reader(body, reader.uuid16)
        glucose = record.sfloat("glucose concentration")
        offset = record.u16("time offset")
        annunciation = 0
        for _, name, shift in _octets(flags):
            annunciation |= record.u8(f"{name} octet") << shift
        trend = record.sfloat("trend") if flags & FLAG_TREND else None
        quality = record.sfloat("quality") if flags & FLAG_QUALITY else None
        crc = size == expected + 2
        if crc:
            sent = record.u16("E2E-CRC")
            covered = bytes((size, flags)) + body[:-2]
            if crc16_mcrf4xx(covered) != sent:
                raise reader.error(f"E2E-CRC mismatch in the record at byte {start}")
        record.done()
        return cls(flags, glucose, offset, annunciation, trend, quality, crc)

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags").sfloat(self.glucose_mg_dl)
        writer.u16(self.time_offset_min, "time offset")
        for _, name, shift in _octets(self.flags):
            writer.u8(self.annunciation >> shift & 0xFF, f"{name} octet")
        if self.trend_mg_dl_min is not None:
            writer.sfloat(self.trend_mg_dl_min)
        if self.quality_pct is not None:
            writer.sfloat(self.quality_pct)
        body = writer.getvalue()
        size = 1 + len(body) + (2 if self.e2e_crc else 0)
        out = bytes((size,)) + body
        if self.e2e_crc:
            out += crc16_mcrf4xx(out).to_bytes(2, "little")
        return out

    def status(self) -> MeasurementStatus:
        out = MeasurementStatus.NONE
        if self.annunciation & _QUESTIONABLE:
            out |= MeasurementStatus.QUESTIONABLE
        if self.annunciation & ANN_CALIBRATION_PENDING:
            out |= MeasurementStatus.CALIBRATION_ONGOING
        return out

    def flag_summary(self) -> dict[str, object]:
        return {
            "time_offset_min": self.time_offset_min,
            "trend_present": self.trend_mg_dl_min is not None,
            "quality_present": self.quality_pct is not None,
            "octets_present": [name for _, name, _ in _octets(self.flags)],
            "annunciation": bit_names(self.annunciation, ANNUNCIATION_NAMES),
            "e2e_crc": self.e2e_crc,
            "unknown_flags": self.flags & ~KNOWN_FLAGS,
        }


class DstOffset(OpenIntEnum):
    STANDARD_TIME = 0
    HALF_HOUR_DAYLIGHT_TIME = 2
    DAYLIGHT_TIME = 4
    DOUBLE_DAYLIGHT_TIME = 8
    UNKNOWN = 255


_DST_MINUTES = {DstOffset.STANDARD_TIME: 0, DstOffset.HALF_HOUR_DAYLIGHT_TIME: 30,
                DstOffset.DAYLIGHT_TIME: 60, DstOffset.DOUBLE_DAYLIGHT_TIME: 120}
TIME_ZONE_UNKNOWN = -128


@dataclass(frozen=True, slots=True)
class CgmSessionStartTime:
    """CGM Session Start Time 0x2AAA: the sensor's session start as a local wall-clock time."""

    UUID: ClassVar[int] = CGM_SESSION_START_TIME_UUID

    start: datetime | None  # naive local time; None when unknown
    time_zone: int = TIME_ZONE_UNKNOWN  # 15-minute units, -48..+56, -128 unknown
    dst_offset: DstOffset = DstOffset.UNKNOWN
    e2e_crc: bool = False

    def __post_init__(self) -> None:
        if self.time_zone != TIME_ZONE_UNKNOWN and not -48 <= self.time_zone <= 56:
            raise ModelError("time zone out of range")

    @property
    def utc_offset(self) -> timedelta | None:
        """Time zone plus DST, when both are known."""
        if self.time_zone == TIME_ZONE_UNKNOWN or self.dst_offset not in _DST_MINUTES:
            return None
        return timedelta(minutes=15 * self.time_zone + _DST_MINUTES[self.dst_offset])

    def local_start(self) -> datetime | None:
        """The start with its UTC offset attached when known (else naive, as sent)."""
        offset = self.utc_offset
        if self.start is None or offset is None:
            return self.start
        return self.start.replace(tzinfo=timezone(offset))

    @classmethod
    def decode(cls, payload: bytes) -> CgmSessionStartTime:
        reader = Reader(payload, cls.UUID)
        start = read_date_time(reader, "session start time")
        zone = int.from_bytes(reader.take(1, "time zone"), "little", signed=True)
        if zone != TIME_ZONE_UNKNOWN and not -48 <= zone <= 56:
            raise reader.error("time zone out of range")
        dst = DstOffset(reader.u8("DST offset"))
        crc = reader.remaining > 0
        if crc:
            sent = reader.u16("E2E-CRC")
            if crc16_mcrf4xx(payload[:9]) != sent:
                raise reader.error("E2E-CRC mismatch")
        reader.done()
        return cls(start, zone, dst, crc)

    def encode(self) -> bytes:
        writer = write_date_time(Writer(), self.start)
        writer.raw(self.time_zone.to_bytes(1, "little", signed=True)).u8(self.dst_offset, "DST")
        out = writer.getvalue()
        return out + crc16_mcrf4xx(out).to_bytes(2, "little") if self.e2e_crc else out

    def flag_summary(self) -> dict[str, object]:
        offset = self.utc_offset
        return {
            "session_start": None if self.start is None else self.start.isoformat(),
            "time_zone_quarters": None if self.time_zone == TIME_ZONE_UNKNOWN else self.time_zone,
            "dst_offset": self.dst_offset.label,
            "utc_offset_min": None if offset is None else offset // timedelta(minutes=1),
            "e2e_crc": self.e2e_crc,
        }


def _after(start: datetime | None, minutes: int) -> datetime | None:
    """``start`` + ``minutes``; None when there is no start or the sum leaves the calendar (a
    session "started" on 9999-12-31 gives no usable times, not a crash)."""
    if start is None:
        return None
    try:
        return start + timedelta(minutes=minutes)
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class CgmMeasurement:
    """A parsed 0x2AA7 value: its records in order."""

    SOURCE: ClassVar[str] = "ble.cgm"

    records: tuple[CgmRecord, ...]
    session_start: CgmSessionStartTime | None = None  # not on the wire: see ``in_session``

    @classmethod
    def decode(cls, payload: bytes) -> CgmMeasurement:
        reader = Reader(payload, CGM_MEASUREMENT_UUID)
        records = [CgmRecord.read(reader)]
        while reader.remaining:
            records.append(CgmRecord.read(reader))
        return cls(tuple(records))

    def encode(self) -> bytes:
        return b"".join(record.encode() for record in self.records)

    def in_session(self, session_start: CgmSessionStartTime | None) -> CgmMeasurement:
        """The same records, timed from ``session_start`` (read from 0x2AAA at connection)."""
        return CgmMeasurement(self.records, session_start)

    def readings(self) -> tuple[Reading, ...]:
        """One reading per record. The record id is the time offset (the CGM RACP filter key).
        Without a usable session start the device time is unknown (None)."""
        start = None if self.session_start is None else self.session_start.local_start()
        return tuple(
            Reading.of(
                MDC_CONC_GLU_ISF, record.glucose_mg_dl, "mg/dL",
                device_time=_after(start, record.time_offset_min),
                clock_set=not record.annunciation & ANN_TIME_SYNC_REQUIRED,
                status=record.status(),
                record_id=record.time_offset_min,
            )
            for record in self.records
        )

    def flag_summary(self) -> dict[str, object]:
        return {"records": [record.flag_summary() for record in self.records]}
