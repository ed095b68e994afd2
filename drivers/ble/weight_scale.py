"""Weight Scale Service 0x181D: Weight Measurement 0x2A9D.

Layout (GATT Specification Supplement): flags uint8 (bit 0 units 0 = SI, 1 = imperial; bit 1 Time
Stamp; bit 2 User ID; bit 3 BMI and Height; bits 4-7 RFU), uint16 weight (SI 0.005 kg, imperial
0.01 lb; 0xFFFF = measurement unsuccessful), [Date Time], [uint8 user id, 0xFF = unknown],
[uint16 BMI 0.1 kg/m2, uint16 height (SI 0.001 m, imperial 0.1 in)].

The fields are scaled integers; they decode to Decimals whose exponent is the field's resolution
(weight 14000 -> 70.000 kg), so the transmitted precision survives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from drivers.ble.gatt_time import read_date_time, write_date_time
from drivers.ble.ieee11073 import Numeric
from drivers.ble.measure import Reading
from drivers.ble.wire import Reader, Writer, check_presence
from gateway.errors import ModelError
from gateway.fhir.codes import MDC_LEN_BODY_ACTUAL, MDC_MASS_BODY_ACTUAL, MDC_RATIO_MASS_BODY_LEN_SQ
from gateway.model import AbsentReason

WEIGHT_MEASUREMENT_UUID = 0x2A9D

FLAG_IMPERIAL = 1 << 0
FLAG_TIME_STAMP = 1 << 1
FLAG_USER_ID = 1 << 2
FLAG_BMI_HEIGHT = 1 << 3
KNOWN_FLAGS = 0x0F

WEIGHT_UNSUCCESSFUL = 0xFFFF
UNKNOWN_USER = 0xFF

# (resolution, UCUM unit) per unit system.
WEIGHT_SI = (Decimal("0.005"), "kg")
WEIGHT_IMPERIAL = (Decimal("0.01"), "[lb_av]")
BMI = (Decimal("0.1"), "kg/m2")
HEIGHT_SI = (Decimal("0.001"), "m")
HEIGHT_IMPERIAL = (Decimal("0.1"), "[in_i]")


def _scaled(raw: int, resolution: Decimal) -> Decimal:
    return raw * resolution  # exact: the product keeps the resolution's exponent


def _unscaled(value: Decimal, resolution: Decimal) -> int:
    return int(value / resolution)


def _check_resolution(value: Decimal, resolution: Decimal, what: str) -> None:
    """Construction check: ``value`` is a whole number of field steps, written with the field's
    exponent (70.000 kg, not 70 kg), so that encoding and decoding give back the same digits."""
    if value.as_tuple().exponent != resolution.as_tuple().exponent:
        raise ModelError(f"{what} must carry the field resolution's exponent")
    if (value / resolution) % 1 != 0:
        raise ModelError(f"{what} is not a multiple of the field resolution")


@dataclass(frozen=True, slots=True)
class WeightMeasurement:
    """A parsed 0x2A9D value; ``flags`` as sent. Units follow flags bit 0 (see ``units``)."""

    SOURCE: ClassVar[str] = "ble.weight_scale"

    flags: int
    weight: Numeric  # AbsentReason.NAN when the scale sent "measurement unsuccessful"
    timestamp: datetime | None = None
    user_id: int | None = None
    bmi: Decimal | None = None
    height: Decimal | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        check_presence(self.flags, FLAG_USER_ID, self.user_id is not None, "user_id")
        check_presence(self.flags, FLAG_BMI_HEIGHT, self.bmi is not None, "bmi")
        check_presence(self.flags, FLAG_BMI_HEIGHT, self.height is not None, "height")
        if self.timestamp is not None and not self.flags & FLAG_TIME_STAMP:
            raise ModelError("a timestamp needs the Time Stamp present flag")
        if isinstance(self.weight, AbsentReason) and self.weight is not AbsentReason.NAN:
            raise ModelError("a weight is either a number or NAN (measurement unsuccessful)")
        (weight_res, _), (height_res, _) = self.units
        if isinstance(self.weight, Decimal):
            _check_resolution(self.weight, weight_res, "weight")
        if self.bmi is not None:
            _check_resolution(self.bmi, BMI[0], "BMI")
        if self.height is not None:
            _check_resolution(self.height, height_res, "height")

    @property
    def imperial(self) -> bool:
        return bool(self.flags & FLAG_IMPERIAL)

    @property
    def units(self) -> tuple[tuple[Decimal, str], tuple[Decimal, str]]:
        """((weight resolution, unit), (height resolution, unit))."""
        if self.imperial:
            return WEIGHT_IMPERIAL, HEIGHT_IMPERIAL
        return WEIGHT_SI, HEIGHT_SI

    @property
    def unknown_flags(self) -> int:
        return self.flags & ~KNOWN_FLAGS

    @classmethod
    def decode(cls, payload: bytes) -> WeightMeasurement:
        reader = Reader(payload, WEIGHT_MEASUREMENT_UUID)
        flags = reader.u8("flags")
        (weight_res, _), (height_res, _) = (
            (WEIGHT_IMPERIAL, HEIGHT_IMPERIAL) if flags & FLAG_IMPERIAL else (WEIGHT_SI, HEIGHT_SI)
        )
        raw = reader.u16("weight")
        weight: Numeric = AbsentReason.NAN if raw == WEIGHT_UNSUCCESSFUL else _scaled(raw,
                                                                                     weight_res)
        timestamp = read_date_time(reader, "time stamp") if flags & FLAG_TIME_STAMP else None
        user = reader.u8("user id") if flags & FLAG_USER_ID else None
        bmi = height = None
        if flags & FLAG_BMI_HEIGHT:
            bmi = _scaled(reader.u16("BMI"), BMI[0])
            height = _scaled(reader.u16("height"), height_res)
        reader.done()
        return cls(flags, weight, timestamp, user, bmi, height)

    def encode(self) -> bytes:
        (weight_res, _), (height_res, _) = self.units
        writer = Writer().u8(self.flags, "flags")
        if isinstance(self.weight, AbsentReason):
            writer.u16(WEIGHT_UNSUCCESSFUL, "weight")
        elif (steps := _unscaled(self.weight, weight_res)) == WEIGHT_UNSUCCESSFUL:
            raise ModelError("weight collides with the 'measurement unsuccessful' code")
        else:
            writer.u16(steps, "weight")
        if self.flags & FLAG_TIME_STAMP:
            write_date_time(writer, self.timestamp)
        if self.user_id is not None:
            writer.u8(self.user_id, "user id")
        if self.bmi is not None and self.height is not None:
            writer.u16(_unscaled(self.bmi, BMI[0]), "BMI")
            writer.u16(_unscaled(self.height, height_res), "height")
        return writer.getvalue()

    def readings(self) -> tuple[Reading, ...]:
        (_, weight_unit), (_, height_unit) = self.units
        out = [Reading.of(MDC_MASS_BODY_ACTUAL, self.weight, weight_unit,
                          device_time=self.timestamp)]
        if self.bmi is not None and self.height is not None:
            out.append(Reading.of(MDC_RATIO_MASS_BODY_LEN_SQ, self.bmi, BMI[1],
                                  device_time=self.timestamp))
            out.append(Reading.of(MDC_LEN_BODY_ACTUAL, self.height, height_unit,
                                  device_time=self.timestamp))
        return tuple(out)

    def flag_summary(self) -> dict[str, object]:
        return {
            "imperial": self.imperial,
            "time_stamp_present": bool(self.flags & FLAG_TIME_STAMP),
            "user_id_present": self.user_id is not None,
            "bmi_and_height_present": self.bmi is not None,
            "user_id": self.user_id,
            "measurement_unsuccessful": isinstance(self.weight, AbsentReason),
            "unknown_flags": self.unknown_flags,
        }
