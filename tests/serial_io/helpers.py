"""Shared pieces of the serial I/O tests: a stand-in for the daemon's pump, waiting helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

from drivers.serial.connection import Backoff
from gateway.model import Measurement
from gateway.pipeline.health import DeviceHealth

FAST_BACKOFF = Backoff(initial_s=0.05, max_s=0.3, stable_s=0.5)


def by_id(tmp_path: Path, name: str) -> Path:
    """Where a test device's stable name lives (a stand-in for /dev/serial/by-id)."""
    return tmp_path / "dev" / "serial" / "by-id" / f"usb-Sim_{name}-if00-port0"


class _Driver(Protocol):
    name: str

    def measurements(self) -> AsyncIterator[Measurement]: ...

    async def committed(self, measurements: Sequence[Measurement]) -> None: ...


class Consumer:
    """Like gateway.daemon.main.pump, but the test decides when (and whether) a commit is
    durable."""

    def __init__(
        self, driver: _Driver, *, auto_commit: bool = True, commit_delay_s: float = 0.0
    ) -> None:
        self.driver = driver
        self.auto_commit = auto_commit
        self.commit_delay_s = commit_delay_s
        self.received: list[Measurement] = []
        self.committed: list[Measurement] = []
        self.received_at: list[float] = []
        self.committed_at: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for m in self.driver.measurements():
            self.received.append(m)
            self.received_at.append(time.monotonic())
            if self.auto_commit:
                task = asyncio.create_task(self._commit_later(m), name="test.commit")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _commit_later(self, m: Measurement) -> None:
        await asyncio.sleep(self.commit_delay_s)
        await self.commit(m)

    async def commit(self, m: Measurement) -> None:
        self.committed.append(m)
        self.committed_at.append(time.monotonic())
        await self.driver.committed([m])

    async def __aenter__(self) -> Consumer:
        self._runner = asyncio.create_task(self._run(), name=f"test.{self.driver.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in [self._runner, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def eventually(
    predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` on the loop (the loop stays free) until true or fail after timeout."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


class _ReportsHealth(Protocol):
    def health(self) -> Sequence[DeviceHealth]: ...


async def connected(driver: _ReportsHealth, timeout_s: float = 5.0) -> None:
    """Wait until the driver has its port open. A device's first bytes sent before that are
    flushed by the open (as on a real line), and an analyser then waits out its 15 s timer."""
    await eventually(
        lambda: driver.health()[0].state not in ("connecting", "unplugged"),
        timeout_s,
        what="the driver to open its port",
    )
