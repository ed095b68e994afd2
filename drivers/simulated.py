"""Simulated home devices: readings on a timer, with values anyone can recompute.

Used by ``make demo``, the integration tests and technician training until (and alongside) the
BLE and serial drivers. Reading ``n`` of a device is a pure function of its kind, address and
``n`` (:func:`expected_reading`), so a test on the provider side can check that what it decrypted
is exactly what the device produced - values, precision, units and the device's own record id.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from gateway.codes import (
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


class SimulatedDevice:
    """A ``Driver`` producing one reading every ``interval_s`` (optionally ``count`` in all)."""

    def __init__(
        self,
        kind: str,
        address: str,
        interval_s: float,
        *,
        count: int | None = None,
        start_n: int = 1,
    ) -> None:
        expected_reading(kind, address, 1)  # fail early on an unknown kind
        self.kind = kind
        self.name = f"sim.{kind}"
        self.device = DeviceId(DeviceIdKind.BTMAC, address)
        self.interval_s = interval_s
        self.count = count
        self._n = start_n
        self.produced = 0
        self.confirmed = 0
        self.last_seen: datetime | None = None

    def _reading(self, n: int) -> Measurement:
        exp = expected_reading(self.kind, self.device.value, n)
        now = datetime.now(UTC)
        device_time = now.replace(microsecond=0)  # device clocks tick in whole seconds
        return Measurement(
            device=self.device,
            mdc_code=exp.mdc_code,
            value=exp.value,
            unit=exp.unit,
            received_at=now,
            source=self.name,
            raw=n.to_bytes(4, "big"),
            device_time=device_time,
            time_quality=TimeQuality.SYNCED,
            components=exp.components,
            device_record_id=n,
        )

    async def measurements(self) -> AsyncIterator[Measurement]:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.count is None or self.produced < self.count:
            next_at += self.interval_s
            m = self._reading(self._n)
            self._n += 1
            self.produced += 1
            self.last_seen = m.received_at
            yield m
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        self.confirmed += len(measurements)
