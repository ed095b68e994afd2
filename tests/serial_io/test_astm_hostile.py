"""A hostile or broken analyser: whatever it sends becomes a typed device error, never an
exception out of the driver; each record keeps the E1381/E1394 ACK/NAK rules."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from drivers.serial.astm_driver import AstmDriver, AstmDriverConfig
from drivers.serial.port import PortSpec
from gateway.gaps import UnusableReading
from rig.serial.analyser import AstmAnalyserSim
from tests.serial_io.helpers import FAST_BACKOFF, Consumer, by_id, connected, eventually


class _Gaps:
    def __init__(self) -> None:
        self.readings: list[UnusableReading] = []

    async def __call__(self, reading: UnusableReading) -> bool:
        self.readings.append(reading)
        return True


def _driver(link: Path, gaps: _Gaps) -> AstmDriver:
    return AstmDriver(
        AstmDriverConfig("crp", PortSpec(str(link)), backoff=FAST_BACKOFF, poll_s=0.05),
        report_unusable=gaps,
    )


async def test_a_record_before_any_header_is_refused_typed_and_the_next_result_arrives(
    tmp_path: Path,
) -> None:
    """ENQ then ``L|1|N`` once raised out of the driver (the record type logged twice)."""
    link = by_id(tmp_path, "Afinion")
    gaps = _Gaps()
    with AstmAnalyserSim(link) as sim, capture_logs() as logs:
        driver = _driver(link, gaps)
        async with Consumer(driver) as consumer:
            await connected(driver)
            first = sim.queue_message(["L|1|N"])
            second = sim.send_crp("5.0")
            await eventually(lambda: len(consumer.received) == 1, 10, what="the later result")
            await eventually(lambda: sim.delivered == [first, second], 10, what="both ends")
        assert driver.rejected_input >= 1
        assert driver.health()[0].rejected_input >= 1
    assert sim.replies_to("L")  # ACKed: it holds no reading, refusing it would block the line
    assert any(e["event"] == "serial.astm.record_unusable" for e in logs)


async def _bad_serial(tmp_path: Path, serial_number: str) -> None:
    link = by_id(tmp_path, "Afinion")
    gaps = _Gaps()
    with AstmAnalyserSim(link, serial_number=serial_number) as sim, capture_logs() as logs:
        driver = _driver(link, gaps)
        async with Consumer(driver) as consumer:
            await connected(driver)
            key = sim.send_crp("5.0")
            await eventually(lambda: sim.delivered == [key], 10, what="the transfer end")
        assert consumer.received == []  # no reading from a device we cannot name
        assert driver.rejected_input >= 1
    (gap,) = gaps.readings  # the result is accounted for in a gap record, then ACKed
    assert gap.error.startswith("analyser serial number unusable")
    assert len(sim.replies_to("R")) == 1
    text = repr(logs)
    assert "\x07" not in text
    assert "\\x07" not in text
    assert serial_number[:40] not in text, "the device's text stays out of the log"


async def test_an_analyser_serial_with_a_control_byte_becomes_an_unusable_result(
    tmp_path: Path,
) -> None:
    await _bad_serial(tmp_path, "AS\x070012345")


async def test_an_analyser_serial_longer_than_128_characters_becomes_an_unusable_result(
    tmp_path: Path,
) -> None:
    await _bad_serial(tmp_path, "S" * 300)
