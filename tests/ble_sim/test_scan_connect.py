"""Scanning and connecting with the real bleak against the simulated BlueZ."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.exc import BleakError
from dbus_fast import MessageType

from drivers.ble.device_info import SYSTEM_ID_UUID, decode_string, decode_system_id
from rig.ble.profiles import Thermometer, WeightScale, neighbour
from rig.ble.standard import MANUFACTURER_NAME_UUID, SERIAL_NUMBER_UUID, DeviceInfo
from rig.ble.timing import Timing
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, NEIGHBOUR, OTHER, RawClient, device_path, find, uuid

HTS = uuid(0x1809)


async def test_scan_finds_bound_and_neighbour_with_rssi_uuids_and_names(sim: StartRig) -> None:
    """Both thermometers advertise the Health Thermometer service; the scan reports each with
    its own RSSI, name, service UUIDs and manufacturer data; a service filter keeps the scale
    out."""
    bound = Thermometer(BOUND, name="TH-patient", rssi=-55, tx_power=4,
                        manufacturer_data={0x0157: b"\x01\x02"})
    sim(bound, neighbour(bound, NEIGHBOUR), WeightScale(OTHER))
    found = await BleakScanner.discover(timeout=0.6, return_adv=True, service_uuids=[HTS])
    seen = {device.address: adv for device, adv in found.values()}
    assert set(seen) == {BOUND, NEIGHBOUR}
    assert seen[BOUND].local_name == "TH-patient"
    assert seen[BOUND].rssi in (-55, -56)  # real RSSI jitters; so does ours, by one
    assert seen[BOUND].tx_power == 4
    assert seen[BOUND].manufacturer_data == {0x0157: b"\x01\x02"}
    assert seen[NEIGHBOUR].local_name == "TH-patient (neighbour)"
    assert seen[NEIGHBOUR].rssi in (-80, -81)
    assert seen[NEIGHBOUR].service_uuids == [HTS]


async def test_connect_resolves_services_and_reads_device_information(sim: StartRig) -> None:
    info = DeviceInfo(manufacturer="Acme Medical", serial="SN-4711", system_id="0012A4FFFE0A1B2C")
    sim(Thermometer(BOUND, info=info))
    device = await find(BOUND)
    async with BleakClient(device, timeout=5) as client:
        assert client.is_connected
        service_uuids = {service.uuid for service in client.services}
        assert {HTS, uuid(0x180A), uuid(0x180F), uuid(0x1805), uuid(0x1801)} <= service_uuids
        maker = await client.read_gatt_char(uuid(MANUFACTURER_NAME_UUID))
        serial = await client.read_gatt_char(uuid(SERIAL_NUMBER_UUID))
        system_id = await client.read_gatt_char(uuid(SYSTEM_ID_UUID))
        assert decode_string(MANUFACTURER_NAME_UUID, bytes(maker)) == "Acme Medical"
        assert decode_string(SERIAL_NUMBER_UUID, bytes(serial)) == "SN-4711"
        assert decode_system_id(bytes(system_id)).value == "0012A4FFFE0A1B2C"
        # the CCCD is exported as a descriptor with a handle after the value handle
        measurement = client.services.get_characteristic(uuid(0x2A1C))
        assert measurement is not None
        assert [d.uuid for d in measurement.descriptors] == [uuid(0x2902)]
    assert not client.is_connected


async def test_connect_signals_come_in_bluez_order(sim: StartRig) -> None:
    """Connected=true, then the GATT objects, then ServicesResolved=true, then the reply."""
    sim(Thermometer(BOUND))
    await find(BOUND)
    async with RawClient() as raw:
        await raw.match("type='signal',path_namespace='/org/bluez'")
        await raw.match("type='signal',interface='org.freedesktop.DBus.ObjectManager'")
        reply = await raw.bluez(device_path(BOUND), "org.bluez.Device1", "Connect")
        raw.signals.append(("reply", "", []))
        assert reply.message_type is MessageType.METHOD_RETURN
        steps = []
        for member, _path, body in raw.signals:
            if member == "PropertiesChanged" and body[0] == "org.bluez.Device1":
                steps += [f"{k}={v.value}" for k, v in body[1].items()
                          if k in ("Connected", "ServicesResolved")]
            elif member == "InterfacesAdded" and "org.bluez.GattService1" in body[1]:
                steps.append("service")
            elif member == "reply":
                steps.append("reply")
        first_service = steps.index("service")
        assert steps[0] == "Connected=True"
        assert steps.index("ServicesResolved=True") > first_service
        assert steps[-1] == "reply"
        await raw.bluez(device_path(BOUND), "org.bluez.Device1", "Disconnect")


async def test_disconnect_cancels_a_pending_connect_and_succeeds_when_unconnected(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    await find(BOUND)
    await rig.out_of_range(thermometer)
    async with RawClient() as raw:
        path = device_path(BOUND)
        pending = asyncio.create_task(raw.bluez(path, "org.bluez.Device1", "Connect"))
        await asyncio.sleep(0.1)
        stop = await raw.bluez(path, "org.bluez.Device1", "Disconnect")
        failed = await asyncio.wait_for(pending, 2)
        assert stop.message_type is MessageType.METHOD_RETURN
        assert failed.error_name == "org.bluez.Error.Failed"
        assert failed.body == ["Cancelled"]
        again = await raw.bluez(path, "org.bluez.Device1", "Disconnect")
        assert again.message_type is MessageType.METHOD_RETURN


async def test_connect_to_absent_device_fails_abort_by_local(sim: StartRig) -> None:
    """bluetoothd gives up after its connect timeout with le-connection-abort-by-local."""
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer, timing=Timing(connect_timeout_s=0.3))
    await find(BOUND)
    await rig.out_of_range(thermometer)
    async with RawClient() as raw:
        reply = await raw.bluez(device_path(BOUND), "org.bluez.Device1", "Connect")
    assert reply.error_name == "org.bluez.Error.Failed"
    assert reply.body == ["le-connection-abort-by-local"]


async def test_bleak_times_out_on_abort_by_local_without_a_connection(sim: StartRig) -> None:
    """Pins a bleak 3.1 behaviour: on le-connection-abort-by-local it waits for a Connected
    change that never comes when the device was absent, so connect() ends in TimeoutError at
    its own timeout, not in a BleakDBusError."""
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer, timing=Timing(connect_timeout_s=0.2))
    device = await find(BOUND)
    await rig.out_of_range(thermometer)
    with pytest.raises(TimeoutError):
        await BleakClient(device, timeout=1.0).connect()


async def test_unconnected_device_is_forgotten_after_discovery_stops(sim: StartRig) -> None:
    """Like bluetoothd's temporary devices: gone some time after the scan, and bleak then
    refuses to connect with a plain BleakError "not found"."""
    sim(Thermometer(BOUND), timing=Timing(forget_after_s=0.2))
    device = await find(BOUND)
    async with RawClient() as raw:
        await asyncio.sleep(0.1)
        assert await raw.prop(device_path(BOUND), "org.bluez.Device1", "Connected") is False
        await asyncio.sleep(0.3)
        gone = await raw.bluez(device_path(BOUND), "org.freedesktop.DBus.Properties", "Get",
                               "ss", ["org.bluez.Device1", "Connected"])
        assert gone.error_name == "org.freedesktop.DBus.Error.UnknownObject"
    with pytest.raises(BleakError, match="not found"):
        await BleakClient(device, timeout=1.0).connect()


async def test_a_second_connect_while_one_runs_is_in_progress(sim: StartRig) -> None:
    sim(Thermometer(BOUND), timing=Timing(connect_delay_s=0.2))
    await find(BOUND)
    async with RawClient() as raw:
        path = device_path(BOUND)
        first = asyncio.create_task(raw.bluez(path, "org.bluez.Device1", "Connect"))
        await asyncio.sleep(0.05)
        second = await raw.bluez(path, "org.bluez.Device1", "Connect")
        assert (await first).message_type is MessageType.METHOD_RETURN
        assert second.error_name == "org.bluez.Error.InProgress"
        await raw.bluez(path, "org.bluez.Device1", "Disconnect")


async def test_passive_scanning_is_refused_with_bleaks_own_explanation(sim: StartRig) -> None:
    """AdvertisementMonitorManager1 is not simulated: bleak turns the UnknownMethod reply into
    a BleakError naming the BlueZ requirement."""
    sim(Thermometer(BOUND))
    pattern = OrPattern(0, AdvertisementDataType.FLAGS, b"\x06")
    scanner = BleakScanner(scanning_mode="passive", bluez={"or_patterns": [pattern]})
    with pytest.raises(BleakError, match="passive scanning"):
        await scanner.start()
