"""Alarms first: a device's alarm condition goes out on Lane.ALARM at once, sealed alone, never
inside a stream chunk or a spot batch (issue 17, item 1)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from buffer.outbox import Outbox
from drivers.serial.astm_records import parse_messages
from drivers.serial.astm_results import lab_results
from drivers.serial.oximeter_driver import OximeterDriver
from drivers.serial.oximetry import OximetryFlag, to_measurements
from drivers.serial.reducer import OximetryReading, Reason
from gateway.errors import ModelError
from gateway.model import IN_ALARM_BIT, DeviceId, DeviceIdKind, MeasurementStatus
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.fakes import FakeDriver
from gateway.pipeline.ingest import Lane
from gateway.pipeline.pump import pump
from tests.factories import RECEIVED_AT, make_measurement
from tests.test_ingest import make_writer

# --- which readings are alarms --------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "alarm"),
    [
        ((), False),
        (("N",), False),
        (("U",), False),  # a significant change up is news, not an alarm condition
        (("H",), True),
        (("L",), True),
        (("HH",), True),
        (("LL",), True),
        (("A",), True),
        (("AA",), True),
        ((">",), True),
        (("<",), True),
        (("N", "HH"), True),
    ],
)
def test_abnormal_and_critical_flags_make_an_alarm(flags: tuple[str, ...], alarm: bool) -> None:
    assert make_measurement(interpretation=flags).alarm is alarm


def test_the_11073_in_alarm_status_bit_makes_an_alarm() -> None:
    assert make_measurement(status=MeasurementStatus(IN_ALARM_BIT)).alarm
    assert not make_measurement(status=MeasurementStatus.QUESTIONABLE).alarm


def test_an_interpretation_code_outside_the_v3_set_is_refused() -> None:
    with pytest.raises(ModelError, match="interpretation"):
        make_measurement(interpretation=("HIGH",))


HEADER = "H|\\^&|||Afinion 2^1.10^AS0012345|||||||P|LIS2-A2|20240301102000\r"


def _astm(flags: str) -> list[tuple[tuple[str, ...], bool]]:
    text = (
        HEADER + "P|1\rO|1|S-1||^^^CRP|R\r"
        f"R|1|^^^CRP|152.0|mg/L|0 to 10|{flags}||F||OP1|20240301101200|20240301101500|AS0012345\r"
        "L|1|N\r"
    )
    (msg,), errors = parse_messages(text)
    assert errors == []
    batch = lab_results(msg, received_at=RECEIVED_AT)
    return [(r.measurement.interpretation, r.measurement.alarm) for r in batch.results]


def test_an_analysers_critical_flag_travels_with_the_result_and_makes_it_an_alarm() -> None:
    assert _astm("HH") == [(("HH",), True)]
    assert _astm("H") == [(("H",), True)]
    assert _astm("N") == [(("N",), False)]
    assert _astm("") == [((), False)]


def test_an_unknown_abnormal_flag_is_a_warning_and_is_not_invented_into_an_interpretation() -> None:
    (msg,), _ = parse_messages(
        HEADER + "P|1\rO|1|S-1||^^^CRP|R\r"
        "R|1|^^^CRP|5.0|mg/L|0 to 10|Q||F||OP1|20240301101200|20240301101500|AS0012345\r"
        "L|1|N\r"
    )
    batch = lab_results(msg, received_at=RECEIVED_AT)
    (result,) = batch.results
    assert result.measurement.interpretation == ()
    assert any("abnormal flag" in w.message for w in batch.warnings)


@pytest.mark.parametrize(
    ("reason", "flags", "lane"),
    [
        (Reason.INTERVAL, OximetryFlag.NONE, Lane.STREAM),
        (Reason.DESATURATION, OximetryFlag.NONE, Lane.ALARM),
        (Reason.DESATURATION_DEEPER, OximetryFlag.NONE, Lane.ALARM),
        (Reason.DESATURATION_END, OximetryFlag.NONE, Lane.ALARM),
        (Reason.STATUS_CHANGE, OximetryFlag.SENSOR_OFF, Lane.ALARM),
        (Reason.STATUS_CHANGE, OximetryFlag.OUT_OF_TRACK, Lane.ALARM),
        (Reason.STATUS_CHANGE, OximetryFlag.SENSOR_ALARM, Lane.ALARM),
    ],
)
def test_an_oximeters_event_readings_are_alarms_and_its_interval_readings_the_stream(
    reason: Reason, flags: OximetryFlag, lane: Lane
) -> None:
    reading = OximetryReading(12.0, 84, 97, flags, reason)
    pair = to_measurements(
        reading,
        device=DeviceId(DeviceIdKind.SERIAL, "NONIN-1"),
        received_at=RECEIVED_AT,
        source="serial.nonin",
        raw=b"",
        supplemental=reason.value,
    )
    assert {OximeterDriver.lane_of(m) for m in pair} == {lane}


# --- how they travel --------------------------------------------------------------------------


async def test_alarms_are_sealed_one_per_record_and_go_out_before_the_open_stream_chunk(
    tmp_path: Path,
) -> None:
    """Stream readings wait in their chunk; two alarms in the same commit round each get a record
    of their own at once, and the first lease the uplink takes is the alarm lane."""
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(outbox, db, chunk_s=30.0)
    task = asyncio.create_task(writer.run())
    try:
        stream = [
            await writer.enqueue(
                [make_measurement(device_record_id=i, received_at=RECEIVED_AT + timedelta(
                    seconds=i))],
                Lane.STREAM,
            )
            for i in range(5)
        ]
        first = await writer.enqueue([make_measurement(interpretation=("HH",))], Lane.ALARM)
        second = await writer.enqueue(
            [make_measurement(value=Decimal("39.9"), interpretation=("H",))], Lane.ALARM
        )
        seqs = await asyncio.wait_for(asyncio.gather(first, second), 10.0)
        assert len(set(seqs)) == 2  # sealed alone, not together
        assert not any(f.done() for f in stream)  # the chunk is still open
        lease = await db.run(outbox.lease, 100, 10**9)
        assert [(r.lane, r.seq) for r in lease] == [(int(Lane.ALARM), s) for s in sorted(seqs)]
    finally:
        task.cancel()
        db.shutdown()


async def test_the_pump_sends_a_flagged_reading_on_the_alarm_lane_whatever_the_drivers_lane(
    tmp_path: Path,
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(outbox, db)
    task = asyncio.create_task(writer.run())
    try:
        normal = make_measurement(device_record_id=1)
        critical = make_measurement(device_record_id=2, interpretation=("LL",))
        driver = FakeDriver([normal, critical])
        await asyncio.wait_for(pump(driver, writer, Lane.SPOT), 10.0)
        assert driver.confirmed == [normal, critical]
        leases = [await db.run(outbox.lease, 100, 10**9) for _ in range(3)]
        # The critical reading came second but leaves first, on its own lane.
        assert [[r.lane for r in lease] for lease in leases] == [
            [int(Lane.ALARM)],
            [int(Lane.SPOT)],
            [],
        ]
    finally:
        task.cancel()
        db.shutdown()
