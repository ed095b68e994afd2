"""IEEE 11073-20601 SFLOAT / FLOAT: the reference table, special values, encoders, round trips."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.ieee11073 import (
    FLOAT_SPECIAL,
    SFLOAT_SPECIAL,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    float_from_raw,
    float_to_raw,
    from_parts,
    sfloat_from_raw,
    sfloat_to_raw,
    shift,
)
from gateway.errors import ModelError
from gateway.model import AbsentReason
from tests.ble.helpers import is_exactly, same

# (16-bit SFLOAT, value) from health-devices.md / PHD IG "FLOATs and SFLOATs".
SFLOAT_TABLE = [
    (0x0002, "2"),
    (0xF014, "2.0"),
    (0xE0C8, "2.00"),
    (0x1002, "2E+1"),  # 20 with precision "tens": mantissa 2, exponent +1
    (0x0B2E, "-1234"),  # mantissa 0xB2E is -1234 in 12-bit two's complement
]
FLOAT_TABLE = [
    (0xFF000014, "2.0"),
    (0x00FFFB2E, "-1234"),
]
SFLOAT_SPECIALS = [
    (0x07FF, AbsentReason.NAN),
    (0x0800, AbsentReason.NRES),
    (0x07FE, AbsentReason.POSITIVE_INFINITY),
    (0x0802, AbsentReason.NEGATIVE_INFINITY),
    (0x0801, AbsentReason.RESERVED),
]
FLOAT_SPECIALS = [
    (0x007FFFFF, AbsentReason.NAN),
    (0x00800000, AbsentReason.NRES),
    (0x007FFFFE, AbsentReason.POSITIVE_INFINITY),
    (0x00800002, AbsentReason.NEGATIVE_INFINITY),
    (0x00800001, AbsentReason.RESERVED),
]


@pytest.mark.parametrize(("raw", "text"), SFLOAT_TABLE)
def test_sfloat_decodes_to_decimal_keeping_the_exponent(raw: int, text: str) -> None:
    assert is_exactly(sfloat_from_raw(raw), text)


@pytest.mark.parametrize(("raw", "text"), FLOAT_TABLE)
def test_float_decodes_to_decimal_keeping_the_exponent(raw: int, text: str) -> None:
    assert is_exactly(float_from_raw(raw), text)


@pytest.mark.parametrize(("raw", "reason"), SFLOAT_SPECIALS)
def test_sfloat_special_values_are_data_absent(raw: int, reason: AbsentReason) -> None:
    assert sfloat_from_raw(raw) is reason


@pytest.mark.parametrize(("raw", "reason"), FLOAT_SPECIALS)
def test_float_special_values_are_data_absent(raw: int, reason: AbsentReason) -> None:
    assert float_from_raw(raw) is reason


def test_special_value_tables_are_exactly_the_five_codes() -> None:
    assert dict(SFLOAT_SPECIAL) == dict(SFLOAT_SPECIALS)
    assert dict(FLOAT_SPECIAL) == dict(FLOAT_SPECIALS)


def test_exponent_is_twos_complement_not_biased() -> None:
    """The known bug class: exponent nibble 0 read as biased (-8) turns 138 mmHg into 1.38e-6."""
    assert is_exactly(sfloat_from_raw(0x008A), "138")
    assert is_exactly(sfloat_from_raw(0x8001), "1E-8")  # nibble 0x8 is -8, the smallest
    assert is_exactly(sfloat_from_raw(0x7001), "1E+7")  # nibble 0x7 is +7, the largest
    assert is_exactly(float_from_raw(0x80000001), "1E-128")
    assert is_exactly(float_from_raw(0x7F000001), "1E+127")


def test_mantissa_is_twos_complement() -> None:
    assert is_exactly(sfloat_from_raw(0xFFFF), "-0.1")  # exponent -1, mantissa -1
    assert is_exactly(sfloat_from_raw(0x0FFF), "-1")
    assert is_exactly(float_from_raw(0x00FFFFFF), "-1")
    assert is_exactly(sfloat_from_raw(0xF000), "0.0")  # zero keeps its precision too


def test_special_mantissa_with_nonzero_exponent_is_a_number() -> None:
    """Special values are defined with exponent 0 only."""
    assert is_exactly(sfloat_from_raw(0x17FF), "2.047E+4")


def test_wire_order_is_little_endian() -> None:
    assert is_exactly(decode_sfloat(bytes([0x14, 0xF0])), "2.0")
    assert is_exactly(decode_float(bytes.fromhex("140000ff")), "2.0")
    assert encode_sfloat(Decimal("2.00")) == bytes([0xC8, 0xE0])
    assert encode_float(Decimal("-1234")) == bytes.fromhex("2efbff00")


@pytest.mark.parametrize(("raw", "text"), SFLOAT_TABLE)
def test_sfloat_encoder_gives_back_the_table_code(raw: int, text: str) -> None:
    assert sfloat_to_raw(Decimal(text)) == raw


@pytest.mark.parametrize(("raw", "text"), FLOAT_TABLE)
def test_float_encoder_gives_back_the_table_code(raw: int, text: str) -> None:
    assert float_to_raw(Decimal(text)) == raw


@pytest.mark.parametrize(("raw", "reason"), SFLOAT_SPECIALS)
def test_sfloat_encoder_writes_special_codes(raw: int, reason: AbsentReason) -> None:
    assert sfloat_to_raw(reason) == raw


@pytest.mark.parametrize(("raw", "reason"), FLOAT_SPECIALS)
def test_float_encoder_writes_special_codes(raw: int, reason: AbsentReason) -> None:
    assert float_to_raw(reason) == raw


def test_every_sfloat_code_round_trips() -> None:
    for raw in range(0x10000):
        assert sfloat_to_raw(sfloat_from_raw(raw)) == raw


@given(st.integers(0, 0xFFFFFFFF))
def test_float_codes_round_trip(raw: int) -> None:
    assert float_to_raw(float_from_raw(raw)) == raw


@given(st.integers(-2045, 2045), st.integers(-8, 7))
def test_sfloat_decimals_round_trip_with_their_exponent(mantissa: int, exponent: int) -> None:
    value = from_parts(mantissa, exponent)
    assert same(sfloat_from_raw(sfloat_to_raw(value)), value)


@given(st.integers(-(2**23) + 3, 2**23 - 3), st.integers(-128, 127))
def test_float_decimals_round_trip_with_their_exponent(mantissa: int, exponent: int) -> None:
    value = from_parts(mantissa, exponent)
    assert same(float_from_raw(float_to_raw(value)), value)


@pytest.mark.parametrize(
    "value",
    [
        Decimal("20480"),  # mantissa needs 13 bits
        Decimal("1E+8"),  # exponent above +7
        Decimal("1E-9"),  # exponent below -8
        Decimal(2047),  # exponent 0, mantissa 0x7FF: would be read back as NaN
        Decimal(-2048),  # would be read back as NRes
        Decimal("NaN"),
        Decimal("Infinity"),
        AbsentReason.SENSOR_OFF,  # not an 11073 special value
    ],
)
def test_sfloat_encoder_refuses_what_it_cannot_represent(value: Decimal | AbsentReason) -> None:
    with pytest.raises(ModelError):
        sfloat_to_raw(value)


def test_float_encoder_refuses_out_of_range_values() -> None:
    with pytest.raises(ModelError):
        float_to_raw(Decimal(2**23))
    with pytest.raises(ModelError):
        float_to_raw(Decimal("1E+128"))


def test_raw_values_outside_the_field_width_are_refused() -> None:
    with pytest.raises(ModelError):
        sfloat_from_raw(0x10000)
    with pytest.raises(ModelError):
        float_from_raw(-1)
    with pytest.raises(ModelError):
        decode_sfloat(b"\x00")


def test_shift_moves_the_decimal_point_without_changing_the_digits() -> None:
    assert is_exactly(shift(Decimal("0.00120"), 5), "120")  # kg/L -> mg/dL
    assert is_exactly(shift(Decimal("0.0067"), 3), "6.7")  # mol/L -> mmol/L
    assert is_exactly(shift(Decimal("-0.0"), 1), "-0")
    with pytest.raises(ModelError):
        shift(Decimal("NaN"), 1)


@given(st.binary(min_size=2, max_size=2))
def test_any_two_bytes_decode_as_an_sfloat(data: bytes) -> None:
    value = decode_sfloat(data)
    assert isinstance(value, Decimal | AbsentReason)
