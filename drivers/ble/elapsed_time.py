"""The Elapsed Time format of the Elapsed Time Service (ETS 0x183F): how GHS observations carry
their time stamp, and the value of Current Elapsed Time 0x2BF2.

Facts (ETS v1.0, "Current Elapsed Time" characteristic; the same 9 octets are the Time Stamp of
a GHS observation, GHSS v1.0 "Health Observation Body"): flags uint8, Time Value uint48, Time
Sync Source Type uint8, TZ/DST Offset sint8.

- flags bit 0: 1 = the value is a tick counter with no meaning of its own, 0 = time of day;
  bit 1: 1 = UTC, 0 = local time (meaningless for a tick counter); bits 2-3 resolution:
  0 = 1 s, 1 = 100 ms, 2 = 1 ms, 3 = 100 us; bit 4: the TZ/DST Offset field is used; bit 5:
  the value is on the device's current timeline (0: the clock was set since it was taken);
  bits 6-7 reserved.
- A time of day counts from the epoch 2000-01-01T00:00:00 (UTC, or local time per bit 1).
- TZ/DST Offset: signed, in 15-minute units (local time minus UTC); -128 = not known. An offset
  wider than any time zone (more than 14 h) is treated as not known too.

Cross-checked against the public ETS field table as published in the Bluetooth SIG's GATT
Specification Supplement YAML (org.bluetooth.characteristic.elapsed_time) and two public GHS
peripheral prototypes (STMicroelectronics, Realtek): same field order and sizes.

A tick counter gives no device time (``device_time()`` is None): a reading is never stamped with a
wall-clock instant the device did not have.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from drivers.ble.wire import Reader, Writer
from gateway.errors import ModelError

CURRENT_ELAPSED_TIME_UUID = 0x2BF2
ELAPSED_TIME_SIZE = 9

FLAG_TICK_COUNTER = 1 << 0
FLAG_UTC = 1 << 1
RESOLUTION_SHIFT = 2
FLAG_TZ_DST_USED = 1 << 4
FLAG_CURRENT_TIMELINE = 1 << 5
KNOWN_FLAGS = 0x3F

TZ_DST_UNKNOWN = -128
EPOCH = datetime(2000, 1, 1)  # noqa: DTZ001 - UTC or local per flag bit 1, zone added later
_QUARTER = timedelta(minutes=15)
_MAX_ZONE = timedelta(hours=14)  # UTC+14 (Kiribati) is the widest offset in use
_MAX_TIME_VALUE = (1 << 48) - 1


class TimeResolution(enum.IntEnum):
    """Flags bits 2-3: the unit of the Time Value."""

    SECOND = 0
    DECISECOND = 1  # 100 ms
    MILLISECOND = 2
    HUNDRED_MICROSECONDS = 3

    @property
    def unit(self) -> timedelta:
        return _UNITS[self]


_UNITS = {
    TimeResolution.SECOND: timedelta(seconds=1),
    TimeResolution.DECISECOND: timedelta(milliseconds=100),
    TimeResolution.MILLISECOND: timedelta(milliseconds=1),
    TimeResolution.HUNDRED_MICROSECONDS: timedelta(microseconds=100),
}


@dataclass(frozen=True, slots=True)
class ElapsedTime:
    """One Elapsed Time value as sent; ``flags`` keeps the reserved bits."""

    flags: int
    time_value: int  # ticks of ``resolution`` since the epoch (or since the counter started)
    sync_source: int = 0  # Time Sync Source Type, kept as sent
    tz_dst_offset: int = TZ_DST_UNKNOWN  # 15-minute units, as sent (sint8)

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("elapsed time flags must fit one byte")
        if not 0 <= self.time_value <= _MAX_TIME_VALUE:
            raise ModelError("elapsed time value must fit 48 bits")
        if not 0 <= self.sync_source <= 0xFF:
            raise ModelError("time sync source must fit one byte")
        if not -128 <= self.tz_dst_offset <= 127:
            raise ModelError("TZ/DST offset must fit a signed byte")

    @property
    def tick_counter(self) -> bool:
        return bool(self.flags & FLAG_TICK_COUNTER)

    @property
    def utc(self) -> bool:
        return bool(self.flags & FLAG_UTC)

    @property
    def resolution(self) -> TimeResolution:
        return TimeResolution(self.flags >> RESOLUTION_SHIFT & 0b11)

    @property
    def current_timeline(self) -> bool:
        return bool(self.flags & FLAG_CURRENT_TIMELINE)

    @property
    def offset(self) -> timedelta | None:
        """Local time minus UTC, when the device uses the field and knows it."""
        if not self.flags & FLAG_TZ_DST_USED or self.tz_dst_offset == TZ_DST_UNKNOWN:
            return None
        offset = self.tz_dst_offset * _QUARTER
        return offset if abs(offset) <= _MAX_ZONE else None

    @property
    def elapsed(self) -> timedelta:
        return self.time_value * self.resolution.unit

    def device_time(self) -> datetime | None:
        """The instant as the model takes it: None for a tick counter; aware when the device
        said how its clock relates to UTC (UTC flag, or a TZ/DST offset); naive (the device's
        wall clock) otherwise. Raises OverflowError past year 9999 (``check_range``)."""
        if self.tick_counter:
            return None
        wall = EPOCH + self.elapsed
        offset = self.offset
        if self.utc:
            instant = wall.replace(tzinfo=UTC)
            return instant if offset is None else instant.astimezone(timezone(offset))
        return wall if offset is None else wall.replace(tzinfo=timezone(offset))

    def flag_summary(self) -> dict[str, object]:
        return {
            "tick_counter": self.tick_counter,
            "utc": self.utc,
            "resolution": self.resolution.name.lower(),
            "current_timeline": self.current_timeline,
            "tz_dst_offset_min": None if self.offset is None
            else int(self.offset.total_seconds() // 60),
            "time_sync_source": self.sync_source,
            "time_value": self.time_value,
        }


def read_elapsed_time(reader: Reader, what: str) -> ElapsedTime:
    """Read the 9-octet Elapsed Time; DecodeError when it cannot be placed on a calendar
    (a time of day past year 9999 is no time a device had)."""
    flags = reader.u8(f"{what} flags")
    value = reader.uint(6, f"{what} value")
    source = reader.u8(f"{what} sync source")
    offset = int.from_bytes(reader.take(1, f"{what} TZ/DST offset"), "little", signed=True)
    stamp = ElapsedTime(flags, value, source, offset)
    try:
        stamp.device_time()
    except OverflowError:
        raise reader.error(f"{what} is out of the calendar's range") from None
    return stamp


def write_elapsed_time(writer: Writer, stamp: ElapsedTime) -> Writer:
    writer.u8(stamp.flags, "elapsed time flags").uint(stamp.time_value, 6, "elapsed time value")
    writer.u8(stamp.sync_source, "time sync source")
    return writer.raw(stamp.tz_dst_offset.to_bytes(1, "little", signed=True))
