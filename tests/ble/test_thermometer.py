"""Health Thermometer: Temperature Measurement 0x2A1C, Intermediate Temperature 0x2A1E, Type
0x2A1D."""

from __future__ import annotations

from datetime import timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.measure import Reading
from drivers.ble.thermometer import (
    MDC_TEMP_ORAL,
    TemperatureMeasurement,
    TemperatureType,
    decode_temperature_type,
    encode_temperature_type,
)
from gateway.errors import DecodeError, ModelError
from gateway.fhir.codes import MDC_TEMP_BODY
from gateway.model import AbsentReason, TimeQuality
from tests.ble.helpers import (
    DATE_TIME_BYTES,
    FLOAT_BYTES,
    decode_or_reject,
    fixed,
    measurements_of,
    same,
    wall,
)

# flags 0x00 (Celsius, nothing optional); FLOAT 36.6 = mantissa 366 (0x00016E), exponent -1 (0xFF).
MINIMAL = bytes.fromhex("00 6e0100ff")
# flags 0x06 (time stamp + temperature type); FLOAT 36.60 (mantissa 3660 = 0x000E4C, exponent -2);
# Date Time 2024-05-01 10:00:00; temperature type 6 (mouth).
FULL = bytes.fromhex("06 4c0e00fe e80705010a0000 06")
# flags 0x01 (Fahrenheit); FLOAT 98.6 = mantissa 986 (0x0003DA), exponent -1.
FAHRENHEIT = bytes.fromhex("01 da0300ff")
# FLOAT NaN (0x007FFFFF): the thermometer could not measure.
NAN = bytes.fromhex("00 ffff7f00")
# flags 0xF0: RFU bits 4-7 set by a newer device; kept, and the value still decodes.
RFU_FLAGS = bytes.fromhex("f0 6e0100ff")
# flags 0x02 with an all-zero Date Time: the field is there, the device does not know the date.
UNKNOWN_DATE = bytes.fromhex("02 6e0100ff 00000000000000")
# flags 0x04, temperature type 12: a code this version of the spec does not define.
UNKNOWN_SITE = bytes.fromhex("04 6e0100ff 0c")


def test_minimal_measurement() -> None:
    value = TemperatureMeasurement.decode(MINIMAL)
    assert same(value, TemperatureMeasurement(0x00, Decimal("36.6")))
    assert value.unit == "Cel"
    assert same(value.readings(), (Reading(MDC_TEMP_BODY, Decimal("36.6"), "Cel"),))


def test_full_measurement_with_time_stamp_and_site() -> None:
    value = TemperatureMeasurement.decode(FULL)
    when = wall(2024, 5, 1, 10, 0)
    assert same(value, TemperatureMeasurement(0x06, Decimal("36.60"), when, TemperatureType.MOUTH))
    (reading,) = value.readings()
    assert same(reading, Reading(MDC_TEMP_ORAL, Decimal("36.60"), "Cel", device_time=when))
    (measured,) = measurements_of(value)
    assert measured.device_time == when.replace(tzinfo=timezone(timedelta(hours=2)))
    assert measured.time_quality is TimeQuality.SYNCED
    assert measured.source == "ble.health_thermometer"


def test_fahrenheit_flag_selects_degf() -> None:
    value = TemperatureMeasurement.decode(FAHRENHEIT)
    assert value.fahrenheit
    assert same(value.readings(), (Reading(MDC_TEMP_BODY, Decimal("98.6"), "[degF]"),))


def test_nan_temperature_is_reported_absent() -> None:
    assert TemperatureMeasurement.decode(NAN).readings() == (
        Reading(MDC_TEMP_BODY, None, "Cel", AbsentReason.NAN),
    )


def test_rfu_flag_bits_are_kept_not_rejected() -> None:
    value = TemperatureMeasurement.decode(RFU_FLAGS)
    assert value.unknown_flags == 0xF0
    assert value.flag_summary()["unknown_flags"] == 0xF0
    assert value.encode() == RFU_FLAGS


def test_unknown_date_keeps_the_flag_and_gives_no_device_time() -> None:
    value = TemperatureMeasurement.decode(UNKNOWN_DATE)
    assert value.timestamp is None
    assert value.flag_summary()["time_stamp_present"] is True
    assert value.encode() == UNKNOWN_DATE


def test_unknown_site_code_is_kept_and_coded_as_body_temperature() -> None:
    value = TemperatureMeasurement.decode(UNKNOWN_SITE)
    assert value.temperature_type == 12
    assert value.flag_summary()["temperature_type"] == "unknown_12"
    assert value.readings()[0].mdc_code == MDC_TEMP_BODY


def test_intermediate_temperature_is_marked_supplemental() -> None:
    value = TemperatureMeasurement.decode(MINIMAL, intermediate=True)
    assert value.uuid16 == 0x2A1E
    assert value.readings()[0].supplemental == "intermediate"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "too short: flags needs 1 more bytes, 0 left"),
        (bytes.fromhex("00 6e01"), "too short: temperature needs 4 more bytes, 2 left"),
        (bytes.fromhex("04 6e0100ff"), "too short: temperature type needs 1 more bytes, 0 left"),
        (bytes.fromhex("02 6e0100ff e807"), "too short: time stamp needs 5 more bytes, 0 left"),
        (MINIMAL + b"\x00", "too long: 1 bytes after the last field"),
    ],
)
def test_length_is_validated_against_the_flags(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        TemperatureMeasurement.decode(payload)
    assert caught.value.fields == {"uuid": "2a1c", "reason": reason}


def test_inconsistent_construction_is_refused() -> None:
    with pytest.raises(ModelError):
        TemperatureMeasurement(0x00, Decimal("36.6"), temperature_type=TemperatureType.EAR)
    with pytest.raises(ModelError):
        TemperatureMeasurement(0x00, Decimal("36.6"), wall(2024, 5, 1))


def test_temperature_type_characteristic() -> None:
    assert decode_temperature_type(b"\x03") is TemperatureType.EAR
    assert encode_temperature_type(TemperatureType.TYMPANUM) == b"\x09"
    with pytest.raises(DecodeError) as caught:
        decode_temperature_type(b"\x03\x00")
    assert caught.value.fields["uuid"] == "2a1d"


def payloads() -> st.SearchStrategy[bytes]:
    """Measurement payloads whose length matches their flags, with any field contents."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        flags = draw(st.integers(0, 0xFF))
        out = bytes([flags]) + draw(FLOAT_BYTES)
        if flags & 0x02:
            out += draw(DATE_TIME_BYTES)
        if flags & 0x04:
            out += draw(fixed(1))
        return out

    return st.one_of(build(), st.binary(max_size=16))


@given(payloads(), st.booleans())
def test_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes, intermediate: bool) -> None:
    value = decode_or_reject(
        lambda p: TemperatureMeasurement.decode(p, intermediate=intermediate), payload
    )
    if isinstance(value, TemperatureMeasurement):
        again = TemperatureMeasurement.decode(value.encode(), intermediate=intermediate)
        assert same(again, value)
        assert len(measurements_of(value)) == 1


@given(st.binary(max_size=3))
def test_temperature_type_decoder_gives_a_value_or_decode_error(payload: bytes) -> None:
    decode_or_reject(decode_temperature_type, payload)
