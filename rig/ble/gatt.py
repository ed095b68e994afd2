"""The GATT table a virtual peripheral serves, and how bluetoothd shows it over D-Bus.

A peripheral describes services and characteristics by 16-bit UUID with read / write callbacks;
``layout`` assigns ATT handles the way a real server lays them out (service declaration,
characteristic declaration, value, then descriptors - a CCCD 0x2902 for every characteristic
that can notify or indicate) and derives bluetoothd's object paths from them:
``<device>/serviceXXXX/charYYYY/descZZZZ`` with the declaration handles in hex. bleak cuts these
paths by length to find a characteristic's device, so their shape is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dbus_fast.errors import DBusError

from rig.ble.errors import SimError
from rig.ble.objects import bluez_error

BASE_UUID = "-0000-1000-8000-00805f9b34fb"
CCCD_UUID = 0x2902
GATT_SERVICE_UUID = 0x1801
SERVICE_CHANGED_UUID = 0x2A05
FIRST_HANDLE = 0x0008  # handles 1-7: the GAP service, which bluetoothd does not export

# ATT error codes (Core Vol 3 Part F 3.4.1.1; 0xFD-0xFF: Core Supplement Part B 1.2).
ATT_READ_NOT_PERMITTED = 0x02
ATT_WRITE_NOT_PERMITTED = 0x03
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
ATT_REQUEST_NOT_SUPPORTED = 0x06
ATT_INVALID_OFFSET = 0x07
ATT_INSUFFICIENT_AUTHORIZATION = 0x08
ATT_INSUFFICIENT_KEY_SIZE = 0x0C
ATT_INVALID_LENGTH = 0x0D
ATT_INSUFFICIENT_ENCRYPTION = 0x0F
ATT_CCCD_IMPROPERLY_CONFIGURED = 0xFD
ATT_PROCEDURE_IN_PROGRESS = 0xFE
ATT_OUT_OF_RANGE = 0xFF

Reader = Callable[[], bytes]
Writer = Callable[[bytes, bool], None]  # (value, with_response)


def uuid128(uuid16: int) -> str:
    """The Bluetooth base UUID form bluetoothd uses, e.g. 0x2A1C -> 00002a1c-0000-1000-..."""
    return f"0000{uuid16:04x}{BASE_UUID}"


_ATT_TO_DBUS = {
    ATT_READ_NOT_PERMITTED: ("NotPermitted", "Read not permitted"),
    ATT_WRITE_NOT_PERMITTED: ("NotPermitted", "Write not permitted"),
    ATT_INSUFFICIENT_AUTHENTICATION: ("NotPermitted", "Not paired"),
    ATT_INSUFFICIENT_ENCRYPTION: ("NotPermitted", "Not paired"),
    ATT_INSUFFICIENT_KEY_SIZE: ("NotPermitted", "Not paired"),
    ATT_INVALID_OFFSET: ("InvalidArguments", "Invalid offset"),
    ATT_INVALID_LENGTH: ("InvalidArguments", "Invalid Length"),
    ATT_INSUFFICIENT_AUTHORIZATION: ("NotAuthorized", "Not Authorized"),
    ATT_REQUEST_NOT_SUPPORTED: ("NotSupported", "Not Supported"),
    ATT_CCCD_IMPROPERLY_CONFIGURED: ("ImproperlyConfigured", "CCC Improperly Configured"),
}


def att_error(code: int) -> DBusError:
    """The D-Bus error bluetoothd's GATT client sends for an ATT error response: a few codes
    have their own error name (bleak maps them back), the rest read "Operation failed with ATT
    error: 0xNN" (bleak parses the code out of that text)."""
    fallback = ("Failed", f"Operation failed with ATT error: 0x{code:02x}")
    kind, text = _ATT_TO_DBUS.get(code, fallback)
    return bluez_error(kind, text)


@dataclass(frozen=True, slots=True)
class Descriptor:
    uuid16: int
    read: Reader | None = None


@dataclass(frozen=True, slots=True)
class Characteristic:
    """``flags`` are GATT characteristic properties in bluetoothd's spelling ("read", "write",
    "write-without-response", "notify", "indicate"). ``secure``: reading, writing or
    subscribing needs an authenticated bond (ATT Insufficient Authentication otherwise)."""

    uuid16: int
    flags: tuple[str, ...]
    read: Reader | None = None
    write: Writer | None = None
    secure: bool = False
    descriptors: tuple[Descriptor, ...] = ()

    @property
    def notifies(self) -> bool:
        return "notify" in self.flags or "indicate" in self.flags


@dataclass(frozen=True, slots=True)
class Service:
    uuid16: int
    characteristics: tuple[Characteristic, ...]
    primary: bool = True


@dataclass(slots=True)
class CharacteristicNode:
    """A characteristic placed in the table: handles, object paths, its CCCD path if any."""

    spec: Characteristic
    service_path: str
    path: str
    value_handle: int
    cccd_path: str | None
    descriptor_paths: dict[str, Descriptor] = field(default_factory=dict)


@dataclass(slots=True)
class Layout:
    """Object paths and handles of one device's GATT table."""

    services: dict[str, Service]  # service path -> spec
    characteristics: dict[str, CharacteristicNode]  # char path -> node
    by_uuid: dict[int, CharacteristicNode]

    def all_uuids(self) -> list[str]:
        return sorted({uuid128(s.uuid16) for s in self.services.values()})


def layout(device_path: str, services: tuple[Service, ...]) -> Layout:
    """Assign handles and paths; a characteristic UUID must be unique on one peripheral."""
    out = Layout({}, {}, {})
    handle = FIRST_HANDLE
    for service in services:
        service_path = f"{device_path}/service{handle:04x}"
        out.services[service_path] = service
        handle += 1
        for char in service.characteristics:
            if char.uuid16 in out.by_uuid:
                raise SimError(f"characteristic 0x{char.uuid16:04x} appears twice")
            char_path = f"{service_path}/char{handle:04x}"
            node = CharacteristicNode(char, service_path, char_path, handle + 1, None)
            handle += 2
            descriptors = list(char.descriptors)
            if char.notifies:
                descriptors.insert(0, Descriptor(CCCD_UUID))
            for desc in descriptors:
                desc_path = f"{char_path}/desc{handle:04x}"
                if desc.uuid16 == CCCD_UUID:
                    node.cccd_path = desc_path
                node.descriptor_paths[desc_path] = desc
                handle += 1
            out.characteristics[char_path] = node
            out.by_uuid[char.uuid16] = node
    return out


def gatt_profile_service() -> Service:
    """Generic Attribute service 0x1801 with Service Changed (indicate), as every server has."""
    return Service(GATT_SERVICE_UUID, (Characteristic(SERVICE_CHANGED_UUID, ("indicate",)),))
