"""Every virtual device sends what its profile's decoder reads back (real bleak in between)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from bleak import BleakClient
from bleak.exc import BleakGATTProtocolError, BleakGATTProtocolErrorCode

from drivers.ble.cgm import (
    CGM_MEASUREMENT_UUID,
    CGM_SESSION_START_TIME_UUID,
    CgmMeasurement,
    CgmSessionStartTime,
)
from drivers.ble.gatt_time import CURRENT_TIME_UUID, CurrentTime
from drivers.ble.heart_rate import HEART_RATE_MEASUREMENT_UUID, HeartRateMeasurement
from drivers.ble.pulse_oximeter import (
    CONTINUOUS_UUID,
    SPOT_CHECK_UUID,
    ContinuousMeasurement,
    SpotCheckMeasurement,
)
from drivers.ble.racp import RACP_UUID, RacpRequest
from drivers.ble.weight_scale import WEIGHT_MEASUREMENT_UUID, WeightMeasurement
from rig.ble.clock import DeviceClock
from rig.ble.profiles import HeartRateSensor, PulseOximeter, Thermometer, WeightScale
from rig.ble.stored import CgmSensor
from tests.ble.helpers import wall
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, Inbox, find, uuid

FIXED = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)


async def test_weight_scale_indicates_weight_with_bmi_and_height(sim: StartRig) -> None:
    scale = WeightScale(BOUND)
    rig = sim(scale)
    inbox = Inbox()
    async with BleakClient(await find(BOUND), timeout=5) as client:
        await client.start_notify(uuid(WEIGHT_MEASUREMENT_UUID), inbox)
        sent = await rig.acall(lambda: scale.measure("72.4", bmi="23.1", height_m="1.77"))
        [(_, data)] = await inbox.take(1)
    received = WeightMeasurement.decode(data)
    assert received == sent
    assert received.weight == Decimal("72.400")
    assert received.bmi == Decimal("23.1")


async def test_pulse_oximeter_spot_check_and_continuous_stream(sim: StartRig) -> None:
    """Spot-checks carry the clock-not-set flag when the clock is unset; the continuous
    characteristic notifies the live values once per period while subscribed."""
    oximeter = PulseOximeter(BOUND, continuous_period_s=0.05, clock=DeviceClock(unset=True))
    rig = sim(oximeter)
    spot, stream = Inbox(), Inbox()
    async with BleakClient(await find(BOUND), timeout=5) as client:
        await client.start_notify(uuid(SPOT_CHECK_UUID), spot)
        sent = await rig.acall(lambda: oximeter.measure(96, 71))
        [(_, data)] = await spot.take(1)
        await client.start_notify(uuid(CONTINUOUS_UUID), stream)
        live = await stream.take(3)
        await client.stop_notify(uuid(CONTINUOUS_UUID))
        await stream.quiet(0.1)  # one may have been in flight
        assert await stream.quiet(0.15) == []
    received = SpotCheckMeasurement.decode(data)
    assert received == sent
    assert received.clock_not_set
    assert received.timestamp is None
    assert {ContinuousMeasurement.decode(d) for _, d in live} == {
        ContinuousMeasurement(0, Decimal(97), Decimal(72))}


async def test_heart_rate_notifies_while_subscribed(sim: StartRig) -> None:
    sensor = HeartRateSensor(BOUND, period_s=0.05)
    rig = sim(sensor)
    inbox = Inbox()

    def set_rate() -> None:
        sensor.bpm = 64

    await rig.acall(set_rate)
    async with BleakClient(await find(BOUND), timeout=5) as client:
        await client.start_notify(uuid(HEART_RATE_MEASUREMENT_UUID), inbox)
        [(_, data)] = await inbox.take(1)
    measurement = HeartRateMeasurement.decode(data)
    assert measurement.heart_rate_bpm == 64
    assert measurement.rr_intervals == (853,)
    assert not measurement.contact_lost


async def test_cgm_live_records_session_start_and_racp_by_time_offset(sim: StartRig) -> None:
    sensor = CgmSensor(BOUND, interval_min=5, clock=DeviceClock(utc_now=lambda: FIXED))
    rig = sim(sensor)
    await rig.acall(lambda: [sensor.measure(100 + i) for i in range(4)])  # offsets 0..15
    live, stored = Inbox(), Inbox()
    async with BleakClient(await find(BOUND), timeout=5) as client:
        start = CgmSessionStartTime.decode(
            bytes(await client.read_gatt_char(uuid(CGM_SESSION_START_TIME_UUID))))
        await client.start_notify(uuid(CGM_MEASUREMENT_UUID), live)
        record = await rig.acall(lambda: sensor.measure(140))
        [(_, data)] = await live.take(1)
        await client.stop_notify(uuid(CGM_MEASUREMENT_UUID))
        await client.start_notify(uuid(CGM_MEASUREMENT_UUID), stored)
        await client.start_notify(uuid(RACP_UUID), stored)
        await client.write_gatt_char(uuid(RACP_UUID), RacpRequest.report_from(10).encode(),
                                     response=True)
        items = await stored.until(lambda char, _d: char == uuid(RACP_UUID))
    assert start.start == FIXED.replace(tzinfo=None)
    assert CgmMeasurement.decode(data).records == (record,)
    offsets = [CgmMeasurement.decode(d).records[0].time_offset_min for _, d in items[:-1]]
    assert offsets == [10, 15, 20]


async def test_current_time_reads_the_device_clock_and_a_write_sets_it(sim: StartRig) -> None:
    drifting = Thermometer(BOUND, clock=DeviceClock(zone=timedelta(hours=1),
                                                    offset=timedelta(minutes=7),
                                                    utc_now=lambda: FIXED))
    rig = sim(drifting)
    async with BleakClient(await find(BOUND), timeout=5) as client:
        before = CurrentTime.decode(bytes(await client.read_gatt_char(uuid(CURRENT_TIME_UUID))))
        corrected = CurrentTime.from_datetime(wall(2024, 5, 1, 9, 0, 0))
        await client.write_gatt_char(uuid(CURRENT_TIME_UUID), corrected.encode(), response=True)
        after = CurrentTime.decode(bytes(await client.read_gatt_char(uuid(CURRENT_TIME_UUID))))
    assert before.local_time == wall(2024, 5, 1, 9, 7, 0)
    assert after.local_time == wall(2024, 5, 1, 9, 0, 0)
    assert await rig.acall(drifting.clock.error) == timedelta(0)


async def test_a_clock_that_cannot_be_set_refuses_the_write(sim: StartRig) -> None:
    sim(Thermometer(BOUND, clock_settable=False))
    async with BleakClient(await find(BOUND), timeout=5) as client:
        now = CurrentTime.from_datetime(wall(2024, 5, 1, 9, 0, 0))
        with pytest.raises(BleakGATTProtocolError) as refused:
            await client.write_gatt_char(uuid(CURRENT_TIME_UUID), now.encode(), response=True)
    assert refused.value.code == BleakGATTProtocolErrorCode.REQUEST_NOT_SUPPORTED


async def test_scheduled_readings_arrive_on_time(sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    inbox = Inbox()
    async with BleakClient(await find(BOUND), timeout=5) as client:
        await client.start_notify(uuid(0x2A1C), inbox)
        await rig.acall(lambda: thermometer.every(0.05, lambda: thermometer.measure("36.5"),
                                                  count=3))
        got = await inbox.take(3, timeout_s=2)
        assert await inbox.quiet(0.15) == []
    assert len(got) == 3
    await asyncio.sleep(0)
