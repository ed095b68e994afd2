"""IEEE 11073-20601 SFLOAT (16 bit) and FLOAT (32 bit) numbers, as GATT health profiles send them.

value = mantissa x 10^exponent, both fields two's complement (NOT biased - decoding the exponent as
biased turns a 138 mmHg systolic into 1.38e-6). SFLOAT: exponent in the top 4 bits, mantissa in the
low 12; FLOAT: exponent in the top byte, mantissa in the low 24. Little-endian on the wire.

The exponent carries the device's precision, so numbers decode to a ``Decimal`` built from
(mantissa, exponent) exactly: SFLOAT 0xF014 is ``Decimal("2.0")``, 0xE0C8 ``Decimal("2.00")``,
0x1002 ``Decimal("2E+1")``. Never through a binary float.

The special values (20601 Annex F: NaN, NRes, +/-INFINITY and the reserved code) are defined with
exponent 0 and decode to an ``AbsentReason``; the same mantissas with another exponent are numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import TypeAlias

from gateway.errors import ModelError
from gateway.model import AbsentReason

# A decoded 11073 number: the value with its precision, or why the device sent none.
Numeric: TypeAlias = Decimal | AbsentReason

SFLOAT_SPECIAL: Mapping[int, AbsentReason] = MappingProxyType(
    {
        0x07FF: AbsentReason.NAN,
        0x0800: AbsentReason.NRES,
        0x07FE: AbsentReason.POSITIVE_INFINITY,
        0x0802: AbsentReason.NEGATIVE_INFINITY,
        0x0801: AbsentReason.RESERVED,
    }
)
FLOAT_SPECIAL: Mapping[int, AbsentReason] = MappingProxyType(
    {
        0x007FFFFF: AbsentReason.NAN,
        0x00800000: AbsentReason.NRES,
        0x007FFFFE: AbsentReason.POSITIVE_INFINITY,
        0x00800002: AbsentReason.NEGATIVE_INFINITY,
        0x00800001: AbsentReason.RESERVED,
    }
)
_SFLOAT_CODE = {reason: raw for raw, reason in SFLOAT_SPECIAL.items()}
_FLOAT_CODE = {reason: raw for raw, reason in FLOAT_SPECIAL.items()}


def _signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw


def from_parts(mantissa: int, exponent: int) -> Decimal:
    """``mantissa`` x 10^``exponent`` as a Decimal keeping the exponent (context-independent)."""
    digits = tuple(int(d) for d in str(abs(mantissa)))
    return Decimal((1 if mantissa < 0 else 0, digits, exponent))


def shift(value: Decimal, places: int) -> Decimal:
    """``value`` x 10^``places`` exactly, keeping its significant digits (a unit change such as
    kg/L -> mg/dL moves the decimal point; it must not add or drop precision)."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ModelError("cannot shift a non-finite Decimal")
    return Decimal((sign, digits, exponent + places))


def _decode(raw: int, exp_bits: int, man_bits: int, special: Mapping[int, AbsentReason]) -> Numeric:
    if raw in special:
        return special[raw]
    mantissa = _signed(raw & ((1 << man_bits) - 1), man_bits)
    exponent = _signed(raw >> man_bits, exp_bits)
    return from_parts(mantissa, exponent)


def _encode(
    value: Numeric, exp_bits: int, man_bits: int, codes: Mapping[AbsentReason, int], what: str
) -> int:
    if isinstance(value, AbsentReason):
        if value not in codes:
            raise ModelError(f"{what} has no code for absent reason {value.value!r}")
        return codes[value]
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ModelError(f"{what}: non-finite Decimals are sent as special values")
    mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if not -(1 << (exp_bits - 1)) <= exponent < (1 << (exp_bits - 1)):
        raise ModelError(f"{what}: exponent {exponent} out of range")
    if not -(1 << (man_bits - 1)) <= mantissa < (1 << (man_bits - 1)):
        raise ModelError(f"{what}: mantissa has too many digits for the field")
    raw = ((exponent & ((1 << exp_bits) - 1)) << man_bits) | (mantissa & ((1 << man_bits) - 1))
    if raw in codes.values():
        # Exponent 0 with a special mantissa would be read back as NaN / NRes / INF.
        raise ModelError(f"{what}: value collides with a special value code")
    return raw


def sfloat_from_raw(raw: int) -> Numeric:
    """Decode an SFLOAT given as a 16-bit integer (e.g. 0xF014 -> Decimal("2.0"))."""
    if not 0 <= raw <= 0xFFFF:
        raise ModelError("SFLOAT raw value must fit 16 bits")
    return _decode(raw, 4, 12, SFLOAT_SPECIAL)


def sfloat_to_raw(value: Numeric) -> int:
    """Encode as the 16-bit SFLOAT integer; ModelError when the digits or exponent do not fit."""
    return _encode(value, 4, 12, _SFLOAT_CODE, "SFLOAT")


def float_from_raw(raw: int) -> Numeric:
    """Decode a FLOAT given as a 32-bit integer (e.g. 0xFF000014 -> Decimal("2.0"))."""
    if not 0 <= raw <= 0xFFFFFFFF:
        raise ModelError("FLOAT raw value must fit 32 bits")
    return _decode(raw, 8, 24, FLOAT_SPECIAL)


def float_to_raw(value: Numeric) -> int:
    """Encode as the 32-bit FLOAT integer; ModelError when the digits or exponent do not fit."""
    return _encode(value, 8, 24, _FLOAT_CODE, "FLOAT")


def decode_sfloat(data: bytes) -> Numeric:
    """Decode 2 little-endian bytes."""
    if len(data) != 2:
        raise ModelError("an SFLOAT is 2 bytes")
    return sfloat_from_raw(int.from_bytes(data, "little"))


def encode_sfloat(value: Numeric) -> bytes:
    return sfloat_to_raw(value).to_bytes(2, "little")


def decode_float(data: bytes) -> Numeric:
    """Decode 4 little-endian bytes."""
    if len(data) != 4:
        raise ModelError("a FLOAT is 4 bytes")
    return float_from_raw(int.from_bytes(data, "little"))


def encode_float(value: Numeric) -> bytes:
    return float_to_raw(value).to_bytes(4, "little")
