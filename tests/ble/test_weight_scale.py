"""Weight Measurement 0x2A9D."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.measure import Reading
from drivers.ble.weight_scale import WeightMeasurement
from gateway.errors import DecodeError, ModelError
from gateway.fhir import codes
from gateway.model import AbsentReason
from tests.ble.helpers import (
    DATE_TIME_BYTES,
    decode_or_reject,
    fixed,
    measurements_of,
    same,
    wall,
)

WHEN = wall(2024, 5, 1, 7, 30)
# flags 0x00 (SI); weight 14000 x 0.005 kg (0x36B0) = 70.000 kg.
SI_MINIMAL = bytes.fromhex("00 b036")
# Weight 14001 x 0.005 kg (0x36B1) = 70.005 kg: the last digit is why the exponent is -3.
SI_ODD_STEP = bytes.fromhex("00 b136")
# flags 0x0E (SI; time stamp, user id, BMI and height); 70.000 kg; Date Time 2024-05-01 07:30:00;
# user 2; BMI 229 x 0.1 (0x00E5) = 22.9 kg/m2; height 1750 x 0.001 m (0x06D6) = 1.750 m.
SI_FULL = bytes.fromhex("0e b036 e8070501071e00 02 e500 d606")
# flags 0x09 (imperial; BMI and height); weight 15432 x 0.01 lb (0x3C48) = 154.32 lb; BMI 22.9;
# height 689 x 0.1 in (0x02B1) = 68.9 in.
IMPERIAL = bytes.fromhex("09 483c e500 b102")
# Weight 0xFFFF: "measurement unsuccessful".
UNSUCCESSFUL = bytes.fromhex("00 ffff")
# flags 0xF0: RFU bits kept.
RFU_FLAGS = bytes.fromhex("f0 b036")


def test_si_weight_keeps_the_field_resolution() -> None:
    value = WeightMeasurement.decode(SI_MINIMAL)
    assert same(value, WeightMeasurement(0x00, Decimal("70.000")))
    assert same(value.readings(), (Reading(codes.MDC_MASS_BODY_ACTUAL, Decimal("70.000"), "kg"),))
    assert same(WeightMeasurement.decode(SI_ODD_STEP).weight, Decimal("70.005"))


def test_full_si_measurement() -> None:
    value = WeightMeasurement.decode(SI_FULL)
    assert same(
        value,
        WeightMeasurement(0x0E, Decimal("70.000"), WHEN, 2, Decimal("22.9"), Decimal("1.750")),
    )
    assert same(
        value.readings(),
        (
            Reading(codes.MDC_MASS_BODY_ACTUAL, Decimal("70.000"), "kg", device_time=WHEN),
            Reading(codes.MDC_RATIO_MASS_BODY_LEN_SQ, Decimal("22.9"), "kg/m2", device_time=WHEN),
            Reading(codes.MDC_LEN_BODY_ACTUAL, Decimal("1.750"), "m", device_time=WHEN),
        ),
    )
    assert value.flag_summary() == {
        "imperial": False,
        "time_stamp_present": True,
        "user_id_present": True,
        "bmi_and_height_present": True,
        "user_id": 2,
        "measurement_unsuccessful": False,
        "unknown_flags": 0,
    }


def test_imperial_units_and_resolutions() -> None:
    value = WeightMeasurement.decode(IMPERIAL)
    assert same(
        value.readings(),
        (
            Reading(codes.MDC_MASS_BODY_ACTUAL, Decimal("154.32"), "[lb_av]"),
            Reading(codes.MDC_RATIO_MASS_BODY_LEN_SQ, Decimal("22.9"), "kg/m2"),
            Reading(codes.MDC_LEN_BODY_ACTUAL, Decimal("68.9"), "[in_i]"),
        ),
    )


def test_unsuccessful_measurement_is_absent() -> None:
    value = WeightMeasurement.decode(UNSUCCESSFUL)
    assert value.weight is AbsentReason.NAN
    assert same(
        value.readings(), (Reading(codes.MDC_MASS_BODY_ACTUAL, None, "kg", AbsentReason.NAN),)
    )
    assert value.encode() == UNSUCCESSFUL


def test_rfu_flag_bits_are_kept() -> None:
    value = WeightMeasurement.decode(RFU_FLAGS)
    assert value.unknown_flags == 0xF0
    assert value.encode() == RFU_FLAGS


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (bytes.fromhex("08 b036 e500"), "too short: height needs 2 more bytes, 0 left"),
        (bytes.fromhex("04 b036"), "too short: user id needs 1 more bytes, 0 left"),
        (SI_MINIMAL + b"\x00", "too long: 1 bytes after the last field"),
    ],
)
def test_length_is_validated_against_the_flags(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        WeightMeasurement.decode(payload)
    assert caught.value.fields == {"uuid": "2a9d", "reason": reason}


@pytest.mark.parametrize("weight", [Decimal("70"), Decimal("70.001"), Decimal("327.675")])
def test_weights_the_field_cannot_carry_are_refused(weight: Decimal) -> None:
    """70 (wrong exponent), 70.001 (not a 0.005 step), 327.675 (collides with 0xFFFF)."""
    with pytest.raises(ModelError):
        WeightMeasurement(0x00, weight).encode()


@st.composite
def _payloads(draw: st.DrawFn) -> bytes:
    flags = draw(st.integers(0, 0xFF))
    out = bytes([flags]) + draw(fixed(2))
    out += draw(DATE_TIME_BYTES) if flags & 0x02 else b""
    out += draw(fixed(1)) if flags & 0x04 else b""
    out += draw(fixed(4)) if flags & 0x08 else b""
    return out


@given(st.one_of(_payloads(), st.binary(max_size=16)))
def test_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(WeightMeasurement.decode, payload)
    if isinstance(value, WeightMeasurement):
        assert same(WeightMeasurement.decode(value.encode()), value)
        assert measurements_of(value)
