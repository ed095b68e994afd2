"""The simulated Generic Health Sensor (a spirometer), driven by the real bleak: features, the
Elapsed Time clock, the control point, segmented live observations and RACP by uint32 record
number."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from bleak import BleakClient
from bleak.exc import BleakError

from drivers.ble import racp
from drivers.ble.elapsed_time import CURRENT_ELAPSED_TIME_UUID, read_elapsed_time
from drivers.ble.ghs import (
    LIVE_HEALTH_OBSERVATIONS_UUID,
    STORED_HEALTH_OBSERVATIONS_UUID,
    HealthObservation,
)
from drivers.ble.ghs_features import (
    GHS_CONTROL_POINT_UUID,
    HEALTH_SENSOR_FEATURES_UUID,
    ControlOpCode,
    ControlPoint,
    HealthSensorFeatures,
)
from drivers.ble.ghs_stream import ObservationStream
from drivers.ble.racp import RACP_UUID, OpCode, RacpRequest, ResponseCode, ResponseCodeResponse
from drivers.ble.wire import Reader
from rig.ble.clock import DeviceClock
from rig.ble.ghs import Spirometer
from rig.ble.standard import CURRENT_TIME_SERVICE_UUID
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, Inbox, find, uuid

LIVE, STORED = uuid(LIVE_HEALTH_OBSERVATIONS_UUID), uuid(STORED_HEALTH_OBSERVATIONS_UUID)
CONTROL, RACP = uuid(GHS_CONTROL_POINT_UUID), uuid(RACP_UUID)
FEV1, FVC, PEF, CURVE = 152586, 188928, 152584, 152708


def _is(char: str) -> Callable[[str, bytes], bool]:
    return lambda c, _d: c == char


async def test_features_clock_and_no_current_time(sim: StartRig) -> None:
    """The device lists what it measures, keeps its clock in Elapsed Time (UTC + zone), and has
    no Current Time Service for a collector to set."""
    device = Spirometer(BOUND, clock=DeviceClock(zone=timedelta(hours=1)))
    sim(device)
    async with BleakClient(await find(BOUND), timeout=5) as client:
        features = HealthSensorFeatures.decode(bytes(
            await client.read_gatt_char(uuid(HEALTH_SENSOR_FEATURES_UUID))))
        raw = bytes(await client.read_gatt_char(uuid(CURRENT_ELAPSED_TIME_UUID)))
        services = {s.uuid for s in client.services}
    assert features.observation_types == (FEV1, FVC, PEF, CURVE)
    stamp = read_elapsed_time(Reader(raw, CURRENT_ELAPSED_TIME_UUID), "now")
    now = stamp.device_time()
    assert now is not None
    assert now.utcoffset() == timedelta(hours=1)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    assert uuid(CURRENT_TIME_SERVICE_UUID) not in services


async def test_live_observations_only_after_start_and_reassemble(sim: StartRig) -> None:
    """Before Start Send Live Observations a manoeuvre is stored; after it (answered Success by
    indication), it is notified live in several segments that reassemble to the bundle sent."""
    device = Spirometer(BOUND)
    rig = sim(device)
    async with BleakClient(await find(BOUND), timeout=5) as client:
        inbox = Inbox()
        await client.start_notify(LIVE, inbox)
        await client.start_notify(CONTROL, inbox)
        await rig.acall(lambda: device.measure("2.90"))
        assert await inbox.quiet() == []  # not started: stored instead
        await client.write_gatt_char(
            CONTROL, ControlPoint(ControlOpCode.START_SEND_LIVE_OBSERVATIONS).encode(),
            response=True)
        (answer,) = await inbox.take(1)
        assert answer == (CONTROL, bytes((0x80,)))
        sent = await rig.acall(lambda: device.measure("3.21", "4.10", 455))
        segments = await inbox.until(lambda _c, d: d[0] & 0b10 == 0b10)  # the last segment
    assert len(segments) > 3
    assert all(char == LIVE for char, _ in segments)
    stream = ObservationStream(stored=False)
    out = [o for _, data in segments for o in stream.feed(data)]
    assert out == [sent]
    readings = sent.readings()
    assert [(r.mdc_code, r.value, r.unit) for r in readings[:3]] == [
        (FEV1, Decimal("3.21"), "L"), (FVC, Decimal("4.10"), "L"), (PEF, Decimal(455), "L/min")]
    assert readings[3].mdc_code == CURVE
    assert len(readings[3].samples) == 30
    assert await rig.acall(lambda: device.store.keys) == [1]


async def test_control_point_needs_indications_enabled(sim: StartRig) -> None:
    sim(Spirometer(BOUND))
    async with BleakClient(await find(BOUND), timeout=5) as client:
        with pytest.raises(BleakError):
            await client.write_gatt_char(
                CONTROL, ControlPoint(ControlOpCode.START_SEND_LIVE_OBSERVATIONS).encode(),
                response=True)


async def test_racp_reports_from_a_uint32_record_number(sim: StartRig) -> None:
    """Stored observations carry their uint32 record number first; ">= N" with a 4-octet
    operand selects exactly N onwards, closed by Success."""
    device = Spirometer(BOUND, first_record=0x0001_0000 - 2)  # crosses the 16-bit boundary
    rig = sim(device)
    stored = await rig.acall(lambda: device.fill(4))
    async with BleakClient(await find(BOUND), timeout=5) as client:
        inbox = Inbox()
        await client.start_notify(STORED, inbox)
        await client.start_notify(RACP, inbox)
        await client.write_gatt_char(
            RACP, RacpRequest.report_from(0x0001_0000, octets=4).encode(), response=True)
        *records, (char, closing) = await inbox.until(_is(RACP))
    assert char == RACP
    assert racp.decode(closing, octets=4) == ResponseCodeResponse(
        OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS)
    stream = ObservationStream(stored=True)
    got = [o for _, data in records for o in stream.feed(data)]
    assert all(isinstance(o, HealthObservation) for o in got)
    assert [o.record_number for o in got if isinstance(o, HealthObservation)] == [
        0x0001_0000, 0x0001_0001]
    assert got == stored[2:]
