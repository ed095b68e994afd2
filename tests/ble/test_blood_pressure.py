"""Blood Pressure: Measurement 0x2A35, Intermediate Cuff Pressure 0x2A36, Feature 0x2A49."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.blood_pressure import (
    MDC_PRESS_CUFF,
    BloodPressureFeature,
    BloodPressureMeasurement,
    PulseRateRange,
)
from drivers.ble.measure import Reading
from gateway.errors import DecodeError, ModelError
from gateway.fhir import codes
from gateway.model import AbsentReason, Component, MeasurementStatus
from tests.ble.helpers import (
    DATE_TIME_BYTES,
    SFLOAT_BYTES,
    decode_or_reject,
    fixed,
    measurements_of,
    same,
    wall,
)

WHEN = wall(2024, 5, 1, 10, 5)
# flags 0x1E (mmHg; time stamp, pulse rate, user id, measurement status all present);
# SFLOAT 120 (0x0078), 80 (0x0050), 93 (0x005D); Date Time 2024-05-01 10:05:00; SFLOAT pulse 72
# (0x0048); user id 1; measurement status 0x0001 (body movement detected).
FULL = bytes.fromhex("1e 7800 5000 5d00 e80705010a0500 4800 01 0100")
# flags 0x01 (kPa only); SFLOAT 16.0 (mantissa 160, exponent -1: 0xF0A0), 10.7 (0xF06B),
# 12.5 (0xF07D).
KPA = bytes.fromhex("01 a0f0 6bf0 7df0")
# flags 0x14 (pulse rate + status); 120 / 80 / 93; pulse 180 (0x00B4); status 0x000C = irregular
# pulse (bit 2) and pulse rate range 01 in bits 3-4 (exceeds upper limit).
PULSE_OUT_OF_RANGE = bytes.fromhex("14 7800 5000 5d00 b400 0c00")
# flags 0x00; MAP sent as NaN (0x07FF): a monitor that does not compute it.
NO_MAP = bytes.fromhex("00 7800 5000 ff07")
# Intermediate Cuff Pressure, flags 0x00: cuff at 152 mmHg (0x0098), diastolic and MAP NaN.
CUFF = bytes.fromhex("00 9800 ff07 ff07")
# flags 0xE0: RFU bits 5-7 set; kept.
RFU_FLAGS = bytes.fromhex("e0 7800 5000 5d00")


def _components(unit: str, sys_: str, dia: str, mean: str) -> tuple[Component, ...]:
    return (
        Component(codes.MDC_PRESS_BLD_NONINV_SYS, Decimal(sys_), unit),
        Component(codes.MDC_PRESS_BLD_NONINV_DIA, Decimal(dia), unit),
        Component(codes.MDC_PRESS_BLD_NONINV_MEAN, Decimal(mean), unit),
    )


def test_full_measurement_decodes_every_field() -> None:
    value = BloodPressureMeasurement.decode(FULL)
    assert same(
        value,
        BloodPressureMeasurement(
            0x1E, Decimal(120), Decimal(80), Decimal(93), WHEN, Decimal(72), 1, 0x0001
        ),
    )
    assert same(
        value.readings(),
        (
            Reading(
                codes.MDC_PRESS_BLD_NONINV,
                None,
                "mm[Hg]",
                device_time=WHEN,
                status=MeasurementStatus.QUESTIONABLE,
                components=_components("mm[Hg]", "120", "80", "93"),
            ),
            Reading(
                codes.MDC_PULS_RATE_NON_INV,
                Decimal(72),
                "/min",
                device_time=WHEN,
                status=MeasurementStatus.QUESTIONABLE,
            ),
        ),
    )
    assert value.flag_summary() == {
        "kpa": False,
        "time_stamp_present": True,
        "pulse_rate_present": True,
        "user_id_present": True,
        "measurement_status_present": True,
        "user_id": 1,
        "measurement_status": ["body_movement_detected"],
        "pulse_rate_range": "within_range",
        "intermediate": False,
        "unknown_flags": 0,
    }


def test_kpa_unit_keeps_one_decimal() -> None:
    value = BloodPressureMeasurement.decode(KPA)
    assert same(
        value.readings(),
        (
            Reading(
                codes.MDC_PRESS_BLD_NONINV,
                None,
                "kPa",
                components=_components("kPa", "16.0", "10.7", "12.5"),
            ),
        ),
    )


def test_pulse_rate_out_of_range_makes_only_the_pulse_questionable() -> None:
    value = BloodPressureMeasurement.decode(PULSE_OUT_OF_RANGE)
    assert value.pulse_rate_range is PulseRateRange.EXCEEDS_UPPER_LIMIT
    compound, pulse = value.readings()
    assert compound.status is MeasurementStatus.NONE
    assert pulse.status is MeasurementStatus.QUESTIONABLE
    assert value.flag_summary()["measurement_status"] == ["irregular_pulse_detected"]


def test_nan_map_is_an_absent_component() -> None:
    (compound,) = BloodPressureMeasurement.decode(NO_MAP).readings()
    assert compound.components[2] == Component(
        codes.MDC_PRESS_BLD_NONINV_MEAN, None, "mm[Hg]", absent_reason=AbsentReason.NAN
    )


def test_intermediate_cuff_pressure_is_a_cuff_reading() -> None:
    value = BloodPressureMeasurement.decode(CUFF, intermediate=True)
    assert same(
        value.readings(),
        (Reading(MDC_PRESS_CUFF, Decimal(152), "mm[Hg]", supplemental="intermediate"),),
    )


def test_rfu_flag_bits_are_kept() -> None:
    value = BloodPressureMeasurement.decode(RFU_FLAGS)
    assert value.unknown_flags == 0xE0
    assert value.encode() == RFU_FLAGS


def test_compound_measurement_becomes_one_measurement_with_components() -> None:
    compound, pulse = measurements_of(BloodPressureMeasurement.decode(FULL))
    assert compound.value is None
    assert not compound.is_absent
    assert compound.components == _components("mm[Hg]", "120", "80", "93")
    assert pulse.mdc_code == codes.MDC_PULS_RATE_NON_INV


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (FULL[:-1], "too short: measurement status needs 2 more bytes, 1 left"),
        (FULL + b"\x00", "too long: 1 bytes after the last field"),
        (bytes.fromhex("04 7800 5000 5d00"), "too short: pulse rate needs 2 more bytes, 0 left"),
    ],
)
def test_length_is_validated_against_the_flags(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        BloodPressureMeasurement.decode(payload)
    assert caught.value.fields == {"uuid": "2a35", "reason": reason}


def test_intermediate_errors_name_their_own_uuid() -> None:
    with pytest.raises(DecodeError) as caught:
        BloodPressureMeasurement.decode(b"\x00", intermediate=True)
    assert caught.value.fields["uuid"] == "2a36"


def test_inconsistent_construction_is_refused() -> None:
    with pytest.raises(ModelError):
        BloodPressureMeasurement(0x00, Decimal(1), Decimal(1), Decimal(1), user_id=3)


def test_feature_bits_are_named_and_unknown_bits_kept() -> None:
    # 0x0147: body movement, cuff fit, irregular pulse (bits 0-2), bit 6 and bit 8 (newer spec).
    value = BloodPressureFeature.decode(bytes.fromhex("4701"))
    assert value.flag_summary() == {
        "body_movement_detection": True,
        "cuff_fit_detection": True,
        "irregular_pulse_detection": True,
        "pulse_rate_range_detection": False,
        "measurement_position_detection": False,
        "multiple_bond": False,
        "unknown_bits": 0x0140,
    }
    assert value.encode() == bytes.fromhex("4701")
    with pytest.raises(DecodeError):
        BloodPressureFeature.decode(b"\x47")


def payloads() -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        flags = draw(st.integers(0, 0xFF))
        out = bytes([flags]) + draw(fixed(6))
        if flags & 0x02:
            out += draw(DATE_TIME_BYTES)
        if flags & 0x04:
            out += draw(SFLOAT_BYTES)
        out += draw(fixed(1)) if flags & 0x08 else b""
        out += draw(fixed(2)) if flags & 0x10 else b""
        return out

    return st.one_of(build(), st.binary(max_size=20))


@given(payloads(), st.booleans())
def test_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes, intermediate: bool) -> None:
    value = decode_or_reject(
        lambda p: BloodPressureMeasurement.decode(p, intermediate=intermediate), payload
    )
    if isinstance(value, BloodPressureMeasurement):
        again = BloodPressureMeasurement.decode(value.encode(), intermediate=intermediate)
        assert same(again, value)
        assert measurements_of(value)


@given(st.binary(max_size=3))
def test_feature_decoder_gives_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(BloodPressureFeature.decode, payload)
    if isinstance(value, BloodPressureFeature):
        assert BloodPressureFeature.decode(value.encode()) == value
