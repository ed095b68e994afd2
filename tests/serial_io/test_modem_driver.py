"""Modem driver against the simulated 3GPP modem: status with URCs, ERROR, a silent modem."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from drivers.serial.modem_driver import MODEM_LINE, ModemDriver, ModemDriverConfig
from drivers.serial.modem_status import AccessTechnology, RegistrationState
from drivers.serial.port import PortSpec
from rig.serial.modem import ModemSim, ModemSimState
from tests.serial_io.helpers import FAST_BACKOFF, Consumer, by_id, eventually

# Generous for a loaded machine (two suites at once): a 0.6-s answer deadline was missed there.
COMMAND_TIMEOUT_S = 2.0


def driver_for(link: Path, poll_s: float = 0.3) -> ModemDriver:
    return ModemDriver(
        ModemDriverConfig(
            PortSpec(str(link), line=MODEM_LINE),
            poll_interval_s=poll_s,
            command_timeout_s=COMMAND_TIMEOUT_S,
            backoff=FAST_BACKOFF,
        )
    )


async def test_status_is_parsed_from_the_modem_with_urcs_inside_and_between_answers(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Modem")
    state = ModemSimState(rssi=17, c5greg=None, urc_inside="RING")  # LTE only: C5GREG -> ERROR
    with ModemSim(link, state=state) as sim:
        # One polling round only: a second round would read the simulator's (unchanged)
        # registration back and could undo what the URC below says before the test looks.
        driver = driver_for(link, poll_s=3600.0)
        async with Consumer(driver) as consumer:
            await eventually(lambda: driver.rounds >= 1, what="a full polling round")
            status = driver.status()
            assert status.rssi_dbm == -79
            assert status.eps is not None
            assert status.eps.state is RegistrationState.REGISTERED_HOME
            assert status.eps.area_code == "1A2B"
            assert (status.operator, status.access_technology) == (
                "Sim Mobile",
                AccessTechnology.E_UTRAN,
            )
            assert status.pdp_addresses[0].addresses == ("10.64.12.7",)
            assert status.registered
            assert driver.state() == "answering"
            assert driver.failed_commands >= 1  # AT+C5GREG? answered ERROR, the round went on
            sim.urc("+CEREG: 2")  # the network drops us: a URC between commands says so
            await eventually(lambda: not driver.status().registered, what="the URC")
            assert driver.snapshot()["registered"] is False
            assert driver.health()[0].rssi_dbm == -79
        assert consumer.received == []  # a modem yields no measurements


async def test_a_silent_modem_is_not_answering_and_blocks_nothing(tmp_path: Path) -> None:
    link = by_id(tmp_path, "Modem")
    with ModemSim(link) as sim:
        driver = driver_for(link)
        lags: list[float] = []

        async def ticker() -> None:  # how late does a 20 ms sleep wake? (a blocked loop shows)
            while True:
                started = time.monotonic()
                await asyncio.sleep(0.02)
                lags.append(time.monotonic() - started - 0.02)

        tick = asyncio.create_task(ticker())
        async with Consumer(driver):
            await eventually(lambda: driver.rounds >= 1, what="a first full round")
            before = driver.status()  # (later rounds read the same values from the modem)
            sim.set(silent=True)
            await eventually(
                lambda: driver.state() == "not-answering",
                timeout_s=20.0,
                what="the modem to be reported as not answering",
            )
            started = time.monotonic()
            assert driver.status() == before  # the last known status is kept ...
            assert driver.snapshot()["state"] == "not-answering"  # ... and marked as such
            assert time.monotonic() - started < 0.01
            sim.set(silent=False)
            await eventually(
                lambda: driver.state() == "answering",
                timeout_s=20.0,
                what="the modem to answer again",
            )
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
        # A wait for the silent modem on the loop would show as a lag of COMMAND_TIMEOUT_S or more.
        assert max(lags) < COMMAND_TIMEOUT_S * 0.75


async def test_a_missing_sim_and_a_denied_registration_show_in_the_snapshot(tmp_path: Path) -> None:
    """+CME ERROR: 10 marks the SIM as not inserted until the modem registers again; a denied
    registration is named as such (what gatewayctl status explains to the technician)."""
    link = by_id(tmp_path, "Modem")
    with ModemSim(link, state=ModemSimState(sim="absent")) as sim:
        driver = driver_for(link)
        async with Consumer(driver):
            await eventually(lambda: driver.snapshot()["sim"] == "not-inserted", what="no SIM")
            assert driver.snapshot()["registered"] is False
            assert driver.snapshot()["registration"] == "not-registered"
            sim.set(sim="ready")
            await eventually(lambda: driver.snapshot()["registered"], what="registration")
            assert driver.snapshot()["sim"] is None
            assert driver.snapshot()["registration"] == "registered-home"
            sim.set(cereg=3, c5greg=3)
            await eventually(
                lambda: driver.snapshot()["registration"] == "denied", what="the denial"
            )
