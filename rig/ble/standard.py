"""Services every virtual device carries: Device Information 0x180A, Battery 0x180F, Current
Time 0x1805 (its clock as the device sees it; writable only when the device lets a collector set
it - Current Time Write is optional and many devices refuse it), and Generic Attribute 0x1801."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from drivers.ble.device_info import (
    BATTERY_LEVEL_UUID,
    SYSTEM_ID_UUID,
    BatteryLevel,
    encode_system_id,
)
from drivers.ble.gatt_time import CURRENT_TIME_UUID, AdjustReason, CurrentTime, DayOfWeek
from gateway.errors import GatewayError
from gateway.model import DeviceId, DeviceIdKind
from rig.ble.clock import DeviceClock
from rig.ble.errors import AttError
from rig.ble.gatt import (
    ATT_OUT_OF_RANGE,
    ATT_WRITE_NOT_PERMITTED,
    Characteristic,
    Service,
    gatt_profile_service,
)

DEVICE_INFORMATION_UUID = 0x180A
BATTERY_SERVICE_UUID = 0x180F
CURRENT_TIME_SERVICE_UUID = 0x1805
MANUFACTURER_NAME_UUID = 0x2A29
MODEL_NUMBER_UUID = 0x2A24
SERIAL_NUMBER_UUID = 0x2A25
FIRMWARE_REVISION_UUID = 0x2A26


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    manufacturer: str = "Homecare Sim"
    model: str = "SIM-1"
    serial: str = "0001"
    firmware: str = "1.0.0"
    system_id: str | None = None  # EUI-64 as 16 hex digits


class StandardDevice(Protocol):
    """What the standard services read from a virtual device (rig/ble/peripheral.py's
    ``Peripheral`` is one); a Protocol, so this module does not import the peripheral."""

    info: DeviceInfo
    battery_percent: int
    clock: DeviceClock
    clock_settable: bool


def _read_only(uuid16: int, value: bytes) -> Characteristic:
    return Characteristic(uuid16, ("read",), read=lambda: value)


def device_information(device: StandardDevice) -> Service:
    info = device.info
    chars = [
        _read_only(MANUFACTURER_NAME_UUID, info.manufacturer.encode()),
        _read_only(MODEL_NUMBER_UUID, info.model.encode()),
        _read_only(SERIAL_NUMBER_UUID, info.serial.encode()),
        _read_only(FIRMWARE_REVISION_UUID, info.firmware.encode()),
    ]
    if info.system_id is not None:
        system_id = encode_system_id(DeviceId(DeviceIdKind.EUI64, info.system_id))
        chars.append(_read_only(SYSTEM_ID_UUID, system_id))
    return Service(DEVICE_INFORMATION_UUID, tuple(chars))


def battery(device: StandardDevice) -> Service:
    def read() -> bytes:
        return BatteryLevel(device.battery_percent).encode()

    return Service(BATTERY_SERVICE_UUID,
                   (Characteristic(BATTERY_LEVEL_UUID, ("read", "notify"), read=read),))


def current_time_value(device: StandardDevice) -> CurrentTime:
    now = device.clock.now()
    if now is None:
        return CurrentTime(None)
    return CurrentTime(now, DayOfWeek(now.isoweekday()), 0, AdjustReason.NONE)


def current_time(device: StandardDevice) -> Service:
    def read() -> bytes:
        return current_time_value(device).encode()

    def write(value: bytes, _with_response: bool) -> None:
        if not device.clock_settable:
            raise AttError(ATT_WRITE_NOT_PERMITTED, "clock cannot be set")
        try:
            written = CurrentTime.decode(value)
        except GatewayError:
            # CTS 1.1 3.1.2.1: a value the server cannot accept is "Data field ignored" (0x80);
            # 0xFF (out of range) is the nearest code bleak can name.
            raise AttError(ATT_OUT_OF_RANGE, "bad Current Time value") from None
        device.clock.set(written.local_time)

    flags = ("read", "write", "notify") if device.clock_settable else ("read", "notify")
    return Service(CURRENT_TIME_SERVICE_UUID,
                   (Characteristic(CURRENT_TIME_UUID, flags, read=read, write=write),))


def standard_services(device: StandardDevice) -> tuple[Service, ...]:
    return (device_information(device), battery(device), current_time(device),
            gatt_profile_service())
