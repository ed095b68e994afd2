"""GATT time fields: Date Time (0x2A08) and Current Time (0x2A2B, Exact Time 256 + Adjust Reason).

A device clock is a wall clock without zone information, so these decode to *naive* datetimes: the
device's own reading, unaltered. The caller (``drivers.ble.measure``) decides how far it can be
trusted and which UTC offset it runs at, from what it learnt about the device's clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from drivers.ble.wire import OpenIntEnum, Reader, Writer, bit_names
from gateway.errors import ModelError

DATE_TIME_UUID = 0x2A08
CURRENT_TIME_UUID = 0x2A2B
DATE_TIME_LEN = 7


def read_date_time(reader: Reader, what: str = "date time") -> datetime | None:
    """Read a 7-byte Date Time: uint16 year (0 = unknown, else 1582..9999), month (0 = unknown),
    day (0 = unknown), hours, minutes, seconds. None when the date is not known; DecodeError
    when a field is out of its range or the date does not exist (a 30th of February)."""
    year = reader.u16(what)
    month, day, hours, minutes, seconds = reader.take(5, what)
    if year != 0 and not 1582 <= year <= 9999:
        raise reader.error(f"{what}: year out of range")
    if month > 12 or day > 31 or hours > 23 or minutes > 59 or seconds > 59:
        raise reader.error(f"{what}: a field is out of range")
    if year == 0 or month == 0 or day == 0:
        return None
    try:
        return datetime(year, month, day, hours, minutes, seconds)  # noqa: DTZ001 device wall clock
    except ValueError:
        raise reader.error(f"{what}: no such calendar date") from None


def decode_date_time(payload: bytes, uuid16: int = DATE_TIME_UUID) -> datetime | None:
    """Decode a Date Time characteristic value (exactly 7 bytes)."""
    reader = Reader(payload, uuid16)
    when = read_date_time(reader)
    reader.done()
    return when


def write_date_time(writer: Writer, when: datetime | None) -> Writer:
    """Append a Date Time; None is sent as all zeros ("unknown"). Sub-seconds are dropped (the
    field has none); an aware datetime is refused: the field has no zone."""
    if when is None:
        return writer.raw(bytes(DATE_TIME_LEN))
    if when.tzinfo is not None:
        raise ModelError("Date Time carries no zone: pass the device's naive wall-clock time")
    if when.year < 1582:
        raise ModelError("Date Time years start at 1582")
    writer.u16(when.year, "year")
    return writer.raw(bytes((when.month, when.day, when.hour, when.minute, when.second)))


def encode_date_time(when: datetime | None) -> bytes:
    return write_date_time(Writer(), when).getvalue()


class DayOfWeek(OpenIntEnum):
    UNKNOWN = 0
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7


class AdjustReason(enum.IntFlag):
    """Why the device clock was last changed (Current Time, Adjust Reason; bits 4-7 RFU, kept)."""

    NONE = 0
    MANUAL_TIME_UPDATE = 1 << 0
    EXTERNAL_REFERENCE_TIME_UPDATE = 1 << 1
    CHANGE_OF_TIME_ZONE = 1 << 2
    CHANGE_OF_DST = 1 << 3


_ADJUST_NAMES = {
    0: "manual_time_update",
    1: "external_reference_time_update",
    2: "change_of_time_zone",
    3: "change_of_dst",
}


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """Current Time 0x2A2B: Exact Time 256 (Date Time, Day of Week, Fractions256) + Adjust Reason.

    Reading it right after connecting gives the coincident timestamp (device clock vs ours);
    writing it (optional for the device) sets the device clock.
    """

    UUID: ClassVar[int] = CURRENT_TIME_UUID
    SIZE: ClassVar[int] = 10

    local_time: datetime | None  # naive device wall clock, None when its date is unknown
    day_of_week: DayOfWeek = DayOfWeek.UNKNOWN
    fractions256: int = 0  # 1/256 s after local_time
    adjust_reason: AdjustReason = AdjustReason.NONE

    def __post_init__(self) -> None:
        if not 0 <= self.fractions256 <= 255:
            raise ModelError("fractions256 must fit one byte")

    @classmethod
    def from_datetime(
        cls, when: datetime, adjust_reason: AdjustReason = AdjustReason.NONE
    ) -> CurrentTime:
        """The value a collector writes to set a device clock to wall-clock time ``when``."""
        return cls(
            local_time=when.replace(microsecond=0),
            day_of_week=DayOfWeek(when.isoweekday()),
            fractions256=when.microsecond * 256 // 1_000_000,
            adjust_reason=adjust_reason,
        )

    @classmethod
    def decode(cls, payload: bytes) -> CurrentTime:
        reader = Reader(payload, cls.UUID)
        local_time = read_date_time(reader)
        day = DayOfWeek(reader.u8("day of week"))
        fractions = reader.u8("fractions256")
        reason = AdjustReason(reader.u8("adjust reason"))
        reader.done()
        return cls(local_time, day, fractions, reason)

    def encode(self) -> bytes:
        writer = write_date_time(Writer(), self.local_time)
        writer.u8(int(self.day_of_week), "day of week")
        writer.u8(self.fractions256, "fractions256")
        return writer.u8(int(self.adjust_reason), "adjust reason").getvalue()

    def flag_summary(self) -> dict[str, object]:
        return {
            "local_time": None if self.local_time is None else self.local_time.isoformat(),
            "day_of_week": self.day_of_week.label,
            "fractions256": self.fractions256,
            "adjust_reason": bit_names(int(self.adjust_reason), _ADJUST_NAMES),
        }

