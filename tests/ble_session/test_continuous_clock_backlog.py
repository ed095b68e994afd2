"""``BleDeviceDriver`` with continuous profiles, device clocks and replayed backlogs, against the
simulated BlueZ with the real bleak."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from structlog.testing import capture_logs

from drivers.ble.discovery import AdvertiserTally
from drivers.ble.session import BleDeviceDriver
from gateway.fhir.codes import MDC_CONC_GLU_ISF
from gateway.model import TimeQuality
from rig.ble.clock import DeviceClock
from rig.ble.profiles import HeartRateSensor, PulseOximeter, Thermometer
from rig.ble.stored import CgmSensor
from tests.ble_session.conftest import running
from tests.ble_session.test_session import FAST, until
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, NEIGHBOUR


def driver_for(profile: str, **kwargs: object) -> BleDeviceDriver:
    return BleDeviceDriver(BOUND, profile, backoff=FAST, connect_timeout_s=2.0,
                           **kwargs)  # type: ignore[arg-type]


async def test_heart_rate_streams_with_rr_intervals_and_resubscribes_after_a_reconnect(
        sim: StartRig) -> None:
    sensor = HeartRateSensor(BOUND, period_s=0.1)
    sensor.bpm, sensor.rr_intervals = 64, (1024, 960)
    next_door = HeartRateSensor(NEIGHBOUR, rssi=-90)
    rig = sim(sensor, next_door)
    tally = AdvertiserTally([BOUND])
    driver = driver_for("heart-rate", tally=tally)
    async with running(driver) as collector:
        first = await collector.take(3)
        await rig.out_of_range(sensor)
        await until(lambda: driver.state != "connected")
        # Our discovery runs its full length now: the neighbour's sensor is seen and counted.
        await until(lambda: NEIGHBOUR in tally.ignored, timeout_s=6.0)
        await collector.quiet(0.2)
        await rig.back_in_range(sensor)
        await until(lambda: driver.connections == 2, timeout_s=8.0)
        again = await collector.take(3, timeout_s=5.0)  # only if resubscribed
    assert [(m.value, m.unit, m.supplemental) for m in first] == [
        (Decimal(64), "/min", ""), (Decimal(1), "s", "rr[0]"),
        (Decimal("0.9375"), "s", "rr[1]")]
    assert [m.value for m in again] == [m.value for m in first]
    assert all(driver.streamed(m) for m in first + again)
    assert all(m.time_quality is TimeQuality.ABSENT for m in first)  # no device time: flagged
    [health] = driver.health()
    assert health.rssi_dbm is not None
    assert -62 <= health.rssi_dbm <= -58
    assert tally.ignored == {NEIGHBOUR}
    assert await rig.acall(lambda: list(next_door.sent)) == []  # never connected


async def test_a_continuous_oximeter_streams_and_still_delivers_spot_checks(
        sim: StartRig) -> None:
    oximeter = PulseOximeter(BOUND, continuous_period_s=0.1)
    oximeter.live = (Decimal(95), Decimal(81))
    rig = sim(oximeter)
    driver = driver_for("pulse-oximeter-continuous")
    async with running(driver) as collector:
        stream = await collector.take(2)
        await rig.acall(lambda: oximeter.measure(97, 66))
        later = await collector.take(8)
    assert [(m.value, m.unit) for m in stream] == [(Decimal(95), "%"), (Decimal(81), "/min")]
    assert all(driver.streamed(m) for m in stream)
    spot = [m for m in later if not driver.streamed(m)]
    assert sorted((m.value, m.unit) for m in spot) == [(Decimal(66), "/min"), (Decimal(97), "%")]
    assert all(m.device_time is not None for m in spot)


async def test_intermediate_temperatures_stream_before_the_final_reading(sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    driver = driver_for("thermometer")
    async with running(driver) as collector:
        await until(lambda: driver.state == "connected")
        await asyncio.sleep(0.2)  # subscriptions in place
        await rig.acall(lambda: thermometer.measure("37.3", intermediate=("36.1", "36.9")))
        got = await collector.take(3)
    assert [(m.value, m.supplemental, driver.streamed(m)) for m in got] == [
        (Decimal("36.1"), "intermediate", True), (Decimal("36.9"), "intermediate", True),
        (Decimal("37.3"), "", False)]


async def test_cgm_records_are_timed_from_the_session_start_and_none_is_lost_offline(
        sim: StartRig, tmp_path: Path) -> None:
    cgm = CgmSensor(BOUND)
    rig = sim(cgm)
    start = await rig.acall(lambda: cgm.session_start)
    await rig.acall(lambda: [cgm.measure(v) for v in (101, 104)])  # before we connect: stored
    state = tmp_path / "cgm.json"
    driver = driver_for("cgm", state_file=state)
    async with running(driver) as collector:
        stored = await collector.take(2)
        await driver.committed(stored)
        await rig.acall(lambda: cgm.measure(108))  # live notification
        [live] = await collector.take(1)
        await driver.committed([live])
        await rig.out_of_range(cgm)
        await until(lambda: driver.state != "connected")
        await rig.acall(lambda: cgm.measure(111))  # measured while out of reach
        await rig.back_in_range(cgm)
        [missed] = await collector.take(1, timeout_s=8.0)
        assert await collector.quiet(0.3) == []
    got = [*stored, live, missed]
    assert [(m.mdc_code, m.value, m.unit) for m in got] == [
        (MDC_CONC_GLU_ISF, Decimal(v), "mg/dL") for v in (101, 104, 108, 111)]
    assert [m.device_record_id for m in got] == [0, 5, 10, 15]
    assert start is not None
    assert [m.device_time.replace(tzinfo=None) for m in got if m.device_time] == [
        start + timedelta(minutes=k) for k in (0, 5, 10, 15)]
    assert driver.racp_requests == [0, 11]
    assert all(driver.streamed(m) for m in got)


async def test_a_drifting_settable_clock_is_set_and_older_readings_keep_their_old_clock(
        sim: StartRig) -> None:
    """The backlog reading was stamped by a clock 5 min slow: kept as the device said, flagged
    UNSYNCED; after we set the clock a new reading is SYNCED."""
    thermometer = Thermometer(BOUND, clock=DeviceClock(offset=timedelta(minutes=-5)))
    rig = sim(thermometer)
    old = await rig.acall(lambda: thermometer.measure("36.6"))
    driver = driver_for("thermometer")
    with capture_logs() as logs:
        async with running(driver) as collector:
            [backlog] = await collector.take(1)
            await until(lambda: driver.state == "connected")
            new = await rig.acall(lambda: thermometer.measure("36.7"))
            [fresh] = await collector.take(1)
    assert old.timestamp is not None
    assert new.timestamp is not None
    assert backlog.device_time == old.timestamp.replace(tzinfo=UTC)  # digits kept
    assert backlog.time_quality is TimeQuality.UNSYNCED
    assert fresh.device_time == new.timestamp.replace(tzinfo=UTC)
    assert fresh.time_quality is TimeQuality.SYNCED
    assert abs(fresh.device_time - datetime.now(UTC)) < timedelta(seconds=10)
    assert driver.clock is not None
    assert driver.clock.written
    [clock] = [e for e in logs if e["event"] == "ble.clock"]
    assert clock["clock_written"] is True
    assert -302 <= clock["offset_before_s"] <= -298
    assert abs(clock["offset_after_s"]) <= 2


async def test_a_drifting_clock_that_cannot_be_set_is_flagged_not_replaced(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND, clock=DeviceClock(offset=timedelta(minutes=-5)),
                              clock_settable=False)
    rig = sim(thermometer)
    driver = driver_for("thermometer")
    async with running(driver) as collector:
        await until(lambda: driver.state == "connected")
        sent = await rig.acall(lambda: thermometer.measure("36.6"))
        [m] = await collector.take(1)
    assert sent.timestamp is not None
    assert m.device_time == sent.timestamp.replace(tzinfo=UTC)  # five minutes slow, as sent
    assert m.time_quality is TimeQuality.UNSYNCED
    assert driver.clock is not None
    assert not driver.clock.written
    assert await rig.acall(thermometer.clock.error) == timedelta(minutes=-5)


async def test_an_unset_clock_gets_set_and_unset_stamps_are_never_invented(
        sim: StartRig) -> None:
    oximeter = PulseOximeter(BOUND, clock=DeviceClock(unset=True))
    rig = sim(oximeter)
    before = await rig.acall(lambda: oximeter.measure(96, 70))  # stamped "clock not set"
    driver = driver_for("pulse-oximeter")
    async with running(driver) as collector:
        old = await collector.take(2)
        await until(lambda: driver.state == "connected")
        after = await rig.acall(lambda: oximeter.measure(97, 71))
        new = await collector.take(2)
    assert before.timestamp is None
    assert {m.time_quality for m in old} == {TimeQuality.ABSENT}  # reception time, flagged
    assert {m.device_time for m in old} == {None}
    assert after.timestamp is not None
    assert {m.device_time for m in new} == {after.timestamp.replace(tzinfo=UTC)}
    assert {m.time_quality for m in new} == {TimeQuality.SYNCED}


async def test_a_replayed_backlog_is_uploaded_once_across_reconnects_and_restarts(
        sim: StartRig, tmp_path: Path) -> None:
    thermometer = Thermometer(BOUND, replay_backlog=True)
    rig = sim(thermometer)
    await rig.acall(lambda: [thermometer.measure(v) for v in ("36.5", "36.6", "36.7")])
    seen = tmp_path / "seen.json"
    driver = driver_for("thermometer", seen_file=seen)
    async with running(driver) as collector:
        first = await collector.take(3)
        await driver.committed(first)
        await rig.out_of_range(thermometer)
        await until(lambda: driver.state != "connected")
        await rig.acall(lambda: thermometer.measure("36.8"))
        await rig.back_in_range(thermometer)
        [new] = await collector.take(1, timeout_s=8.0)
        assert await collector.quiet(0.3) == []
        await driver.committed([new])
    assert [m.value for m in [*first, new]] == [Decimal(v) for v in ("36.5", "36.6", "36.7",
                                                                     "36.8")]
    assert driver.duplicates == 3
    assert [h.as_json(datetime.now(UTC))["duplicates"] for h in driver.health()] == [3]
    assert len(json.loads(seen.read_text())["seen"]) == 4
    assert "36.5" not in seen.read_text()  # digests only

    again = driver_for("thermometer", seen_file=seen)  # a gateway restart
    async with running(again) as collector:
        await until(lambda: again.duplicates == 4)
        assert await collector.quiet(0.3) == []
    sent = await rig.acall(lambda: len(thermometer.sent))
    assert sent == 3 + 4 + 4  # the device really did replay its memory each time
