"""Bonding through the gateway's own org.bluez.Agent1, and its watch on the org.bluez owner,
against the simulated BlueZ with the real bleak."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
from bleak import BleakClient
from bleak.exc import BleakDBusError
from structlog.testing import capture_logs

from drivers.ble.agent import PairingAgent
from drivers.ble.errors import PairingError
from drivers.ble.reconnect import Backoff
from drivers.ble.session import BleDeviceDriver
from rig.ble.peripheral import Pairing, PairingMethod
from rig.ble.profiles import BloodPressureMonitor, Thermometer
from tests.ble_session.conftest import running
from tests.ble_session.test_session import until
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, NEIGHBOUR, find

PASSKEY = 246810
FAST = Backoff(initial_s=0.05, max_s=0.3, stable_s=5.0)


@asynccontextmanager
async def agent_running(passkeys: dict[str, int | None]) -> AsyncIterator[PairingAgent]:
    agent = PairingAgent(passkeys)
    task = asyncio.create_task(agent.run(), name="ble.agent")
    try:
        async with asyncio.timeout(5):
            await agent.registered.wait()
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def monitor(address: str = BOUND) -> BloodPressureMonitor:
    return BloodPressureMonitor(address, pairing=Pairing(PairingMethod.PASSKEY_ENTRY, PASSKEY))


def bp_driver(passkey: int) -> BleDeviceDriver:
    return BleDeviceDriver(BOUND, "blood-pressure", passkey=passkey, backoff=FAST,
                           connect_timeout_s=2.0)


async def test_the_agent_types_the_bound_passkey_and_the_driver_gets_readings(
        sim: StartRig) -> None:
    bp = monitor()
    rig = sim(bp)
    async with agent_running({BOUND: PASSKEY}) as agent:
        driver = bp_driver(PASSKEY)
        async with running(driver) as collector:
            await until(lambda: driver.state == "connected")
            await rig.acall(lambda: bp.measure(128, 82, 64))
            got = await collector.take(1)
    assert agent.agent.asked == [("RequestPasskey", BOUND)]
    assert [m.value for m in got] == [None]  # the compound BP reading: values in components
    assert {c.value for c in got[0].components} >= {Decimal(128), Decimal(82)}
    assert driver.pairing_error is None


async def test_a_wrong_passkey_is_a_typed_pairing_error_and_the_driver_keeps_running(
        sim: StartRig) -> None:
    bp = monitor()
    sim(bp)
    with capture_logs() as logs:
        async with agent_running({BOUND: 111111}) as agent:
            driver = bp_driver(111111)
            async with running(driver) as collector:
                await until(lambda: driver.attempts >= 2, timeout_s=8.0)
                assert collector.task is not None
                assert not collector.task.done()  # still trying, nothing raised out of it
                assert await collector.quiet(0.1) == []
    assert driver.state == "pairing-failed"
    assert isinstance(driver.pairing_error, PairingError)
    assert "wrong passkey" in driver.pairing_error.one_line()
    assert "binding" in driver.pairing_error.hint
    assert agent.agent.asked[0] == ("RequestPasskey", BOUND)
    failed = [e for e in logs if e["event"] == "ble.pairing_failed"]
    assert failed
    assert failed[0]["device"] == f"btmac:{BOUND}"
    text = json.dumps(logs, default=str)
    assert "111111" not in text  # passkeys are never logged
    assert str(PASSKEY) not in text


async def test_a_device_not_in_the_binding_is_refused_by_the_agent(sim: StartRig) -> None:
    sim(monitor(NEIGHBOUR))
    async with agent_running({BOUND: PASSKEY}) as agent:
        with pytest.raises(BleakDBusError) as refused:
            await BleakClient(await find(NEIGHBOUR), pair=True, timeout=5).connect()
    assert refused.value.dbus_error in {"org.bluez.Error.AuthenticationFailed",
                                        "org.bluez.Error.AuthenticationRejected"}
    assert agent.agent.asked == [("RequestPasskey", NEIGHBOUR)]


async def test_a_bluetoothd_restart_reregisters_the_agent_and_reconnects_at_once(
        sim: StartRig) -> None:
    """The org.bluez owner watch, not the (here: 60 s) liveness probe, ends the stale link."""
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    async with agent_running({BOUND: None}) as agent:
        driver = BleDeviceDriver(BOUND, "thermometer", backoff=FAST, connect_timeout_s=2.0,
                                 liveness_s=60.0)
        agent.on_bluez_lost(driver.bluez_lost)
        async with running(driver) as collector:
            await until(lambda: driver.state == "connected")
            await rig.restart_bluetoothd(down_s=0.2)
            await until(lambda: driver.connections == 2, timeout_s=8.0)
            await until(lambda: agent.registrations == 2)
            await until(lambda: driver.state == "connected")
            await rig.acall(lambda: thermometer.measure("37.4"))
            [m] = await collector.take(1)
    assert agent.bluez_lost == 1
    assert m.value == Decimal("37.4")
