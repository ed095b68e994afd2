"""Simulated home devices: readings on a timer, with values anyone can recompute.

Used by ``make demo``, the integration tests and technician training until (and alongside) the
BLE and serial drivers. Reading ``n`` of a device is a pure function of its kind, address and
``n`` (:func:`expected_reading`), so a test on the provider side can check that what it decrypted
is exactly what the device produced - values, precision, units and the device's own record id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from gateway.fhir.codes import (
    MDC_PRESS_BLD_NONINV,
    MDC_PRESS_BLD_NONINV_DIA,
    MDC_PRESS_BLD_NONINV_MEAN,
    MDC_PRESS_BLD_NONINV_SYS,
    MDC_PULS_OXIM_SAT_O2,
    MDC_TEMP_BODY,
)
from gateway.model import (
    Component,
    DeviceId,
    DeviceIdKind,
    Measurement,
    TimeQuality,
)
from gateway.pipeline.health import DeviceHealth
from gateway.pipeline.watchdog import LoopMark


@dataclass(frozen=True, slots=True)
class ExpectedReading:
    mdc_code: int
    value: Decimal | None
    unit: str
    components: tuple[Component, ...]


def _wobble(address: str, n: int, span: int) -> int:
    digest = hashlib.sha256(f"{address}/{n}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % span


def expected_reading(kind: str, address: str, n: int) -> ExpectedReading:
    """What simulated device ``address`` of ``kind`` reports as its ``n``-th reading."""
    w = _wobble(address, n, 100)
    if kind == "thermometer":
        # 36.0 .. 37.9 degC with one decimal: precision 0.1 as a clinical thermometer sends it.
        return ExpectedReading(MDC_TEMP_BODY, Decimal(360 + w % 20) / 10, "Cel", ())
    if kind == "blood-pressure":
        sys_, dia = 110 + w % 30, 70 + w % 15
        mean = Decimal(sys_ + 2 * dia) / 3
        return ExpectedReading(
            MDC_PRESS_BLD_NONINV,
            None,
            "mm[Hg]",
            (
                Component(MDC_PRESS_BLD_NONINV_SYS, Decimal(sys_), "mm[Hg]"),
                Component(MDC_PRESS_BLD_NONINV_DIA, Decimal(dia), "mm[Hg]"),
                Component(MDC_PRESS_BLD_NONINV_MEAN, mean.quantize(Decimal("0.1")), "mm[Hg]"),
            ),
        )
    if kind == "pulse-oximeter":
        return ExpectedReading(MDC_PULS_OXIM_SAT_O2, Decimal(92 + w % 8), "%", ())
    raise ValueError(f"unknown simulated device kind {kind!r}")


class DeviceMemory:
    """The stored-records memory of a simulated device (its own flash, in a small JSON file).

    Like a RACP glucose meter, the device numbers its readings, keeps them, and forgets one only
    after the gateway confirmed it (which the gateway does only once the reading is durable). A
    reading's device time is fixed when it is taken, so a re-sent reading is the same reading.
    The file is replaced atomically and fsynced, so the device's memory survives a power cut of
    the gateway.
    """

    def __init__(self, path: Path, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        try:
            state = json.loads(path.read_text())
            self.start_ms, self.confirmed = int(state["start_ms"]), int(state["confirmed"])
        except FileNotFoundError:
            self.start_ms, self.confirmed = time.time_ns() // 1_000_000, 0
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            json.dump({"start_ms": self.start_ms, "confirmed": self.confirmed}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def taken(self, now_ms: int) -> int:
        """How many readings the device has taken by ``now_ms``."""
        return max(0, int((now_ms - self.start_ms) / 1000 // self.interval_s))

    def taken_at(self, n: int) -> datetime:
        ms = self.start_ms + round(n * self.interval_s * 1000)
        return datetime.fromtimestamp(ms // 1000, UTC)  # the device clock ticks in seconds

    def confirm(self, n: int) -> None:
        if n > self.confirmed:
            self.confirmed = n
            self._write()


class SimulatedDevice:
    """A ``Driver`` producing one reading every ``interval_s`` (optionally ``count`` in all).

    With ``memory`` (a file path) it behaves like a device with stored records: after a restart
    it sends again every reading it took that the gateway has not confirmed.
    """

    def __init__(
        self,
        kind: str,
        address: str,
        interval_s: float,
        *,
        count: int | None = None,
        memory: Path | None = None,
    ) -> None:
        expected_reading(kind, address, 1)  # fail early on an unknown kind
        self.kind = kind
        self.name = f"sim.{kind}"
        self.progress = LoopMark()  # the watchdog's view of this device's loop
        self.device = DeviceId(DeviceIdKind.BTMAC, address)
        self.interval_s = interval_s
        self.count = count
        self.memory = DeviceMemory(memory, interval_s) if memory is not None else None
        self.produced = 0
        self.confirmed = 0
        self._rewind_to: int | None = None
        self.last_seen: datetime | None = None

    def _reading(self, n: int) -> Measurement:
        exp = expected_reading(self.kind, self.device.value, n)
        now = datetime.now(UTC)
        taken = self.memory.taken_at(n) if self.memory else now.replace(microsecond=0)
        return Measurement(
            device=self.device,
            mdc_code=exp.mdc_code,
            value=exp.value,
            unit=exp.unit,
            received_at=now,
            source=self.name,
            raw=n.to_bytes(4, "big"),
            device_time=taken,
            time_quality=TimeQuality.SYNCED,
            components=exp.components,
            device_record_id=n,
        )

    def _available(self, loop_time: float, started: float) -> int:
        if self.memory is not None:
            taken = self.memory.taken(time.time_ns() // 1_000_000)
        else:
            taken = int((loop_time - started) // self.interval_s) + 1
        return taken if self.count is None else min(taken, self.count)

    async def measurements(self) -> AsyncIterator[Measurement]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        n = (self.memory.confirmed if self.memory else 0) + 1
        while self.count is None or n <= self.count:
            while n <= self._available(loop.time(), started):
                m = self._reading(n)
                n += 1
                self.produced += 1
                self.last_seen = m.received_at
                yield m
                if self._rewind_to is not None:
                    n, self._rewind_to = self._rewind_to, None
            self.progress.turn(within_s=min(self.interval_s, 0.5))
            await asyncio.sleep(min(self.interval_s, 0.5))

    def health(self) -> list[DeviceHealth]:
        return [
            DeviceHealth(
                device=str(self.device),
                driver=self.name,
                state="streaming" if self.count is None or self.produced < self.count else "done",
                last_seen=self.last_seen,
                expected_interval_s=self.interval_s
                if self.count is None or self.produced < self.count
                else None,
                readings=self.produced,
                battery_pct=100,
            )
        ]

    async def refused(self, measurements: Sequence[Measurement]) -> None:
        """The gateway could not store these: a device with memory offers them again later."""
        if self.memory is not None and measurements:
            first = min(m.device_record_id or 0 for m in measurements)
            self._rewind_to = first if self._rewind_to is None else min(self._rewind_to, first)

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        self.confirmed += len(measurements)
        if self.memory is not None and measurements:
            last = max(m.device_record_id or 0 for m in measurements)
            await asyncio.to_thread(self.memory.confirm, last)
