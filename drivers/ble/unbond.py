"""Remove the bonds with an episode's BLE devices at equipment return (BlueZ over D-Bus).

BlueZ keeps each bond (LTK, IRK: the pairing keys) under /var/lib/bluetooth, outside the
gateway's state directory, so the crypto-erase of the return does not reach it. Removing the
device object (``org.bluez.Adapter1.RemoveDevice``, bluez doc/org.bluez.Adapter.rst) deletes
the bond and its stored keys; the next patient's devices pair afresh.

The device object is found through ``ObjectManager.GetManagedObjects`` (whatever adapter holds
it). A device BlueZ does not know (never seen, or already removed by an earlier, interrupted
return) is not an error: the call is idempotent and answers False. Every D-Bus call is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from drivers.ble.errors import BleTransportError
from provisioning.bundle import BoundDevice

log = structlog.get_logger("ble.unbond")

BLUEZ = "org.bluez"
_GONE = {"org.bluez.Error.DoesNotExist", "org.freedesktop.DBus.Error.UnknownObject"}


class UnbondError(BleTransportError):
    """BlueZ could not be asked to forget a device (not running, refused, no answer)."""

    hint = ("start bluetoothd (systemctl start bluetooth) and run 'gatewayctl return' again; "
            "it resumes at the unbonding step")

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"removing the bond with {device} failed: {reason}", device=device,
                         reason=reason)
        self.device = device
        self.reason = reason


class BluezUnbonder:
    """``provisioning.equipment_return.Unbonder`` for BlueZ.

    ``skip``: addresses that are not read over BlueZ on this router (a ``[[sim_devices]]`` entry
    stands in for them), answered False without asking BlueZ.
    """

    def __init__(self, *, skip: Iterable[str] = (), timeout_s: float = 10.0) -> None:
        self._skip = {a.upper() for a in skip}
        self._timeout_s = timeout_s

    def unbond(self, device: BoundDevice) -> bool:
        if device.transport != "ble" or device.address.upper() in self._skip:
            return False
        return asyncio.run(self.remove(device.address))

    async def remove(self, address: str) -> bool:
        """Remove every BlueZ device object with this address; True if one was removed."""
        address = address.upper()
        try:
            async with asyncio.timeout(self._timeout_s):
                bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, TimeoutError) as exc:
            raise UnbondError(address, f"no D-Bus system bus ({type(exc).__name__})") from None
        try:
            removed = False
            for path, adapter in await self._device_objects(bus, address):
                removed |= await self._remove(bus, adapter, path, address)
        finally:
            bus.disconnect()
        log.info("ble.unbonded" if removed else "ble.unbond_nothing_to_remove", device=address)
        return removed

    async def _call(self, bus: MessageBus, address: str, **message: Any) -> Message:
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await bus.call(Message(destination=BLUEZ, **message))
        except TimeoutError:
            raise UnbondError(address, f"BlueZ did not answer {message['member']} "
                              f"within {self._timeout_s:g} s") from None
        assert reply is not None  # a method call always gets a reply
        return reply

    async def _device_objects(self, bus: MessageBus, address: str) -> list[tuple[str, str]]:
        reply = await self._call(bus, address, path="/",
                                 interface="org.freedesktop.DBus.ObjectManager",
                                 member="GetManagedObjects")
        if reply.message_type == MessageType.ERROR:
            raise UnbondError(address, f"BlueZ is not reachable ({reply.error_name})")
        found = []
        for path, interfaces in reply.body[0].items():
            props = interfaces.get("org.bluez.Device1")
            if props and str(props["Address"].value).upper() == address:
                found.append((str(path), str(props["Adapter"].value)))
        return found

    async def _remove(self, bus: MessageBus, adapter: str, path: str, address: str) -> bool:
        reply = await self._call(bus, address, path=adapter, interface="org.bluez.Adapter1",
                                 member="RemoveDevice", signature="o", body=[path])
        if reply.message_type != MessageType.ERROR:
            return True
        if reply.error_name in _GONE:
            return False  # removed meanwhile (an interrupted return, bluetoothd's own cleanup)
        raise UnbondError(address, f"RemoveDevice refused: {reply.error_name}")
