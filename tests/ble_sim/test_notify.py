"""Indications, notifications and the backlog burst, received by the real bleak."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from bleak import BleakClient

from drivers.ble.device_info import BATTERY_LEVEL_UUID, BatteryLevel
from drivers.ble.thermometer import TEMPERATURE_MEASUREMENT_UUID, TemperatureMeasurement
from gateway.errors import DecodeError
from rig.ble.clock import DeviceClock
from rig.ble.gatt import uuid128
from rig.ble.profiles import Thermometer
from tests.ble.helpers import wall
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, Inbox, RawClient, device_path, find, uuid

TEMP = uuid(TEMPERATURE_MEASUREMENT_UUID)
CHAR_IFACE = "org.bluez.GattCharacteristic1"


async def test_indication_decodes_to_the_value_the_device_was_told_to_send(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    inbox = Inbox()
    async with BleakClient(await find(BOUND), timeout=5) as client:
        await client.start_notify(TEMP, inbox)
        sent = await rig.acall(lambda: thermometer.measure("37.2"))
        [(char, data)] = await inbox.take(1)
    assert char == TEMP
    received = TemperatureMeasurement.decode(data)
    assert received == sent
    assert received.temperature == Decimal("37.2")
    assert str(received.temperature) == "37.2"  # the precision survives


async def test_backlog_bursts_on_subscription_oldest_first_then_is_cleared(
        sim: StartRig) -> None:
    """A thermometer without RACP keeps readings taken while nobody listened and indicates
    them all once a collector subscribes; delivered readings leave the device."""
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    taken = await rig.acall(lambda: [thermometer.measure(v) for v in ("36.6", "36.8", "37.0")])
    inbox = Inbox()
    async with BleakClient(await find(BOUND), timeout=5) as client:
        await client.start_notify(TEMP, inbox)
        burst = await inbox.take(3)
        assert await inbox.quiet() == []
    assert [TemperatureMeasurement.decode(data) for _, data in burst] == taken
    assert await rig.acall(lambda: len(thermometer.stored[TEMPERATURE_MEASUREMENT_UUID])) == 0


async def test_burst_cut_by_a_disconnect_resumes_without_loss_or_duplicate(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)

    def prepare() -> list[TemperatureMeasurement]:
        thermometer.script.disconnect_after_records = 2
        return [thermometer.measure(Decimal(360 + i).scaleb(-1)) for i in range(5)]

    taken = await rig.acall(prepare)
    device = await find(BOUND)
    dropped = asyncio.Event()
    first, second = Inbox(), Inbox()
    client = BleakClient(device, disconnected_callback=lambda _c: dropped.set(), timeout=5)
    await client.connect()
    await client.start_notify(TEMP, first)
    await asyncio.wait_for(dropped.wait(), 2)
    assert not client.is_connected
    async with BleakClient(device, timeout=5) as again:
        await again.start_notify(TEMP, second)
        rest = await second.take(3)
    got = [*await first.quiet(0), *rest]
    assert [TemperatureMeasurement.decode(data) for _, data in got] == taken


async def test_notify_session_ends_when_its_dbus_connection_leaves(sim: StartRig) -> None:
    """Notify sessions belong to the D-Bus connection that started them (bleak opens one per
    connect): when it leaves the bus, Notifying drops and the device stops sending."""
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    await find(BOUND)
    path = device_path(BOUND)
    async with RawClient() as watcher:
        subscriber = RawClient()
        await subscriber.__aenter__()
        await subscriber.bluez(path, "org.bluez.Device1", "Connect")
        char_path = next(p for p in await _char_paths(watcher, path)
                         if p[1] == uuid128(TEMPERATURE_MEASUREMENT_UUID))[0]
        await subscriber.bluez(char_path, CHAR_IFACE, "StartNotify")
        assert await watcher.prop(char_path, CHAR_IFACE, "Notifying") is True
        assert await rig.acall(lambda: thermometer.link is not None and
                               thermometer.link.subscribed(TEMPERATURE_MEASUREMENT_UUID))
        await subscriber.__aexit__()
        for _ in range(50):
            if await watcher.prop(char_path, CHAR_IFACE, "Notifying") is False:
                break
            await asyncio.sleep(0.02)
        assert await watcher.prop(char_path, CHAR_IFACE, "Notifying") is False
        assert await watcher.prop(path, "org.bluez.Device1", "Connected") is True  # as BlueZ
        await watcher.bluez(path, "org.bluez.Device1", "Disconnect")


async def _char_paths(raw: RawClient, device: str) -> list[tuple[str, str]]:
    reply = await raw.bluez("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    return [(path, ifaces[CHAR_IFACE]["UUID"].value) for path, ifaces in reply.body[0].items()
            if path.startswith(device + "/") and CHAR_IFACE in ifaces]


async def test_reading_a_subscribed_characteristic_also_fires_the_callback(
        sim: StartRig) -> None:
    """As with BlueZ: a read sets Value, and bleak hands that to the notify callback too."""
    thermometer = Thermometer(BOUND, battery_percent=77)
    sim(thermometer)
    inbox = Inbox()
    async with BleakClient(await find(BOUND), timeout=5) as client:
        await client.start_notify(uuid(BATTERY_LEVEL_UUID), inbox)
        value = await client.read_gatt_char(uuid(BATTERY_LEVEL_UUID))
        [(_, echoed)] = await inbox.take(1)
    assert BatteryLevel.decode(bytes(value)) == BatteryLevel(77)
    assert echoed == bytes(value)


async def test_malformed_payload_reaches_the_collector_and_fails_to_decode(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    inbox = Inbox()
    async with BleakClient(await find(BOUND), timeout=5) as client:
        await client.start_notify(TEMP, inbox)

        def misbehave() -> TemperatureMeasurement:
            thermometer.script.malformed_next = 1
            thermometer.measure("38.0")
            return thermometer.measure("38.1")

        good = await rig.acall(misbehave)
        (_, short), (_, fine) = await inbox.take(2)
    with pytest.raises(DecodeError, match="too short"):
        TemperatureMeasurement.decode(short)
    assert TemperatureMeasurement.decode(fine) == good


async def test_device_clock_offset_zone_and_unset_clock_reach_the_timestamp(
        sim: StartRig) -> None:
    fixed = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
    skewed = Thermometer(BOUND, clock=DeviceClock(zone=timedelta(hours=2),
                                                  offset=timedelta(seconds=-90),
                                                  utc_now=lambda: fixed))
    unset = Thermometer(OTHER_ADDRESS, clock=DeviceClock(unset=True))
    rig = sim(skewed, unset)
    readings: dict[str, TemperatureMeasurement] = {}
    for device, address in ((skewed, BOUND), (unset, OTHER_ADDRESS)):
        inbox = Inbox()
        async with BleakClient(await find(address), timeout=5) as client:
            await client.start_notify(TEMP, inbox)
            await rig.acall(functools.partial(device.measure, "36.9"))
            [(_, data)] = await inbox.take(1)
        readings[address] = TemperatureMeasurement.decode(data)
    assert readings[BOUND].timestamp == wall(2024, 5, 1, 9, 58, 30)
    assert readings[OTHER_ADDRESS].timestamp is None  # year 0 on the wire


OTHER_ADDRESS = "A4:C1:38:00:00:03"
