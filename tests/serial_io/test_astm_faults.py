"""ASTM faults: a hung analyser, refused commits, contention on the simulator, log hygiene."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from pathlib import Path

import serial  # type: ignore[import-untyped, unused-ignore]
from structlog.testing import capture_logs

from drivers.serial.astm_driver import AstmDriver, AstmDriverConfig
from drivers.serial.astm_frames import ACK, ENQ, EOT, LF
from drivers.serial.astm_link import LinkTimers
from drivers.serial.port import PortSpec
from rig.serial.analyser import AnalyserFaults, AstmAnalyserSim
from tests.serial_io.helpers import FAST_BACKOFF, Consumer, by_id, connected, eventually
from tests.serial_io.test_astm_driver import driver_for


async def test_an_analyser_that_hangs_mid_transfer_is_timed_out_and_its_resend_taken(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link, retry_after_s=0.2) as sim:
        sim.inject(AnalyserFaults(hang_after_frames=3, hang_s=0.8))  # H, P, O ... then nothing
        driver = AstmDriver(
            AstmDriverConfig(
                "crp",
                PortSpec(str(link)),
                timers=LinkTimers(receive_s=0.4),
                backoff=FAST_BACKOFF,
                poll_s=0.05,
            )
        )
        with capture_logs() as logs:
            async with Consumer(driver) as consumer:
                await connected(driver)
                sim.send_crp("2.2")
                await eventually(
                    lambda: sim.delivered == [1], timeout_s=6.0, what="the transfer after the hang"
                )
        aborted = [e for e in logs if e["event"] == "serial.astm.transfer_aborted"]
        assert aborted
        assert "receive timer" in aborted[0]["reason"]
        assert [m.value for m in consumer.received] == [Decimal("2.2")]


async def test_a_refused_commit_is_answered_with_nak_and_the_analyser_keeps_the_result(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link) as sim:
        driver = driver_for(link)
        async with Consumer(driver, auto_commit=False) as consumer:
            await connected(driver)
            sim.send_crp("17")
            await eventually(lambda: len(consumer.received) == 1, what="the result")
            await driver.refused(consumer.received[:1])  # outbox quota: not stored
            await eventually(lambda: bool(sim.replies_to("R", reply="NAK")), what="the NAK")
            await eventually(lambda: len(consumer.received) == 2, what="the resent frame")
            assert driver.health()[0].state == "awaiting-commit"
            await consumer.commit(consumer.received[1])
            await eventually(lambda: sim.delivered == [1], what="the transfer end")
        assert len(sim.replies_to("R")) == 1


def _host_that_contends(
    path: str,
    log: list[tuple[float, bytes]],
    opened: threading.Event,
    done: threading.Event,
) -> None:
    """A raw host: answers the first ENQ with its own ENQ (contention), then ACKs everything."""
    with serial.Serial(path, timeout=0.05) as port:
        opened.set()
        contended = False
        line = bytearray()
        deadline = time.monotonic() + 8
        while not done.is_set() and time.monotonic() < deadline:
            for byte in port.read(256):
                if byte == ENQ:
                    log.append((time.monotonic(), b"ENQ"))
                    port.write(bytes([ACK if contended else ENQ]))
                    contended = True
                elif byte == EOT:
                    log.append((time.monotonic(), b"EOT"))
                    done.set()
                else:
                    line.append(byte)
                    if byte == LF:
                        port.write(bytes([ACK]))
                        line.clear()


async def test_the_simulated_analyser_wins_contention_and_retries_after_one_second(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link) as sim:
        log: list[tuple[float, bytes]] = []
        opened, done = threading.Event(), threading.Event()
        host = asyncio.create_task(
            asyncio.to_thread(_host_that_contends, str(link), log, opened, done)
        )
        assert await asyncio.to_thread(opened.wait, 5.0)
        sim.send_crp("5.0")
        await eventually(lambda: sim.delivered == [1], what="the transfer after contention")
        done.set()
        await host
        first, second = (t for t, what in log if what == b"ENQ")
        assert 0.9 <= second - first < 3.0  # E1381 6.2.1: the instrument waits 1 s, then ENQ


async def test_logs_name_events_and_never_carry_a_clinical_value(tmp_path: Path) -> None:
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link) as sim, capture_logs() as logs:
        sim.inject(AnalyserFaults(corrupt_frames=1))
        driver = driver_for(link)
        async with Consumer(driver):
            await connected(driver)
            sim.send_crp("123.4", unit="mg/L")
            await eventually(lambda: sim.delivered == [1], what="the transfer end")
    names = [e["event"] for e in logs]
    assert {
        "serial.port.opened",
        "serial.astm.link_problem",
        "serial.astm.result_received",
        "serial.astm.result_confirmed",
    } <= set(names)
    problem = next(e for e in logs if e["event"] == "serial.astm.link_problem")
    assert problem["error"] == "frame checksum mismatch"
    assert not any("123.4" in repr(e) for e in logs)


async def test_an_ack_the_analyser_never_hears_gives_a_duplicate_not_a_loss(
    tmp_path: Path,
) -> None:
    """Our ACK of the header is lost: the analyser's reply timer ends the transfer, it resends."""
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link, timers=LinkTimers(reply_s=0.4), retry_after_s=0.2) as sim:
        sim.inject(AnalyserFaults(deaf_replies=1))
        driver = driver_for(link)
        async with Consumer(driver) as consumer:
            await connected(driver)
            sim.send_crp("9.9")
            await eventually(
                lambda: sim.delivered == [1], timeout_s=4.0, what="the transfer after the lost ACK"
            )
        assert sim.aborted[0][1] == "no reply within the reply timer"
        assert [m.value for m in consumer.committed] == [Decimal("9.9")]


def _host_that_naks(
    path: str, naks: list[float], opened: threading.Event, done: threading.Event
) -> None:
    """A raw host that takes the transfer (ACK to ENQ) and then refuses every frame."""
    with serial.Serial(path, timeout=0.05) as port:
        opened.set()
        deadline = time.monotonic() + 8
        while not done.is_set() and time.monotonic() < deadline:
            for byte in port.read(256):
                if byte == ENQ:
                    port.write(bytes([ACK]))
                elif byte == LF:
                    naks.append(time.monotonic())
                    port.write(b"\x15")
                elif byte == EOT:
                    done.set()


async def test_the_simulated_analyser_gives_up_after_six_naks_and_keeps_the_result(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Afinion")
    with AstmAnalyserSim(link, retry_after_s=30.0) as sim:
        naks: list[float] = []
        opened, done = threading.Event(), threading.Event()
        host = asyncio.create_task(
            asyncio.to_thread(_host_that_naks, str(link), naks, opened, done)
        )
        assert await asyncio.to_thread(opened.wait, 5.0)
        sim.send_crp("5.0")
        await eventually(lambda: bool(sim.aborted), what="the analyser to give up")
        done.set()
        await host
        assert len(naks) == 6  # E1381 6.5.1.2: six attempts, then the termination phase
        assert sim.aborted == [(1, "frame refused 6 times")]
        assert sim.delivered == []  # not sent: it stays in the analyser for a later try
