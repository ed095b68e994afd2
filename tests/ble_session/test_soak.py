"""Soak: hundreds of connect / disconnect cycles of one driver against the simulated BlueZ with
the real bleak. Asyncio tasks, open file descriptors and RSS must not grow (small slack for the
allocator), and every reading of every cycle arrives exactly once. Figures are printed
(``pytest -s``); bounded to well under a minute."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from drivers.ble.reconnect import Backoff
from drivers.ble.session import BleDeviceDriver
from rig.ble.profiles import Thermometer
from tests.ble_session.conftest import Collector, running
from tests.ble_session.test_session import until
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND

WARM_UP = 20  # bleak's and dbus-fast's caches, first imports, allocator arenas
CYCLES = int(os.environ.get("BLE_SOAK_CYCLES", "300"))
BUDGET_S = 45.0  # the conftest runs a coroutine test for at most 60 s
SLACK_TASKS, SLACK_FDS, SLACK_RSS_KB = 1, 2, 8 * 1024


@dataclass(frozen=True)
class Figures:
    tasks: int
    fds: int
    rss_kb: int

    @classmethod
    def now(cls) -> Figures:
        gc.collect()
        status = dict(line.split(":", 1) for line in
                      open("/proc/self/status").read().splitlines())  # noqa: SIM115
        return cls(len(asyncio.all_tasks()), len(os.listdir("/proc/self/fd")),
                   int(status["VmRSS"].split()[0]))


RigCall = Callable[[Callable[[], object]], Awaitable[object]]


async def cycle(rig_call: RigCall, thermometer: Thermometer, collector: Collector,
                driver: BleDeviceDriver, n: int) -> Decimal:
    """Connection n: wait for it, one reading through it, then the device drops the link."""
    await until(lambda: driver.connections >= n and driver.state == "connected", 5.0)
    value = Decimal(3600 + n % 100).scaleb(-2)  # 36.00 .. 36.99
    await rig_call(lambda: thermometer.measure(value))
    [m] = await collector.take(1, timeout_s=5.0)
    assert m.value == value

    def drop() -> None:
        assert thermometer.link is not None
        thermometer.link.drop()

    await rig_call(drop)
    await until(lambda: driver.state != "connected", 5.0)
    return value


async def test_hundreds_of_reconnects_leave_no_tasks_fds_or_memory_behind(
        sim: StartRig) -> None:
    thermometer = Thermometer(BOUND)
    rig = sim(thermometer)
    driver = BleDeviceDriver(BOUND, "thermometer", backoff=Backoff(0.005, 0.02, 600.0),
                             connect_timeout_s=2.0)
    started = time.monotonic()
    async with running(driver) as collector:
        for n in range(1, WARM_UP + 1):
            await cycle(rig.acall, thermometer, collector, driver, n)
        # Both snapshots in the same phase: connected again, nothing in flight.
        await until(lambda: driver.state == "connected", 5.0)
        before = Figures.now()
        done = WARM_UP
        for n in range(WARM_UP + 1, WARM_UP + CYCLES + 1):
            await cycle(rig.acall, thermometer, collector, driver, n)
            done = n
            if time.monotonic() - started > BUDGET_S:
                break
        await until(lambda: driver.state == "connected", 5.0)
        after = Figures.now()
        assert await collector.quiet(0.1) == []  # nothing twice
    cycles = done - WARM_UP
    elapsed = time.monotonic() - started
    print(f"\nble soak: {cycles} connect/disconnect cycles after {WARM_UP} warm-up in "
          f"{elapsed:.1f} s; tasks {before.tasks} -> {after.tasks}, fds {before.fds} -> "
          f"{after.fds}, RSS {before.rss_kb} -> {after.rss_kb} kB")
    assert cycles >= 100, f"only {cycles} cycles in the time budget"
    assert driver.connections == done + 1
    assert driver.readings == done
    assert after.tasks <= before.tasks + SLACK_TASKS
    assert after.fds <= before.fds + SLACK_FDS
    assert after.rss_kb <= before.rss_kb + SLACK_RSS_KB
