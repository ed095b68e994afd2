"""A connected device's GATT database as bluetoothd exports it: GattService1,
GattCharacteristic1 and GattDescriptor1 objects, reads and writes forwarded to the peripheral,
and notify sessions.

Notify sessions belong to the D-Bus connection that called StartNotify (bleak opens one per
``connect()``). The CCCD is written when the first session starts and cleared when the last one
ends - by StopNotify, by the client leaving the bus, or by the disconnection. Every notification
and every read sets ``Value`` and emits PropertiesChanged, which is how bleak receives both.
"""

from __future__ import annotations

from typing import Any, Protocol

from dbus_fast import Message, Variant

from rig.ble.errors import AttError
from rig.ble.gatt import (
    ATT_INSUFFICIENT_AUTHENTICATION,
    ATT_READ_NOT_PERMITTED,
    ATT_WRITE_NOT_PERMITTED,
    CCCD_UUID,
    CharacteristicNode,
    Layout,
    att_error,
    layout,
    uuid128,
)
from rig.ble.objects import NO_REPLY, DBusObject, ObjectTree, Reply, bluez_error
from rig.ble.peripheral import Peripheral

SERVICE_IFACE = "org.bluez.GattService1"
CHAR_IFACE = "org.bluez.GattCharacteristic1"
DESC_IFACE = "org.bluez.GattDescriptor1"
MTU = 247


class Connection(Protocol):
    """The device state a GATT request depends on."""

    @property
    def connected(self) -> bool: ...

    @property
    def paired(self) -> bool: ...


class RemoteGatt:
    def __init__(self, tree: ObjectTree, device_path: str, peripheral: Peripheral,
                 connection: Connection) -> None:
        self._tree = tree
        self._peripheral = peripheral
        self._connection = connection
        self.layout: Layout = layout(device_path, peripheral.services())
        self.sessions: dict[str, set[str]] = {}  # char path -> D-Bus senders
        self.exported = False

    # -- objects ------------------------------------------------------------------------------

    def export(self) -> None:
        if self.exported:
            return
        self.exported = True
        for service_path, service in self.layout.services.items():
            device_path = service_path.rsplit("/", 1)[0]
            self._tree.add(DBusObject(service_path, {SERVICE_IFACE: {
                "UUID": Variant("s", uuid128(service.uuid16)),
                "Device": Variant("o", device_path),
                "Primary": Variant("b", service.primary),
                "Includes": Variant("ao", []),
            }}))
            for node in self.layout.characteristics.values():
                if node.service_path == service_path:
                    self._export_characteristic(node)

    def _export_characteristic(self, node: CharacteristicNode) -> None:
        props: dict[str, Variant] = {
            "UUID": Variant("s", uuid128(node.spec.uuid16)),
            "Service": Variant("o", node.service_path),
            "Value": Variant("ay", b""),
            "Flags": Variant("as", list(node.spec.flags)),
            "MTU": Variant("q", MTU),
        }
        if node.spec.notifies:
            props["Notifying"] = Variant("b", False)

        async def read(msg: Message) -> Reply:
            return self._read(node)

        async def write(msg: Message) -> Reply:
            return self._write(node, bytes(msg.body[0]), msg.body[1])

        async def start(msg: Message) -> Reply:
            return self._start_notify(node, msg.sender or "")

        async def stop(msg: Message) -> Reply:
            return self._stop_notify(node, msg.sender or "")

        self._tree.add(DBusObject(node.path, {CHAR_IFACE: props}, methods={
            (CHAR_IFACE, "ReadValue"): read, (CHAR_IFACE, "WriteValue"): write,
            (CHAR_IFACE, "StartNotify"): start, (CHAR_IFACE, "StopNotify"): stop,
        }))
        for desc_path, desc in node.descriptor_paths.items():
            async def read_desc(msg: Message, path: str = desc_path) -> Reply:
                return self._read_descriptor(node, path)

            async def write_desc(msg: Message, path: str = desc_path) -> Reply:
                return self._write_descriptor(node, path)

            self._tree.add(DBusObject(desc_path, {DESC_IFACE: {
                "UUID": Variant("s", uuid128(desc.uuid16)),
                "Characteristic": Variant("o", node.path),
                "Value": Variant("ay", b""),
            }}, methods={(DESC_IFACE, "ReadValue"): read_desc,
                         (DESC_IFACE, "WriteValue"): write_desc}))

    def unexport(self) -> None:
        for service_path in self.layout.services:
            self._tree.remove_tree(service_path)
        self.exported = False

    # -- sessions -----------------------------------------------------------------------------

    def subscribed(self, uuid16: int) -> bool:
        node = self.layout.by_uuid.get(uuid16)
        return node is not None and bool(self.sessions.get(node.path))

    def drop_sessions(self, sender: str | None = None) -> None:
        """End the sessions of ``sender`` (it left the bus), or all (the link is gone)."""
        for path, senders in list(self.sessions.items()):
            if sender is None:
                senders.clear()
            else:
                senders.discard(sender)
            if not senders:
                del self.sessions[path]
                self._notifying(self.layout.characteristics[path], False)

    def _notifying(self, node: CharacteristicNode, on: bool) -> None:
        if self.exported and node.path in self._tree.objects:
            self._tree.update(node.path, CHAR_IFACE, {"Notifying": Variant("b", on)})
        if self._connection.connected:
            self._peripheral.on_subscribe(node.spec.uuid16, on)

    def value_changed(self, uuid16: int, value: bytes) -> None:
        node = self.layout.by_uuid[uuid16]
        self._tree.update(node.path, CHAR_IFACE, {"Value": Variant("ay", value)})

    # -- requests -----------------------------------------------------------------------------

    def _check(self, node: CharacteristicNode) -> None:
        if not self._connection.connected:
            raise bluez_error("Failed", "Not connected")
        if node.spec.secure and not self._connection.paired:
            raise att_error(ATT_INSUFFICIENT_AUTHENTICATION)

    def _read(self, node: CharacteristicNode) -> Reply:
        self._check(node)
        if node.spec.read is None or "read" not in node.spec.flags:
            raise att_error(ATT_READ_NOT_PERMITTED)
        try:
            value = node.spec.read()
        except AttError as error:
            raise att_error(error.code) from None
        self.value_changed(node.spec.uuid16, value)
        return "ay", [value]

    def _write(self, node: CharacteristicNode, value: bytes, options: dict[str, Any]) -> Reply:
        self._check(node)
        kind_v = options.get("type")
        flags = node.spec.flags
        kind = kind_v.value if isinstance(kind_v, Variant) else ("request" if "write" in flags
                                                                 else "command")
        needed = {"request": "write", "command": "write-without-response"}.get(kind)
        if needed is None:
            raise bluez_error("InvalidArguments", "Invalid arguments in method call")
        if needed not in flags:
            raise bluez_error("NotSupported", "Operation is not supported")
        if node.spec.write is None:
            raise att_error(ATT_WRITE_NOT_PERMITTED)
        try:
            node.spec.write(value, kind == "request")
        except AttError as error:
            if kind == "request":
                raise att_error(error.code) from None
        return NO_REPLY

    def _start_notify(self, node: CharacteristicNode, sender: str) -> Reply:
        if not self._connection.connected:
            raise bluez_error("Failed", "Not connected")
        if not node.spec.notifies:
            raise bluez_error("NotSupported", "Operation is not supported")
        self._check(node)
        senders = self.sessions.setdefault(node.path, set())
        if sender in senders:
            raise bluez_error("InProgress", "In Progress")
        senders.add(sender)
        if len(senders) == 1:
            self._notifying(node, True)
        return NO_REPLY

    def _stop_notify(self, node: CharacteristicNode, sender: str) -> Reply:
        senders = self.sessions.get(node.path, set())
        if sender not in senders:
            raise bluez_error("Failed", "No notify session started")
        senders.discard(sender)
        if not senders:
            del self.sessions[node.path]
            self._notifying(node, False)
        return NO_REPLY

    def _read_descriptor(self, node: CharacteristicNode, path: str) -> Reply:
        self._check(node)
        desc = node.descriptor_paths[path]
        if desc.uuid16 == CCCD_UUID:
            bit = 0x0002 if "indicate" in node.spec.flags else 0x0001
            value = (bit if self.sessions.get(node.path) else 0).to_bytes(2, "little")
        elif desc.read is not None:
            value = desc.read()
        else:
            raise att_error(ATT_READ_NOT_PERMITTED)
        self._tree.update(path, DESC_IFACE, {"Value": Variant("ay", value)})
        return "ay", [value]

    def _write_descriptor(self, node: CharacteristicNode, path: str) -> Reply:
        self._check(node)
        # bluetoothd refuses CCCD writes over D-Bus: StartNotify / StopNotify own the CCCD.
        raise att_error(ATT_WRITE_NOT_PERMITTED)
