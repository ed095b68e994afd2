"""Device Information Service (0x180A) strings read with bleak, for the rig report."""

from __future__ import annotations

import asyncio
from typing import Any

from bleak import BleakClient
from bleak.exc import BleakError

from drivers.ble.device_info import STRING_UUIDS


def _uuid(uuid16: int) -> str:
    return f"0000{uuid16:04x}-0000-1000-8000-00805f9b34fb"


async def _read(address: str, adapter: str | None, timeout_s: float) -> dict[str, str]:
    out: dict[str, str] = {}
    bluez: Any = {"adapter": adapter} if adapter else {}
    async with BleakClient(address, timeout=timeout_s, bluez=bluez) as client:
        for uuid16, field in STRING_UUIDS.items():
            try:
                data = await client.read_gatt_char(_uuid(uuid16))
            except BleakError:
                continue  # optional characteristic this device does not have
            out[field] = bytes(data).decode("utf-8", "replace").rstrip("\x00")
    return out


def read_device_information(
    address: str, adapter: str | None, timeout_s: float = 15.0
) -> dict[str, str]:
    """Model, serial, firmware, ... as the device reports them; raises BleakError / TimeoutError
    when it cannot be reached. Runs on a fresh event loop (bleak caches per loop)."""
    return asyncio.run(asyncio.wait_for(_read(address, adapter, timeout_s), timeout_s * 2))
