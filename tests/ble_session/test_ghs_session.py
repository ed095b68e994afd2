"""``BleDeviceDriver`` with the ``generic-health-sensor`` profile against the simulated
spirometer, driven by the real bleak: stored observations by RACP (uint32 record numbers) after
each connect, live observations once started, the Elapsed Time clock, and unusable observations
reported, never dropped."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from structlog.testing import capture_logs

from drivers.ble.elapsed_time import FLAG_TICK_COUNTER, ElapsedTime
from drivers.ble.ghs_values import (
    FLAG_TIME_STAMP,
    FLAG_TYPE,
    Bundle,
    NumericValue,
    Observation,
    ObservationHeader,
    StringValue,
)
from drivers.ble.session import BleDeviceDriver
from gateway.gaps import UnusableReading
from gateway.model import Measurement, TimeQuality
from rig.ble.clock import DeviceClock
from rig.ble.ghs import Spirometer
from tests.ble_session.conftest import running
from tests.ble_session.test_session import FAST, until
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND

FEV1, FVC, PEF, CURVE = 152586, 188928, 152584, 152708
PER_MANOEUVRE = 4  # FEV1, FVC, PEF, the curve


class Reported:
    """A ``report_unusable`` seam that records what it was handed (always durable)."""

    def __init__(self) -> None:
        self.readings: list[UnusableReading] = []

    async def __call__(self, reading: UnusableReading) -> bool:
        self.readings.append(reading)
        return True


def ghs_driver(state: Path, reported: Reported | None = None) -> BleDeviceDriver:
    return BleDeviceDriver(BOUND, "generic-health-sensor", state_file=state, backoff=FAST,
                           connect_timeout_s=2.0, report_unusable=reported)


def records(got: list[Measurement]) -> list[int | None]:
    return [m.device_record_id for m in got]


async def test_stored_then_live_observations_with_the_elapsed_time_clock(
        sim: StartRig, tmp_path: Path) -> None:
    """After connecting, the stored manoeuvres come by RACP (from record 0: GHS numbers may
    start there), then a new manoeuvre comes live; the device's Elapsed Time (UTC with its
    zone) is the coincident timestamp, so the times are SYNCED."""
    device = Spirometer(BOUND, first_record=0, clock=DeviceClock(zone=timedelta(hours=1)))
    rig = sim(device)
    await rig.acall(lambda: device.fill(2))
    driver = ghs_driver(tmp_path / "ghs.json")
    with capture_logs() as logs:
        async with running(driver) as collector:
            stored = await collector.take(2 * PER_MANOEUVRE)
            await until(lambda: rig.call(lambda: device.live_enabled))
            await rig.acall(lambda: device.measure("3.33", "4.20", 470))
            live = await collector.take(PER_MANOEUVRE)
            assert await collector.quiet(0.2) == []
    assert driver.racp_requests == [0]
    assert records(stored) == [0] * PER_MANOEUVRE + [1] * PER_MANOEUVRE
    assert [m.mdc_code for m in stored[:PER_MANOEUVRE]] == [FEV1, FVC, PEF, CURVE]
    assert records(live) == [None] * PER_MANOEUVRE
    assert [(m.mdc_code, m.value, m.unit) for m in live[:3]] == [
        (FEV1, Decimal("3.33"), "L"), (FVC, Decimal("4.20"), "L"), (PEF, Decimal(470), "L/min")]
    curve = live[3]
    assert curve.value is None
    assert len(curve.samples) == 30
    assert curve.samples[-1] == Decimal("4.20")
    assert curve.sample_period_ms == Decimal(100)
    for m in stored + live:
        assert m.time_quality is TimeQuality.SYNCED
        assert m.device_time is not None
        assert m.device_time.utcoffset() == timedelta(hours=1)
        assert m.source == "ble.generic_health_sensor"
    events = {e["event"] for e in logs}
    assert {"ble.ghs_features", "ble.ghs_control"} <= events
    assert not any("3.33" in json.dumps(e, default=str) for e in logs)  # no values in logs


async def test_cursor_passes_a_record_only_when_all_its_readings_are_durable(
        sim: StartRig, tmp_path: Path) -> None:
    """A record carries four readings; committing part of it keeps the cursor before it, so a
    reconnect asks for it again (uint32 operand past 0xFFFF) and nothing is handed twice."""
    first = 0xFFFF  # record numbers cross the 16-bit boundary
    device = Spirometer(BOUND, first_record=first)
    rig = sim(device)
    await rig.acall(lambda: device.fill(3))
    state = tmp_path / "ghs.json"
    driver = ghs_driver(state)
    async with running(driver) as collector:
        got = await collector.take(3 * PER_MANOEUVRE)
        await driver.committed(got[:PER_MANOEUVRE + 2])  # record 0xFFFF whole, 0x10000 half
        assert json.loads(state.read_text()) == {"last_sequence": first}
        await rig.out_of_range(device)
        await until(lambda: driver.state != "connected")
        await rig.back_in_range(device)
        await until(lambda: len(driver.racp_requests) == 2)
        assert await collector.quiet(0.3) == []  # still with the pipeline: not handed again
        await driver.committed(got[PER_MANOEUVRE + 2:])
    assert driver.racp_requests == [0, first + 1]  # nothing stored yet: from record 0
    assert json.loads(state.read_text()) == {"last_sequence": first + 2}

    again = ghs_driver(state)  # a gateway restart: the cursor comes from the file
    async with running(again) as collector:
        await until(lambda: again.racp_requests == [first + 3])
        assert await collector.quiet(0.3) == []


async def test_unusable_and_malformed_observations_are_reported_not_dropped(
        sim: StartRig, tmp_path: Path) -> None:
    """A numeric part in a unit we cannot map and a body cut short each become an
    UnusableReading for a gap record; the readings around them (a text among them) arrive."""
    device = Spirometer(BOUND, first_record=1)
    rig = sim(device)
    tick = ElapsedTime(FLAG_TICK_COUNTER, 1234)

    def store() -> None:
        device.fill(1)
        device.observe(Bundle(ObservationHeader(FLAG_TIME_STAMP, time_stamp=tick), (
            Observation(ObservationHeader(FLAG_TYPE, FEV1), NumericValue(1600, Decimal("2.5"))),
            Observation(ObservationHeader(FLAG_TYPE, FVC), NumericValue(9, Decimal("4.5"))),
            Observation(ObservationHeader(FLAG_TYPE, 0x0002_F001), StringValue("effort poor")),
        )))
        device.script.malformed_next = 1
        device.fill(1)  # record 3, one octet short
        device.fill(1)  # record 4

    await rig.acall(store)
    reported = Reported()
    driver = ghs_driver(tmp_path / "ghs.json", reported)
    async with running(driver) as collector:
        got = await collector.take(2 * PER_MANOEUVRE + 2)
        assert await collector.quiet(0.2) == []
    assert records(got) == [1] * PER_MANOEUVRE + [2, 2] + [4] * PER_MANOEUVRE
    tick_reading, note = got[PER_MANOEUVRE:PER_MANOEUVRE + 2]
    assert tick_reading.device_time is None  # a tick counter is no wall-clock time
    assert note.text == "effort poor"
    assert [r.error.split(":")[0] for r in reported.readings] == [
        "UnusableObservation", "DecodeError"]
    assert all(r.source == "ble.generic_health_sensor" and r.raw for r in reported.readings)
    assert "4.5" not in repr([r.error for r in reported.readings])  # no value in the reason
    assert driver.malformed == 1
