"""``BleDeviceDriver`` against the simulated BlueZ, driven by the real bleak."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from pathlib import Path

from structlog.testing import capture_logs

from drivers.ble.glucose import GLUCOSE_MEASUREMENT_UUID, GlucoseMeasurement
from drivers.ble.reconnect import Backoff
from drivers.ble.session import BleDeviceDriver
from drivers.ble.thermometer import TemperatureType, mdc_for_site
from gateway.model import DeviceId, DeviceIdKind, TimeQuality
from rig.ble.profiles import Thermometer
from rig.ble.stored import GlucoseMeter
from tests.ble_session.conftest import running
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, NEIGHBOUR

FAST = Backoff(initial_s=0.05, max_s=0.3, stable_s=5.0)


def thermometer_driver() -> BleDeviceDriver:
    return BleDeviceDriver(BOUND, "thermometer", expected_interval_s=60, backoff=FAST,
                           connect_timeout_s=2.0)


def glucose_driver(state: Path) -> BleDeviceDriver:
    return BleDeviceDriver(BOUND, "glucose", state_file=state, backoff=FAST,
                           connect_timeout_s=2.0)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a plain attribute of the driver (bounded)."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_thermometer_reading_arrives_as_a_measurement_and_the_neighbour_is_ignored(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    next_door = Thermometer(NEIGHBOUR, name="Thermometer (neighbour)", rssi=-85)
    rig = sim(thermometer, next_door)
    driver = thermometer_driver()
    async with running(driver) as collector:
        await until(lambda: driver.state == "connected")
        sent = await rig.acall(lambda: thermometer.measure("37.2"))
        await rig.acall(lambda: next_door.measure("38.5"))
        [m] = await collector.take(1)
        assert await collector.quiet(0.3) == []
    assert m.device == DeviceId(DeviceIdKind.BTMAC, BOUND)
    site = mdc_for_site(TemperatureType.MOUTH)
    assert (m.mdc_code, m.value, m.unit) == (site, Decimal("37.2"), "Cel")
    assert sent.timestamp is not None
    assert m.device_time == sent.timestamp.replace(tzinfo=UTC)  # the device's own timestamp
    assert m.time_quality is TimeQuality.SYNCED
    [health] = driver.health()
    assert (health.device, health.readings) == (str(m.device), 1)
    assert health.last_seen is not None
    assert health.battery_pct == 90
    assert await rig.acall(lambda: list(next_door.sent)) == []  # never connected
    assert await rig.acall(lambda: len(next_door.stored.get(0x2A1C, ()))) == 1


async def test_reconnects_after_out_of_range_and_receives_the_next_reading(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    driver = thermometer_driver()
    async with running(driver) as collector:
        await until(lambda: driver.state == "connected")
        await rig.acall(lambda: thermometer.measure("36.8"))
        [first] = await collector.take(1)
        await rig.out_of_range(thermometer)
        await until(lambda: driver.state != "connected")
        await asyncio.sleep(0.3)  # a few attempts against the absent device
        assert driver.state in {"connecting", "out-of-range"}
        await rig.acall(lambda: thermometer.measure("37.9"))  # kept on the device meanwhile
        await rig.back_in_range(thermometer)
        [second] = await collector.take(1, timeout_s=8.0)
        assert driver.state == "connected"
    assert (first.value, second.value) == (Decimal("36.8"), Decimal("37.9"))
    assert driver.connections == 2


async def test_a_malformed_payload_is_logged_without_values_and_skipped(sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    driver = thermometer_driver()
    with capture_logs() as logs:
        async with running(driver) as collector:
            await until(lambda: driver.state == "connected")

            def two() -> None:
                thermometer.script.malformed_next = 1
                thermometer.measure("37.0")
                thermometer.measure("37.1")

            await rig.acall(two)
            [m] = await collector.take(1)
    assert m.value == Decimal("37.1")
    assert driver.malformed == 1
    [bad] = [e for e in logs if e["event"] == "ble.malformed_payload"]
    assert bad["uuid"] == "2a1c"
    assert "37" not in json.dumps(logs, default=str)


def sequences_sent(meter: GlucoseMeter) -> list[int]:
    return [GlucoseMeasurement.decode(p).sequence_number for u, p in meter.sent
            if u == GLUCOSE_MEASUREMENT_UUID]


async def test_glucose_stored_records_are_all_received(sim: StartRig, tmp_path: Path) -> None:
    meter = GlucoseMeter(BOUND)
    rig = sim(meter)
    await rig.acall(lambda: meter.fill(5))
    driver = glucose_driver(tmp_path / "state.json")
    async with running(driver) as collector:
        got = await collector.take(5)
        assert await collector.quiet(0.2) == []
    assert [m.device_record_id for m in got] == [1, 2, 3, 4, 5]
    assert [m.value for m in got] == [Decimal(v) for v in range(90, 95)]
    assert {m.unit for m in got} == {"mg/dL"}
    assert driver.racp_requests == [1]
    assert not (tmp_path / "state.json").exists()  # nothing committed, nothing written


async def test_glucose_resumes_after_the_last_committed_record(
        sim: StartRig, tmp_path: Path) -> None:
    meter = GlucoseMeter(BOUND)
    rig = sim(meter)
    await rig.acall(lambda: meter.fill(5))
    state = tmp_path / "state.json"
    driver = glucose_driver(state)
    async with running(driver) as collector:
        first = await collector.take(5)
        await driver.committed(first[:3])
        assert json.loads(state.read_text()) == {"last_sequence": 3}
        await rig.out_of_range(meter)
        await until(lambda: driver.state != "connected")

        def more() -> None:
            meter.fill(5)  # 6..10
            meter.script.disconnect_after_records = 3  # the link drops after 4, 5, 6

        await rig.acall(more)
        await rig.back_in_range(meter)
        rest = await collector.take(5, timeout_s=10.0)
        assert await collector.quiet(0.3) == []
        await driver.committed(rest)
    got = [m.device_record_id for m in first + rest]
    assert got == list(range(1, 11))  # no loss, no duplicate
    assert driver.racp_requests == [1, 4, 4]
    assert driver.connections == 3
    assert await rig.acall(lambda: sequences_sent(meter)) == [
        1, 2, 3, 4, 5, 4, 5, 6, 4, 5, 6, 7, 8, 9, 10]
    assert json.loads(state.read_text()) == {"last_sequence": 10}

    again = glucose_driver(state)  # a gateway restart: the cursor comes from the file
    async with running(again) as collector:
        await until(lambda: again.racp_requests == [11])
        assert await collector.quiet(0.3) == []


async def test_an_absent_device_is_retried_with_backoff_not_in_a_busy_loop(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    await rig.out_of_range(thermometer)
    driver = BleDeviceDriver(BOUND, "thermometer", backoff=Backoff(0.2, 1.0, 5.0),
                             connect_timeout_s=0.3)
    async with running(driver) as collector:
        await asyncio.sleep(2.0)
        assert driver.state in {"connecting", "out-of-range"}
        assert 2 <= driver.attempts <= 6  # each attempt: a scan of 0.3 s plus >= 0.2 s waiting
        assert driver.connections == 0
        await rig.back_in_range(thermometer)
        await until(lambda: driver.state == "connected")
        await rig.acall(lambda: thermometer.measure("36.9"))
        [m] = await collector.take(1)
    assert m.value == Decimal("36.9")


async def test_a_bluetoothd_restart_is_noticed_by_the_liveness_probe(sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    driver = BleDeviceDriver(BOUND, "thermometer", backoff=FAST, connect_timeout_s=2.0,
                             liveness_s=0.3)
    async with running(driver) as collector:
        await until(lambda: driver.state == "connected")
        await rig.restart_bluetoothd(down_s=0.1)
        await until(lambda: driver.connections == 2, timeout_s=8.0)
        await until(lambda: driver.state == "connected")
        await rig.acall(lambda: thermometer.measure("37.4"))
        [m] = await collector.take(1)
    assert m.value == Decimal("37.4")
