"""The Elapsed Time format (drivers/ble/elapsed_time.py): a GHS time stamp as device time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.elapsed_time import ElapsedTime, read_elapsed_time, write_elapsed_time
from drivers.ble.wire import Reader, Writer
from gateway.errors import DecodeError
from tests.ble.helpers import wall

# 9 octets: flags, uint48 value, sync source, TZ/DST offset (15-minute units).
# 0x32: UTC, on the current timeline, offset used; 767865600 s = 2024-05-01T08:00:00Z; offset
# -20 x 15 min = -05:00.
UTC_WITH_OFFSET = bytes.fromhex("32 00b3c42d0000 01 ec")
# 0x24: local time, on the current timeline, resolution 1 (100 ms); 7678656005 tenths = local
# 2024-05-01 08:00:00.500; no offset.
LOCAL_DECISECONDS = bytes.fromhex("24 05feaec90100 00 00")
# 0x2C: local time, current timeline, resolution 3 (100 us); 7678656000001 x 100 us = local
# 2024-05-01 08:00:00.000100.
LOCAL_100_US = bytes.fromhex("2c 013090d3fb06 00 00")


def _read(payload: bytes) -> ElapsedTime:
    reader = Reader(payload, 0x2BF2)
    stamp = read_elapsed_time(reader, "time stamp")
    reader.done()
    return stamp


def test_utc_with_an_offset_is_the_instant_in_the_device_zone() -> None:
    stamp = _read(UTC_WITH_OFFSET)
    assert stamp == ElapsedTime(0x32, 767865600, 1, -20)
    when = stamp.device_time()
    assert when == datetime(2024, 5, 1, 8, tzinfo=UTC)
    assert when is not None
    assert when.utcoffset() == timedelta(hours=-5)
    assert when.isoformat() == "2024-05-01T03:00:00-05:00"


def test_resolutions() -> None:
    assert _read(LOCAL_DECISECONDS).device_time() == wall(2024, 5, 1, 8, 0, 0, 500000)
    assert _read(LOCAL_100_US).device_time() == wall(2024, 5, 1, 8, 0, 0, 100)


def test_offset_unknown_or_wider_than_any_zone_is_not_used() -> None:
    assert ElapsedTime(0x32, 0, 0, -128).device_time() == datetime(2000, 1, 1, tzinfo=UTC)
    assert ElapsedTime(0x30, 0, 0, 60).device_time() == wall(2000, 1, 1)  # 15 h
    assert ElapsedTime(0x30, 0, 0, 56).device_time() == datetime(
        2000, 1, 1, tzinfo=timezone(timedelta(hours=14)))


def test_tick_counter_has_no_device_time() -> None:
    assert ElapsedTime(0x01 | 0x02 | 0x20, 767865600, 0, 0).device_time() is None


def test_time_past_the_calendar_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as caught:
        _read(bytes.fromhex("22 ffffffffffff 00 00"))
    assert caught.value.fields["reason"] == "time stamp is out of the calendar's range"
    assert _read(bytes.fromhex("23 ffffffffffff 00 00")).device_time() is None  # a tick counter


@given(st.binary(min_size=9, max_size=9))
def test_any_nine_octets_decode_or_give_the_decode_error_and_round_trip(raw: bytes) -> None:
    try:
        stamp = _read(raw)
    except DecodeError:
        return
    assert write_elapsed_time(Writer(), stamp).getvalue() == raw
