"""In-package fakes for the seams, for unit tests of the layers above them (and for training)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from gateway.model import Measurement


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

