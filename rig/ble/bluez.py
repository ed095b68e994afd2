"""The simulated bluetoothd: owns ``org.bluez`` and serves one adapter (hci0), its devices and
the agent manager, over the virtual peripherals "in the air".

Discovery: StartDiscovery opens a session for the calling D-Bus connection (with its
SetDiscoveryFilter), devices in range that match any session are announced ``announce_delay_s``
after the reply (bleak registers its callback only after StartDiscovery returns), then get an
RSSI update every ``advertising_interval_s``. A connected peripheral does not advertise. When the
last session stops, RSSI / TxPower are invalidated and unconnected, unbonded devices are removed
``forget_after_s`` later (real bluetoothd: about 30 s). Sessions, notify sessions and agents of
a client that leaves the bus end with it.

``stop(crash=True)`` is bluetoothd dying: no signal at all, the bus name just goes away; links
drop on the radio side. Bonds survive a restart (bluetoothd keeps them on disk).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from dbus_fast import BusType, Message, Variant
from dbus_fast.aio import MessageBus

from rig.ble.agent import AgentManager
from rig.ble.device import SimDevice
from rig.ble.errors import SimError
from rig.ble.gatt import uuid128
from rig.ble.objects import NO_REPLY, DBusObject, ObjectTree, Props, Reply, bluez_error
from rig.ble.peripheral import Peripheral
from rig.ble.timing import Timing

BLUEZ = "org.bluez"
ADAPTER_IFACE = "org.bluez.Adapter1"


class BluezService:
    def __init__(self, peripherals: list[Peripheral], timing: Timing | None = None, *,
                 adapter: str = "hci0", adapter_address: str = "00:1A:7D:DA:71:13") -> None:
        self.timing = timing or Timing()
        self.adapter_path = f"/org/bluez/{adapter}"
        self.adapter_address = adapter_address
        self.peripherals: dict[str, Peripheral] = {}
        self.bonds: set[str] = set()  # addresses bonded to this adapter ("on disk")
        self.devices: dict[str, SimDevice] = {}
        self.bus: MessageBus | None = None
        self._tree = ObjectTree()
        self._tree.on_client_gone = self._client_gone
        self._agents = AgentManager(self._tree, self.timing.agent_timeout_s)
        self._filters: dict[str, dict[str, Any]] = {}  # sender -> discovery filter
        self._sessions: set[str] = set()  # senders discovering
        self._scan_task: asyncio.Task[None] | None = None
        self._rssi_tick = 0
        for peripheral in peripherals:
            self.add_peripheral(peripheral)

    @property
    def running(self) -> bool:
        return self.bus is not None and self.bus.connected

    def add_peripheral(self, peripheral: Peripheral, *, bonded: bool = False) -> None:
        """Put a device in the air (``bonded``: paired with this adapter before we started)."""
        if peripheral.address in self.peripherals:
            raise SimError(f"two peripherals with address {peripheral.address}")
        self.peripherals[peripheral.address] = peripheral
        peripheral.on_radio_change(self._radio_changed)
        if bonded:
            self.bonds.add(peripheral.address)

    def device(self, address: str) -> SimDevice | None:
        return self.devices.get(address.upper())

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, bus_address: str) -> None:
        """Connect, export the adapter and bonded devices, then take the name ``org.bluez``."""
        if self.running:
            raise SimError("the simulated bluetoothd is already running")
        bus = MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM)
        await bus.connect()
        self.bus = bus
        await self._tree.attach(bus)
        self._tree.add(self._agents.dbus_object())
        self._tree.add(self._adapter_object())
        for address in sorted(self.bonds):
            self._new_device(self.peripherals[address], rssi=None, paired=True)
        await bus.request_name(BLUEZ)

    async def stop(self, *, crash: bool = False) -> None:
        """Shut down: disconnect devices, remove the objects, release the name. ``crash``:
        vanish without a single signal (the links still drop on the radio side)."""
        bus, self.bus = self.bus, None
        if crash:
            self._tree.detach()
        if self._scan_task is not None:
            self._scan_task.cancel()
            self._scan_task = None
        for device in list(self.devices.values()):
            if device.forget_timer is not None:
                device.forget_timer.cancel()
            if device.connected:
                device.down()
        self._tree.remove_tree("/org/bluez")
        self._tree.detach()
        self._tree.objects.clear()
        self.devices.clear()
        self._sessions.clear()
        self._filters.clear()
        self._agents.agents.clear()
        self._agents.default = None
        if bus is not None:
            bus.disconnect()
            with contextlib.suppress(Exception):
                # dbus-fast leaves wait_for_disconnect unannotated
                await asyncio.wait_for(bus.wait_for_disconnect(), 2.0)  # type: ignore[no-untyped-call]

    # -- adapter ------------------------------------------------------------------------------

    def _adapter_object(self) -> DBusObject:
        props: Props = {
            "Address": Variant("s", self.adapter_address), "AddressType": Variant("s", "public"),
            "Name": Variant("s", "homecare-sim"), "Alias": Variant("s", "homecare-sim"),
            "Class": Variant("u", 0), "Powered": Variant("b", True),
            "PowerState": Variant("s", "on"), "Discoverable": Variant("b", False),
            "DiscoverableTimeout": Variant("u", 180), "Pairable": Variant("b", True),
            "PairableTimeout": Variant("u", 0), "Discovering": Variant("b", False),
            "UUIDs": Variant("as", []), "Modalias": Variant("s", "usb:v1D6Bp0246d0542"),
            "Roles": Variant("as", ["central", "peripheral"]),
            "ExperimentalFeatures": Variant("as", []),
        }
        return DBusObject(self.adapter_path, {ADAPTER_IFACE: props}, methods={
            (ADAPTER_IFACE, "SetDiscoveryFilter"): self._set_filter,
            (ADAPTER_IFACE, "StartDiscovery"): self._start_discovery,
            (ADAPTER_IFACE, "StopDiscovery"): self._stop_discovery,
            (ADAPTER_IFACE, "RemoveDevice"): self._remove_device,
            (ADAPTER_IFACE, "GetDiscoveryFilters"): self._discovery_filters,
        })

    async def _discovery_filters(self, _msg: Message) -> Reply:
        return "as", [["UUIDs", "RSSI", "Transport", "DuplicateData", "Pattern"]]

    async def _set_filter(self, msg: Message) -> Reply:
        raw: dict[str, Variant] = msg.body[0]
        self._filters[msg.sender or ""] = {key: value.value for key, value in raw.items()}
        return NO_REPLY

    async def _start_discovery(self, msg: Message) -> Reply:
        sender = msg.sender or ""
        if sender in self._sessions:
            raise bluez_error("InProgress", "Operation already in progress")
        self._sessions.add(sender)
        if len(self._sessions) == 1:
            self._tree.update(self.adapter_path, ADAPTER_IFACE, {"Discovering": Variant("b", True)})
            self._scan_task = asyncio.get_running_loop().create_task(self._scan(),
                                                                     name="bluez-sim.scan")
        return NO_REPLY

    async def _stop_discovery(self, msg: Message) -> Reply:
        sender = msg.sender or ""
        if sender not in self._sessions:
            raise bluez_error("Failed", "No discovery started")
        self._end_session(sender)
        return NO_REPLY

    def _end_session(self, sender: str) -> None:
        self._sessions.discard(sender)
        if self._sessions:
            return
        if self._scan_task is not None:
            self._scan_task.cancel()
            self._scan_task = None
        self._tree.update(self.adapter_path, ADAPTER_IFACE, {"Discovering": Variant("b", False)})
        for device in self.devices.values():
            props = self._tree.props(device.path, "org.bluez.Device1")
            stale = tuple(name for name in ("RSSI", "TxPower") if name in props)
            if stale:
                self._tree.update(device.path, "org.bluez.Device1", {}, stale)
            self._schedule_forget(device)

    async def _remove_device(self, msg: Message) -> Reply:
        path = msg.body[0]
        device = next((d for d in self.devices.values() if d.path == path), None)
        if device is None:
            raise bluez_error("DoesNotExist", "Does Not Exist")
        self._forget(device)
        return NO_REPLY

    # -- the air ------------------------------------------------------------------------------

    def _matches(self, peripheral: Peripheral) -> bool:
        advertised = {uuid128(u) for u in peripheral.advertised_uuids()}
        for sender in self._sessions:
            flt = self._filters.get(sender, {})
            if flt.get("Transport", "auto") == "bredr":
                continue
            wanted = {str(u).lower() for u in flt.get("UUIDs", [])}
            if wanted and not wanted & advertised:
                continue
            if "RSSI" in flt and peripheral.rssi < int(flt["RSSI"]):
                continue
            return True
        return False

    async def _scan(self) -> None:
        await asyncio.sleep(self.timing.announce_delay_s)
        while True:
            self._advertise()
            await asyncio.sleep(self.timing.advertising_interval_s)

    def _advertise(self) -> None:
        self._rssi_tick += 1
        for peripheral in self.peripherals.values():
            if not peripheral.in_range or not self._matches(peripheral):
                continue
            device = self.devices.get(peripheral.address)
            if device is not None and device.connected:
                continue  # connected: no longer advertising
            rssi = peripheral.rssi - (self._rssi_tick % 2)  # real RSSI never holds still
            if device is None:
                self._new_device(peripheral, rssi=rssi, paired=False)
            else:
                changed: Props = {"RSSI": Variant("n", rssi)}
                if peripheral.tx_power is not None:
                    changed["TxPower"] = Variant("n", peripheral.tx_power)
                self._tree.update(device.path, "org.bluez.Device1", changed)

    def _new_device(self, peripheral: Peripheral, *, rssi: int | None, paired: bool) -> SimDevice:
        device = SimDevice(self._tree, self.adapter_path, peripheral, self.timing, self._agents,
                           paired=paired, on_state=self._device_state)
        self.devices[peripheral.address] = device
        device.export(rssi)
        return device

    def _radio_changed(self, peripheral: Peripheral) -> None:
        device = self.devices.get(peripheral.address)
        if device is None or not self.running or peripheral.in_range or not device.connected:
            return
        link = device.link

        def supervision_timeout() -> None:
            if link is not None and device.link is link and not peripheral.in_range:
                device.lost(link)

        asyncio.get_running_loop().call_later(self.timing.supervision_timeout_s,
                                              supervision_timeout)

    def _device_state(self, device: SimDevice) -> None:
        if device.paired:
            self.bonds.add(device.peripheral.address)
        if not device.connected:
            self._schedule_forget(device)

    def _schedule_forget(self, device: SimDevice) -> None:
        if device.connected or device.paired or self._sessions or device.forget_timer:
            return

        def forget() -> None:
            device.forget_timer = None
            if not device.connected and not device.paired and not self._sessions:
                self._forget(device)

        device.forget_timer = asyncio.get_running_loop().call_later(self.timing.forget_after_s,
                                                                    forget)

    def _forget(self, device: SimDevice) -> None:
        if device.forget_timer is not None:
            device.forget_timer.cancel()
            device.forget_timer = None
        if device.connected:
            device.down()
        self.devices.pop(device.peripheral.address, None)
        self.bonds.discard(device.peripheral.address)
        device.gatt.unexport()
        device.unexport()

    def _client_gone(self, sender: str) -> None:
        if sender in self._sessions:
            self._end_session(sender)
        self._filters.pop(sender, None)
        self._agents.client_gone(sender)
        for device in self.devices.values():
            device.gatt.drop_sessions(sender)
