"""Shared plumbing of the GATT decoders: bounds-checked reader, range-checked writer, open enums.

Every decoder reads through ``Reader``, so a short payload can only ever raise ``DecodeError``
(never IndexError / struct.error), and ``Reader.done()`` rejects trailing bytes. Error reasons name
the field and the problem, never the value: payloads carry clinical data (DESIGN invariant 3).
"""

from __future__ import annotations

import enum
from typing import Any

from drivers.ble import ieee11073
from drivers.ble.ieee11073 import Numeric
from gateway.errors import DecodeError, ModelError


def uuid_text(uuid16: int) -> str:
    """The short form used in errors and in ``gatewayctl decode`` output, e.g. ``"2a35"``."""
    return f"{uuid16:04x}"


def decode_error(uuid16: int, reason: str) -> DecodeError:
    return DecodeError(
        f"characteristic 0x{uuid_text(uuid16)}: {reason}", uuid=uuid_text(uuid16), reason=reason
    )


class OpenIntEnum(enum.IntEnum):
    """An IntEnum for device-reported codes that keeps codes it does not know.

    ``Kind(99)`` gives a pseudo-member named ``UNKNOWN_99`` instead of raising: a newer device
    version must not make us drop a reading, and the code is kept for the record.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            pseudo = int.__new__(cls, value)
            pseudo._name_ = f"UNKNOWN_{value}"
            pseudo._value_ = value
            return pseudo
        return None

    @property
    def known(self) -> bool:
        return self._name_ in type(self).__members__

    @property
    def label(self) -> str:
        """Lower-case name for JSON output (``"mouth"``, ``"unknown_12"``)."""
        return self._name_.lower()


def bit_names(value: int, names: dict[int, str]) -> list[str]:
    """Names of the set bits of ``value`` (bit number -> name), unknown bits as ``"bit<n>"``."""
    out = []
    for bit in range(value.bit_length()):
        if value >> bit & 1:
            out.append(names.get(bit, f"bit{bit}"))
    return out


def check_presence(flags: int, mask: int, present: bool, field: str) -> None:
    """Construction check: a flag bit saying "field present" agrees with the field being set."""
    if bool(flags & mask) != present:
        raise ModelError(f"flags and field {field!r} disagree about its presence")


def crc16_mcrf4xx(data: bytes) -> int:
    """CRC-16/MCRF4XX: the CRC-CCITT polynomial 0x1021, seed 0xFFFF, bits processed LSB first, no
    final XOR. This is the E2E-CRC of the CGM Service (CGMS 1.0.1, "E2E-CRC"). Check value:
    ``crc16_mcrf4xx(b"123456789") == 0x6F91``."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


class Reader:
    """Reads little-endian fields off one characteristic value."""

    __slots__ = ("_data", "_pos", "uuid16")

    def __init__(self, data: bytes, uuid16: int) -> None:
        self._data = bytes(data)
        self._pos = 0
        self.uuid16 = uuid16

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    @property
    def position(self) -> int:
        return self._pos

    def error(self, reason: str) -> DecodeError:
        return decode_error(self.uuid16, reason)

    def take(self, n: int, what: str) -> bytes:
        if self.remaining < n:
            raise self.error(f"too short: {what} needs {n} more bytes, {self.remaining} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "little")

    def u8(self, what: str) -> int:
        return self.uint(1, what)

    def u16(self, what: str) -> int:
        return self.uint(2, what)

    def s16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little", signed=True)

    def u24(self, what: str) -> int:
        return self.uint(3, what)

    def sfloat(self, what: str) -> Numeric:
        return ieee11073.sfloat_from_raw(self.u16(what))

    def float32(self, what: str) -> Numeric:
        return ieee11073.float_from_raw(self.uint(4, what))

    def done(self) -> None:
        """Reject trailing bytes: a payload longer than its flags announce is not trusted."""
        if self.remaining:
            raise self.error(f"too long: {self.remaining} bytes after the last field")


class Writer:
    """Builds a characteristic value; out-of-range fields are a caller bug (ModelError)."""

    __slots__ = ("_out",)

    def __init__(self) -> None:
        self._out = bytearray()

    def uint(self, value: int, n: int, what: str) -> Writer:
        if not 0 <= value < 1 << (8 * n):
            raise ModelError(f"{what} does not fit an unsigned {8 * n}-bit field")
        self._out += value.to_bytes(n, "little")
        return self

    def u8(self, value: int, what: str) -> Writer:
        return self.uint(value, 1, what)

    def u16(self, value: int, what: str) -> Writer:
        return self.uint(value, 2, what)

    def u24(self, value: int, what: str) -> Writer:
        return self.uint(value, 3, what)

    def s16(self, value: int, what: str) -> Writer:
        if not -0x8000 <= value < 0x8000:
            raise ModelError(f"{what} does not fit a signed 16-bit field")
        self._out += value.to_bytes(2, "little", signed=True)
        return self

    def sfloat(self, value: Numeric) -> Writer:
        self._out += ieee11073.encode_sfloat(value)
        return self

    def float32(self, value: Numeric) -> Writer:
        self._out += ieee11073.encode_float(value)
        return self

    def raw(self, data: bytes) -> Writer:
        self._out += data
        return self

    def getvalue(self) -> bytes:
        return bytes(self._out)
