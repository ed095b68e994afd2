"""In-package fakes for the seams, for unit tests of the layers above them (and for training)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

from gateway.model import Measurement


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


class FakeDriver:
    """Yields the given readings, then ends; records what was confirmed to it, in order."""

    def __init__(self, readings: Sequence[Measurement], name: str = "fake") -> None:
        self.name = name
        self._readings = list(readings)
        self.confirmed: list[Measurement] = []

    async def measurements(self) -> AsyncIterator[Measurement]:
        for m in self._readings:
            yield m
            await asyncio.sleep(0)

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        self.confirmed.extend(measurements)


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, *states: str) -> None:
        self.sent.extend(states)
