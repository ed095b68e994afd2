"""Battery Level 0x2A19 and Device Information (System ID 0x2A23, strings)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.device_info import (
    BatteryLevel,
    decode_string,
    decode_system_id,
    encode_system_id,
)
from drivers.ble.measure import Reading
from gateway.errors import DecodeError, ModelError
from gateway.fhir.codes import MDC_ATTR_VAL_BATT_CHARGE
from gateway.model import DeviceId, DeviceIdKind
from tests.ble.helpers import decode_or_reject, measurements_of, same

# Battery level 90 % (0x5A).
BATTERY_90 = bytes.fromhex("5a")
# System ID, a little-endian uint64: bytes 0-4 the manufacturer-defined identifier 0xFFFE007825,
# bytes 5-7 the OUI 0x001C05; as one number 0x001C05FFFE007825, the EUI-64 00-1C-05-FF-FE-00-78-25.
SYSTEM_ID = bytes.fromhex("257800feff 051c00")
# A serial number padded with NULs by a fixed-size firmware buffer.
SERIAL_PADDED = b"SN-12345\x00\x00"


def test_battery_level_is_a_percentage_reading() -> None:
    value = BatteryLevel.decode(BATTERY_90)
    assert value == BatteryLevel(90)
    assert same(value.readings(), (Reading(MDC_ATTR_VAL_BATT_CHARGE, Decimal(90), "%"),))
    (measured,) = measurements_of(value)
    assert measured.source == "ble.battery"
    assert value.encode() == BATTERY_90


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x65", "battery level above 100 %"),
        (b"", "too short: battery level needs 1 more bytes, 0 left"),
        (b"\x5a\x00", "too long: 1 bytes after the last field"),
    ],
)
def test_battery_level_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        BatteryLevel.decode(payload)
    assert caught.value.fields == {"uuid": "2a19", "reason": reason}


def test_system_id_is_the_eui64() -> None:
    device = decode_system_id(SYSTEM_ID)
    assert device == DeviceId(DeviceIdKind.EUI64, "00-1C-05-FF-FE-00-78-25")
    assert encode_system_id(device) == SYSTEM_ID
    with pytest.raises(DecodeError):
        decode_system_id(SYSTEM_ID[:7])
    with pytest.raises(ModelError):
        encode_system_id(DeviceId(DeviceIdKind.BTMAC, "a4:c1:38:00:12:34"))


def test_strings_drop_nul_padding_and_reject_garbage() -> None:
    assert decode_string(0x2A25, SERIAL_PADDED) == "SN-12345"
    assert decode_string(0x2A26, "1.2.3-ä".encode()) == "1.2.3-ä"
    with pytest.raises(DecodeError) as utf8:
        decode_string(0x2A24, b"\xff\xfe")
    assert utf8.value.fields == {"uuid": "2a24", "reason": "not valid UTF-8"}
    with pytest.raises(DecodeError) as control:
        decode_string(0x2A29, b"ACME\x07")
    assert control.value.fields["reason"] == "contains control characters"
    with pytest.raises(DecodeError):
        decode_string(0x2A19, b"x")  # not a string characteristic


@given(st.binary(max_size=10))
def test_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    decode_or_reject(BatteryLevel.decode, payload)
    decode_or_reject(decode_system_id, payload)
    decode_or_reject(lambda p: decode_string(0x2A25, p), payload)
