"""Heart Rate Service 0x180D: Heart Rate Measurement 0x2A37.

Layout (GATT Specification Supplement): flags uint8 (bit 0 value format 0 = uint8, 1 = uint16;
bits 1-2 sensor contact status; bit 3 Energy Expended present; bit 4 RR-Interval present; bits 5-7
RFU), heart rate uint8 or uint16 (bpm), [uint16 energy expended, kJ], [uint16 RR-intervals in
1/1024 s, as many as fit, oldest first].

Sensor contact (bits 1-2): 0 or 1 = feature not supported, 2 = supported but no contact,
3 = supported and in contact. Without skin contact the numbers are not a heart rate, so the
readings are reported absent (SENSOR_OFF); the bytes are kept on the Measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from drivers.ble.measure import Reading
from drivers.ble.wire import Reader, Writer, check_presence
from gateway.errors import ModelError
from gateway.fhir.codes import MDC_ECG_HEART_RATE, MDC_ECG_TIME_PD_RR_GL
from gateway.model import AbsentReason

HEART_RATE_MEASUREMENT_UUID = 0x2A37

FLAG_UINT16 = 1 << 0
FLAG_CONTACT_DETECTED = 1 << 1
FLAG_CONTACT_SUPPORTED = 1 << 2
FLAG_ENERGY_EXPENDED = 1 << 3
FLAG_RR_INTERVALS = 1 << 4
KNOWN_FLAGS = 0x1F

# 1/1024 s exactly (a terminating decimal): RR intervals convert to seconds without rounding, all
# with exponent -10, so equal resolution gives equal precision.
RR_UNIT_S = Decimal("0.0009765625")


def rr_seconds(raw: int) -> Decimal:
    """An RR-interval field (1/1024 s units) in seconds, exact."""
    return raw * RR_UNIT_S


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """A parsed 0x2A37 value; ``flags`` as sent, RR intervals in their raw 1/1024 s units."""

    SOURCE: ClassVar[str] = "ble.heart_rate"

    flags: int
    heart_rate_bpm: int
    energy_expended_kj: int | None = None
    rr_intervals: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        check_presence(self.flags, FLAG_ENERGY_EXPENDED, self.energy_expended_kj is not None,
                       "energy_expended_kj")
        if self.rr_intervals and not self.flags & FLAG_RR_INTERVALS:
            raise ModelError("RR intervals need the RR-Interval present flag")

    @property
    def unknown_flags(self) -> int:
        return self.flags & ~KNOWN_FLAGS

    @property
    def contact_supported(self) -> bool:
        return bool(self.flags & FLAG_CONTACT_SUPPORTED)

    @property
    def contact_lost(self) -> bool:
        """The sensor can tell and says it has no skin contact."""
        return self.contact_supported and not self.flags & FLAG_CONTACT_DETECTED

    @property
    def rr_intervals_s(self) -> tuple[Decimal, ...]:
        return tuple(rr_seconds(raw) for raw in self.rr_intervals)

    @classmethod
    def decode(cls, payload: bytes) -> HeartRateMeasurement:
        reader = Reader(payload, HEART_RATE_MEASUREMENT_UUID)
        flags = reader.u8("flags")
        rate = reader.u16("heart rate") if flags & FLAG_UINT16 else reader.u8("heart rate")
        energy = reader.u16("energy expended") if flags & FLAG_ENERGY_EXPENDED else None
        intervals: list[int] = []
        if flags & FLAG_RR_INTERVALS:
            if reader.remaining % 2:
                raise reader.error("RR-intervals: odd number of bytes")
            while reader.remaining:
                intervals.append(reader.u16("RR-interval"))
        reader.done()
        return cls(flags, rate, energy, tuple(intervals))

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags")
        if self.flags & FLAG_UINT16:
            writer.u16(self.heart_rate_bpm, "heart rate")
        else:
            writer.u8(self.heart_rate_bpm, "heart rate")
        if self.energy_expended_kj is not None:
            writer.u16(self.energy_expended_kj, "energy expended")
        for raw in self.rr_intervals:
            writer.u16(raw, "RR-interval")
        return writer.getvalue()

    def readings(self) -> tuple[Reading, ...]:
        off = AbsentReason.SENSOR_OFF if self.contact_lost else None
        rate = Reading(MDC_ECG_HEART_RATE, None if off else Decimal(self.heart_rate_bpm), "/min",
                       absent_reason=off)
        # Several intervals in one notification may be equal: the index keeps their identifiers
        # (PHD IG supplementalInfo) apart.
        intervals = tuple(
            Reading(MDC_ECG_TIME_PD_RR_GL, None if off else rr_seconds(raw), "s",
                    absent_reason=off, supplemental=f"rr[{index}]")
            for index, raw in enumerate(self.rr_intervals)
        )
        return (rate, *intervals)

    def flag_summary(self) -> dict[str, object]:
        contact: str
        if not self.contact_supported:
            contact = "not_supported"
        else:
            contact = "lost" if self.contact_lost else "detected"
        return {
            "uint16_format": bool(self.flags & FLAG_UINT16),
            "sensor_contact": contact,
            "energy_expended_present": self.energy_expended_kj is not None,
            "energy_expended_kj": self.energy_expended_kj,
            "rr_intervals_present": bool(self.flags & FLAG_RR_INTERVALS),
            "rr_interval_count": len(self.rr_intervals),
            "unknown_flags": self.unknown_flags,
        }
