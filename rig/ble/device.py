"""One org.bluez.Device1 object: connect, disconnect, pair, and the link to its peripheral.

Order on connect (what bleak waits for): ``Connected=true`` -> GATT objects (InterfacesAdded) ->
``ServicesResolved=true`` -> the Connect reply. A Connect to a device out of range waits for it
until ``connect_timeout_s`` and fails ``le-connection-abort-by-local``; a Disconnect meanwhile
makes it fail "Cancelled" and itself succeeds, as does a Disconnect of an unconnected device.
On disconnect: ``ServicesResolved=false``, ``Connected=false``, notify sessions end and (unless
``Timing.gatt_cache``) the GATT objects are removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dbus_fast import Message, Variant

from rig.ble.agent import AgentManager
from rig.ble.errors import LinkLostError
from rig.ble.gatt import uuid128
from rig.ble.objects import NO_REPLY, DBusObject, ObjectTree, Props, Reply, bluez_error
from rig.ble.peripheral import Peripheral
from rig.ble.remote_gatt import RemoteGatt
from rig.ble.timing import Timing

DEVICE_IFACE = "org.bluez.Device1"


class DeviceLink:
    """``peripheral.Link`` for one connection; dead once the connection ends."""

    def __init__(self, device: SimDevice) -> None:
        self._device = device
        self._lock = asyncio.Lock()  # one PDU at a time, in order
        self._up = True

    @property
    def up(self) -> bool:
        return self._up

    def subscribed(self, uuid16: int) -> bool:
        return self._up and self._device.gatt.subscribed(uuid16)

    async def send(self, uuid16: int, value: bytes) -> bool:
        async with self._lock:
            await asyncio.sleep(self._device.timing.notify_interval_s)
            if not self._up:
                raise LinkLostError("link lost before the value went out")
            if not self._device.gatt.subscribed(uuid16):
                return False
            self._device.gatt.value_changed(uuid16, value)
            return True

    def drop(self) -> None:
        if self._up:
            self._up = False
            asyncio.get_running_loop().call_soon(self._device.lost, self)

    def close(self) -> None:
        self._up = False


class SimDevice:
    def __init__(self, tree: ObjectTree, adapter_path: str, peripheral: Peripheral,
                 timing: Timing, agents: AgentManager, *, paired: bool = False,
                 on_state: Callable[[SimDevice], None] = lambda _d: None) -> None:
        self.peripheral = peripheral
        self.path = f"{adapter_path}/dev_{peripheral.address.replace(':', '_')}"
        self.adapter_path = adapter_path
        self.timing = timing
        self._tree = tree
        self._agents = agents
        self._on_state = on_state
        self.connected = False
        self.resolved = False
        self.paired = paired
        self.trusted = paired
        self.link: DeviceLink | None = None
        self.gatt = RemoteGatt(tree, self.path, peripheral, self)
        self._pending: asyncio.Future[None] | None = None
        self._establishing = False
        self._pairing = False
        self.forget_timer: asyncio.TimerHandle | None = None

    # -- the object ---------------------------------------------------------------------------

    def properties(self, rssi: int | None) -> Props:
        p = self.peripheral
        uuids = self.gatt.layout.all_uuids() if self.resolved or self.paired \
            else [uuid128(u) for u in p.advertised_uuids()]
        props: Props = {
            "Address": Variant("s", p.address), "AddressType": Variant("s", "public"),
            "Name": Variant("s", p.name), "Alias": Variant("s", p.name),
            "Paired": Variant("b", self.paired), "Bonded": Variant("b", self.paired),
            "Trusted": Variant("b", self.trusted), "Blocked": Variant("b", False),
            "LegacyPairing": Variant("b", False), "Connected": Variant("b", self.connected),
            "UUIDs": Variant("as", uuids), "Adapter": Variant("o", self.adapter_path),
            "ServicesResolved": Variant("b", self.resolved),
        }
        if rssi is not None:
            props["RSSI"] = Variant("n", rssi)
            if p.tx_power is not None:
                props["TxPower"] = Variant("n", p.tx_power)
        if p.manufacturer_data:
            props["ManufacturerData"] = Variant("a{qv}", {
                company: Variant("ay", data) for company, data in p.manufacturer_data.items()})
        return props

    def export(self, rssi: int | None) -> None:
        self._tree.add(DBusObject(self.path, {DEVICE_IFACE: self.properties(rssi)}, methods={
            (DEVICE_IFACE, "Connect"): self._connect,
            (DEVICE_IFACE, "Disconnect"): self._disconnect,
            (DEVICE_IFACE, "Pair"): self._pair,
        }, setters={(DEVICE_IFACE, "Trusted"): self._set_trusted}))

    def unexport(self) -> None:
        self._tree.remove_tree(self.path)

    def _set(self, **changes: Variant) -> None:
        self._tree.update(self.path, DEVICE_IFACE, dict(changes))

    async def _set_trusted(self, value: Variant, _sender: str) -> None:
        self.trusted = bool(value.value)
        self._set(Trusted=Variant("b", self.trusted))

    # -- connection ---------------------------------------------------------------------------

    async def _connect(self, _msg: Message) -> Reply:
        if self.connected and self.resolved:
            return NO_REPLY
        await self.establish()
        return NO_REPLY

    async def establish(self) -> None:
        if self._establishing:
            raise bluez_error("InProgress", "In Progress")
        self._establishing = True
        try:
            await self._reach()
            self._up()
            await asyncio.sleep(self.timing.resolve_delay_s)
        finally:
            self._establishing = False
        if not self.connected:
            raise bluez_error("Failed", "le-connection-abort-by-remote")
        self.resolved = True
        self._set(ServicesResolved=Variant("b", True),
                  UUIDs=Variant("as", self.gatt.layout.all_uuids()))

    async def _reach(self) -> None:
        """Wait until the peripheral is in range (bounded), or a Disconnect cancels."""
        loop = asyncio.get_running_loop()
        self._pending = pending = loop.create_future()
        try:
            deadline = loop.time() + self.timing.connect_timeout_s
            await self._wait(pending, self.timing.connect_delay_s)
            while not self.peripheral.in_range:
                left = deadline - loop.time()
                if left <= 0:
                    raise bluez_error("Failed", "le-connection-abort-by-local")
                await self._wait(pending, min(left, 0.05))
        finally:
            self._pending = None

    @staticmethod
    async def _wait(pending: asyncio.Future[None], delay_s: float) -> None:
        await asyncio.wait([pending], timeout=delay_s)
        if pending.done():
            pending.result()  # raises what Disconnect put there

    def _up(self) -> None:
        if self.forget_timer is not None:
            self.forget_timer.cancel()
            self.forget_timer = None
        self.connected = True
        self._set(Connected=Variant("b", True))
        self.link = DeviceLink(self)
        self.peripheral.on_connect(self.link)
        self.gatt.export()
        self._on_state(self)

    async def _disconnect(self, _msg: Message) -> Reply:
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(bluez_error("Failed", "Cancelled"))
        if self.connected:
            self.down()
        return NO_REPLY

    def lost(self, link: DeviceLink) -> None:
        """The peripheral or the radio ended the connection."""
        if link is self.link and self.connected:
            self.down()

    def down(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.close()
        if self.resolved:
            self.resolved = False
            self._set(ServicesResolved=Variant("b", False))
        self.connected = False
        self._set(Connected=Variant("b", False))
        self.gatt.drop_sessions()
        self.peripheral.on_disconnect()
        if not self.timing.gatt_cache:
            self.gatt.unexport()
        self._on_state(self)

    # -- pairing ------------------------------------------------------------------------------

    async def _pair(self, msg: Message) -> Reply:
        if self.paired:
            raise bluez_error("AlreadyExists", "Already Exists")
        if self._pairing:
            raise bluez_error("InProgress", "In Progress")
        self._pairing = True
        try:
            if not self.connected:
                await self.establish()
            if self.peripheral.pairing is not None:
                await self._agents.authenticate(self.path, self.peripheral.pairing,
                                                msg.sender or "")
        finally:
            self._pairing = False
        if not self.connected:
            raise bluez_error("AuthenticationCanceled", "Authentication Canceled")
        self.paired = True
        self._set(Paired=Variant("b", True), Bonded=Variant("b", True))
        self._on_state(self)
        return NO_REPLY
