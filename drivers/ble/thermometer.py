"""Health Thermometer Service 0x1809: Temperature Measurement 0x2A1C, Intermediate Temperature
0x2A1E (same format, a reading still in progress) and Temperature Type 0x2A1D.

Temperature Measurement (GATT Specification Supplement): flags uint8 (bit 0 units 0 = Celsius,
1 = Fahrenheit; bit 1 Time Stamp present; bit 2 Temperature Type present; bits 3-7 RFU), then
FLOAT temperature, [Date Time 7 bytes], [Temperature Type uint8].
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from drivers.ble.gatt_time import read_date_time, write_date_time
from drivers.ble.ieee11073 import Numeric
from drivers.ble.measure import Reading
from drivers.ble.wire import OpenIntEnum, Reader, Writer, check_presence
from gateway.errors import ModelError
from gateway.fhir.codes import MDC_TEMP_BODY
from gateway.model import MeasurementStatus

TEMPERATURE_MEASUREMENT_UUID = 0x2A1C
TEMPERATURE_TYPE_UUID = 0x2A1D
INTERMEDIATE_TEMPERATURE_UUID = 0x2A1E

# Site-specific body temperature codes, not (yet) in gateway.fhir.codes: IEEE 11073-10101 as used by
# 11073-10408 (thermometer), partition 2 (SCADA), code = 2 * 65536 + term code.
MDC_TEMP_RECT = 188420  # 2::57348 rectal
MDC_TEMP_ORAL = 188424  # 2::57352 oral
MDC_TEMP_EAR = 188428  # 2::57356 ear
MDC_TEMP_FINGER = 188432  # 2::57360 finger
MDC_TEMP_TOE = 188448  # 2::57376 toe
MDC_TEMP_AXILLA = 188452  # 2::57380 armpit
MDC_TEMP_GIT = 188456  # 2::57384 gastro-intestinal tract
MDC_TEMP_TYMP = 150392  # 2::19320 tympanum

FLAG_FAHRENHEIT = 1 << 0
FLAG_TIME_STAMP = 1 << 1
FLAG_TEMPERATURE_TYPE = 1 << 2
KNOWN_FLAGS = FLAG_FAHRENHEIT | FLAG_TIME_STAMP | FLAG_TEMPERATURE_TYPE


class TemperatureType(OpenIntEnum):
    """Temperature Type 0x2A1D values (where on the body the temperature was taken)."""

    ARMPIT = 1
    BODY = 2  # general
    EAR = 3  # usually ear lobe
    FINGER = 4
    GASTRO_INTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9  # ear drum


_SITE_CODE = {
    TemperatureType.ARMPIT: MDC_TEMP_AXILLA,
    TemperatureType.BODY: MDC_TEMP_BODY,
    TemperatureType.EAR: MDC_TEMP_EAR,
    TemperatureType.FINGER: MDC_TEMP_FINGER,
    TemperatureType.GASTRO_INTESTINAL_TRACT: MDC_TEMP_GIT,
    TemperatureType.MOUTH: MDC_TEMP_ORAL,
    TemperatureType.RECTUM: MDC_TEMP_RECT,
    TemperatureType.TOE: MDC_TEMP_TOE,
    TemperatureType.TYMPANUM: MDC_TEMP_TYMP,
}


def mdc_for_site(site: TemperatureType | None) -> int:
    """The MDC code for a reading taken at ``site``; MDC_TEMP_BODY when unknown or unsaid."""
    return MDC_TEMP_BODY if site is None else _SITE_CODE.get(site, MDC_TEMP_BODY)


def decode_temperature_type(payload: bytes) -> TemperatureType:
    """Temperature Type 0x2A1D: one uint8 (unknown codes kept)."""
    reader = Reader(payload, TEMPERATURE_TYPE_UUID)
    site = TemperatureType(reader.u8("temperature type"))
    reader.done()
    return site


def encode_temperature_type(site: TemperatureType) -> bytes:
    return Writer().u8(int(site), "temperature type").getvalue()


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    """A parsed 0x2A1C (or, with ``intermediate``, 0x2A1E) value. ``flags`` is the byte as sent,
    unknown (RFU) bits included; ``timestamp`` is None when absent or sent as "unknown"."""

    SOURCE: ClassVar[str] = "ble.health_thermometer"

    flags: int
    temperature: Numeric  # in Celsius or Fahrenheit, per flags bit 0
    timestamp: datetime | None = None
    temperature_type: TemperatureType | None = None
    intermediate: bool = False  # decoded from Intermediate Temperature 0x2A1E

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        check_presence(self.flags, FLAG_TEMPERATURE_TYPE, self.temperature_type is not None,
                       "temperature_type")
        if self.timestamp is not None and not self.flags & FLAG_TIME_STAMP:
            raise ModelError("a timestamp needs the Time Stamp present flag")

    @property
    def uuid16(self) -> int:
        return INTERMEDIATE_TEMPERATURE_UUID if self.intermediate else TEMPERATURE_MEASUREMENT_UUID

    @property
    def fahrenheit(self) -> bool:
        return bool(self.flags & FLAG_FAHRENHEIT)

    @property
    def unit(self) -> str:
        return "[degF]" if self.fahrenheit else "Cel"

    @property
    def unknown_flags(self) -> int:
        return self.flags & ~KNOWN_FLAGS

    @classmethod
    def decode(cls, payload: bytes, *, intermediate: bool = False) -> TemperatureMeasurement:
        uuid16 = INTERMEDIATE_TEMPERATURE_UUID if intermediate else TEMPERATURE_MEASUREMENT_UUID
        reader = Reader(payload, uuid16)
        flags = reader.u8("flags")
        temperature = reader.float32("temperature")
        timestamp = read_date_time(reader, "time stamp") if flags & FLAG_TIME_STAMP else None
        site = None
        if flags & FLAG_TEMPERATURE_TYPE:
            site = TemperatureType(reader.u8("temperature type"))
        reader.done()
        return cls(flags, temperature, timestamp, site, intermediate)

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags").float32(self.temperature)
        if self.flags & FLAG_TIME_STAMP:
            write_date_time(writer, self.timestamp)
        if self.temperature_type is not None:
            writer.u8(int(self.temperature_type), "temperature type")
        return writer.getvalue()

    def readings(self) -> tuple[Reading, ...]:
        return (
            Reading.of(
                mdc_for_site(self.temperature_type),
                self.temperature,
                self.unit,
                device_time=self.timestamp,
                status=MeasurementStatus.NONE,
                supplemental="intermediate" if self.intermediate else "",
            ),
        )

    def flag_summary(self) -> dict[str, object]:
        return {
            "fahrenheit": self.fahrenheit,
            "time_stamp_present": bool(self.flags & FLAG_TIME_STAMP),
            "temperature_type_present": self.temperature_type is not None,
            "temperature_type": None if self.temperature_type is None
            else self.temperature_type.label,
            "intermediate": self.intermediate,
            "unknown_flags": self.unknown_flags,
        }
