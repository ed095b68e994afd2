"""The device drivers running now, and replacing them while the daemon runs.

The daemon starts one supervised task per driver (gateway/pipeline/supervise.py). A signed
``device.bind`` / ``device.unbind`` or ``rescan`` command (gateway/daemon/commands.py) replaces
the whole set: every driver task is cancelled (safe by design: a driver confirms a reading to
its device only after the outbox commit, so a cancelled read is read again), the writer commits
what it holds, and the drivers the (new) binding admits are built and started in the same
TaskGroup. The other devices pause for a reconnect, not a restart of the daemon.

The shared lists (``drivers``: read by the health reporter; ``tasks``: cancelled by the
equipment return's stop-intake and by shutdown) are changed in place, so every holder sees the
current set.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from gateway.config.settings import Config
from gateway.daemon.wiring import ble_for, build_agent, build_drivers, rehook_agent
from gateway.model import Measurement
from gateway.pipeline.ingest import IngestWriter, Lane
from gateway.pipeline.pump import driver_mark, pump
from gateway.pipeline.seams import Driver
from gateway.pipeline.supervise import DriverSupervisor, Supervisors
from gateway.pipeline.watchdog import LoopWatch, PumpMark
from provisioning import runtime as provisioning

if TYPE_CHECKING:
    from drivers.ble.agent import PairingAgent

log = structlog.get_logger("gateway.daemon")

Lanes = list[tuple[Any, Lane | Callable[[Measurement], Lane]]]


def loop_names(drivers: Sequence[Driver]) -> list[str]:
    """``driver.<name>`` per driver; a second driver of the same name gets ``#2`` and so on."""
    seen: dict[str, int] = {}
    out = []
    for d in drivers:
        seen[d.name] = seen.get(d.name, 0) + 1
        out.append(f"driver.{d.name}" + (f"#{seen[d.name]}" if seen[d.name] > 1 else ""))
    return out


class Intake:
    def __init__(  # noqa: PLR0917 - the daemon's parts a driver task is made of
        self,
        cfg: Config,
        writer: IngestWriter,
        supervisors: Supervisors,
        watch: LoopWatch,
        note_durable: Callable[[Measurement, int], None],
        tasks: list[asyncio.Task[None]],
    ) -> None:
        self._cfg = cfg
        self._writer = writer
        self._supervisors = supervisors
        self._watch = watch
        self._note_durable = note_durable
        self.tasks = tasks
        self.drivers: list[Any] = []
        self._lanes: Lanes = []
        self._marks: list[PumpMark] = []
        self._names: list[str] = []
        self._sups: list[DriverSupervisor] = []
        self._tg: asyncio.TaskGroup | None = None
        self.agent: PairingAgent | None = None  # the BLE pairing agent, once a BLE device is read
        self.on_rebound: list[Callable[[provisioning.BoundDevices], None]] = []

    def prepare(self, lanes: Lanes) -> None:
        """The first set (before the TaskGroup exists): watched from the start."""
        self._lanes = list(lanes)
        self.drivers[:] = [d for d, _ in lanes]
        self._marks = [PumpMark(driver_mark(d)) for d in self.drivers]
        self._names = loop_names(self.drivers)
        for name, mark in zip(self._names, self._marks, strict=True):
            self._watch.add(name, mark.probe(name))

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._tg = tg
        self._sups = [
            self._supervisors.add(
                DriverSupervisor(
                    d.name,
                    functools.partial(pump, d, self._writer, lane, self._note_durable, mark),
                    mark,
                )
            )
            for (d, lane), mark in zip(self._lanes, self._marks, strict=True)
        ]
        self.tasks.extend(
            tg.create_task(s.run(), name=f"driver.{d.name}")
            for s, d in zip(self._sups, self.drivers, strict=True)
        )

    async def stop(self) -> int:
        """Cancel every driver task; what was handed over is committed. How many stopped."""
        stopped = len(self.tasks)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self._writer.drain()
        for name in self._names:
            self._watch.remove(name)
        for s in self._sups:
            self._supervisors.remove(s)
        self._sups = []
        return stopped

    async def replace(self, bound: provisioning.BoundDevices) -> int:
        """Stop the running drivers and start those ``bound`` admits; how many run now."""
        if self._tg is None:
            raise RuntimeError("Intake.replace before start")
        await self.stop()
        lanes = await asyncio.to_thread(build_drivers, self._cfg, self._writer, bound)
        self.prepare(lanes)
        ble = ble_for(self._cfg, bound)
        if self.agent is None:
            self.agent = build_agent(ble, self.drivers)
            if self.agent is not None:
                self._tg.create_task(self.agent.run(), name="ble.agent")
        else:
            rehook_agent(self.agent, ble, self.drivers)
        self.start(self._tg)
        for callback in self.on_rebound:
            callback(bound)
        log.info("intake.replaced", drivers=len(self.drivers))
        return len(self.drivers)
