"""The watchdog's view of each critical loop: stalled only past its promise, never while paused.

The pump tests run the real ``pump`` against a fake writer (the layer below is unit-tested in
test_ingest) and a clock the test moves, so "two minutes later" takes no time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from gateway.daemon.intake import loop_names
from gateway.daemon.main import WATCHDOG_STALL_S
from gateway.model import Measurement
from gateway.pipeline.fakes import FakeDriver
from gateway.pipeline.ingest import Lane, QuotaExceededError
from gateway.pipeline.pump import pump
from gateway.pipeline.watchdog import LoopMark, LoopWatch, PumpMark
from tests.factories import make_measurement

STALL_S = 120.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeWriter:
    """enqueue() is durable at once, or refused while ``full``; wait_for_space() waits for room."""

    def __init__(self) -> None:
        self.full = False
        self.room = asyncio.Event()
        self.stored: list[Measurement] = []

    async def enqueue(self, ms: Sequence[Measurement], lane: Lane) -> asyncio.Future[int]:
        if self.full:
            raise QuotaExceededError(f"outbox full for lane {lane.name}")
        self.stored.extend(ms)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.set_result(len(self.stored))
        return fut

    async def wait_for_space(self, lane: Lane) -> None:
        await self.room.wait()


class MarkedDriver:
    """A driver that keeps a LoopMark, yields on request, and can hang in committed()."""

    def __init__(self, clock: Clock) -> None:
        self.name = "marked"
        self.progress = LoopMark(clock)
        self.feed: asyncio.Queue[Measurement] = asyncio.Queue()
        self.hang_commit = asyncio.Event()
        self.committing = asyncio.Event()
        self.confirmed: list[Measurement] = []
        self.turning = True

    async def measurements(self) -> AsyncIterator[Measurement]:
        while True:
            if self.turning:
                self.progress.turn(within_s=1.0)
            try:
                yield await asyncio.wait_for(self.feed.get(), 0.01)
            except TimeoutError:
                continue

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        self.committing.set()
        if self.hang_commit.is_set():
            await asyncio.Event().wait()
        self.confirmed.extend(measurements)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


def watch_of(mark: PumpMark, clock: Clock) -> LoopWatch:
    watch = LoopWatch(STALL_S, clock)
    watch.add("driver.marked", mark.probe("driver.marked"))
    return watch


def test_a_mark_is_stalled_only_past_its_announced_wait_plus_the_margin() -> None:
    clock = Clock()
    mark = LoopMark(clock)
    pumping = PumpMark(mark, clock)
    watch = LoopWatch(STALL_S, clock)
    watch.add("sim", pumping.probe("sim"))
    with pumping.pulling():  # the pump waits for the driver's next reading
        mark.turn(within_s=300.0)  # a back-off sleep of five minutes is announced
        clock.now += 300.0 + STALL_S
        assert watch.stalled() == []  # exactly at the limit: not yet
        clock.now += 1.0
        assert watch.stalled() == ["sim"]
        assert watch.snapshot()["sim"] == {"age_s": 421.0, "stalled": True, "paused": None}
        mark.turn()
        assert watch.stalled() == []


def test_writer_and_uplink_are_judged_on_their_last_progress() -> None:
    """A loop is stalled once its last turn is older than the threshold, not at the threshold."""
    clock = Clock()
    progress = {"outbox-writer": 100.0, "uplink": 10.0}
    watch = LoopWatch(WATCHDOG_STALL_S, clock)
    for name in progress:
        watch.add_last_progress(name, lambda n=name: progress[n])  # type: ignore[misc]
    clock.now = 100.0 + WATCHDOG_STALL_S
    assert watch.stalled() == ["uplink"]
    clock.now = 10.0 + WATCHDOG_STALL_S
    assert watch.stalled() == []
    clock.now = 101.0 + WATCHDOG_STALL_S
    assert watch.stalled() == ["outbox-writer", "uplink"]


def test_the_same_loop_cannot_be_watched_twice() -> None:
    watch = LoopWatch(STALL_S)
    watch.add_last_progress("a", lambda: 0.0)
    with pytest.raises(ValueError, match="watched already"):
        watch.add_last_progress("a", lambda: 0.0)


def test_loop_names_are_unique_per_driver() -> None:
    drivers = [FakeDriver([], name="sim.thermometer"), FakeDriver([], name="sim.thermometer")]
    drivers.append(FakeDriver([], name="serial.astm.crp"))
    assert loop_names(drivers) == [
        "driver.sim.thermometer",
        "driver.sim.thermometer#2",
        "driver.serial.astm.crp",
    ]


async def test_a_driver_that_stops_turning_while_pulled_is_stalled() -> None:
    clock = Clock()
    driver = MarkedDriver(clock)
    mark = PumpMark(driver.progress, clock)
    watch = watch_of(mark, clock)
    task = asyncio.create_task(pump(driver, FakeWriter(), mark=mark))  # type: ignore[arg-type]
    await settle()
    clock.now += 10 * STALL_S
    await settle()
    assert watch.stalled() == []  # it keeps turning (idle waits count)
    driver.turning = False  # e.g. a D-Bus call without a timeout that never returns
    clock.now += STALL_S + 2.0
    assert watch.stalled() == ["driver.marked"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_driver_paused_by_the_outbox_quota_is_paused_not_stalled() -> None:
    """Hours of outage with a full outbox must not get a healthy daemon restarted."""
    clock = Clock()
    driver = MarkedDriver(clock)
    writer = FakeWriter()
    writer.full = True
    mark = PumpMark(driver.progress, clock)
    watch = watch_of(mark, clock)
    task = asyncio.create_task(pump(driver, writer, mark=mark))  # type: ignore[arg-type]
    await driver.feed.put(make_measurement(device_record_id=1))
    await settle()
    clock.now += 100 * STALL_S
    assert watch.stalled() == []
    assert watch.snapshot()["driver.marked"]["paused"] == "outbox quota reached"
    # Room again: the pump pulls, the generator turns again, counted from the resumption.
    writer.full = False
    writer.room.set()
    await settle()
    assert watch.snapshot()["driver.marked"]["paused"] is None
    assert watch.stalled() == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_generator_not_pulled_is_judged_from_when_pulling_resumed() -> None:
    """Its own mark is old (nobody ran it), so the pump's resumption time counts instead."""
    clock = Clock()
    driver = MarkedDriver(clock)
    driver.turning = False
    mark = PumpMark(driver.progress, clock)
    watch = watch_of(mark, clock)
    clock.now += 10 * STALL_S  # the mark was set long ago, before the pump pulled
    task = asyncio.create_task(pump(driver, FakeWriter(), mark=mark))  # type: ignore[arg-type]
    await settle()
    assert watch.stalled() == []
    clock.now += STALL_S + 1.0
    assert watch.stalled() == ["driver.marked"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_confirmation_that_hangs_in_the_driver_is_a_stall() -> None:
    clock = Clock()
    driver = MarkedDriver(clock)
    driver.hang_commit.set()  # e.g. an ACK write to a wedged serial adapter
    mark = PumpMark(driver.progress, clock)
    watch = watch_of(mark, clock)
    task = asyncio.create_task(pump(driver, FakeWriter(), mark=mark))  # type: ignore[arg-type]
    await driver.feed.put(make_measurement(device_record_id=1))
    await asyncio.wait_for(driver.committing.wait(), 5)
    clock.now += STALL_S + 1.0
    assert watch.stalled() == ["driver.marked"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_every_real_driver_keeps_a_loop_mark() -> None:
    """A driver without a mark could hang unseen: the daemon would keep pinging systemd."""
    from drivers.ble.session import BleDeviceDriver  # noqa: PLC0415 - BLE stack only here
    from drivers.serial.astm_driver import AstmDriver, AstmDriverConfig  # noqa: PLC0415
    from drivers.serial.modem_driver import ModemDriver, ModemDriverConfig  # noqa: PLC0415
    from drivers.serial.oximeter_driver import (  # noqa: PLC0415
        OximeterDriver,
        OximeterDriverConfig,
        OximeterProtocol,
    )
    from drivers.serial.port import PortSpec  # noqa: PLC0415
    from gateway.model import DeviceId, DeviceIdKind  # noqa: PLC0415
    from gateway.pipeline.pump import driver_mark  # noqa: PLC0415
    from rig.devices import SimulatedDevice  # noqa: PLC0415

    port = PortSpec("/dev/homecare/x")
    drivers: list[object] = [
        SimulatedDevice("thermometer", "C0:FF:EE:00:00:01", 1.0),
        AstmDriver(AstmDriverConfig(name="crp", port=port)),
        OximeterDriver(
            OximeterDriverConfig(
                "spo2", OximeterProtocol.NONIN, port, DeviceId(DeviceIdKind.SERIAL, "5012")
            )
        ),
        ModemDriver(ModemDriverConfig(port=port)),
        BleDeviceDriver("C0:FF:EE:00:00:02", "thermometer"),
    ]
    assert all(driver_mark(d) is not None for d in drivers)
