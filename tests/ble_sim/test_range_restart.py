"""The radio and the daemon going away: out of range and back, bluetoothd restarting."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient
from bleak.exc import BleakDBusError

from drivers.ble.thermometer import TEMPERATURE_MEASUREMENT_UUID, TemperatureMeasurement
from rig.ble.profiles import Thermometer
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, Inbox, RawClient, connected, device_path, find, uuid

TEMP = uuid(TEMPERATURE_MEASUREMENT_UUID)


async def test_out_of_range_disconnects_and_back_in_range_reconnects(sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    device = await find(BOUND)
    dropped = asyncio.Event()
    client = BleakClient(device, disconnected_callback=lambda _c: dropped.set(), timeout=5)
    await client.connect()
    await rig.out_of_range(thermometer)
    await asyncio.wait_for(dropped.wait(), 2)  # after the supervision timeout
    assert not client.is_connected
    reading = await rig.acall(lambda: thermometer.measure("37.9"))  # stored meanwhile
    await rig.back_in_range(thermometer)
    inbox = Inbox()
    await client.connect()
    try:
        await client.start_notify(TEMP, inbox)
        [(_, data)] = await inbox.take(1)
    finally:
        await client.disconnect()
    assert TemperatureMeasurement.decode(data) == reading


async def test_connect_while_out_of_range_completes_when_the_device_returns(
        sim: StartRig) -> None:
    """bluetoothd keeps trying until its connect timeout: a device back in time connects."""
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    device = await find(BOUND)
    await rig.out_of_range(thermometer)
    connecting = asyncio.create_task(BleakClient(device, timeout=5).connect())
    await asyncio.sleep(0.3)
    assert not connecting.done()
    await rig.back_in_range(thermometer)
    await asyncio.wait_for(connecting, 3)


async def test_bluetoothd_restart_is_seen_on_name_owner_changed_not_by_bleak(
        sim: StartRig) -> None:
    """The org.bluez owner disappears and returns (two NameOwnerChanged signals). bleak 3.1
    does not notice: is_connected stays True, no disconnected callback, and its disconnect()
    then fails because the device object is gone - the gateway has to watch the name itself."""
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    called: list[str] = []
    client = BleakClient(await find(BOUND), disconnected_callback=lambda _c: called.append("x"),
                         timeout=5)
    await client.connect()
    async with RawClient() as watcher:
        await watcher.match("type='signal',sender='org.freedesktop.DBus',"
                            "member='NameOwnerChanged',arg0='org.bluez'")
        await rig.restart_bluetoothd(down_s=0.1)
        for _ in range(50):
            if len(watcher.signals) >= 2:
                break
            await asyncio.sleep(0.02)
        changes = [body for member, _, body in watcher.signals if member == "NameOwnerChanged"]
        assert [name for name, _, _ in changes] == ["org.bluez", "org.bluez"]
        (_, old, gone), (_, none, new) = changes
        assert (bool(old), gone, none, bool(new)) == (True, "", "", True)
        assert new != old
        assert await rig.acall(lambda: thermometer.link is None)  # the radio link dropped
        adapter = await watcher.prop("/org/bluez/hci0", "org.bluez.Adapter1", "Powered")
        assert adapter is True
    assert client.is_connected  # stale: bleak 3.1 does not watch the name owner
    assert called == []
    with pytest.raises(BleakDBusError) as stale:
        await client.disconnect()
    assert stale.value.dbus_error == "org.freedesktop.DBus.Error.UnknownObject"
    assert not connected(client)
    assert called == ["x"]


async def test_bonds_survive_a_bluetoothd_restart(sim: StartRig) -> None:
    """Bonded devices are back (Paired, not connected) without scanning, as from disk."""
    rig = sim(Thermometer(BOUND), bonded=(BOUND,))
    async with RawClient() as raw:
        assert await raw.prop(device_path(BOUND), "org.bluez.Device1", "Paired") is True
        await rig.restart_bluetoothd(down_s=0.05)
        assert await raw.prop(device_path(BOUND), "org.bluez.Device1", "Paired") is True
        assert await raw.prop(device_path(BOUND), "org.bluez.Device1", "Connected") is False
    async with BleakClient(BOUND, timeout=5) as client:  # by address: bleak scans first
        assert client.is_connected
