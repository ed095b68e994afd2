"""Date Time 0x2A08 and Current Time 0x2A2B."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.gatt_time import (
    AdjustReason,
    CurrentTime,
    DayOfWeek,
    decode_date_time,
    encode_date_time,
)
from gateway.errors import DecodeError, ModelError
from tests.ble.helpers import DATE_TIMES, decode_or_reject, wall

# Date Time: year 2024 = 0x07E8 little-endian (e8 07), month 5, day 1, 10:30:45 (0a 1e 2d).
DATE_TIME = bytes.fromhex("e80705010a1e2d")
# Year 0 = "unknown": the device has no idea of the date, whatever the other fields say.
DATE_TIME_UNKNOWN_YEAR = bytes.fromhex("000005010a1e2d")
# Month 0 / day 0 = "unknown" as well.
DATE_TIME_UNKNOWN_MONTH = bytes.fromhex("e80700010a1e2d")
DATE_TIME_UNKNOWN_DAY = bytes.fromhex("e80705000a1e2d")
# Current Time: the Date Time above, day of week 3 (Wednesday, which 2024-05-01 is), fractions256
# 0x80 (half a second), adjust reason 0x03 (manual update + external reference update).
CURRENT_TIME = DATE_TIME + bytes.fromhex("03 80 03")
# Day of week 9 (RFU) and adjust reason 0xF1 (bits 4-7 RFU): kept, not rejected.
CURRENT_TIME_RFU = DATE_TIME + bytes.fromhex("09 00 f1")


def test_date_time_decodes_to_a_naive_wall_clock_time() -> None:
    assert decode_date_time(DATE_TIME) == wall(2024, 5, 1, 10, 30, 45)


@pytest.mark.parametrize(
    "payload", [DATE_TIME_UNKNOWN_YEAR, DATE_TIME_UNKNOWN_MONTH, DATE_TIME_UNKNOWN_DAY, bytes(7)]
)
def test_date_time_with_an_unknown_date_is_none(payload: bytes) -> None:
    assert decode_date_time(payload) is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (bytes.fromhex("e8070d010a1e2d"), "date time: a field is out of range"),  # month 13
        (bytes.fromhex("e8070501181e2d"), "date time: a field is out of range"),  # hour 24
        (bytes.fromhex("e80705010a3c2d"), "date time: a field is out of range"),  # minute 60
        (bytes.fromhex("e807021e0a1e2d"), "date time: no such calendar date"),  # 30 Feb
        (bytes.fromhex("e80305010a1e2d"), "date time: year out of range"),  # 1000
    ],
)
def test_date_time_rejects_impossible_values(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_date_time(payload)
    assert caught.value.fields == {"uuid": "2a08", "reason": reason}


def test_date_time_rejects_wrong_lengths() -> None:
    with pytest.raises(DecodeError) as short:
        decode_date_time(DATE_TIME[:6])
    assert short.value.fields["reason"] == "too short: date time needs 5 more bytes, 4 left"
    with pytest.raises(DecodeError) as long:
        decode_date_time(DATE_TIME + b"\x00")
    assert long.value.fields["reason"] == "too long: 1 bytes after the last field"


def test_date_time_encoder_writes_the_spec_layout() -> None:
    assert encode_date_time(wall(2024, 5, 1, 10, 30, 45)) == DATE_TIME
    assert encode_date_time(None) == bytes(7)


def test_date_time_encoder_refuses_zone_aware_times_and_early_years() -> None:
    with pytest.raises(ModelError):
        encode_date_time(datetime(2024, 5, 1, tzinfo=UTC))
    with pytest.raises(ModelError):
        encode_date_time(wall(1500, 1, 1))


@given(DATE_TIMES)
def test_date_time_round_trips(when: datetime) -> None:
    assert decode_date_time(encode_date_time(when)) == when


@given(st.binary(max_size=9))
def test_date_time_decoder_never_fails_other_than_decode_error(payload: bytes) -> None:
    decode_or_reject(decode_date_time, payload)


def test_current_time_decodes_every_field() -> None:
    assert CurrentTime.decode(CURRENT_TIME) == CurrentTime(
        local_time=wall(2024, 5, 1, 10, 30, 45),
        day_of_week=DayOfWeek.WEDNESDAY,
        fractions256=128,
        adjust_reason=AdjustReason.MANUAL_TIME_UPDATE | AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE,
    )


def test_current_time_keeps_unknown_day_codes_and_rfu_adjust_bits() -> None:
    value = CurrentTime.decode(CURRENT_TIME_RFU)
    assert value.day_of_week == 9
    assert not value.day_of_week.known
    assert value.day_of_week.label == "unknown_9"
    assert int(value.adjust_reason) == 0xF1
    assert value.encode() == CURRENT_TIME_RFU
    assert value.flag_summary() == {
        "local_time": "2024-05-01T10:30:45",
        "day_of_week": "unknown_9",
        "fractions256": 0,
        "adjust_reason": ["manual_time_update", "bit4", "bit5", "bit6", "bit7"],
    }


def test_current_time_from_a_datetime_is_what_a_collector_writes() -> None:
    value = CurrentTime.from_datetime(
        wall(2024, 5, 1, 10, 30, 45, 500000),
        AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE,
    )
    assert value.encode() == DATE_TIME + bytes.fromhex("03 80 02")


def test_current_time_rejects_wrong_lengths() -> None:
    with pytest.raises(DecodeError) as caught:
        CurrentTime.decode(CURRENT_TIME[:-1])
    assert caught.value.fields["uuid"] == "2a2b"
    with pytest.raises(DecodeError):
        CurrentTime.decode(CURRENT_TIME + b"\x00")


@given(DATE_TIMES, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_current_time_round_trips(when: datetime, day: int, fractions: int, reason: int) -> None:
    value = CurrentTime(when, DayOfWeek(day), fractions, AdjustReason(reason))
    assert CurrentTime.decode(value.encode()) == value


@given(st.binary(max_size=12))
def test_current_time_decoder_never_fails_other_than_decode_error(payload: bytes) -> None:
    decode_or_reject(CurrentTime.decode, payload)
