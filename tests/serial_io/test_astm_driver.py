"""ASTM analyser driver against the simulated analyser, over real pyserial on a pty."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from structlog.testing import capture_logs

from drivers.serial.astm_driver import AstmDriver, AstmDriverConfig
from drivers.serial.astm_link import LinkTimers
from drivers.serial.port import PortSpec
from gateway.fhir.codes import MDC_PRIVATE_CRP
from gateway.gaps import UnusableReading
from gateway.model import DeviceId, DeviceIdKind, TimeQuality
from rig.serial.analyser import AnalyserFaults, AstmAnalyserSim
from tests.serial_io.helpers import FAST_BACKOFF, Consumer, by_id, connected, eventually

COMPLETED = datetime(2024, 3, 1, 10, 15, tzinfo=UTC)


def driver_for(link: Path) -> AstmDriver:
    return AstmDriver(
        AstmDriverConfig("crp", PortSpec(str(link)), backoff=FAST_BACKOFF, poll_s=0.05)
    )


async def test_a_crp_result_becomes_a_measurement_with_its_loinc_value_unit_and_time(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link) as sim:
        driver = driver_for(link)
        async with Consumer(driver) as consumer:
            await connected(driver)
            sim.send_crp("5.0", completed=COMPLETED.replace(tzinfo=None))
            await eventually(lambda: len(consumer.received) == 1, what="the CRP result")
            await eventually(lambda: sim.delivered == [1], what="the analyser's transfer end")
        (m,) = consumer.received
        assert m.mdc_code == MDC_PRIVATE_CRP
        assert (m.value, m.unit) == (Decimal("5.0"), "mg/L")
        assert m == dataclasses.replace(m, value=Decimal("5.0"))  # digits kept: 5.0 is not 5
        assert m.device == DeviceId(DeviceIdKind.SERIAL, "AS0012345")
        assert m.device_time == COMPLETED
        assert m.time_quality is TimeQuality.UNSYNCED
        (lab,) = driver.recent_results
        assert lab.measurement is m
        assert lab.loinc.code == "1988-5"


async def test_the_final_ack_of_a_result_goes_out_only_after_the_commit(tmp_path: Path) -> None:
    """No ACK for the R record while its commit is pending, and the ACK follows the commit."""
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link) as sim:
        driver = driver_for(link)
        async with Consumer(driver, auto_commit=False) as consumer:
            await connected(driver)
            sim.send_crp("12.4", extra_results=1)
            await eventually(lambda: len(consumer.received) == 1, what="the first result")
            await asyncio.sleep(0.5)  # the analyser waits; nothing may be confirmed meanwhile
            assert sim.replies_to("R") == []
            assert len(consumer.received) == 1  # the next record waits behind the held one
            assert [r.record_type for r in sim.replies_to("H")] == ["H"]  # header ACKed at once
            await consumer.commit(consumer.received[0])
            await eventually(lambda: len(sim.replies_to("R")) == 1, what="the ACK of R 1")
            assert sim.replies_to("R")[0].time_s >= consumer.committed_at[0]
            await eventually(lambda: len(consumer.received) == 2, what="the second result")
            await asyncio.sleep(0.2)
            assert len(sim.replies_to("R")) == 1
            assert sim.replies_to("L") == []
            await consumer.commit(consumer.received[1])
            await eventually(lambda: sim.delivered == [1], what="the end of the transfer")
        r1, r2 = sim.replies_to("R")
        assert r1.time_s >= consumer.committed_at[0]
        assert r2.time_s >= consumer.committed_at[1]
        assert sim.replies_to("L")[0].time_s >= consumer.committed_at[1]
        assert [m.value for m in consumer.received] == [Decimal("12.4"), Decimal("95")]


async def test_nak_on_a_bad_checksum_then_the_resent_frame_is_taken(tmp_path: Path) -> None:
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link) as sim:
        driver = driver_for(link)
        sim.inject(AnalyserFaults(corrupt_frames=1, noisy_frames=2))
        async with Consumer(driver) as consumer:
            await connected(driver)
            sim.send_crp("3.1")
            await eventually(lambda: sim.delivered == [1], what="the transfer end")
        with sim.lock:
            answers = [(r.frame_index, r.reply) for r in sim.replies]
        assert answers[:2] == [(0, "NAK"), (0, "ACK")]  # header frame refused once, then taken
        assert [m.value for m in consumer.received] == [Decimal("3.1")]


async def test_a_commit_later_than_the_analyser_timer_means_a_resend_not_a_loss(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link, timers=LinkTimers(reply_s=0.5), retry_after_s=0.2) as sim:
        driver = driver_for(link)
        async with Consumer(driver, auto_commit=False) as consumer:
            await connected(driver)
            sim.send_crp("41")
            await eventually(lambda: len(consumer.received) == 1, what="the result")
            await eventually(lambda: len(sim.aborted) == 1, what="the analyser to give up")
            await consumer.commit(consumer.received[0])  # durable, but too late to say so
            consumer.auto_commit = True
            await eventually(lambda: len(consumer.received) == 2, what="the resent result")
            await consumer.commit(consumer.received[1])
            await eventually(lambda: sim.delivered == [1], what="the transfer end")
        first, again = consumer.received
        assert dataclasses.replace(again, received_at=first.received_at) == first  # same reading
        assert len(sim.replies_to("R")) == 1  # one ACK: the second, timely commit


async def test_an_unplug_mid_transfer_loses_nothing_the_analyser_was_told_was_accepted(
    tmp_path: Path,
) -> None:
    """Unplug while result 2 waits for its commit: reconnect, resend, every result stored."""
    link = by_id(tmp_path, "Afinion")
    # A short reply timer: an ENQ sent while the port is closed is lost, as on a real line.
    with AstmAnalyserSim(link, timers=LinkTimers(reply_s=1.0), retry_after_s=0.3) as sim:
        driver = driver_for(link)
        async with Consumer(driver, auto_commit=False) as consumer:
            await connected(driver)
            sim.send_crp("8.0", extra_results=1)
            await eventually(lambda: len(consumer.received) == 1, what="result 1")
            await consumer.commit(consumer.received[0])
            await eventually(lambda: len(consumer.received) == 2, what="result 2")
            acked_before = [r.frame_index for r in sim.replies_to("R")]
            sim.unplug()
            await eventually(lambda: driver.health()[0].state == "unplugged", what="the loss")
            await consumer.commit(consumer.received[1])  # durable only after the cable went
            consumer.auto_commit = True
            await asyncio.sleep(0.3)
            sim.replug()
            await eventually(
                lambda: sim.delivered == [1], timeout_s=8.0, what="the resent message to go through"
            )
        assert len(acked_before) == 1  # result 1 was confirmed before the unplug ...
        stored = {(m.mdc_code, m.value, m.device_time) for m in consumer.committed}
        sent = {(m.mdc_code, m.value, m.device_time) for m in consumer.received[:2]}
        assert stored == sent  # ... and everything the analyser sent is stored (twice is fine)
        assert len(consumer.received) == 4  # both results again after the reconnect
        assert sim.aborted[0][1] == "cable unplugged"


class _GapSink:
    """Stands in for IngestWriter.report_unusable: the test decides when the gap is durable."""

    def __init__(self, *, stored: bool = True) -> None:
        self.stored = stored
        self.readings: list[UnusableReading] = []
        self.release = asyncio.Event()

    async def __call__(self, reading: UnusableReading) -> bool:
        self.readings.append(reading)
        await self.release.wait()
        return self.stored


async def test_an_unusable_result_is_acked_only_after_its_gap_record_is_durable(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Afinion")
    sink = _GapSink()
    with AstmAnalyserSim(link) as sim, capture_logs() as logs:
        driver = AstmDriver(
            AstmDriverConfig("crp", PortSpec(str(link)), backoff=FAST_BACKOFF, poll_s=0.05),
            report_unusable=sink,
        )
        async with Consumer(driver) as consumer:
            await connected(driver)
            sim.send_crp("31.7", unit="furlong/fortnight")
            await eventually(lambda: len(sink.readings) == 1, what="the gap report")
            await asyncio.sleep(0.3)  # while the gap is not durable, the R record is not ACKed
            assert sim.replies_to("R") == []
            sink.release.set()
            await eventually(lambda: sim.delivered == [1], what="the transfer end")
        assert consumer.received == []  # no measurement was made of it
    (gap,) = sink.readings
    assert gap.source == "serial.astm.crp"
    assert gap.error == "unit not admitted for this test"
    assert dict(gap.fields) == {"test": "CRP", "unit": "furlong/fortnight", "record_type": "R"}
    assert gap.raw.startswith(b"R|1|^^^CRP|31.7|furlong/fortnight")
    assert len(sim.replies_to("R")) == 1
    assert any(e["event"] == "serial.astm.record_unusable" for e in logs)
    assert not any("31.7" in repr(e) for e in logs)


async def test_an_unusable_result_whose_gap_cannot_be_stored_is_refused(tmp_path: Path) -> None:
    """Outbox full even for gap records: NAK, so the analyser keeps the result and resends it."""
    link = by_id(tmp_path, "Afinion")
    sink = _GapSink(stored=False)
    sink.release.set()
    with AstmAnalyserSim(link) as sim:
        driver = AstmDriver(
            AstmDriverConfig("crp", PortSpec(str(link)), backoff=FAST_BACKOFF, poll_s=0.05),
            report_unusable=sink,
        )
        async with Consumer(driver):
            await connected(driver)
            sim.send_crp("31.7", unit="furlong/fortnight")
            await eventually(lambda: bool(sim.replies_to("R", reply="NAK")), what="the NAK")
            await eventually(lambda: len(sink.readings) >= 2, what="the resent record")
        assert sim.delivered == []
        assert sim.replies_to("R") == []
