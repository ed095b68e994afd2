"""Heart Rate Measurement 0x2A37."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.heart_rate import HeartRateMeasurement, rr_seconds
from drivers.ble.measure import Reading
from gateway.errors import DecodeError, ModelError
from gateway.fhir.codes import MDC_ECG_HEART_RATE, MDC_ECG_TIME_PD_RR_GL
from gateway.model import AbsentReason, TimeQuality
from tests.ble.helpers import decode_or_reject, is_exactly, measurements_of, same

# flags 0x00 (uint8 value, no contact feature, nothing optional); 72 bpm.
UINT8 = bytes.fromhex("0048")
# flags 0x1F: uint16 value (bit 0), contact supported and detected (bits 1-2 = 11), energy
# expended (bit 3), RR intervals (bit 4); 72 bpm as uint16; 291 kJ (0x0123); RR 1024/1024 s
# (0x0400) and 819/1024 s (0x0333).
FULL = bytes.fromhex("1f 4800 2301 0004 3303")
# flags 0x14: contact supported but NOT detected (bits 1-2 = 10), RR present; value 0, RR 0x0400.
CONTACT_LOST = bytes.fromhex("14 00 0004")
# flags 0x10 with no RR bytes after the value: the bit set, zero intervals (accepted).
RR_FLAG_NO_INTERVALS = bytes.fromhex("103c")
# flags 0x10, two identical RR intervals (0x0320 = 800/1024 s) in one notification.
EQUAL_INTERVALS = bytes.fromhex("10 4b 2003 2003")
# flags 0xE0: RFU bits kept.
RFU_FLAGS = bytes.fromhex("e048")


def test_uint8_heart_rate() -> None:
    value = HeartRateMeasurement.decode(UINT8)
    assert value == HeartRateMeasurement(0x00, 72)
    assert same(value.readings(), (Reading(MDC_ECG_HEART_RATE, Decimal(72), "/min"),))
    (measured,) = measurements_of(value)
    assert measured.time_quality is TimeQuality.ABSENT
    assert measured.device_time is None


def test_full_measurement_with_energy_and_rr_intervals() -> None:
    value = HeartRateMeasurement.decode(FULL)
    assert value == HeartRateMeasurement(0x1F, 72, 291, (1024, 819))
    assert same(
        value.readings(),
        (
            Reading(MDC_ECG_HEART_RATE, Decimal(72), "/min"),
            Reading(MDC_ECG_TIME_PD_RR_GL, Decimal("1.0000000000"), "s", supplemental="rr[0]"),
            Reading(MDC_ECG_TIME_PD_RR_GL, Decimal("0.7998046875"), "s", supplemental="rr[1]"),
        ),
    )
    assert value.flag_summary() == {
        "uint16_format": True,
        "sensor_contact": "detected",
        "energy_expended_present": True,
        "energy_expended_kj": 291,
        "rr_intervals_present": True,
        "rr_interval_count": 2,
        "unknown_flags": 0,
    }


def test_rr_intervals_convert_exactly_to_seconds() -> None:
    assert is_exactly(rr_seconds(1), "0.0009765625")
    assert is_exactly(rr_seconds(0xFFFF), "63.9990234375")


def test_lost_skin_contact_reports_every_value_absent() -> None:
    value = HeartRateMeasurement.decode(CONTACT_LOST)
    assert value.contact_lost
    assert same(
        value.readings(),
        (
            Reading(MDC_ECG_HEART_RATE, None, "/min", AbsentReason.SENSOR_OFF),
            Reading(
                MDC_ECG_TIME_PD_RR_GL, None, "s", AbsentReason.SENSOR_OFF, supplemental="rr[0]"
            ),
        ),
    )


def test_rr_flag_without_intervals_is_accepted() -> None:
    value = HeartRateMeasurement.decode(RR_FLAG_NO_INTERVALS)
    assert value.rr_intervals == ()
    assert value.encode() == RR_FLAG_NO_INTERVALS


def test_equal_intervals_in_one_notification_stay_distinct() -> None:
    readings = HeartRateMeasurement.decode(EQUAL_INTERVALS).readings()
    assert [r.supplemental for r in readings] == ["", "rr[0]", "rr[1]"]
    assert len(set(measurements_of(HeartRateMeasurement.decode(EQUAL_INTERVALS)))) == 3


def test_rfu_flag_bits_are_kept() -> None:
    value = HeartRateMeasurement.decode(RFU_FLAGS)
    assert value.unknown_flags == 0xE0
    assert value.encode() == RFU_FLAGS


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x01\x48", "too short: heart rate needs 2 more bytes, 1 left"),
        (bytes.fromhex("08 48 23"), "too short: energy expended needs 2 more bytes, 1 left"),
        (bytes.fromhex("10 48 00"), "RR-intervals: odd number of bytes"),
        (bytes.fromhex("00 48 00"), "too long: 1 bytes after the last field"),
    ],
)
def test_length_is_validated_against_the_flags(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        HeartRateMeasurement.decode(payload)
    assert caught.value.fields == {"uuid": "2a37", "reason": reason}


def test_encoder_refuses_a_value_too_big_for_the_uint8_format() -> None:
    with pytest.raises(ModelError):
        HeartRateMeasurement(0x00, 300).encode()
    with pytest.raises(ModelError):
        HeartRateMeasurement(0x00, 60, rr_intervals=(1,))


@given(st.binary(max_size=24))
def test_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(HeartRateMeasurement.decode, payload)
    if isinstance(value, HeartRateMeasurement):
        assert HeartRateMeasurement.decode(value.encode()) == value
        assert len(measurements_of(value)) == 1 + len(value.rr_intervals)
