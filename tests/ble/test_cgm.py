"""CGM Measurement 0x2AA7 and CGM Session Start Time 0x2AAA."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.cgm import CgmMeasurement, CgmRecord, CgmSessionStartTime, DstOffset
from drivers.ble.measure import Reading
from drivers.ble.wire import crc16_mcrf4xx
from gateway.errors import DecodeError, ModelError
from gateway.fhir.codes import MDC_CONC_GLU_ISF
from gateway.model import MeasurementStatus, TimeQuality
from tests.ble.helpers import DATE_TIME_BYTES, decode_or_reject, fixed, measurements_of, same, wall

# One record: size 6, flags 0x00, glucose 110 mg/dL (SFLOAT 0x006E), time offset 5 min.
MINIMAL = bytes.fromhex("06 00 6e00 0500")
# size 13, flags 0xE3 (trend, quality, warning, cal/temp and status octets); 110 mg/dL; offset 5;
# octets in flag-bit order: warning 0x04 (below hypo level), cal/temp 0x40 (calibration
# pending), status 0x02 (battery low); trend -1.5 mg/dL/min (mantissa -15 = 0xFF1, exponent -1:
# 0xFFF1); quality 95 % (0x005F).
FULL = bytes.fromhex("0d e3 6e00 0500 04 40 02 f1ff 5f00")
# size 8 = 6 + E2E-CRC; CRC-16/MCRF4XX over the first 6 bytes is 0x6036 (little-endian 36 60).
WITH_CRC = bytes.fromhex("08 00 6e00 0500 3660")
# Two records in one notification: 110 mg/dL at 5 min, 111 mg/dL (0x006F) at 10 min.
TWO_RECORDS = MINIMAL + bytes.fromhex("06 00 6f00 0a00")
# Session start 2024-05-01 06:00:00, time zone +4 quarters (UTC+1), DST 4 (daylight, +1 h).
SESSION_START = bytes.fromhex("e8070501060000 04 04")
# The same with its E2E-CRC (0x9605 over the 9 bytes above).
SESSION_START_CRC = SESSION_START + bytes.fromhex("0596")
# Time zone -128 and DST 255: both unknown.
SESSION_START_NO_ZONE = bytes.fromhex("e8070501060000 80 ff")


def test_crc_is_crc16_mcrf4xx() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91  # the catalogue check value


def test_minimal_record() -> None:
    value = CgmMeasurement.decode(MINIMAL)
    assert same(value, CgmMeasurement((CgmRecord(0x00, Decimal(110), 5),)))
    assert same(value.readings(), (Reading(MDC_CONC_GLU_ISF, Decimal(110), "mg/dL", record_id=5),))


def test_full_record_with_every_optional_field() -> None:
    value = CgmMeasurement.decode(FULL)
    (record,) = value.records
    assert same(record, CgmRecord(0xE3, Decimal(110), 5, 0x044002, Decimal("-1.5"), Decimal(95)))
    assert record.flag_summary() == {
        "time_offset_min": 5,
        "trend_present": True,
        "quality_present": True,
        "octets_present": ["warning", "cal/temp", "status"],
        "annunciation": ["device_battery_low", "calibration_pending", "result_below_hypo"],
        "e2e_crc": False,
        "unknown_flags": 0,
    }
    assert same(
        value.readings(),
        (
            Reading(
                MDC_CONC_GLU_ISF,
                Decimal(110),
                "mg/dL",
                record_id=5,
                status=MeasurementStatus.CALIBRATION_ONGOING,
            ),
        ),
    )
    assert value.encode() == FULL


def test_crc_is_verified_and_kept_on_reencode() -> None:
    value = CgmMeasurement.decode(WITH_CRC)
    assert value.records[0].e2e_crc
    assert value.encode() == WITH_CRC
    corrupted = WITH_CRC[:-1] + b"\x61"
    with pytest.raises(DecodeError) as caught:
        CgmMeasurement.decode(corrupted)
    assert caught.value.fields == {
        "uuid": "2aa7",
        "reason": "E2E-CRC mismatch in the record at byte 0",
    }


def test_several_records_in_one_notification() -> None:
    value = CgmMeasurement.decode(TWO_RECORDS)
    assert [r.time_offset_min for r in value.records] == [5, 10]
    assert [r.record_id for r in value.readings()] == [5, 10]


def test_records_are_timed_from_the_session_start() -> None:
    start = CgmSessionStartTime.decode(SESSION_START)
    value = CgmMeasurement.decode(TWO_RECORDS).in_session(start)
    plus2 = timezone(timedelta(hours=2))
    assert [r.device_time for r in value.readings()] == [
        datetime(2024, 5, 1, 6, 5, tzinfo=plus2),
        datetime(2024, 5, 1, 6, 10, tzinfo=plus2),
    ]
    first, _ = measurements_of(value)
    assert first.time_quality is TimeQuality.SYNCED  # helpers' device clock offset is +2 h
    assert first.device_time == datetime(2024, 5, 1, 6, 5, tzinfo=plus2)


def test_time_sync_required_makes_the_time_untrusted() -> None:
    # flags 0x40 (cal/temp octet), octet 0x01 = time synchronization required (bit 8).
    payload = bytes.fromhex("07 40 6e00 0500 01")
    value = CgmMeasurement.decode(payload).in_session(CgmSessionStartTime.decode(SESSION_START))
    assert {m.time_quality for m in measurements_of(value)} == {TimeQuality.UNSYNCED}


def test_session_start_time_fields() -> None:
    value = CgmSessionStartTime.decode(SESSION_START)
    assert value == CgmSessionStartTime(
        wall(2024, 5, 1, 6, 0),
        4,
        DstOffset.DAYLIGHT_TIME,
    )
    assert value.utc_offset == timedelta(hours=2)
    assert value.flag_summary() == {
        "session_start": "2024-05-01T06:00:00",
        "time_zone_quarters": 4,
        "dst_offset": "daylight_time",
        "utc_offset_min": 120,
        "e2e_crc": False,
    }
    with_crc = CgmSessionStartTime.decode(SESSION_START_CRC)
    assert with_crc.e2e_crc
    assert with_crc.encode() == SESSION_START_CRC


def test_session_start_without_zone_gives_naive_times() -> None:
    start = CgmSessionStartTime.decode(SESSION_START_NO_ZONE)
    assert start.utc_offset is None
    (reading,) = CgmMeasurement.decode(MINIMAL).in_session(start).readings()
    assert reading.device_time == wall(2024, 5, 1, 6, 5)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "too short: size needs 1 more bytes, 0 left"),
        (bytes.fromhex("07 00 6e00 0500 00"), "record size does not match its flags"),
        (bytes.fromhex("0d e3 6e00 0500"), "too short: record is cut off"),
        (MINIMAL + b"\x06", "too short: flags needs 1 more bytes, 0 left"),
    ],
)
def test_record_sizes_are_validated(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        CgmMeasurement.decode(payload)
    assert caught.value.fields == {"uuid": "2aa7", "reason": reason}


def test_session_start_errors() -> None:
    with pytest.raises(DecodeError) as zone:
        CgmSessionStartTime.decode(bytes.fromhex("e8070501060000 40 00"))  # +64 quarters
    assert zone.value.fields == {"uuid": "2aaa", "reason": "time zone out of range"}
    with pytest.raises(DecodeError) as crc:
        CgmSessionStartTime.decode(SESSION_START + b"\x00\x00")
    assert crc.value.fields["reason"] == "E2E-CRC mismatch"
    with pytest.raises(DecodeError):
        CgmSessionStartTime.decode(SESSION_START + b"\x00")


def test_inconsistent_record_is_refused() -> None:
    with pytest.raises(ModelError):
        CgmRecord(0x00, Decimal(100), 1, annunciation=0x01)  # status octet not flagged


@st.composite
def _records(draw: st.DrawFn) -> bytes:
    flags = draw(st.integers(0, 0xFF))
    body = bytes([flags]) + draw(
        fixed(4 + bin(flags & 0xE0).count("1") + 2 * bin(flags & 0x03).count("1"))
    )
    record = bytes([len(body) + 1]) + body
    if draw(st.booleans()):
        record = bytes([record[0] + 2]) + record[1:]
        record += crc16_mcrf4xx(record).to_bytes(2, "little")
    return record


@given(
    st.one_of(st.lists(_records(), min_size=1, max_size=3).map(b"".join), st.binary(max_size=30))
)
def test_measurement_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(CgmMeasurement.decode, payload)
    if isinstance(value, CgmMeasurement):
        assert value.encode() == payload
        assert same(CgmMeasurement.decode(value.encode()), value)
        assert len(measurements_of(value)) == len(value.records)


@given(
    st.one_of(
        st.tuples(DATE_TIME_BYTES, fixed(2), st.booleans()).map(
            lambda t: (
                t[0] + t[1] + (crc16_mcrf4xx(t[0] + t[1]).to_bytes(2, "little") if t[2] else b"")
            )
        ),
        st.binary(max_size=12),
    )
)
def test_session_start_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(CgmSessionStartTime.decode, payload)
    if isinstance(value, CgmSessionStartTime):
        assert CgmSessionStartTime.decode(value.encode()) == value
        value.local_start()


def test_session_start_at_the_end_of_the_calendar_gives_no_time_rather_than_a_crash() -> None:
    start = CgmSessionStartTime.decode(bytes.fromhex("0f270c1f173b00 80 ff"))  # 9999-12-31 23:59
    (reading,) = CgmMeasurement.decode(MINIMAL).in_session(start).readings()
    assert reading.device_time is None
