"""A stopped bluetoothd is its own device state, not "failing": the fix is on the router."""

from __future__ import annotations

from rig.ble.profiles import Thermometer
from tests.ble_session.conftest import running
from tests.ble_session.test_session import thermometer_driver, until
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND


async def test_bluetoothd_gone_makes_the_device_bluez_unavailable_until_it_is_back(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    driver = thermometer_driver()
    async with running(driver):
        await until(lambda: driver.state == "connected")
        address = rig.address
        await rig.arun(lambda: rig.service.stop(crash=True))
        driver.bluez_lost()  # what the daemon's pairing agent does when org.bluez loses its owner
        await until(lambda: driver.state == "bluez-unavailable")
        assert driver.health()[0].state == "bluez-unavailable"
        await rig.arun(lambda: rig.service.start(address))
        await until(lambda: driver.state == "connected", timeout_s=10)
