"""16-bit Bluetooth SIG assigned numbers <-> the 128-bit UUID strings bleak and BlueZ use.

Every SIG-assigned UUID is the Bluetooth Base UUID with the 16-bit number in bits 96-111
(Core Specification, Vol 3, Part B, 2.5.1). Pure: no bleak import.
"""

from __future__ import annotations

_BASE_UUID = "-0000-1000-8000-00805f9b34fb"


def uuid128(uuid16: int) -> str:
    return f"0000{uuid16:04x}{_BASE_UUID}"


def uuid16_of(uuid: str) -> int | None:
    """The 16-bit number of a SIG-assigned UUID; None for any other UUID (a vendor's)."""
    text = uuid.lower()
    if len(text) == 36 and text.endswith(_BASE_UUID) and text.startswith("0000"):
        return int(text[4:8], 16)
    return None
