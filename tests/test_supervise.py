"""Driver supervision: a failing driver is restarted with back-off and an alarm; the others, the
writer and the uplink do not notice; the writer's own failures still end the daemon."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from buffer.outbox import Outbox
from gateway.model import Measurement
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.fakes import FakeDriver
from gateway.pipeline.ingest import IngestWriter
from gateway.pipeline.pump import pump
from gateway.pipeline.supervise import (
    HEALTHY_RUN_S,
    RESTART_FLOOR_S,
    RESTART_MAX_S,
    DriverFailedError,
    DriverSupervisor,
    Supervisors,
    restart_delay_s,
)
from gateway.pipeline.watchdog import PumpMark
from tests.factories import make_measurement
from tests.test_ingest import make_writer

DEADLINE_S = 20.0


class CrashingDriver:
    """Yields ``good`` readings per run after the first ``crashes`` runs, which raise at once
    (the analyser header that once raised KeyError or ModelError straight out of a driver)."""

    def __init__(self, crashes: int, good: int, *, name: str = "crashy") -> None:
        self.name = name
        self.crashes = crashes
        self.good = good
        self.runs = 0
        self.confirmed: list[Measurement] = []

    async def measurements(self) -> AsyncIterator[Measurement]:
        self.runs += 1
        if self.runs <= self.crashes:
            raise KeyError("record_type")  # an untyped bug, with device text in its message
        for i in range(1, self.good + 1):
            yield make_measurement(device_record_id=i)
        await asyncio.Event().wait()  # a live driver never ends

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        self.confirmed.extend(measurements)


class SlowDriver(FakeDriver):
    """A good device that keeps delivering while its neighbour crashes."""

    async def measurements(self) -> AsyncIterator[Measurement]:
        async for m in super().measurements():
            await asyncio.sleep(0.01)
            yield m


async def until(condition: object, deadline_s: float = DEADLINE_S) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():  # type: ignore[operator]
        assert loop.time() < end, "condition not met before the deadline"
        await asyncio.sleep(0.01)


def test_back_off_grows_is_capped_jittered_and_floored() -> None:
    assert restart_delay_s(1, lambda: 1.0) == 1.0
    assert restart_delay_s(3, lambda: 1.0) == 4.0
    assert restart_delay_s(50, lambda: 1.0) == RESTART_MAX_S  # capped, no overflow
    assert restart_delay_s(50, lambda: 0.5) == RESTART_MAX_S / 2  # jittered
    assert restart_delay_s(5, lambda: 0.0) == RESTART_FLOOR_S  # never a hot loop


async def _writer(tmp_path: Path) -> tuple[DatabaseThread, Outbox, IngestWriter]:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    return db, outbox, make_writer(outbox, db)


async def test_a_crashing_driver_is_restarted_and_its_neighbour_never_notices(
    tmp_path: Path,
) -> None:
    db, _outbox, writer = await _writer(tmp_path)
    writer_task = asyncio.create_task(writer.run())
    crashy = CrashingDriver(crashes=2, good=3)
    good = SlowDriver([make_measurement(device_record_id=i) for i in range(1, 31)], name="good")
    sups = Supervisors()
    tasks = []
    for d in (crashy, good):
        mark = PumpMark(None)
        sup = sups.add(
            DriverSupervisor(
                d.name, functools.partial(pump, d, writer, mark=mark), mark, rng=lambda: 0.0
            )
        )
        tasks.append(asyncio.create_task(sup.run()))
    with capture_logs() as logs:
        await until(lambda: len(crashy.confirmed) == 3 and len(good.confirmed) == 30)
    assert crashy.runs == 3
    assert not writer_task.done(), "the writer must not notice a driver's failure"
    failed = [e for e in logs if e["event"] == "driver.failed"]
    assert [e["error_type"] for e in failed] == ["KeyError", "KeyError"]
    assert all("record_type" not in str(e) for e in failed), "the error's text stays out of logs"
    assert sups.failing() == ["crashy:KeyError"]
    assert sups.snapshot()["crashy"]["failures"] == 2
    assert "good" not in sups.snapshot()
    for t in (*tasks, writer_task):
        t.cancel()
    await asyncio.gather(*tasks, writer_task, return_exceptions=True)
    db.shutdown()


async def test_a_driver_in_back_off_is_paused_for_the_watchdog_not_stalled() -> None:
    mark = PumpMark(None)

    async def fail() -> None:
        raise DriverFailedError("d", ValueError("x"))

    sup = DriverSupervisor("d", fail, mark, delay=lambda _n, _r: 3600.0)
    task = asyncio.create_task(sup.run())
    await until(lambda: sup.state.failures == 1)
    state = mark.state("driver.d", now=10**9)  # far in the future: still not stalled
    assert state.paused == "restarting after ValueError"
    assert not state.stalled(120.0)
    assert sup.state.as_json(time.monotonic())["state"] == "restarting"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class BadConfirmDriver(FakeDriver):
    async def committed(self, measurements: Sequence[Measurement]) -> None:
        raise RuntimeError("ACK write failed oddly")


async def test_a_driver_failing_in_its_confirmation_hook_is_a_driver_fault(
    tmp_path: Path,
) -> None:
    db, _outbox, writer = await _writer(tmp_path)
    writer_task = asyncio.create_task(writer.run())
    driver = BadConfirmDriver([make_measurement(device_record_id=i) for i in range(1, 4)])
    with pytest.raises(DriverFailedError) as caught:
        await asyncio.wait_for(pump(driver, writer), DEADLINE_S)
    assert caught.value.error_type == "RuntimeError"
    assert caught.value.where is not None
    assert "test_supervise.py" in caught.value.where
    assert not writer_task.done()
    writer_task.cancel()
    db.shutdown()


async def test_the_alarm_clears_after_a_healthy_run() -> None:
    clock = [1000.0]
    sups = Supervisors(monotonic=lambda: clock[0])
    sup = sups.add(DriverSupervisor("d", lambda: asyncio.sleep(0), PumpMark(None)))
    sup.state.failures, sup.state.error_type = 1, "KeyError"
    sup.state.last_failure_mono = 1000.0
    assert sups.failing() == ["d:KeyError"]
    clock[0] += HEALTHY_RUN_S + 1
    assert sups.failing() == []


async def test_a_writer_failure_is_not_a_driver_fault_and_ends_the_supervisor() -> None:
    """The outbox is shared by every device: its failure must stop the daemon (exit 1)."""
    from gateway.errors import StoreError  # noqa: PLC0415 - this test's only use

    async def writer_broke() -> None:
        raise StoreError("disk I/O error")

    sup = DriverSupervisor("d", writer_broke, PumpMark(None))
    with pytest.raises(StoreError):
        await asyncio.wait_for(sup.run(), DEADLINE_S)
    assert sup.state.failures == 0
