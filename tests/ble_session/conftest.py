"""The simulated-BlueZ fixtures of tests/ble_sim, and a collector running a driver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from drivers.ble.session import BleDeviceDriver
from gateway.model import Measurement
from tests.ble_sim.conftest import sim  # noqa: F401 - the rig fixture, shared


class Collector:
    """Runs ``driver.measurements()`` in a task and queues what it yields."""

    def __init__(self, driver: BleDeviceDriver) -> None:
        self.driver = driver
        self.queue: asyncio.Queue[Measurement] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for m in self.driver.measurements():
            self.queue.put_nowait(m)

    async def take(self, count: int, timeout_s: float = 5.0) -> list[Measurement]:
        async with asyncio.timeout(timeout_s):
            return [await self.queue.get() for _ in range(count)]

    async def quiet(self, for_s: float = 0.3) -> list[Measurement]:
        await asyncio.sleep(for_s)
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


@asynccontextmanager
async def running(driver: BleDeviceDriver) -> AsyncIterator[Collector]:
    collector = Collector(driver)
    collector.task = asyncio.create_task(collector._run())
    try:
        yield collector
    finally:
        collector.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector.task
