"""Test helpers: addresses, UUIDs, a notification inbox, and a raw D-Bus client for what bleak
does not expose (signal order, NameOwnerChanged, Agent1)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from rig.ble.gatt import uuid128

BOUND = "A4:C1:38:00:00:01"
NEIGHBOUR = "A4:C1:38:00:00:99"
OTHER = "A4:C1:38:00:00:02"
ADAPTER = "/org/bluez/hci0"


def uuid(uuid16: int) -> str:
    return uuid128(uuid16)


def device_path(address: str) -> str:
    return f"{ADAPTER}/dev_{address.replace(':', '_')}"


def connected(client: BleakClient) -> bool:
    """``client.is_connected`` read afresh (mypy would keep a narrowed property value)."""
    return client.is_connected


async def find(address: str, timeout_s: float = 2.0) -> BLEDevice:
    device = await BleakScanner.find_device_by_address(address, timeout=timeout_s)
    assert device is not None, f"{address} not found by scanning"
    return device


class Inbox:
    """A notify callback that queues (characteristic uuid, bytes) in arrival order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def __call__(self, char: BleakGATTCharacteristic, data: bytearray) -> None:
        self.queue.put_nowait((char.uuid, bytes(data)))

    async def take(self, count: int, timeout_s: float = 3.0) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(timeout_s):
            return [await self.queue.get() for _ in range(count)]

    async def until(self, done: Callable[[str, bytes], bool], timeout_s: float = 3.0
                    ) -> list[tuple[str, bytes]]:
        """Everything up to and including the first item for which ``done`` holds."""
        out: list[tuple[str, bytes]] = []
        async with asyncio.timeout(timeout_s):
            while not out or not done(*out[-1]):
                out.append(await self.queue.get())
        return out

    async def quiet(self, for_s: float = 0.15) -> list[tuple[str, bytes]]:
        """What else arrives within ``for_s`` (expected: nothing)."""
        await asyncio.sleep(for_s)
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


class RawClient:
    """A plain dbus-fast connection to the rig's system bus, recording signals it matches."""

    def __init__(self) -> None:
        self.bus = MessageBus(bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                              bus_type=BusType.SYSTEM)
        self.signals: list[tuple[str, str, list[Any]]] = []  # (member, path, body) + markers

    async def __aenter__(self) -> RawClient:
        await self.bus.connect()
        self.bus.add_message_handler(self._record)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bus.disconnect()

    def _record(self, msg: Message) -> bool:
        if msg.message_type is MessageType.SIGNAL:
            self.signals.append((msg.member or "", msg.path or "", list(msg.body)))
        return False

    async def match(self, rule: str) -> None:
        await self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                        "AddMatch", "s", [rule])

    async def call(self, destination: str, path: str, interface: str, member: str,
                   signature: str = "", body: list[Any] | None = None) -> Message:
        return await self.bus.call(Message(destination=destination, path=path,
                                           interface=interface, member=member,
                                           signature=signature, body=body or []))

    async def bluez(self, path: str, interface: str, member: str, signature: str = "",
                    body: list[Any] | None = None) -> Message:
        return await self.call("org.bluez", path, interface, member, signature, body)

    async def prop(self, path: str, interface: str, name: str) -> Any:
        reply = await self.bluez(path, "org.freedesktop.DBus.Properties", "Get", "ss",
                                 [interface, name])
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        return reply.body[0].value
