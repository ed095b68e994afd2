"""Battery Service 0x180F (Battery Level 0x2A19) and Device Information Service 0x180A (System ID
0x2A23, model / serial / firmware / hardware / software revision and manufacturer name strings).

System ID (GATT Specification Supplement): a uint64, little-endian, whose low 40 bits are the
manufacturer-defined identifier and high 24 bits the organizationally unique identifier (OUI):
as one 64-bit number it is the device's EUI-64, which the PHD IG uses as the device identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from drivers.ble.measure import Reading
from drivers.ble.wire import Reader, Writer, decode_error
from gateway.errors import ModelError
from gateway.fhir.codes import MDC_ATTR_VAL_BATT_CHARGE
from gateway.model import DeviceId, DeviceIdKind

BATTERY_LEVEL_UUID = 0x2A19
SYSTEM_ID_UUID = 0x2A23
STRING_UUIDS = {
    0x2A24: "model_number",
    0x2A25: "serial_number",
    0x2A26: "firmware_revision",
    0x2A27: "hardware_revision",
    0x2A28: "software_revision",
    0x2A29: "manufacturer_name",
}


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """Battery Level 0x2A19: uint8 percent, 0..100."""

    SOURCE: ClassVar[str] = "ble.battery"

    percent: int

    def __post_init__(self) -> None:
        if not 0 <= self.percent <= 100:
            raise ModelError("battery level is a percentage, 0..100")

    @classmethod
    def decode(cls, payload: bytes) -> BatteryLevel:
        reader = Reader(payload, BATTERY_LEVEL_UUID)
        percent = reader.u8("battery level")
        reader.done()
        if percent > 100:
            raise reader.error("battery level above 100 %")
        return cls(percent)

    def encode(self) -> bytes:
        return Writer().u8(self.percent, "battery level").getvalue()

    def readings(self) -> tuple[Reading, ...]:
        return (Reading(MDC_ATTR_VAL_BATT_CHARGE, Decimal(self.percent), "%"),)

    def flag_summary(self) -> dict[str, object]:
        return {}


def decode_system_id(payload: bytes) -> DeviceId:
    """System ID 0x2A23 (8 bytes) as an EUI-64 device identity."""
    reader = Reader(payload, SYSTEM_ID_UUID)
    value = reader.uint(8, "system id")
    reader.done()
    return DeviceId(DeviceIdKind.EUI64, f"{value:016X}")


def encode_system_id(device: DeviceId) -> bytes:
    if device.kind is not DeviceIdKind.EUI64:
        raise ModelError("a System ID is an EUI-64")
    return int(device.value, 16).to_bytes(8, "little")


def decode_string(uuid16: int, payload: bytes) -> str:
    """A Device Information UTF-8 string. Trailing NULs (fixed-size firmware buffers) are
    dropped; invalid UTF-8 or control characters are a DecodeError."""
    if uuid16 not in STRING_UUIDS:
        raise decode_error(uuid16, "not a Device Information string characteristic")
    try:
        text = payload.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        raise decode_error(uuid16, "not valid UTF-8") from None
    if not text.isprintable():
        raise decode_error(uuid16, "contains control characters")
    return text
