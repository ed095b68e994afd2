"""Blood Pressure Service 0x1810: Blood Pressure Measurement 0x2A35, Intermediate Cuff Pressure
0x2A36 (same format: the current cuff pressure in the systolic field, diastolic and MAP unused,
NaN) and Blood Pressure Feature 0x2A49.

Measurement (GATT Specification Supplement): flags uint8 (bit 0 units 0 = mmHg, 1 = kPa; bit 1
Time Stamp; bit 2 Pulse Rate; bit 3 User ID; bit 4 Measurement Status; bits 5-7 RFU), then SFLOAT
systolic, diastolic, mean arterial pressure, [Date Time], [SFLOAT pulse rate], [uint8 user id,
0xFF = unknown user], [uint16 measurement status].
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from drivers.ble.gatt_time import read_date_time, write_date_time
from drivers.ble.ieee11073 import Numeric
from drivers.ble.measure import Reading, component
from drivers.ble.wire import OpenIntEnum, Reader, Writer, bit_names, check_presence
from gateway.errors import ModelError
from gateway.fhir.codes import (
    MDC_PRESS_BLD_NONINV,
    MDC_PRESS_BLD_NONINV_DIA,
    MDC_PRESS_BLD_NONINV_MEAN,
    MDC_PRESS_BLD_NONINV_SYS,
    MDC_PULS_RATE_NON_INV,
)
from gateway.model import MeasurementStatus

BP_MEASUREMENT_UUID = 0x2A35
INTERMEDIATE_CUFF_PRESSURE_UUID = 0x2A36
BP_FEATURE_UUID = 0x2A49

# Not in gateway.fhir.codes: the cuff pressure of an inflating / deflating cuff (IEEE 11073-10101,
# 2::19228), what Intermediate Cuff Pressure reports.
MDC_PRESS_CUFF = 150300

FLAG_KPA = 1 << 0
FLAG_TIME_STAMP = 1 << 1
FLAG_PULSE_RATE = 1 << 2
FLAG_USER_ID = 1 << 3
FLAG_MEASUREMENT_STATUS = 1 << 4
KNOWN_FLAGS = 0x1F

UNKNOWN_USER = 0xFF

# Measurement Status bits; bits 3-4 together are the pulse rate range (PulseRateRange).
STATUS_BODY_MOVEMENT = 1 << 0
STATUS_CUFF_TOO_LOOSE = 1 << 1
STATUS_IRREGULAR_PULSE = 1 << 2
STATUS_PULSE_RANGE_SHIFT = 3
STATUS_IMPROPER_POSITION = 1 << 5
_STATUS_NAMES = {
    0: "body_movement_detected",
    1: "cuff_too_loose",
    2: "irregular_pulse_detected",
    5: "improper_measurement_position",
}
# A reading taken while moving, with a loose cuff or in a wrong position is still the device's
# reading, but not a trustworthy one (IEEE 11073-10407 maps these to "questionable").
_QUESTIONABLE = STATUS_BODY_MOVEMENT | STATUS_CUFF_TOO_LOOSE | STATUS_IMPROPER_POSITION

_FEATURE_NAMES = {
    0: "body_movement_detection",
    1: "cuff_fit_detection",
    2: "irregular_pulse_detection",
    3: "pulse_rate_range_detection",
    4: "measurement_position_detection",
    5: "multiple_bond",
}


class PulseRateRange(OpenIntEnum):
    WITHIN_RANGE = 0
    EXCEEDS_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """A parsed 0x2A35 (or, with ``intermediate``, 0x2A36) value; ``flags`` as sent."""

    SOURCE: ClassVar[str] = "ble.blood_pressure"

    flags: int
    systolic: Numeric  # Intermediate Cuff Pressure: the current cuff pressure
    diastolic: Numeric
    mean_arterial: Numeric
    timestamp: datetime | None = None
    pulse_rate: Numeric | None = None  # beats per minute
    user_id: int | None = None
    status: int | None = None  # Measurement Status bits as sent (RFU bits kept)
    intermediate: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        check_presence(self.flags, FLAG_PULSE_RATE, self.pulse_rate is not None, "pulse_rate")
        check_presence(self.flags, FLAG_USER_ID, self.user_id is not None, "user_id")
        check_presence(self.flags, FLAG_MEASUREMENT_STATUS, self.status is not None, "status")
        if self.timestamp is not None and not self.flags & FLAG_TIME_STAMP:
            raise ModelError("a timestamp needs the Time Stamp present flag")

    @property
    def uuid16(self) -> int:
        return INTERMEDIATE_CUFF_PRESSURE_UUID if self.intermediate else BP_MEASUREMENT_UUID

    @property
    def unit(self) -> str:
        return "kPa" if self.flags & FLAG_KPA else "mm[Hg]"

    @property
    def unknown_flags(self) -> int:
        return self.flags & ~KNOWN_FLAGS

    @property
    def pulse_rate_range(self) -> PulseRateRange | None:
        if self.status is None:
            return None
        return PulseRateRange(self.status >> STATUS_PULSE_RANGE_SHIFT & 0b11)

    @classmethod
    def decode(cls, payload: bytes, *, intermediate: bool = False) -> BloodPressureMeasurement:
        reader = Reader(payload, INTERMEDIATE_CUFF_PRESSURE_UUID if intermediate
                        else BP_MEASUREMENT_UUID)
        flags = reader.u8("flags")
        systolic = reader.sfloat("systolic")
        diastolic = reader.sfloat("diastolic")
        mean = reader.sfloat("mean arterial pressure")
        timestamp = read_date_time(reader, "time stamp") if flags & FLAG_TIME_STAMP else None
        pulse = reader.sfloat("pulse rate") if flags & FLAG_PULSE_RATE else None
        user = reader.u8("user id") if flags & FLAG_USER_ID else None
        status = reader.u16("measurement status") if flags & FLAG_MEASUREMENT_STATUS else None
        reader.done()
        return cls(flags, systolic, diastolic, mean, timestamp, pulse, user, status, intermediate)

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags")
        writer.sfloat(self.systolic).sfloat(self.diastolic).sfloat(self.mean_arterial)
        if self.flags & FLAG_TIME_STAMP:
            write_date_time(writer, self.timestamp)
        if self.pulse_rate is not None:
            writer.sfloat(self.pulse_rate)
        if self.user_id is not None:
            writer.u8(self.user_id, "user id")
        if self.status is not None:
            writer.u16(self.status, "measurement status")
        return writer.getvalue()

    def _statuses(self) -> tuple[MeasurementStatus, MeasurementStatus]:
        """(status of the pressures, status of the pulse rate)."""
        bits = self.status or 0
        pressure = MeasurementStatus.NONE
        if bits & _QUESTIONABLE:
            pressure = MeasurementStatus.QUESTIONABLE
        pulse = pressure
        if self.pulse_rate_range not in (None, PulseRateRange.WITHIN_RANGE):
            pulse |= MeasurementStatus.QUESTIONABLE
        return pressure, pulse

    def readings(self) -> tuple[Reading, ...]:
        pressure_status, pulse_status = self._statuses()
        supplemental = "intermediate" if self.intermediate else ""
        if self.intermediate:
            first = Reading.of(MDC_PRESS_CUFF, self.systolic, self.unit,
                               device_time=self.timestamp, status=pressure_status,
                               supplemental=supplemental)
        else:
            first = Reading(
                MDC_PRESS_BLD_NONINV, None, self.unit,
                device_time=self.timestamp,
                status=pressure_status,
                components=(
                    component(MDC_PRESS_BLD_NONINV_SYS, self.systolic, self.unit),
                    component(MDC_PRESS_BLD_NONINV_DIA, self.diastolic, self.unit),
                    component(MDC_PRESS_BLD_NONINV_MEAN, self.mean_arterial, self.unit),
                ),
            )
        if self.pulse_rate is None:
            return (first,)
        pulse = Reading.of(MDC_PULS_RATE_NON_INV, self.pulse_rate, "/min",
                           device_time=self.timestamp, status=pulse_status,
                           supplemental=supplemental)
        return first, pulse

    def flag_summary(self) -> dict[str, object]:
        pulse_range = self.pulse_rate_range
        return {
            "kpa": bool(self.flags & FLAG_KPA),
            "time_stamp_present": bool(self.flags & FLAG_TIME_STAMP),
            "pulse_rate_present": self.pulse_rate is not None,
            "user_id_present": self.user_id is not None,
            "measurement_status_present": self.status is not None,
            "user_id": self.user_id,
            "measurement_status": None if self.status is None
            else bit_names(self.status & ~(0b11 << STATUS_PULSE_RANGE_SHIFT), _STATUS_NAMES),
            "pulse_rate_range": None if pulse_range is None else pulse_range.label,
            "intermediate": self.intermediate,
            "unknown_flags": self.unknown_flags,
        }


@dataclass(frozen=True, slots=True)
class BloodPressureFeature:
    """Blood Pressure Feature 0x2A49: uint16 of supported-feature bits (unknown bits kept)."""

    bits: int

    @classmethod
    def decode(cls, payload: bytes) -> BloodPressureFeature:
        reader = Reader(payload, BP_FEATURE_UUID)
        bits = reader.u16("features")
        reader.done()
        return cls(bits)

    def encode(self) -> bytes:
        return Writer().u16(self.bits, "features").getvalue()

    def supports(self, bit: int) -> bool:
        return bool(self.bits >> bit & 1)

    def flag_summary(self) -> dict[str, object]:
        summary: dict[str, object] = {name: self.supports(bit)
                                      for bit, name in _FEATURE_NAMES.items()}
        summary["unknown_bits"] = self.bits & ~0x3F
        return summary
